#!/usr/bin/env bash
# Installs Weft on a VM as a systemd service: the `weft` binary, the `weft`
# system user, /etc/weft.d with a starter configuration, the data dir
# /var/lib/weft and the unit weft.service; then enables and starts it.
#
# Safe to run again: it changes only what differs from what is asked (a new
# binary or unit is installed and the agent restarted; that is the upgrade
# path) and says when nothing changed. The configuration in /etc/weft.d is
# the operator's: it is written once, never overwritten. The exceptions are
# the installer's own files, replaced when new ones are given:
# /etc/weft.d/weft.secrets.hcl, which holds the join token and, with --acl,
# the acl block and its tokens (secrets, never printed), the root-only copy
# of a server's management token /etc/weft.d/management-token, and
# /etc/weft.d/weft.tls.hcl, which names the TLS files given with --ca-file,
# --cert-file and --key-file, copied into /etc/weft.d/tls.
#
# Run with --help for the options.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install.sh [OPTIONS]
       install.sh --uninstall [--purge] [--prefix DIR] [--no-systemctl]

Installs Weft as the systemd service weft.service, as a client agent
(default) or a server.

Options:
  --binary PATH          the weft binary to install (default: ./weft next to
                         this script, else `weft` on the PATH)
  --server               run a server (default: a client agent)
  --client               run a client agent
  --bootstrap-expect N   servers only: start a new cluster once N servers
                         have found each other (default 3)
  --join ADDR            RPC address of a server, host or host:port (port
                         8300 if none); repeatable. Required for a client
                         without --join-token; on servers, list every server
  --ca-file PATH         the CA certificate that signs the servers'
                         certificates (`weft tls ca create`). Servers need
                         it; a client agent may give it rather than trust
                         the CA its join token carries
  --cert-file PATH       servers: this server's certificate (`weft tls cert
                         create -server`)
  --key-file PATH        servers: that certificate's key (a secret)
  --join-token TOKEN     client agents: a join token (`weft operator
                         join-token create` on a server); it names the
                         servers, the datacenter and their CA, so --join,
                         --datacenter and --ca-file may be left out
  --join-token-file PATH client agents: read the token from PATH, so that it
                         shows in neither `ps` nor the shell history
  --acl                  turn ACLs on, with default_policy "deny" (Consul's
                         acl block). On servers it also sets a management
                         token: generated unless given with the next option
  --acl-management-token-file PATH
                         servers: the management token (initial_management),
                         a UUID; give every server the same one
  --acl-agent-token-file PATH
                         the agent's own token (tokens.agent)
  --acl-default-token-file PATH
                         the token for requests that carry none, and for DNS
                         (tokens.default)
  --datacenter DC        datacenter name (default dc1)
  --node NAME            node name (default: the host name)
  --bind IP              IP this host is reached at: servers' RPC listens on
                         it (default: the IP of the default route)
  --advertise IP         IP registered for this node, if not --bind
  --prefix DIR           install under DIR (DIR/usr/local/bin, DIR/etc/weft.d,
                         ...); the files name these paths. For tests; needs
                         --no-systemctl
  --no-systemctl         do not create the user or run systemctl (tests,
                         containers); files keep the current owner
  --uninstall            stop and remove the unit, binary and configuration;
                         the data dir is kept
  --purge                with --uninstall: remove the data dir too
  -h, --help             show this help

Server RPC leaves this host only over TLS: a server whose --bind is not a
loopback IP needs --ca-file, --cert-file and --key-file, and a client agent
whose servers are elsewhere needs --join-token, to enroll with (an agent
that has enrolled already may do with --ca-file).

The options --server ... --advertise only shape a new /etc/weft.d/weft.hcl;
an existing one is kept as it is. The token goes to
/etc/weft.d/weft.secrets.hcl (root:weft, 0640), which a new token replaces;
the installer never prints it. The TLS files are copied into
/etc/weft.d/tls (the key root:weft, 0640) and named in
/etc/weft.d/weft.tls.hcl; new files replace them.

With --acl, the whole acl block goes to /etc/weft.d/weft.secrets.hcl too,
with the join token if there is one; a rerun keeps the tokens there unless
new ones are given (the --acl-*-token-file options need --acl, or ACLs on
already). A server's management token is kept by reruns (only another
--acl-management-token-file replaces it); when new, it is also written,
alone, to /etc/weft.d/management-token (root only, 0600) for `weft ...
--token-file`. Run the other servers with --acl-management-token-file and
a copy of that file, so that all servers have the same one.
EOF
}

say() { printf '%s\n' "$*"; }
die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf 'install.sh: %s (see --help)\n' "$*" >&2
  exit 2
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# --- Options ------------------------------------------------------------------

binary=""
role=client
bootstrap_expect=""
joins=()
datacenter=""
node=""
bind=""
advertise=""
prefix=""
use_systemctl=yes
action=install
purge=no
config_options=no # any option that shapes weft.hcl was given
role_given=no     # --server or --client was given
# The secret: never printed, never passed to another program's arguments.
join_token=""
# The TLS files to install (the key is a secret too: its contents are never
# shown).
ca_file=""
cert_file=""
key_file=""
# ACLs: --acl, and tokens from files (secrets as well).
acl=no
acl_management_token=""
management_token_given=""
acl_agent_token=""
acl_default_token=""

# Reads a secret from file $2 (for option $1) into $secret, without the
# whitespace around it.
read_secret_file() {
  [[ -f $2 && -r $2 ]] || usage_error "$1 $2: not a readable file"
  secret=$(<"$2")
  secret=${secret#"${secret%%[![:space:]]*}"}
  secret=${secret%"${secret##*[![:space:]]}"}
  [[ -n $secret ]] || usage_error "$1 $2: the file is empty"
}

# Checks that file $2 (for option $1) is readable and holds a PEM block of
# kind $3 (a regular expression: CERTIFICATE, ...PRIVATE KEY), which is
# called $4 in messages. Shows nothing of what the file holds.
check_pem_file() {
  [[ -f $2 && -r $2 ]] || usage_error "$1 $2: not a readable file"
  grep -Eq -- "^-----BEGIN $3-----" "$2" ||
    usage_error "$1 $2: not a PEM file with a $4 (make them with \`weft tls ca create\` and \`weft tls cert create -server\`)"
}

while [[ $# -gt 0 ]]; do
  option=$1
  value=""
  case $option in
  --*=*)
    value=${option#*=}
    option=${option%%=*}
    ;;
  --binary | --bootstrap-expect | --join | --datacenter | --node | --bind | --advertise | --prefix | \
    --ca-file | --cert-file | --key-file | --join-token | --join-token-file | \
    --acl-management-token-file | --acl-agent-token-file | --acl-default-token-file)
    [[ $# -ge 2 ]] || usage_error "$option needs a value"
    value=$2
    shift
    ;;
  esac
  shift
  case $option in
  --binary) binary=$value ;;
  --server | --client)
    role=${option#--}
    role_given=yes
    config_options=yes
    ;;
  --ca-file)
    check_pem_file "$option" "$value" CERTIFICATE "CA certificate"
    ca_file=$value
    ;;
  --cert-file)
    check_pem_file "$option" "$value" CERTIFICATE certificate
    cert_file=$value
    ;;
  --key-file)
    check_pem_file "$option" "$value" '([A-Z]+ )?PRIVATE KEY' "private key"
    key_file=$value
    ;;
  --join-token)
    [[ -n $value ]] || usage_error "$option needs a value"
    join_token=$value
    ;;
  --join-token-file)
    read_secret_file "$option" "$value"
    join_token=$secret
    ;;
  --acl) acl=yes ;;
  --acl-management-token-file)
    read_secret_file "$option" "$value"
    # As Consul's: a UUID (the SecretID the servers give the token).
    [[ $secret =~ ^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$ ]] ||
      usage_error "$option $value: not a UUID (make one with: cat /proc/sys/kernel/random/uuid)"
    acl_management_token=$secret
    management_token_given=yes
    ;;
  --acl-agent-token-file | --acl-default-token-file)
    read_secret_file "$option" "$value"
    # Written into an HCL string: no quotes, backslashes, $ or whitespace.
    [[ $secret =~ ^[A-Za-z0-9._~+/=-]+$ ]] ||
      usage_error "$option $value: not an ACL token (a token's SecretID, as \`weft acl token create\` shows it)"
    if [[ $option == --acl-agent-token-file ]]; then
      acl_agent_token=$secret
    else
      acl_default_token=$secret
    fi
    ;;
  --bootstrap-expect)
    bootstrap_expect=$value
    config_options=yes
    ;;
  --join)
    joins+=("$value")
    config_options=yes
    ;;
  --datacenter)
    datacenter=$value
    config_options=yes
    ;;
  --node)
    node=$value
    config_options=yes
    ;;
  --bind)
    bind=$value
    config_options=yes
    ;;
  --advertise)
    advertise=$value
    config_options=yes
    ;;
  --prefix) prefix=$value ;;
  --no-systemctl) use_systemctl=no ;;
  --uninstall) action=uninstall ;;
  --purge) purge=yes ;;
  -h | --help)
    usage
    exit 0
    ;;
  -*) usage_error "unknown option: $option" ;;
  # Not shown: a misplaced argument may be a secret.
  *) usage_error "unexpected argument (options start with --)" ;;
  esac
done

[[ $purge == no || $action == uninstall ]] || usage_error "--purge goes with --uninstall"
if [[ -n $prefix ]]; then
  # systemctl and useradd would act on the real system, not on the prefix.
  [[ $use_systemctl == no ]] || usage_error "--prefix installs outside the real system: add --no-systemctl"
  # The paths end up in the unit, where whitespace would split them.
  prefix_pattern='^[A-Za-z0-9._/+-]+$'
  [[ $prefix =~ $prefix_pattern ]] || usage_error "--prefix $prefix: use only letters, digits and ._/+-"
  mkdir -p -- "$prefix"
  prefix=$(cd -- "$prefix" && pwd)
  [[ $prefix =~ $prefix_pattern ]] || usage_error "--prefix $prefix: use only letters, digits and ._/+-"
  [[ $prefix != / ]] || prefix=""
fi
if [[ $use_systemctl == yes && $EUID -ne 0 ]]; then
  die "run as root (it creates a system user and a systemd unit), or add --no-systemctl"
fi

bin_dir=$prefix/usr/local/bin
conf_dir=$prefix/etc/weft.d
data_dir=$prefix/var/lib/weft
unit_dir=$prefix/etc/systemd/system
unit_file=$unit_dir/weft.service
config_file=$conf_dir/weft.hcl
# The installer's own files, read after weft.hcl (in name order), so they
# win: the join token, and the tls block naming the copies in tls/.
secrets_file=$conf_dir/weft.secrets.hcl
tls_config=$conf_dir/weft.tls.hcl
tls_dir=$conf_dir/tls

changed=no
# Prints what was done to an item and remembers that something changed.
did() {
  printf '  %-10s %s\n' "$1" "$2"
  changed=yes
}
kept() { printf '  %-10s %s\n' "$1" "$2"; }

# --- Uninstall ----------------------------------------------------------------

if [[ $action == uninstall ]]; then
  say "Removing Weft${prefix:+ from $prefix}"
  if grep -Eqs '^[[:space:]]*server[[:space:]]*=[[:space:]]*true' "$config_file"; then
    say "note: a server stays in the Raft peers unless it ran \`weft leave\`; if it did not,"
    say "      run \`weft operator raft remove-peer --id NODE_NAME\` on another server"
  fi
  if [[ $use_systemctl == yes ]] && systemctl cat weft.service >/dev/null 2>&1; then
    if systemctl is-active --quiet weft.service || systemctl is-enabled --quiet weft.service; then
      # A client agent leaves the cluster on SIGTERM. A server stays in the
      # Raft peers until `weft leave`: see deploy/vm/README.md.
      systemctl disable --now weft.service
      did stopped "weft.service (disabled)"
    fi
  fi
  if [[ -e $unit_file ]]; then
    rm -f -- "$unit_file"
    did removed "$unit_file"
    [[ $use_systemctl == no ]] || systemctl daemon-reload
  fi
  if [[ -e $bin_dir/weft ]]; then
    rm -f -- "$bin_dir/weft"
    did removed "$bin_dir/weft"
  fi
  if [[ -e $conf_dir ]]; then
    rm -rf -- "${conf_dir:?}"
    did removed "$conf_dir (configuration)"
  fi
  if [[ -e $data_dir ]]; then
    if [[ $purge == yes ]]; then
      rm -rf -- "${data_dir:?}"
      did removed "$data_dir (data)"
    else
      kept kept "$data_dir (data: Raft log, node identity; --purge removes it)"
    fi
  fi
  if [[ $use_systemctl == yes ]] && getent passwd weft >/dev/null; then
    # Removing a system user could hand its uid, and old files, to another.
    kept kept "user weft (userdel weft removes it)"
  fi
  [[ $changed == yes ]] || say "Nothing to remove: Weft is not installed${prefix:+ in $prefix}."
  exit 0
fi

# --- Install: check everything before changing anything -----------------------

if [[ -z $binary ]]; then
  if [[ -x $script_dir/weft ]]; then
    binary=$script_dir/weft
  else
    binary=$(command -v weft || true)
  fi
  [[ -n $binary ]] || usage_error "no weft binary next to this script or on the PATH: give --binary PATH"
fi
[[ -f $binary && -x $binary ]] || die "--binary $binary is not an executable file"
version=$("$binary" --version 2>/dev/null) || die "$binary --version failed: is it a weft binary for this machine?"
[[ $version == "weft "* ]] || die "$binary is not weft (its --version says: $version)"

unit_source=""
for candidate in "$script_dir/weft.service" "$script_dir/../systemd/weft.service"; do
  if [[ -f $candidate ]]; then
    unit_source=$candidate
    break
  fi
done
[[ -n $unit_source ]] || die "weft.service not found next to this script or in ../systemd/"

# The tokens and the TLS files must suit the role: that of the existing
# configuration, if there is one, else the options'. Messages never show a
# token or the key.
existing_config=""
for candidate in "$config_file" "$conf_dir/weft.json"; do
  if [[ -e $candidate ]]; then
    existing_config=$candidate
    break
  fi
done
effective_role=$role
if [[ -n $existing_config ]]; then
  effective_role=client
  if grep -Eqs '^[[:space:]]*server[[:space:]]*=[[:space:]]*true' "$config_file" ||
    grep -Eqs '"server"[[:space:]]*:[[:space:]]*true' "$conf_dir/weft.json"; then
    effective_role=server
  fi
fi
tls_given=no
[[ -z $ca_file && -z $cert_file && -z $key_file ]] || tls_given=yes
if [[ -n $join_token || $tls_given == yes ]]; then
  enroll="a client agent gets its certificate by enrolling with --join-token"
  if [[ -n $cert_file || -n $key_file ]]; then
    [[ $role_given == no || $role == server ]] ||
      usage_error "--cert-file and --key-file are for servers, not with --client: $enroll"
    if [[ -n $existing_config ]]; then
      [[ $effective_role == server ]] ||
        usage_error "--cert-file and --key-file are for servers, and $existing_config is a client agent's (no server = true): $enroll"
    else
      [[ $role == server ]] || usage_error "--cert-file and --key-file are for servers: add --server ($enroll)"
    fi
  fi
  if [[ -n $join_token ]]; then
    [[ $role_given == no || $role == client ]] ||
      usage_error "--join-token is for client agents, not with --server: servers use --ca-file, --cert-file and --key-file"
    [[ -z $existing_config || $effective_role == client ]] ||
      usage_error "--join-token is for client agents, and $existing_config is a server's (server = true): servers use --ca-file, --cert-file and --key-file"
    token_pattern='^weftjoin1\.[A-Za-z0-9_-]+$'
    [[ $join_token =~ $token_pattern ]] ||
      usage_error "--join-token: not a Weft join token (make one on a server with: weft operator join-token create)"
  fi
  if [[ $effective_role == server && $tls_given == yes ]]; then
    [[ -n $ca_file && -n $cert_file && -n $key_file ]] ||
      usage_error "a server needs all three of --ca-file, --cert-file and --key-file (make them with \`weft tls ca create\` and \`weft tls cert create -server\`)"
  fi
fi

# The secrets file: the join token and the acl block. It is written anew
# when one of them is given, from the options and, for what they leave out,
# what the file holds (the installer wrote it: one setting a line).
acl_token_given=no
[[ -z $acl_management_token && -z $acl_agent_token && -z $acl_default_token ]] || acl_token_given=yes
write_secrets=no
[[ -z $join_token && $acl == no && $acl_token_given == no ]] || write_secrets=yes
# Prints the string setting $1 in the secrets file (the last, if several).
secrets_setting() {
  sed -nE "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"([^\"]*)\"[[:space:]]*(#.*)?\$/\1/p" -- "$secrets_file" | tail -n 1
}
old_join_token=""
old_acl=no
old_management_token=""
old_agent_token=""
old_default_token=""
if [[ $write_secrets == yes && -f $secrets_file ]]; then
  [[ -r $secrets_file ]] || die "cannot read $secrets_file (run as root)"
  old_join_token=$(secrets_setting join_token)
  ! grep -Eq '^[[:space:]]*acl[[:space:]]*\{' -- "$secrets_file" || old_acl=yes
  old_management_token=$(secrets_setting initial_management)
  old_agent_token=$(secrets_setting agent)
  old_default_token=$(secrets_setting default)
fi
management_token_new=no # generated now, or a different one given
if [[ $write_secrets == yes ]]; then
  join_token=${join_token:-$old_join_token}
  [[ $old_acl == no ]] || acl=yes
  if [[ -n $acl_management_token ]]; then
    [[ $role_given == no || $role == server ]] ||
      usage_error "--acl-management-token-file is for servers, not with --client: a client agent's callers use tokens the servers made"
    if [[ -n $existing_config ]]; then
      [[ $effective_role == server ]] ||
        usage_error "--acl-management-token-file is for servers, and $existing_config is a client agent's (no server = true)"
    else
      [[ $role == server ]] || usage_error "--acl-management-token-file is for servers: add --server"
    fi
  fi
  if [[ $acl_token_given == yes && $acl == no ]]; then
    usage_error "the --acl-*-token-file options set ACL tokens: add --acl (ACLs are not on${existing_config:+ in $conf_dir})"
  fi
  if [[ $acl == yes ]]; then
    if [[ -n $acl_management_token ]]; then
      [[ $acl_management_token == "$old_management_token" ]] || management_token_new=yes
    elif [[ -n $old_management_token ]]; then
      acl_management_token=$old_management_token # never rotated by a rerun
    elif [[ $effective_role == server ]]; then
      acl_management_token=$(tr -d '[:space:]' </proc/sys/kernel/random/uuid) ||
        die "cannot read /proc/sys/kernel/random/uuid to make a management token: give --acl-management-token-file"
      [[ $acl_management_token =~ ^[0-9a-f-]{36}$ ]] || die "/proc/sys/kernel/random/uuid gave no UUID"
      management_token_new=yes
    fi
    acl_agent_token=${acl_agent_token:-$old_agent_token}
    acl_default_token=${acl_default_token:-$old_default_token}
  fi
fi

# Whether RPC address $1 (an IP, host, host:port or [IPv6]:port) is on this
# host, as the agent judges it: RPC without TLS must not leave the host.
is_loopback() {
  local host=$1
  if [[ $host == \[*\]* ]]; then
    host=${host#[}
    host=${host%%]*}
  elif [[ $host == *:*:* ]]; then
    : # a bare IPv6 address
  else
    host=${host%:*}
  fi
  [[ $host =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ || $host == ::1 || $host == localhost ]]
}

write_config=no
if [[ ! -e $config_file && ! -e $conf_dir/weft.json ]]; then
  write_config=yes
  # A join token names the datacenter; --datacenter, if given, must match.
  [[ -n $join_token ]] || datacenter=${datacenter:-dc1}
  [[ -z $datacenter || $datacenter =~ ^[A-Za-z0-9_-]+$ ]] || usage_error "--datacenter $datacenter: use letters, digits, - and _"
  [[ -z $node || $node =~ ^[A-Za-z0-9._-]+$ ]] || usage_error "--node $node: use letters, digits, ., - and _"
  if [[ $role == server ]]; then
    bootstrap_expect=${bootstrap_expect:-3}
    [[ $bootstrap_expect =~ ^[1-9][0-9]*$ ]] || usage_error "--bootstrap-expect $bootstrap_expect: give a number of servers, 1 or more"
  else
    [[ -z $bootstrap_expect ]] || usage_error "--bootstrap-expect is for servers: add --server"
    [[ ${#joins[@]} -gt 0 || -n $join_token ]] ||
      usage_error "a client agent needs a server to join: give --join SERVER_IP or --join-token TOKEN"
  fi
  join_pattern='^[][A-Za-z0-9._:-]+$'
  for i in "${!joins[@]}"; do
    join=${joins[$i]}
    [[ $join =~ $join_pattern ]] || usage_error "--join $join: give host, host:port or [ipv6]:port"
    if [[ $join =~ ^[^:]+$ ]]; then
      joins[i]=$join:8300 # a host or IPv4 without port
    elif [[ $join != \[* && $join =~ :.*: ]]; then
      joins[i]="[$join]:8300" # a bare IPv6 address
    fi
  done
  bind_note=""
  if [[ -z $bind ]]; then
    # The source IP of the default route: what other hosts most likely reach.
    bind=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }' || true)
    [[ -n $bind ]] || bind=$(hostname -I 2>/dev/null | awk '{ print $1 }' || true)
    [[ -n $bind ]] || usage_error "cannot tell this host's IP: give --bind IP"
    bind_note=" (detected; --bind to choose)"
  fi
  for ip in "$bind" ${advertise:+"$advertise"}; do
    [[ $ip =~ ^[0-9.]+$ || $ip =~ ^[0-9A-Fa-f:]+$ ]] || usage_error "$ip is not an IP address"
    # Servers tell each other the address their RPC listens on, so it must
    # be one they can dial.
    [[ $ip != 0.0.0.0 && $ip != :: ]] || usage_error "give this host's own IP, not $ip"
  done
  # RPC leaves this host only over TLS (the agent refuses to start
  # otherwise): a server needs its certificate, a client agent the servers'
  # CA, from --ca-file or from its join token.
  plaintext_fix=""
  if [[ $role == server && $tls_given == no ]]; then
    plaintext_fix="give --ca-file, --cert-file and --key-file (make a CA with \`weft tls ca create\` and each server's certificate with \`weft tls cert create -server\`)"
    is_loopback "$bind" || usage_error "server RPC on $bind would leave this host in plaintext: $plaintext_fix"
  elif [[ $role == client && -z $ca_file && -z $join_token ]]; then
    plaintext_fix="give --join-token (make one on a server with: weft operator join-token create)"
  fi
  if [[ -n $plaintext_fix ]]; then
    for join in "${joins[@]}"; do
      is_loopback "$join" || usage_error "RPC to the server at $join would leave this host in plaintext: $plaintext_fix"
    done
  fi
elif [[ $config_options == yes ]]; then
  say "note: $config_file exists and is kept as it is; the options that shape a new one are ignored (edit the file instead)"
fi

# --- Install ------------------------------------------------------------------

say "Installing $version${prefix:+ under $prefix}"

# With --no-systemctl, nothing is chowned: files keep the current user.
if [[ $use_systemctl == yes ]]; then
  owner_root=root
  owner_weft=weft
else
  owner_root=""
  owner_weft=""
fi

# Sets mode and owner:group on $1 if they differ; says so.
fix_mode() {
  local path=$1 mode=$2 owner=$3 group=$4 what=$5
  if [[ $(stat -c '%04a' -- "$path") != "$mode" ]]; then
    chmod "$mode" -- "$path"
    did fixed "$what $path: mode $mode"
  fi
  if [[ -n $owner && $(stat -c '%U:%G' -- "$path") != "$owner:$group" ]]; then
    chown "$owner:$group" -- "$path"
    did fixed "$what $path: owner $owner:$group"
  fi
}

# Creates directory $1, or fixes its mode and owner.
ensure_dir() {
  local path=$1 mode=$2 owner=$3 group=$4 what=$5
  if [[ -d $path ]]; then
    fix_mode "$@"
    return
  fi
  mkdir -p -- "$path"
  chmod "$mode" -- "$path"
  [[ -z $owner ]] || chown "$owner:$group" -- "$path"
  did created "$what $path"
}

# Copies $1 to $2 with mode $3 and owner $4:$5. The copy is renamed into
# place, so a running agent's binary is replaced, never rewritten; until
# then only its owner reads it (it may be a key).
place() {
  local source=$1 path=$2 mode=$3 owner=$4 group=$5
  (umask 077 && cp -- "$source" "$path.new")
  chmod "$mode" -- "$path.new"
  [[ -z $owner ]] || chown "$owner:$group" -- "$path.new"
  mv -f -- "$path.new" "$path"
}

# Puts file $1 at $2 unless it is there already; fails if it was.
ensure_file() {
  local source=$1 path=$2 mode=$3 owner=$4 group=$5 what=$6
  if [[ -f $path ]] && cmp -s -- "$source" "$path"; then
    kept unchanged "$what $path"
    fix_mode "$path" "$mode" "$owner" "$group" "$what"
    return 1
  fi
  local verb=installed
  [[ ! -e $path ]] || verb=updated
  place "$source" "$path" "$mode" "$owner" "$group"
  did "$verb" "$what $path"
}

if [[ $use_systemctl == yes ]]; then
  if getent passwd weft >/dev/null; then
    kept unchanged "user weft"
  else
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    group_option=(--user-group)
    ! getent group weft >/dev/null || group_option=(--gid weft)
    useradd --system "${group_option[@]}" --home-dir "$data_dir" --no-create-home \
      --shell "$nologin" --comment "Weft service mesh agent" weft
    did created "user weft (system user, no login)"
  fi
fi

# Shared system directories are created if missing, never changed.
for dir in "$bin_dir" "$unit_dir"; do
  if [[ ! -d $dir ]]; then
    mkdir -p -- "$dir"
    did created "directory $dir"
  fi
done
# The agent reads its configuration, which may hold secrets; only root edits it.
ensure_dir "$conf_dir" 0750 "$owner_root" weft "config dir"
ensure_dir "$data_dir" 0750 "$owner_weft" weft "data dir"

binary_changed=no
if ensure_file "$binary" "$bin_dir/weft" 0755 "$owner_root" root "binary"; then
  binary_changed=yes
fi

# The unit names the installed paths, under the prefix if there is one.
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
unit=$(<"$unit_source")
if [[ -n $prefix ]]; then
  unit=${unit//"/usr/local/bin/weft"/"$bin_dir/weft"}
  unit=${unit//"/etc/weft.d"/"$conf_dir"}
  unit=${unit//"/var/lib/weft"/"$data_dir"}
fi
printf '%s\n' "$unit" >"$work/weft.service"
unit_changed=no
if ensure_file "$work/weft.service" "$unit_file" 0644 "$owner_root" root "unit"; then
  unit_changed=yes
fi

config_written=no
if [[ $write_config == yes ]]; then
  {
    cat <<EOF
# Weft agent configuration, written once by install.sh and yours to edit:
# install.sh never overwrites it. Every *.hcl and *.json file in this
# directory is read, in name order (later files win), so services can live
# in files of their own (web.hcl, ...).
#
# After changing services or checks: systemctl reload weft
# After changing anything else:      systemctl restart weft

EOF
    if [[ -n $datacenter ]]; then
      echo "datacenter = \"$datacenter\""
    else
      echo "# datacenter: the join token's (in weft.secrets.hcl)."
    fi
    cat <<EOF
data_dir   = "$data_dir"
EOF
    if [[ -n $node ]]; then
      echo "node_name  = \"$node\""
    else
      echo "# node_name defaults to the host name."
    fi
    echo
    if [[ $role == server ]]; then
      cat <<EOF
# A server: it keeps the replicated state with the other servers (Raft).
# A new cluster starts once bootstrap_expect servers, this one included,
# have found each other through retry_join.
server           = true
bootstrap_expect = $bootstrap_expect
EOF
    else
      cat <<EOF
# A client agent: it follows the servers' state and sends them its writes.
server = false
EOF
    fi
    cat <<EOF

# The IP other hosts reach this one at. Servers' RPC listens on it (port
# 8300) and gives it to the other servers, so it must be this host's own
# IP, never 0.0.0.0.
bind_addr = "$bind"
EOF
    [[ -z $advertise ]] || echo "advertise_addr = \"$advertise\""
    cat <<EOF

# The HTTP API (8500) and DNS (8600) answer on this host only.
client_addr = "127.0.0.1"
EOF
    if [[ ${#joins[@]} -gt 0 ]]; then
      list=""
      for join in "${joins[@]}"; do list+="${list:+, }\"$join\""; done
      cat <<EOF

# Servers' RPC addresses, tried until one answers (a server may list itself).
retry_join = [$list]
EOF
    elif [[ -n $join_token ]]; then
      cat <<EOF

# The servers to join: those the join token names (in weft.secrets.hcl),
# unless retry_join lists others.
EOF
    fi
    if [[ $tls_given == yes ]]; then
      cat <<EOF

# Server RPC runs over TLS: the tls block is in weft.tls.hcl, the
# installer's file, which names the certificates it copied into tls/.
EOF
    elif [[ -n $join_token ]]; then
      cat <<EOF

# Server RPC runs over TLS, with the servers' CA from the join token and a
# certificate for this node that the agent gets when it enrolls.
EOF
    fi
    if [[ $acl == yes ]]; then
      cat <<EOF

# ACLs are on: the acl block, with its tokens, is in weft.secrets.hcl (the
# installer's file). A second acl block would replace that one whole.
EOF
    fi
  } >"$work/weft.hcl"
  place "$work/weft.hcl" "$config_file" 0640 "$owner_root" weft
  did written "config $config_file: $role, datacenter ${datacenter:-from the join token}, bind_addr $bind$bind_note"
  config_written=yes
else
  kept unchanged "config in $conf_dir (yours: never overwritten)"
  [[ ! -f $config_file ]] || fix_mode "$config_file" 0640 "$owner_root" weft "config"
fi

# The secrets, written with printf (a shell builtin: it shows in no process
# list), into a file only root and the agent's group read: the join token
# and the acl block with its tokens.
secrets_changed=no
management_file=$conf_dir/management-token
if [[ $write_secrets == yes ]]; then
  if [[ -n $join_token && $acl == yes ]]; then
    secrets_what="join token and acl block"
  elif [[ -n $join_token ]]; then
    secrets_what="join token"
  else
    secrets_what="acl block"
  fi
  (
    umask 077
    if [[ $acl == no ]]; then
      # As earlier versions wrote it, so that a rerun with the same token
      # changes nothing.
      cat <<EOF
# Written by install.sh from --join-token or --join-token-file; install.sh
# replaces this file when given another token. A secret: only root and the
# weft group read it. On its first start the agent redeems the token: it
# enrolls, gets a certificate for this node from the servers, and keeps
# both in $data_dir (agent-credential.json,
# agent-cert.pem, agent-key.pem); later starts use those, not the token.
EOF
      printf 'join_token = "%s"\n' "$join_token"
      exit
    fi
    cat <<'EOF'
# Written by install.sh, which replaces this file when given a join token,
# --acl or an --acl-*-token-file: it keeps the tokens it holds unless given
# new ones, and writes only what follows (settings added here by hand are
# lost then). Secrets: only root and the weft group read it.
EOF
    if [[ -n $join_token ]]; then
      cat <<EOF
#
# On its first start the agent redeems the join token: it enrolls, gets a
# certificate for this node from the servers, and keeps both in
# $data_dir (agent-credential.json, agent-cert.pem,
# agent-key.pem); later starts use those, not the token.
EOF
      printf 'join_token = "%s"\n' "$join_token"
    fi
    cat <<'EOF'

# ACLs (--acl), the whole block here: a later acl block, in a file read
# after this one, would replace it whole. Requests without a token get the
# default token's rights, or none (default deny). Tokens set later with
# `weft acl set-agent-token` are kept in the data dir and win over these.
acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = true
EOF
    if [[ -n $acl_management_token || -n $acl_agent_token || -n $acl_default_token ]]; then
      printf '  tokens {\n'
      [[ -z $acl_management_token ]] ||
        printf '    # Servers make this management token at start if it is missing.\n    initial_management = "%s"\n' "$acl_management_token"
      [[ -z $acl_agent_token ]] || printf '    agent              = "%s"\n' "$acl_agent_token"
      [[ -z $acl_default_token ]] || printf '    default            = "%s"\n' "$acl_default_token"
      printf '  }\n'
    fi
    printf '}\n'
  ) >"$work/weft.secrets.hcl"
  # What the old file set that the new one does not (shown by name only).
  if [[ -f $secrets_file ]]; then
    dropped=$(grep -vxFf "$work/weft.secrets.hcl" -- "$secrets_file" |
      sed -nE 's/^[[:space:]]*([a-z_]+)[[:space:]]*(=|\{).*/\1/p' |
      grep -vxE 'join_token|initial_management|agent|default' | sort -u | paste -sd ' ' || true)
    [[ -z $dropped ]] ||
      say "note: $secrets_file is rewritten without what install.sh does not write: $dropped (add it again if needed)"
  fi
  if ensure_file "$work/weft.secrets.hcl" "$secrets_file" 0640 "$owner_root" weft "$secrets_what"; then
    secrets_changed=yes
    if [[ -n $join_token && $join_token != "$old_join_token" && -e $data_dir/agent-credential.json ]]; then
      say "note: $data_dir/agent-credential.json exists: the agent keeps that enrollment and does not use"
      say "      the new token; to join with the token, remove agent-credential.json, agent-cert.pem and"
      say "      agent-key.pem from $data_dir and restart the agent"
    fi
  fi
elif [[ -f $secrets_file ]]; then
  fix_mode "$secrets_file" 0640 "$owner_root" weft "secrets"
fi

# A server's management token alone, for the operator (`--token-file`):
# root's only. Written when the token is new; kept up to date if it is
# there; not made again once the operator has removed it.
if [[ -n $acl_management_token && ($management_token_new == yes || -f $management_file) ]]; then
  printf '%s\n' "$acl_management_token" >"$work/management-token"
  ensure_file "$work/management-token" "$management_file" 0600 "$owner_root" root "management token" || true
elif [[ -f $management_file ]]; then
  fix_mode "$management_file" 0600 "$owner_root" root "management token"
fi
if [[ $management_token_new == yes ]]; then
  if [[ -n $old_management_token ]]; then
    say "note: the management token is replaced; the old one, if the servers made it, stays valid:"
    say "      delete it with \`weft acl token list\` and \`weft acl token delete --id ACCESSOR_ID\`"
  fi
  say "note: the management token (every right) is in $management_file (root only)"
  say "      and in $secrets_file; the servers make it when they start. Use it as root:"
  say "        weft acl token list --token-file $management_file"
  say "      or WEFT_HTTP_TOKEN_FILE=$management_file. Keep a copy elsewhere too; once the file is removed,"
  say "      install.sh does not write it again unless the token changes."
  if [[ -z $old_management_token && -z $management_token_given ]]; then
    say "      Every server needs the same one: copy that file to the other servers and install them with"
    say "        --acl --acl-management-token-file FILE"
  fi
fi
if [[ $acl == yes && $old_acl == no && -z $acl_default_token ]]; then
  say "note: ACLs are on with default_policy \"deny\": requests without a token (the CLI, applications, DNS)"
  say "      get nothing; give callers on this host a token (WEFT_HTTP_TOKEN_FILE, X-Consul-Token), or set a"
  say "      default token: --acl-default-token-file FILE or \`weft acl set-agent-token default SECRET\`"
fi

# The TLS files: copies in $tls_dir, named in $tls_config. Certificates are
# public; the key only root and the agent's group read.
tls_changed=no
if [[ $tls_given == yes ]]; then
  ensure_dir "$tls_dir" 0750 "$owner_root" weft "tls dir"
  {
    cat <<'EOF'
# Written by install.sh from --ca-file (and, on servers, --cert-file and
# --key-file); install.sh replaces this file and the copies in tls/ when
# given other files. With a tls block, the agent verifies both ends of
# server RPC (verify_incoming, verify_outgoing and verify_server_hostname
# default to true).
tls {
  defaults {
EOF
    printf '    ca_file   = "%s"\n' "$tls_dir/ca.pem"
    [[ -z $cert_file ]] || printf '    cert_file = "%s"\n' "$tls_dir/server.pem"
    [[ -z $key_file ]] || printf '    key_file  = "%s"\n' "$tls_dir/server-key.pem"
    printf '  }\n}\n'
  } >"$work/weft.tls.hcl"
  if ensure_file "$ca_file" "$tls_dir/ca.pem" 0644 "$owner_root" weft "CA cert"; then
    tls_changed=yes
  fi
  if [[ -n $cert_file ]] && ensure_file "$cert_file" "$tls_dir/server.pem" 0644 "$owner_root" weft "server cert"; then
    tls_changed=yes
  fi
  if [[ -n $key_file ]] && ensure_file "$key_file" "$tls_dir/server-key.pem" 0640 "$owner_root" weft "server key"; then
    tls_changed=yes
  fi
  if ensure_file "$work/weft.tls.hcl" "$tls_config" 0640 "$owner_root" weft "tls config"; then
    tls_changed=yes
  fi
elif [[ -d $tls_dir ]]; then
  fix_mode "$tls_dir" 0750 "$owner_root" weft "tls dir"
  [[ ! -f $tls_dir/server-key.pem ]] || fix_mode "$tls_dir/server-key.pem" 0640 "$owner_root" weft "server key"
  [[ ! -f $tls_config ]] || fix_mode "$tls_config" 0640 "$owner_root" weft "tls config"
fi

if [[ $use_systemctl == yes ]]; then
  [[ $unit_changed == no ]] || systemctl daemon-reload
  if ! systemctl is-enabled --quiet weft.service || ! systemctl is-active --quiet weft.service; then
    systemctl enable --now weft.service ||
      die "weft.service did not start: see journalctl -u weft -n 50"
    did started "weft.service (enabled at boot)"
  elif [[ $binary_changed == yes || $unit_changed == yes || $config_written == yes || $secrets_changed == yes ||
    $tls_changed == yes ]]; then
    # The upgrade (or new secrets, ACL settings or TLS files): the agent
    # runs the new binary, unit or configuration from now on.
    systemctl restart weft.service ||
      die "weft.service did not restart: see journalctl -u weft -n 50"
    did restarted "weft.service"
  else
    kept unchanged "weft.service (enabled, running)"
  fi
fi

if [[ $changed == no ]]; then
  say "Nothing changed: Weft is already installed as asked."
elif [[ $use_systemctl == yes ]]; then
  say "Done. Logs: journalctl -u weft -f    Members: weft members"
else
  say "Done (no systemctl: start it with $bin_dir/weft agent --config-dir $conf_dir)."
fi
