#!/usr/bin/env bash
# Runs deploy/vm/install.sh into temporary prefixes with --no-systemctl, so
# the real system is never touched, and checks:
#   1. a server install: the files, their modes, the unit's paths and the
#      starter config;
#   2. a second run changes nothing and says so; an edited config is kept
#      whatever the options; a new binary is an upgrade;
#   3. bad options are refused (exit 2) before anything is written, among
#      them RPC that would leave the host in plaintext, a server
#      certificate for a client agent, a server with only some of its TLS
#      files, unreadable or wrong TLS files and a join token for a server,
#      and the refusal does not show the secret;
#   4. a client install that joins the server;
#   5. the installed binary runs with the written configs on free loopback
#      ports: the server (bootstrap_expect 1) elects itself, the client
#      joins it and its node is in the catalog; READY=1 and STOPPING=1
#      reach $NOTIFY_SOCKET as under Type=notify; SIGHUP (systemctl reload)
#      loads a service file added to /etc/weft.d; SIGTERM stops both;
#   6. a server installed with TLS files made by `weft tls ca create` and
#      `weft tls cert create -server` (--ca-file, --cert-file, --key-file)
#      and a client agent with a join token made on it (no --join, no TLS
#      files): the copies, the tls block, the secret file, their modes,
#      `weft validate`, reruns (the same files or token change nothing, a
#      new certificate or token replaces the old), and the installed agents
#      on loopback: the server serves RPC over TLS, the client enrolls with
#      the token, joins and writes, and, restarted, joins again with the
#      certificate it kept;
#   7. ACLs (--acl): bad token files and a management token for a client
#      agent are refused, without showing the tokens; --acl on the client
#      with a join token keeps the token, a new join token keeps the acl
#      block; three servers on loopback, the first with a generated
#      management token (weft.secrets.hcl 0640, management-token 0600),
#      the others given a copy of it, reruns keeping it (not rotated, a
#      removed management-token not made again), a different one replaced
#      and put back; the servers running with ACLs: a request without a
#      token is refused (403), the management token writes on every server
#      and through the CLI's --token-file and WEFT_HTTP_TOKEN_FILE, and
#      there is one management token, not three; a client agent installed
#      with --acl and agent and default tokens made on the servers: without
#      a token its callers read (the default token) but may not write, with
#      the management token they write;
#   8. --uninstall removes the unit, binary and config and keeps the data
#      dir; --purge removes that too; a second uninstall has nothing to do;
#   9. without --prefix, the real paths, the weft user and systemctl: in a
#      private mount namespace (as root) over copies of /etc,
#      /usr/local/bin and /var/lib, with a systemctl that only records
#      what it is asked; with --acl, the secrets root:weft 0640, the
#      management token root:root 0600, a restart, and a rerun that
#      changes nothing.
#
# Exit status: 0 passed, 1 failed, 77 skipped (a tool is missing; in CI,
# where WEFT_CI is set, a missing tool fails instead). WEFT_TEST_PATIENCE
# (a multiplier, default 1) stretches the waits on slow machines.
set -euo pipefail

# shellcheck source=deploy/test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install=$deploy/vm/install.sh
patience=${WEFT_TEST_PATIENCE:-1}

fail() {
  echo "FAIL: $*" >&2
  show_logs
  exit 1
}
step() { echo "--- $*"; }

need_weft
for tool in curl ss perl stat cmp find; do
  command -v "$tool" >/dev/null || skip "$tool not found (Debian packages: curl, iproute2, perl-base, coreutils, diffutils, findutils)"
done

work=$(mktemp -d)
pids=()
show_logs() {
  local log
  for log in "$work"/*.log; do
    [[ -s $log ]] || continue
    echo "=== $log (last 30 lines)" >&2
    tail -n 30 "$log" >&2
  done
}
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  rm -rf -- "$work"
}
trap cleanup EXIT

# Runs install.sh, output to $work/out; fails unless it exits with $1.
run_install() {
  local expected=$1 status=0
  shift
  "$install" "$@" >"$work/out" 2>&1 || status=$?
  [[ $status == "$expected" ]] || fail "install.sh $* exited $status, not $expected:"$'\n'"$(cat "$work/out")"
}
# output_has TEXT: install.sh said TEXT (runs of spaces count as one).
output_has() {
  tr -s ' ' <"$work/out" | grep -qF -- "$(tr -s ' ' <<<"$1")" ||
    fail "install.sh did not say '$1':"$'\n'"$(cat "$work/out")"
}

# output_lacks TEXT: install.sh did not say TEXT (a secret).
output_lacks() {
  ! grep -qF -- "$1" "$work/out" || fail "install.sh showed a secret:"$'\n'"$(cat "$work/out")"
}

# valid DIR: `weft validate` accepts the config dir.
valid() {
  "$weft" validate "$1" >"$work/validate.out" 2>&1 || fail "weft validate $1 failed:"$'\n'"$(cat "$work/validate.out")"
}

# mode_is PATH MODE: octal mode and owner (nothing is chowned with --no-systemctl).
mode_is() {
  [[ -e $1 ]] || fail "$1 is missing"
  local actual
  actual=$(stat -c '%a %u' -- "$1")
  [[ $actual == "$2 $(id -u)" ]] || fail "$1 has mode and owner '$actual', not '$2 $(id -u)'"
}

# setting_is FILE KEY VALUE: `KEY = VALUE` in an HCL file, however aligned
# or indented (in a block).
setting_is() {
  sed -E 's/^[[:space:]]*([a-z_]+)[[:space:]]*=[[:space:]]*/\1 = /' "$1" | grep -qxF -- "$2 = $3" ||
    fail "$1 does not say $2 = $3:"$'\n'"$(cat "$1")"
}

# Every path with its mode, owner, size and modification time.
tree_state() { find "$1" -printf '%p %m %u %s %T@\n' | sort; }

# wait_until SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local limit=$(($1 * patience)) what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || fail "not within ${limit}s: $what"
    sleep 0.2
  done
}

# free_port: sets $port to a TCP and UDP port nobody listens on, not handed
# out before. It is below the kernel's ephemeral range (32768 and up by
# default), where another test's outgoing connection could take it before
# the agent binds it, and above the agents' sidecar ports (21000-21255).
taken=" "
free_port() {
  while :; do
    port=$((22000 + RANDOM % 10000))
    [[ $taken != *" $port "* ]] || continue
    [[ -z $(ss -Htuln "sport = :$port") ]] || continue
    taken+="$port "
    return
  done
}

# ---------------------------------------------------------------------------
step "1. a server install into a prefix"
server=$work/server
run_install 0 --binary "$weft" --prefix "$server" --no-systemctl --server --bootstrap-expect 1 \
  --datacenter test-dc --node srv1 --bind 127.0.0.1
output_has "installed  binary $server/usr/local/bin/weft"
output_has "written    config $server/etc/weft.d/weft.hcl"
mode_is "$server/usr/local/bin/weft" 755
cmp -s "$weft" "$server/usr/local/bin/weft" || fail "the installed binary differs from $weft"
mode_is "$server/etc/weft.d" 750
mode_is "$server/etc/weft.d/weft.hcl" 640
mode_is "$server/var/lib/weft" 750
mode_is "$server/etc/systemd/system/weft.service" 644
unit=$server/etc/systemd/system/weft.service
for line in \
  "ExecStart=$server/usr/local/bin/weft agent --config-dir $server/etc/weft.d" \
  "ReadWritePaths=$server/var/lib/weft" \
  "EnvironmentFile=-$server/etc/weft.d/weft.env" \
  "Type=notify" \
  "User=weft"; do
  grep -qxF -- "$line" "$unit" || fail "$unit lacks: $line"
done
config=$server/etc/weft.d/weft.hcl
setting_is "$config" server true
setting_is "$config" bootstrap_expect 1
setting_is "$config" datacenter '"test-dc"'
setting_is "$config" node_name '"srv1"'
setting_is "$config" data_dir "\"$server/var/lib/weft\""
setting_is "$config" bind_addr '"127.0.0.1"'
setting_is "$config" client_addr '"127.0.0.1"'
echo ok

# ---------------------------------------------------------------------------
step "2. a second run changes nothing; the operator's config is kept; upgrades"
before=$(tree_state "$server")
run_install 0 --binary "$weft" --prefix "$server" --no-systemctl --server --bootstrap-expect 1 \
  --datacenter test-dc --node srv1 --bind 127.0.0.1
output_has "Nothing changed"
[[ $(tree_state "$server") == "$before" ]] || fail "the second run changed files:"$'\n'"$(diff <(echo "$before") <(tree_state "$server"))"

echo "# edited by the operator" >>"$config"
edited=$(cat "$config")
run_install 0 --binary "$weft" --prefix "$server" --no-systemctl --client --join 10.9.9.9
output_has "is kept as it is"
output_has "Nothing changed"
[[ $(cat "$config") == "$edited" ]] || fail "install.sh changed the operator's $config"

# A different binary (the same program with a byte appended) is an upgrade.
cp "$weft" "$work/weft-next"
printf '\n' >>"$work/weft-next"
run_install 0 --binary "$work/weft-next" --prefix "$server" --no-systemctl
output_has "updated    binary $server/usr/local/bin/weft"
cmp -s "$work/weft-next" "$server/usr/local/bin/weft" || fail "the upgrade did not install the new binary"
run_install 0 --binary "$weft" --prefix "$server" --no-systemctl
output_has "updated    binary"
rm -f "$work/weft-next"

# A mode changed by hand is put back.
chmod 0755 "$server/etc/weft.d"
run_install 0 --binary "$weft" --prefix "$server" --no-systemctl
output_has "fixed      config dir $server/etc/weft.d: mode 0750"
echo ok

# ---------------------------------------------------------------------------
step "3. bad options are refused before anything is written"
refused() {
  local expect=$1
  shift
  rm -rf "$work/refused"
  run_install 2 --binary "$weft" --prefix "$work/refused" "$@"
  output_has "$expect"
  [[ -z $(find "$work/refused" -mindepth 1 2>/dev/null) ]] || fail "install.sh $* wrote files before refusing"
}
refused "needs a server to join" --no-systemctl --client
refused "--bootstrap-expect is for servers" --no-systemctl --client --join 10.0.0.1 --bootstrap-expect 3
refused "not an IP address" --no-systemctl --server --bind nonsense
refused "not 0.0.0.0" --no-systemctl --server --bind 0.0.0.0
refused "unknown option: --serverr" --no-systemctl --serverr
refused "add --no-systemctl" --server
# A token as `weft operator join-token create` prints it, for servers that
# are not there.
fake_token=weftjoin1.$(printf '{"servers":["127.0.0.1:1"],"datacenter":"dc1","secret":"fake-secret"}' |
  base64 -w0 | tr '+/' '-_' | tr -d '=')
printf '%s\n' "$fake_token" >"$work/token"
# RPC leaves the host only over TLS: a server on another IP needs its
# certificate, a client agent joining servers elsewhere a join token.
refused "server RPC on 10.0.0.1 would leave this host in plaintext" --no-systemctl --server --bind 10.0.0.1
output_has "weft tls cert create -server"
refused "RPC to the server at 10.0.0.2:8300 would leave this host in plaintext" --no-systemctl --server \
  --bind 127.0.0.1 --join 10.0.0.2
refused "RPC to the server at 10.0.0.1:8300 would leave this host in plaintext: give --join-token" \
  --no-systemctl --client --join 10.0.0.1
# The TLS files, as `weft tls` makes them (in the working directory).
certs=$work/certs
mkdir "$certs"
(cd "$certs" && "$weft" tls ca create && "$weft" tls cert create -server -dc test-dc) >"$work/tls.out" 2>&1 ||
  fail "weft tls failed: $(cat "$work/tls.out")"
ca=$certs/weft-agent-ca.pem
cert=$certs/test-dc-server-weft-0.pem
key=$certs/test-dc-server-weft-0-key.pem
for file in "$ca" "$cert" "$key"; do
  grep -qxF "==> Saved $file" "$work/tls.out" || fail "weft tls did not save $file:"$'\n'"$(cat "$work/tls.out")"
done
# A line of the key, which no message may show.
key_line=$(sed -n 2p "$key")
[[ ${#key_line} -ge 16 ]] || fail "$key does not look like a PEM key"
refused "a server needs all three of --ca-file, --cert-file and --key-file" --no-systemctl --server \
  --bind 10.0.0.1 --ca-file "$ca"
refused "a server needs all three" --no-systemctl --server --bind 10.0.0.1 --ca-file "$ca" --cert-file "$cert"
refused "a server needs all three" --no-systemctl --server --bind 127.0.0.1 --cert-file "$cert" --key-file "$key"
# A client agent's certificate comes from enrolling, never from a file.
refused "--cert-file and --key-file are for servers, not with --client" --no-systemctl --client \
  --join-token "$fake_token" --ca-file "$ca" --cert-file "$cert" --key-file "$key"
output_lacks "$fake_token"
refused "--cert-file and --key-file are for servers: add --server" --no-systemctl --join 10.0.0.1 \
  --ca-file "$ca" --key-file "$key"
# Files that cannot be read, or are not what the option says.
refused "--ca-file $work/missing: not a readable file" --no-systemctl --server --bind 10.0.0.1 \
  --ca-file "$work/missing" --cert-file "$cert" --key-file "$key"
refused "--key-file $certs: not a readable file" --no-systemctl --server --bind 10.0.0.1 \
  --ca-file "$ca" --cert-file "$cert" --key-file "$certs"
if [[ $EUID -ne 0 ]]; then # root reads any file
  cp "$key" "$work/unreadable.pem"
  chmod 000 "$work/unreadable.pem"
  refused "--key-file $work/unreadable.pem: not a readable file" --no-systemctl --server --bind 10.0.0.1 \
    --ca-file "$ca" --cert-file "$cert" --key-file "$work/unreadable.pem"
fi
refused "--cert-file $key: not a PEM file with a certificate" --no-systemctl --server --bind 10.0.0.1 \
  --ca-file "$ca" --cert-file "$key" --key-file "$key"
output_lacks "$key_line"
refused "--key-file $cert: not a PEM file with a private key" --no-systemctl --server --bind 10.0.0.1 \
  --ca-file "$ca" --cert-file "$cert" --key-file "$cert"
refused "--ca-file $key: not a PEM file with a CA certificate" --no-systemctl --client \
  --join-token "$fake_token" --ca-file "$key"
output_lacks "$key_line"
# The token: for client agents only, and never shown.
refused "--join-token is for client agents, not with --server" --no-systemctl --server --join-token "$fake_token"
output_lacks "$fake_token"
refused "--join-token is for client agents, not with --server" --no-systemctl --server --join-token-file "$work/token"
refused "--join-token is for client agents" --no-systemctl --server --bind 127.0.0.1 \
  --ca-file "$ca" --cert-file "$cert" --key-file "$key" --join-token "$fake_token"
output_lacks "$fake_token"
refused "--join-token: not a Weft join token" --no-systemctl --client --join-token "not-a-token-secret"
output_lacks "not-a-token-secret"
refused "--join-token-file $work/missing: not a readable file" --no-systemctl --client --join-token-file "$work/missing"
: >"$work/empty"
refused "the file is empty" --no-systemctl --client --join-token-file "$work/empty"
refused "unexpected argument" --no-systemctl --client "$fake_token"
output_lacks "$fake_token"
echo ok

# ---------------------------------------------------------------------------
step "4. a client install that joins the server"
free_port && s_http=$port
free_port && s_dns=$port
free_port && s_rpc=$port
free_port && c_http=$port
free_port && c_dns=$port
client=$work/client
run_install 0 --binary "$weft" --prefix "$client" --no-systemctl --client --join "127.0.0.1:$s_rpc" \
  --datacenter test-dc --node cli1 --bind 127.0.0.1 --advertise 127.0.0.1
config=$client/etc/weft.d/weft.hcl
setting_is "$config" server false
setting_is "$config" retry_join "[\"127.0.0.1:$s_rpc\"]"
setting_is "$config" advertise_addr '"127.0.0.1"'
grep -q '^bootstrap_expect' "$config" && fail "a client's config has bootstrap_expect"
run_install 0 --binary "$weft" --prefix "$client" --no-systemctl --client --join "127.0.0.1:$s_rpc"
output_has "Nothing changed"
echo ok

# ---------------------------------------------------------------------------
step "5. the installed agents run with the written configs"
# Listens like systemd's notify socket; writes each message as a line.
notify_listener() {
  local socket=$1 file=$2
  perl -MSocket -MIO::Socket::UNIX -e '
    my $socket = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $ARGV[0]) or die "$ARGV[0]: $!";
    open(my $out, ">>", $ARGV[1]) or die "$ARGV[1]: $!";
    $out->autoflush(1);
    while (defined $socket->recv(my $message, 4096)) { print $out "$message\n" }
  ' "$socket" "$file" &
  pids+=($!)
  wait_until 5 "the notify socket $socket" test -S "$socket"
}

# start_agent NAME PREFIX FLAGS...: runs PREFIX's weft with PREFIX's
# config; its pid is in $started.
start_agent() {
  local name=$1 root=$2
  shift 2
  : >"$work/$name.notify"
  notify_listener "$work/$name.sock" "$work/$name.notify"
  NOTIFY_SOCKET=$work/$name.sock "$root/usr/local/bin/weft" agent --config-dir "$root/etc/weft.d" "$@" \
    >"$work/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
}

# stop_agent NAME PID: SIGTERM, then it must exit 0 in time and say STOPPING=1.
stop_agent() {
  local name=$1 pid=$2 status=0
  kill -TERM "$pid"
  wait_until 20 "$name to stop after SIGTERM" exited "$pid"
  wait "$pid" || status=$?
  [[ $status == 0 ]] || fail "$name exited $status after SIGTERM"
  wait_until 5 "$name sends STOPPING=1" grep -qx 'STOPPING=1' "$work/$name.notify"
}

http() { curl -sf --max-time 2 "http://127.0.0.1:$1$2"; }
has_leader() { [[ $(http "$1" /v1/status/leader 2>/dev/null) == *:* ]]; }
lists() { http "$1" "$2" 2>/dev/null | grep -qF -- "$3"; }
alive() { kill -0 "$1" 2>/dev/null || fail "$2 exited early"; }
exited() { ! kill -0 "$1" 2>/dev/null; }
server_up() { alive "$server_pid" server && has_leader "$s_http"; }
client_up() { alive "$client_pid" client && has_leader "$c_http"; }

start_agent server "$server" \
  --http-addr "127.0.0.1:$s_http" --dns-addr "127.0.0.1:$s_dns" --rpc-addr "127.0.0.1:$s_rpc"
server_pid=$started
wait_until 20 "the server elects itself (/v1/status/leader)" server_up
wait_until 5 "the server sends READY=1" grep -qx 'READY=1' "$work/server.notify"
wait_until 20 "the server's node in the catalog" lists "$s_http" /v1/catalog/nodes '"Node":"srv1"'
lists "$s_http" /v1/catalog/nodes '"Datacenter":"test-dc"' || fail "the datacenter is not test-dc: $(http "$s_http" /v1/catalog/nodes)"

start_agent client "$client" --http-addr "127.0.0.1:$c_http" --dns-addr "127.0.0.1:$c_dns"
client_pid=$started
wait_until 20 "the client finds the leader" client_up
wait_until 5 "the client sends READY=1" grep -qx 'READY=1' "$work/client.notify"
wait_until 20 "the client's node in the catalog" lists "$s_http" /v1/catalog/nodes '"Node":"cli1"'

# What `systemctl reload weft` does: SIGHUP re-reads the config dir.
cat >"$client/etc/weft.d/web.hcl" <<'EOF'
service {
  name = "web"
  port = 8080
}
EOF
kill -HUP "$client_pid"
wait_until 20 "the reloaded service in the catalog" lists "$s_http" /v1/catalog/service/web '"ServiceName":"web"'

stop_agent client "$client_pid"
stop_agent server "$server_pid"
echo ok

# ---------------------------------------------------------------------------
step "6. a server with TLS files, a client agent with a join token"
# On installed agents, TLS files or a token are refused for the role their
# weft.hcl says, whatever the options, and nothing changes.
for target in "$client --cert-file $cert|is a client agent's" \
  "$server --join-token-file $work/token|is a server's"; do
  read -r root option file <<<"${target%|*}"
  before=$(tree_state "$root")
  run_install 2 --binary "$weft" --prefix "$root" --no-systemctl "$option" "$file"
  output_has "${target#*|}"
  output_lacks "$fake_token"
  [[ $(tree_state "$root") == "$before" ]] || fail "a refused install changed $root"
done

tserver=$work/tserver
tconf=$tserver/etc/weft.d
server_flags=(--binary "$weft" --prefix "$tserver" --no-systemctl --server --bootstrap-expect 1
  --datacenter test-dc --node tsrv --bind 127.0.0.1)
run_install 0 "${server_flags[@]}" --ca-file "$ca" --cert-file "$cert" --key-file "$key"
output_has "created    tls dir $tconf/tls"
output_has "installed  CA cert $tconf/tls/ca.pem"
output_has "installed  server cert $tconf/tls/server.pem"
output_has "installed  server key $tconf/tls/server-key.pem"
output_has "installed  tls config $tconf/weft.tls.hcl"
output_lacks "$key_line"
mode_is "$tconf/tls" 750
mode_is "$tconf/tls/ca.pem" 644
mode_is "$tconf/tls/server.pem" 644
mode_is "$tconf/tls/server-key.pem" 640
mode_is "$tconf/weft.tls.hcl" 640
mode_is "$tconf/weft.hcl" 640
for pair in "$ca ca.pem" "$cert server.pem" "$key server-key.pem"; do
  read -r source copy <<<"$pair"
  cmp -s "$source" "$tconf/tls/$copy" || fail "$tconf/tls/$copy is not a copy of $source"
done
setting_is "$tconf/weft.tls.hcl" ca_file "\"$tconf/tls/ca.pem\""
setting_is "$tconf/weft.tls.hcl" cert_file "\"$tconf/tls/server.pem\""
setting_is "$tconf/weft.tls.hcl" key_file "\"$tconf/tls/server-key.pem\""
! grep -Eq '^(tls|join_token)' "$tconf/weft.hcl" ||
  fail "$tconf/weft.hcl has a tls block or a token:"$'\n'"$(cat "$tconf/weft.hcl")"
[[ ! -e $tconf/weft.secrets.hcl ]] || fail "a server without a token has $tconf/weft.secrets.hcl"
valid "$tconf"
# The same files again change nothing; some of them alone are refused.
before=$(tree_state "$tserver")
run_install 0 "${server_flags[@]}" --ca-file "$ca" --cert-file "$cert" --key-file "$key"
output_has "Nothing changed"
output_lacks "$key_line"
[[ $(tree_state "$tserver") == "$before" ]] || fail "the same TLS files again changed files"
run_install 2 --binary "$weft" --prefix "$tserver" --no-systemctl --cert-file "$cert" --key-file "$key"
output_has "a server needs all three"
[[ $(tree_state "$tserver") == "$before" ]] || fail "a refused install changed $tserver"
# A new certificate (as when one is renewed) replaces the old; the CA and
# the tls block stay.
(cd "$certs" && "$weft" tls cert create -server -dc test-dc) >"$work/tls.out" 2>&1 ||
  fail "weft tls cert create failed: $(cat "$work/tls.out")"
cert=$certs/test-dc-server-weft-1.pem
key=$certs/test-dc-server-weft-1-key.pem
[[ -f $cert && -f $key ]] || fail "weft tls cert create did not make $cert and $key: $(cat "$work/tls.out")"
key_line=$(sed -n 2p "$key")
run_install 0 "${server_flags[@]}" --ca-file "$ca" --cert-file "$cert" --key-file "$key"
output_has "updated    server cert $tconf/tls/server.pem"
output_has "updated    server key $tconf/tls/server-key.pem"
output_has "unchanged  CA cert $tconf/tls/ca.pem"
output_has "unchanged  tls config $tconf/weft.tls.hcl"
output_lacks "$key_line"
mode_is "$tconf/tls/server-key.pem" 640
cmp -s "$key" "$tconf/tls/server-key.pem" || fail "the new key is not in $tconf/tls/server-key.pem"

free_port && ts_http=$port
free_port && ts_dns=$port
free_port && ts_rpc=$port
free_port && tc_http=$port
free_port && tc_dns=$port
tserver_up() { alive "$tserver_pid" "the TLS server" && has_leader "$ts_http"; }
tclient_up() { alive "$tclient_pid" "the client with a token" && has_leader "$tc_http"; }
start_agent tserver "$tserver" \
  --http-addr "127.0.0.1:$ts_http" --dns-addr "127.0.0.1:$ts_dns" --rpc-addr "127.0.0.1:$ts_rpc"
tserver_pid=$started
wait_until 20 "the TLS server elects itself" tserver_up
# Two tokens: the client is installed with the first, then the second.
for i in 1 2; do
  "$weft" operator join-token create --http-addr "127.0.0.1:$ts_http" --ttl 1h --description "install test $i" \
    >"$work/token$i" 2>"$work/token.err" || fail "weft operator join-token create failed: $(cat "$work/token.err")"
  grep -qx 'weftjoin1\.[A-Za-z0-9_-]*' "$work/token$i" || fail "join-token create printed more than a token: $(cat "$work/token$i")"
done
token1=$(<"$work/token1")
token2=$(<"$work/token2")

tclient=$work/tclient
client_flags=(--binary "$weft" --prefix "$tclient" --no-systemctl --client --node tcli
  --bind 127.0.0.1 --advertise 127.0.0.1)
run_install 0 "${client_flags[@]}" --join-token-file "$work/token1"
secrets=$tclient/etc/weft.d/weft.secrets.hcl
config=$tclient/etc/weft.d/weft.hcl
output_has "installed  join token $secrets"
output_has "datacenter from the join token"
output_lacks "$token1"
mode_is "$secrets" 640
mode_is "$config" 640
setting_is "$secrets" join_token "\"$token1\""
setting_is "$config" server false
! grep -Eq '^(retry_join|datacenter|join_token|tls)' "$config" ||
  fail "with a token, $config names servers, a datacenter, the token or TLS files:"$'\n'"$(cat "$config")"
# The token carries the servers' CA: the client needs no TLS files.
[[ ! -e $tclient/etc/weft.d/weft.tls.hcl && ! -e $tclient/etc/weft.d/tls ]] ||
  fail "a client with a token has TLS files in $tclient/etc/weft.d"
valid "$tclient/etc/weft.d"
before=$(tree_state "$tclient")
run_install 0 "${client_flags[@]}" --join-token "$token1"
output_has "Nothing changed"
[[ $(tree_state "$tclient") == "$before" ]] || fail "the same token again changed files"
# A new token replaces the old one.
run_install 0 "${client_flags[@]}" --join-token "$token2"
output_has "updated    join token $secrets"
output_lacks "$token2"
mode_is "$secrets" 640
setting_is "$secrets" join_token "\"$token2\""
! grep -qF -- "$token1" "$secrets" || fail "the old token is still in $secrets"
valid "$tclient/etc/weft.d"

start_agent tclient "$tclient" --http-addr "127.0.0.1:$tc_http" --dns-addr "127.0.0.1:$tc_dns"
tclient_pid=$started
wait_until 20 "the client with a token finds the leader" tclient_up
wait_until 20 "the client with a token in the catalog" lists "$ts_http" /v1/catalog/nodes '"Node":"tcli"'
lists "$ts_http" /v1/catalog/nodes '"Datacenter":"test-dc"' || fail "the token's datacenter is not test-dc"
"$weft" members --http-addr "127.0.0.1:$ts_http" >"$work/members" 2>&1 || fail "weft members failed: $(cat "$work/members")"
grep -q 'tcli' "$work/members" || fail "weft members does not list tcli:"$'\n'"$(cat "$work/members")"
# It enrolled: its enrollment and its certificate are in its data dir.
for file in agent-credential.json agent-cert.pem agent-key.pem; do
  mode_is "$tclient/var/lib/weft/$file" 600
done
"$weft" operator node list --http-addr "127.0.0.1:$ts_http" >"$work/nodes" 2>&1 ||
  fail "weft operator node list failed: $(cat "$work/nodes")"
grep -q '^tcli ' "$work/nodes" || fail "weft operator node list does not list tcli:"$'\n'"$(cat "$work/nodes")"
# It joined with the token it was given last: that one is used up.
"$weft" operator join-token list --http-addr "127.0.0.1:$ts_http" >"$work/tokens" 2>&1 ||
  fail "weft operator join-token list failed: $(cat "$work/tokens")"
if ! grep -q 'install test 1' "$work/tokens" || grep -q 'install test 2' "$work/tokens"; then
  fail "the client did not redeem the second token:"$'\n'"$(cat "$work/tokens")"
fi
# Restarted, it joins with what it kept (the token is used up), and its
# writes reach the servers over RPC with its certificate.
stop_agent tclient "$tclient_pid"
start_agent tclient-again "$tclient" --http-addr "127.0.0.1:$tc_http" --dns-addr "127.0.0.1:$tc_dns"
tclient_pid=$started
wait_until 20 "the restarted client finds the leader with what it kept" tclient_up
curl -sf --max-time 5 -X PUT --data restarted "http://127.0.0.1:$tc_http/v1/kv/install-test" >"$work/put" 2>&1 ||
  fail "the restarted client could not write: $(cat "$work/put")"
[[ $(http "$ts_http" "/v1/kv/install-test?raw") == restarted ]] ||
  fail "the restarted client's write did not reach the server: $(http "$ts_http" "/v1/kv/install-test?raw")"
stop_agent tclient-again "$tclient_pid"
stop_agent tserver "$tserver_pid"
# A new token for an agent that has enrolled: the installer says it goes
# unused.
run_install 0 "${client_flags[@]}" --join-token "$token1"
output_has "agent-credential.json exists"
echo ok

# ---------------------------------------------------------------------------
step "7. ACLs: three servers and a client agent installed with --acl"
# Token files: a UUID, an empty file, and tokens that are not tokens.
uuid() { tr -d '[:space:]' </proc/sys/kernel/random/uuid; }
printf '%s\n' "$(uuid)" >"$work/uuid"
: >"$work/empty"
printf '  \n\n' >"$work/blank"
printf 'not-a-uuid-secret\n' >"$work/not-uuid"
printf 'has "quotes" secret\n' >"$work/quoted"
refused "--acl-management-token-file $work/not-uuid: not a UUID" --no-systemctl --server --bind 127.0.0.1 \
  --acl --acl-management-token-file "$work/not-uuid"
output_lacks not-a-uuid-secret
refused "--acl-management-token-file $work/empty: the file is empty" --no-systemctl --server --bind 127.0.0.1 \
  --acl --acl-management-token-file "$work/empty"
refused "--acl-agent-token-file $work/blank: the file is empty" --no-systemctl --client --join 127.0.0.1 \
  --acl --acl-agent-token-file "$work/blank"
refused "--acl-default-token-file $work/missing: not a readable file" --no-systemctl --client --join 127.0.0.1 \
  --acl --acl-default-token-file "$work/missing"
refused "--acl-default-token-file $work/quoted: not an ACL token" --no-systemctl --client --join 127.0.0.1 \
  --acl --acl-default-token-file "$work/quoted"
output_lacks '"quotes" secret'
refused "--acl-management-token-file is for servers: add --server" --no-systemctl --join 127.0.0.1 \
  --acl --acl-management-token-file "$work/uuid"
refused "--acl-management-token-file is for servers, not with --client" --no-systemctl --client \
  --join 127.0.0.1 --acl --acl-management-token-file "$work/uuid"
refused "set ACL tokens: add --acl" --no-systemctl --client --join 127.0.0.1 --acl-default-token-file "$work/uuid"
output_lacks "$(<"$work/uuid")"
# On installed agents: a management token for a client agent, or ACL
# tokens where ACLs are off, are refused and change nothing.
for target in "$tclient --acl-management-token-file|is a client agent's" \
  "$tserver --acl-agent-token-file|add --acl"; do
  read -r root option <<<"${target%|*}"
  before=$(tree_state "$root")
  run_install 2 --binary "$weft" --prefix "$root" --no-systemctl "$option" "$work/uuid"
  output_has "${target#*|}"
  [[ $(tree_state "$root") == "$before" ]] || fail "a refused install changed $root"
done

# --acl on a client agent with a join token: the token stays, the acl block
# joins it, and a rerun with another token keeps the acl block. Settings
# the installer does not write are named when it rewrites the file.
secrets=$tclient/etc/weft.d/weft.secrets.hcl
run_install 0 "${client_flags[@]}" --acl
output_has "updated    join token and acl block $secrets"
output_has 'ACLs are on with default_policy "deny"'
output_lacks "$token1"
mode_is "$secrets" 640
setting_is "$secrets" join_token "\"$token1\""
setting_is "$secrets" enabled true
setting_is "$secrets" default_policy '"deny"'
setting_is "$secrets" enable_token_persistence true
! grep -q initial_management "$secrets" || fail "a client agent's $secrets has a management token"
[[ ! -e $tclient/etc/weft.d/management-token ]] || fail "a client agent has a management-token file"
valid "$tclient/etc/weft.d"
sed -i 's/^\( *default_policy .*\)$/\1\n  down_policy = "extend-cache"/' "$secrets"
run_install 0 "${client_flags[@]}" --join-token "$token2"
output_has "updated    join token and acl block $secrets"
output_has "install.sh does not write: down_policy"
output_lacks "$token2"
setting_is "$secrets" join_token "\"$token2\""
setting_is "$secrets" default_policy '"deny"'
! grep -q down_policy "$secrets" || fail "down_policy is still in $secrets"

free_port && ac_http=$port
free_port && ac_dns=$port
joins=()
for i in 1 2 3; do
  free_port && as_http[i]=$port
  free_port && as_dns[i]=$port
  free_port && as_rpc[i]=$port
  joins+=(--join "127.0.0.1:$port")
done
aserver_flags() {
  flags=(--binary "$weft" --prefix "$work/aserver$1" --no-systemctl --server --bootstrap-expect 3
    --datacenter test-dc --node "asrv$1" --bind 127.0.0.1 "${joins[@]}")
}
# The first server generates the management token.
aconf=$work/aserver1/etc/weft.d
aserver_flags 1
run_install 0 "${flags[@]}" --acl
output_has "installed  acl block $aconf/weft.secrets.hcl"
output_has "installed  management token $aconf/management-token"
output_has "weft acl token list --token-file $aconf/management-token"
output_has "copy that file to the other servers"
mode_is "$aconf/weft.secrets.hcl" 640
mode_is "$aconf/management-token" 600
management=$(<"$aconf/management-token")
[[ $management =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
  fail "$aconf/management-token does not hold a UUIDv4: $management"
output_lacks "$management"
setting_is "$aconf/weft.secrets.hcl" initial_management "\"$management\""
setting_is "$aconf/weft.secrets.hcl" default_policy '"deny"'
! grep -Eq '^[[:space:]]*(agent|default)[[:space:]]*=' "$aconf/weft.secrets.hcl" ||
  fail "$aconf/weft.secrets.hcl has tokens it was not given"
valid "$aconf"
cp "$aconf/management-token" "$work/management-token"
# Reruns keep it, with --acl or without; a removed copy is not made again.
before=$(tree_state "$work/aserver1")
run_install 0 "${flags[@]}" --acl
output_has "Nothing changed"
run_install 0 "${flags[@]}"
output_has "Nothing changed"
[[ $(tree_state "$work/aserver1") == "$before" ]] || fail "a rerun changed $work/aserver1"
rm "$aconf/management-token"
run_install 0 "${flags[@]}" --acl
output_has "Nothing changed"
[[ ! -e $aconf/management-token ]] || fail "a rerun wrote the removed $aconf/management-token again"
setting_is "$aconf/weft.secrets.hcl" initial_management "\"$management\""
cp -p "$work/management-token" "$aconf/management-token"
# The others get the same token from a copy of the file; one given another
# one by mistake gets the right one again.
for i in 2 3; do
  aserver_flags $i
  run_install 0 "${flags[@]}" --acl --acl-management-token-file "$work/uuid"
  run_install 0 "${flags[@]}" --acl --acl-management-token-file "$work/management-token"
  output_has "updated    acl block $work/aserver$i/etc/weft.d/weft.secrets.hcl"
  output_has "updated    management token $work/aserver$i/etc/weft.d/management-token"
  output_has "the management token is replaced"
  output_lacks "$management"
  cmp -s "$work/management-token" "$work/aserver$i/etc/weft.d/management-token" ||
    fail "server $i's management-token is not the first server's"
  setting_is "$work/aserver$i/etc/weft.d/weft.secrets.hcl" initial_management "\"$management\""
  run_install 0 "${flags[@]}" --acl --acl-management-token-file "$work/management-token"
  output_has "Nothing changed"
done

# authed PORT METHOD PATH [TOKEN]: the HTTP status of a request, with
# TOKEN if given (a PUT writes "acl").
authed() {
  local args=(-s -o /dev/null -w '%{http_code}' --max-time 5 -X "$2")
  [[ $2 != PUT ]] || args+=(--data acl)
  [[ -z ${4:-} ]] || args+=(-H "X-Consul-Token: $4")
  curl "${args[@]}" "http://127.0.0.1:$1$3" || true
}
# status_is STATUS PORT METHOD PATH [TOKEN]: authed answers STATUS.
status_is() {
  local expected=$1 actual
  shift
  actual=$(authed "$@")
  [[ $actual == "$expected" ]] || fail "$2 $3 on port $1 ${4:+with the token }answered $actual, not $expected"
}
aservers_up() {
  local i
  for i in 1 2 3; do
    alive "${as_pid[i]}" "server asrv$i" && has_leader "${as_http[i]}" || return 1
  done
}
for i in 1 2 3; do
  start_agent "aserver$i" "$work/aserver$i" --http-addr "127.0.0.1:${as_http[i]}" \
    --dns-addr "127.0.0.1:${as_dns[i]}" --rpc-addr "127.0.0.1:${as_rpc[i]}"
  as_pid[i]=$started
done
wait_until 30 "the three ACL servers elect a leader" aservers_up
# The management token works on every server; nothing works without it.
token_made() { [[ $(authed "${as_http[1]}" PUT /v1/kv/acl-test "$management") == 200 ]]; }
wait_until 20 "the servers make the management token" token_made
for i in 1 2 3; do
  status_is 403 "${as_http[i]}" PUT /v1/kv/acl-test
  status_is 200 "${as_http[i]}" PUT /v1/kv/acl-test "$management"
  status_is 403 "${as_http[i]}" GET /v1/kv/acl-test
done
# One management token for the three servers, not one each.
tokens=$(curl -sf --max-time 5 -H "X-Consul-Token: $management" "http://127.0.0.1:${as_http[1]}/v1/acl/tokens") ||
  fail "GET /v1/acl/tokens with the management token failed"
[[ $(grep -o 'Initial Management Token' <<<"$tokens" | wc -l) == 1 ]] ||
  fail "not exactly one initial management token: $tokens"
# The CLI, as the installer says: --token-file or WEFT_HTTP_TOKEN_FILE.
"$weft" kv put --http-addr "127.0.0.1:${as_http[2]}" --token-file "$aconf/management-token" acl-test from-cli \
  >"$work/cli.out" 2>&1 || fail "weft kv put --token-file failed: $(cat "$work/cli.out")"
[[ $(WEFT_HTTP_TOKEN_FILE=$aconf/management-token "$weft" kv get --http-addr "127.0.0.1:${as_http[3]}" acl-test) == from-cli ]] ||
  fail "weft kv get with WEFT_HTTP_TOKEN_FILE did not read from-cli"
! "$weft" kv get --http-addr "127.0.0.1:${as_http[3]}" acl-test >"$work/cli.out" 2>&1 ||
  fail "weft kv get without a token read the key"

# The client agent's tokens, made with the management token.
export WEFT_HTTP_ADDR=127.0.0.1:${as_http[1]} WEFT_HTTP_TOKEN_FILE=$work/management-token
"$weft" acl policy create --name reader --rules 'key_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }' >"$work/cli.out" 2>&1 || fail "weft acl policy create failed: $(cat "$work/cli.out")"
"$weft" acl policy create --name agent --rules 'node_prefix "" { policy = "write" }' >"$work/cli.out" 2>&1 ||
  fail "weft acl policy create failed: $(cat "$work/cli.out")"
printf '%s\n' "$(uuid)" >"$work/default-token"
printf '%s\n' "$(uuid)" >"$work/agent-token"
"$weft" acl token create --policy-name reader --secret "$(<"$work/default-token")" >"$work/cli.out" 2>&1 ||
  fail "weft acl token create failed: $(cat "$work/cli.out")"
"$weft" acl token create --policy-name agent --secret "$(<"$work/agent-token")" >"$work/cli.out" 2>&1 ||
  fail "weft acl token create failed: $(cat "$work/cli.out")"
unset WEFT_HTTP_ADDR WEFT_HTTP_TOKEN_FILE

aclient=$work/aclient
aclient_flags=(--binary "$weft" --prefix "$aclient" --no-systemctl --client --datacenter test-dc --node acli
  --bind 127.0.0.1 --advertise 127.0.0.1 --join "127.0.0.1:${as_rpc[1]}" --acl)
run_install 0 "${aclient_flags[@]}" --acl-agent-token-file "$work/agent-token" \
  --acl-default-token-file "$work/default-token"
secrets=$aclient/etc/weft.d/weft.secrets.hcl
output_has "installed  acl block $secrets"
output_lacks "$(<"$work/agent-token")"
output_lacks "$(<"$work/default-token")"
mode_is "$secrets" 640
setting_is "$secrets" agent "\"$(<"$work/agent-token")\""
setting_is "$secrets" default "\"$(<"$work/default-token")\""
! grep -q 'initial_management' "$secrets" || fail "a client agent's $secrets has a management token"
valid "$aclient/etc/weft.d"
before=$(tree_state "$aclient")
run_install 0 "${aclient_flags[@]}"
output_has "Nothing changed"
[[ $(tree_state "$aclient") == "$before" ]] || fail "a rerun with --acl changed $aclient"

start_agent aclient "$aclient" --http-addr "127.0.0.1:$ac_http" --dns-addr "127.0.0.1:$ac_dns"
aclient_pid=$started
aclient_up() { alive "$aclient_pid" "the ACL client" && has_leader "$ac_http"; }
wait_until 20 "the ACL client finds the leader" aclient_up
# Without a token, its callers get the default token's rights: read, not write.
wait_until 20 "the ACL client's node in the catalog" lists "$ac_http" /v1/catalog/nodes '"Node":"acli"'
[[ $(http "$ac_http" "/v1/kv/acl-test?raw") == from-cli ]] || fail "the default token does not read acl-test"
status_is 403 "$ac_http" PUT /v1/kv/acl-test
status_is 200 "$ac_http" PUT /v1/kv/acl-test "$management"
[[ $(curl -sf --max-time 5 -H "X-Consul-Token: $management" "http://127.0.0.1:${as_http[1]}/v1/kv/acl-test?raw") == acl ]] ||
  fail "the client's write with the management token did not reach the servers"
stop_agent aclient "$aclient_pid"
for i in 3 2 1; do
  stop_agent "aserver$i" "${as_pid[i]}"
done
echo ok

# ---------------------------------------------------------------------------
step "8. uninstall"
run_install 0 --prefix "$server" --no-systemctl --uninstall
output_has "removed    $server/etc/systemd/system/weft.service"
for gone in "$server/usr/local/bin/weft" "$server/etc/systemd/system/weft.service" "$server/etc/weft.d"; do
  [[ ! -e $gone ]] || fail "--uninstall left $gone"
done
[[ -n $(find "$server/var/lib/weft" -mindepth 1) ]] || fail "--uninstall removed the data dir's contents"
run_install 0 --prefix "$server" --no-systemctl --uninstall
output_has "Nothing to remove"
run_install 0 --prefix "$client" --no-systemctl --uninstall --purge
[[ ! -e $client/var/lib/weft ]] || fail "--purge left $client/var/lib/weft"
[[ ! -e $client/etc/weft.d ]] || fail "--uninstall left $client/etc/weft.d"
echo ok

# ---------------------------------------------------------------------------
step "9. the real paths, the weft user and systemctl, in a private mount namespace"
if [[ $EUID -ne 0 ]] || ! command -v unshare >/dev/null || ! unshare -m --propagation private true 2>/dev/null; then
  skip "steps 1-8 passed; step 9 needs root and unshare -m (Debian package: util-linux)"
fi
cat >"$work/namespace.sh" <<'NAMESPACE'
set -euo pipefail
install=$1 weft=$2 ns=$3
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# What follows mounts over /etc: never outside a mount namespace of its own.
[[ $(readlink /proc/self/ns/mnt) != "$(readlink /proc/1/ns/mnt)" ]] || fail "not in a private mount namespace"
# Private copies of what install.sh changes; the host's stay untouched.
mkdir -p "$ns/etc" "$ns/bin" "$ns/state"
mount -t tmpfs tmpfs "$ns/etc"
cp -a /etc/. "$ns/etc/"
mount --bind "$ns/etc" /etc
mount -t tmpfs tmpfs /usr/local/bin
mount -t tmpfs tmpfs /var/lib

# A systemctl that records its calls and keeps the unit's state in files.
cat >"$ns/bin/systemctl" <<'STUB'
#!/usr/bin/env bash
echo "$*" >>"$STUB_DIR/calls"
cd "$STUB_DIR/state"
case $1 in
is-enabled) [[ -e enabled ]] ;;
is-active) [[ -e active ]] ;;
cat) [[ -e /etc/systemd/system/$2 ]] ;;
enable) touch enabled && if [[ $2 == --now ]]; then touch active; fi ;;
disable) rm -f enabled && if [[ $2 == --now ]]; then rm -f active; fi ;;
start | restart) touch active ;;
esac
STUB
chmod +x "$ns/bin/systemctl"
export PATH=$ns/bin:$PATH STUB_DIR=$ns

run() {
  : >"$ns/calls"
  "$install" "$@" >"$ns/out" 2>&1 || fail "install.sh $* failed: $(cat "$ns/out")"
}
called() { grep -qx -- "$1" "$ns/calls" || fail "install.sh did not run systemctl $1; it ran: $(cat "$ns/calls")"; }
not_called() { ! grep -q -- "^$1" "$ns/calls" || fail "install.sh ran systemctl $1; it ran: $(cat "$ns/calls")"; }
owned() {
  local actual
  actual=$(stat -c '%a %U:%G' -- "$1")
  [[ $actual == "$2" ]] || fail "$1 is $actual, not $2"
}

# A server on a network IP: with its TLS files, made by `weft tls`.
mkdir "$ns/certs"
(cd "$ns/certs" && "$weft" tls ca create && "$weft" tls cert create -server && "$weft" tls cert create -server) \
  >"$ns/tls.out" 2>&1 || fail "weft tls failed: $(cat "$ns/tls.out")"
# tls_files N: the options for the CA and server certificate N, in $tls.
tls_files() {
  tls=(--ca-file "$ns/certs/weft-agent-ca.pem"
    --cert-file "$ns/certs/dc1-server-weft-$1.pem" --key-file "$ns/certs/dc1-server-weft-$1-key.pem")
}
tls_files 0
run --binary "$weft" --server --join 10.0.0.1 --join 10.0.0.2 --join 10.0.0.3 --bind 10.0.0.1 "${tls[@]}"
getent passwd weft | grep -q ':/usr/sbin/nologin$' || fail "no system user weft without a login shell"
owned /etc/weft.d "750 root:weft"
owned /etc/weft.d/weft.hcl "640 root:weft"
owned /var/lib/weft "750 weft:weft"
owned /usr/local/bin/weft "755 root:root"
owned /etc/systemd/system/weft.service "644 root:root"
# The TLS files: certificates for all, the key a secret (root:weft, 0640).
owned /etc/weft.d/tls "750 root:weft"
owned /etc/weft.d/tls/ca.pem "644 root:weft"
owned /etc/weft.d/tls/server.pem "644 root:weft"
owned /etc/weft.d/tls/server-key.pem "640 root:weft"
owned /etc/weft.d/weft.tls.hcl "640 root:weft"
grep -qx 'bootstrap_expect = 3' /etc/weft.d/weft.hcl || fail "a server's default bootstrap_expect is not 3"
cmp -s "$(dirname "$install")/../systemd/weft.service" /etc/systemd/system/weft.service ||
  fail "without --prefix, the unit is not installed as shipped"
called daemon-reload
called "enable --now weft.service"

run --binary "$weft"
grep -q "Nothing changed" "$ns/out" || fail "the second run changed something: $(cat "$ns/out")"
not_called daemon-reload
not_called enable
not_called restart

# A new certificate and key restart the server; the same again change
# nothing.
tls_files 1
run --binary "$weft" "${tls[@]}"
owned /etc/weft.d/tls/server-key.pem "640 root:weft"
cmp -s "$ns/certs/dc1-server-weft-1-key.pem" /etc/weft.d/tls/server-key.pem || fail "the new key is not installed"
called "restart weft.service"
run --binary "$weft" "${tls[@]}"
grep -q "Nothing changed" "$ns/out" || fail "the same TLS files again changed something: $(cat "$ns/out")"
not_called restart

# An upgrade restarts the agent on the new binary.
cp "$weft" "$ns/weft-next" && printf '\n' >>"$ns/weft-next"
run --binary "$ns/weft-next"
called "restart weft.service"
not_called daemon-reload

# --acl: the acl block and a generated management token in the secrets file
# (root:weft, 0640, which the agent reads), the token alone for root
# (0600); the agent restarts with them; a rerun changes nothing.
run --binary "$ns/weft-next" --acl
owned /etc/weft.d/weft.secrets.hcl "640 root:weft"
owned /etc/weft.d/management-token "600 root:root"
grep -qxF "    initial_management = \"$(</etc/weft.d/management-token)\"" /etc/weft.d/weft.secrets.hcl ||
  fail "the management token is not the one in weft.secrets.hcl"
called "restart weft.service"
run --binary "$ns/weft-next" --acl
grep -q "Nothing changed" "$ns/out" || fail "a rerun with --acl changed something: $(cat "$ns/out")"
not_called restart

run --uninstall
called "disable --now weft.service"
called daemon-reload
for gone in /etc/systemd/system/weft.service /usr/local/bin/weft /etc/weft.d; do
  [[ ! -e $gone ]] || fail "--uninstall left $gone"
done
[[ -d /var/lib/weft ]] || fail "--uninstall removed the data dir"
NAMESPACE
mkdir "$work/namespace"
unshare -m --propagation private bash "$work/namespace.sh" "$install" "$weft" "$work/namespace" ||
  fail "the install with systemctl failed (see above)"
echo ok

echo "install.sh checks passed"
