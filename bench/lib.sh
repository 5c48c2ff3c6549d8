# lib.sh: what the benchmark scripts share, sourced (not run) by every
# bench/*.sh: logging, starting and stopping processes (with a cleanup on
# exit, failure and Ctrl-C), port checks, waiting for things, the CPU
# accounting around a load run, and the small number formatting of the
# tables. See bench/README.md.
#
# The sourcing script sets, before sourcing:
#   LOG_TAG       the prefix of its log lines (e.g. "chain")
#   TMP_CONTENTS  optional: what its temp dir holds, for the line saying it
#                 was kept (default "logs and configs")
# and may use these globals, which cleanup() looks at:
#   TMP           the run's temp dir (set by make_tmp; removed on exit unless KEEP_TMP=1)
#   PIDS          every process started (start_process appends), stopped last
#   STOP_FIRST    processes stopped before the others (load tools, client agents)
#   SIDECAR_PIDS  sidecar proxies the Weft agents started (stopped after the
#                 agents, which normally stop them themselves)
# shellcheck shell=bash

PIDS=()
STOP_FIRST=()
SIDECAR_PIDS=()
LOAD_PID=""
TMP=""
LEADER=""
KEEP_TMP="${KEEP_TMP:-0}"

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Stops the given processes: TERM, up to 10 s for a clean shutdown, then KILL.
stop_pids() {
	local pid alive _
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 1 100); do
		alive=0
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}

cleanup() {
	local status=$? pid what="process(es)"
	local -A stopping=()
	trap - EXIT
	trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short
	[[ -n $LOAD_PID ]] && stop_pids "$LOAD_PID"
	for pid in "${STOP_FIRST[@]}" "${PIDS[@]}"; do stopping[$pid]=1; done # a PID may be in both
	((${#SIDECAR_PIDS[@]} == 0)) || what+=" and the sidecars"
	if ((${#stopping[@]} > 0)); then
		log "stopping ${#stopping[@]} $what"
		((${#STOP_FIRST[@]} > 0)) && stop_pids "${STOP_FIRST[@]}"
		((${#PIDS[@]} > 0)) && stop_pids "${PIDS[@]}"
		# The agents stop their sidecars; any left (an agent killed) go by their PIDs.
		((${#SIDECAR_PIDS[@]} > 0)) && stop_pids "${SIDECAR_PIDS[@]}"
		wait 2>/dev/null || true
	fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ $KEEP_TMP == 1 ]]; then
			log "kept $TMP (${TMP_CONTENTS:-logs and configs})"
		else
			rm -rf -- "$TMP"
		fi
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Whole seconds of "10s" or "10"; fails on anything else.
duration_secs() {
	if [[ $1 =~ ^([0-9]+)s?$ ]]; then
		echo "${BASH_REMATCH[1]}"
	else
		return 1
	fi
}

need_positive() { # knob-name...
	local knob
	for knob in "$@"; do
		[[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob must be a positive number, not '${!knob}'"
	done
}

need_number() { # knob what (e.g. "a number of bytes")
	[[ ${!1} =~ ^[0-9]+$ ]] || die "$1 must be $2, not '${!1}'"
}

need_tools() { # command...
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || die "$tool is required"
	done
}

# Taken: something accepts TCP there, or (with ss) holds the UDP port.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
	command -v ss >/dev/null && [[ -n $(ss -Hlun "sport = :$1" 2>/dev/null) ]]
}

check_ports_free() {
	local port
	for port in "$@"; do
		port_in_use "$port" && die "port 127.0.0.1:$port is already in use (a previous run still going?); free it first"
	done
	return 0
}

# Raises the open-files limit, which every process started afterwards
# inherits, to at least `need`; dies if the hard limit is lower.
raise_fd_limit() { # need why (e.g. "HOLD=1000")
	local hard
	(($(ulimit -n) < $1)) || return 0
	hard=$(ulimit -Hn)
	if [[ $hard != unlimited ]] && ((hard < $1)); then
		die "$2 needs $1 open files, but the hard limit (ulimit -Hn) is $hard"
	fi
	ulimit -n "$1" || die "could not raise the open-files limit to $1"
}

# Makes the run's temp dir ($TMP) under $TMPDIR.
make_tmp() { # name
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/weft-$1.XXXXXX")
	log "temp dir $TMP"
}

# Copies the binaries named by the given variables into $TMP/bin and points
# the variables at the copies, so a rebuild of target/release during the run
# changes nothing (an agent starts its sidecars from its own executable's path).
copy_binaries() { # variable-name...
	local var copy
	mkdir -p "$TMP/bin"
	for var in "$@"; do
		copy="$TMP/bin/$(basename -- "${!var}")"
		[[ -e $copy ]] && copy="$TMP/bin/$var-$(basename -- "${!var}")"
		cp -- "${!var}" "$copy" || die "could not copy ${!var} to $copy"
		printf -v "$var" '%s' "$copy"
	done
	log "using copies of the binaries in $TMP/bin"
}

# Starts a process in the background, logging to $TMP/<name>.log; sets STARTED_PID.
start_process() {
	local name=$1
	shift
	"$@" >"$TMP/$name.log" 2>&1 &
	STARTED_PID=$!
	PIDS+=("$STARTED_PID")
}

show_log() {
	log "last lines of $1.log:"
	tail -n 20 "$TMP/$1.log" >&2 || true
}

# Waits (up to WAIT_SECS) until `command...` succeeds, checking that the
# process `pid` (named `name`) is still running; dies with `what` otherwise.
wait_until() { # what name pid command...
	local what=$1 name=$2 pid=$3 deadline=$((SECONDS + WAIT_SECS))
	shift 3
	until "$@"; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			show_log "$name"
			die "$name exited while waiting for $what"
		fi
		if ((SECONDS >= deadline)); then
			show_log "$name"
			die "no $what after ${WAIT_SECS}s"
		fi
		sleep 0.5
	done
}

# Waits (up to WAIT_SECS in all) until `command... <i>` succeeds for every
# index i of the processes `pids` (named `names`, their logs
# $TMP/<name>.log), checking them all on each pass; dies with
# "<kind> <name> exited during startup" if one exits, or "<what> after
# <WAIT_SECS>s" at the deadline, with the last lines of the logs.
wait_all() { # kind what "names" "pids" command...
	local kind=$1 what=$2 deadline=$((SECONDS + WAIT_SECS)) i ready
	local -a names procs
	read -r -a names <<<"$3"
	read -r -a procs <<<"$4"
	shift 4
	while :; do
		ready=0
		for i in "${!procs[@]}"; do
			if ! kill -0 "${procs[i]}" 2>/dev/null; then
				show_log "${names[i]}"
				die "$kind ${names[i]} exited during startup"
			fi
			"$@" "$i" && ready=$((ready + 1))
		done
		((ready == ${#procs[@]})) && return 0
		if ((SECONDS >= deadline)); then
			for i in "${!names[@]}"; do show_log "${names[i]}"; done
			die "$what after ${WAIT_SECS}s"
		fi
		sleep 0.5
	done
}

# True when GET http://127.0.0.1:<port>/ answers 200 with a BODY_SIZE-byte body.
answers() {
	[[ $(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null) == "200 $BODY_SIZE" ]]
}

# True when the Weft agent at 127.0.0.1:<port> knows a leader; LEADER is its
# answer (the leader's address, quoted).
has_leader() {
	LEADER=$(curl -s --max-time 2 "http://127.0.0.1:$1/v1/status/leader" 2>/dev/null || true)
	[[ $LEADER =~ ^\"[^\"]+\"$ ]]
}

# PUT to a Weft agent's HTTP API (127.0.0.1:<port>); dies unless it answers 200.
api_put_to() { # port path body
	local code
	code=$(curl -s -o "$TMP/put.out" -w '%{http_code}' --max-time 10 -X PUT --data "$3" "http://127.0.0.1:$1$2") || code=000
	[[ $code == 200 ]] || die "PUT 127.0.0.1:$1$2: HTTP $code: $(cat "$TMP/put.out" 2>/dev/null)"
}

# The PID of the sidecar the agent at 127.0.0.1:<port> runs for service
# instance `id`, if exactly one.
sidecar_pid() { # id agent-http-port
	local found
	found=$(pgrep -f -- "sidecar-for $1 --http-addr 127.0.0.1:$2( |\$)" || true)
	[[ -n $found && $found != *$'\n'* ]] && echo "$found"
}

# ------------------------------------------------------------------ ACLs ----
# What raft-kv.sh and dns.sh share for their ACL targets (issue 14): Weft
# with `acl { enabled = true default_policy = "deny" }`, and a token that
# holds ACL_POLICIES policies, of which one grants what the benchmark needs
# and the others unrelated things, so that resolving the token merges them
# all. Tokens go in curl's headers from files ($TMP/*.header, mode 600), so
# no secret shows in the process list.

ACL_POLICIES=50

# Writes the acl block of a Weft agent with ACLs on and default deny; a
# server's also names the management token it makes at start.
write_acl_config() { # file [initial-management-secret]
	{
		printf 'acl {\n  enabled        = true\n  default_policy = "deny"\n'
		(($# > 1)) && printf '  tokens {\n    initial_management = "%s"\n  }\n' "$2"
		printf '}\n'
	} >"$1"
}

# Makes a fresh secret (a UUID, as Consul's) and keeps it in <name>.token
# and, as a request header, in <name>.header (both in $TMP, mode 600); sets
# SECRET. The token itself is made elsewhere (the servers' config, or
# make_bench_token).
new_secret() { # name
	SECRET=$(cat /proc/sys/kernel/random/uuid) || die "no UUID from /proc/sys/kernel/random/uuid"
	keep_secret "$1" "$SECRET"
}
keep_secret() { # name secret
	(
		umask 077
		printf '%s\n' "$2" >"$TMP/$1.token"
		printf 'X-Consul-Token: %s\n' "$2" >"$TMP/$1.header"
	)
}

# A request to the Weft agent at 127.0.0.1:<port> with the token whose
# header is $TMP/<token-name>.header; the answer's body goes to
# $TMP/acl.out. Dies unless it answers 200.
acl_call() { # port token-name method path [JSON body]
	local code args=(-s -o "$TMP/acl.out" -w '%{http_code}' --max-time 10 -H "@$TMP/$2.header" -X "$3")
	(($# > 4)) && args+=(--data "$5")
	code=$(curl "${args[@]}" "http://127.0.0.1:$1$4") || code=000
	[[ $code == 200 ]] || die "$3 127.0.0.1:$1$4 (token $2): HTTP $code: $(cat "$TMP/acl.out" 2>/dev/null)"
}

# True when the agent at 127.0.0.1:<port> resolves the token (its copy of
# the ACL tables holds it): `GET /v1/acl/token/self` answers 200.
resolves_token() { # token-name port
	[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "@$TMP/$1.header" \
		"http://127.0.0.1:$2/v1/acl/token/self" 2>/dev/null) == 200 ]]
}

# A string as a JSON string literal (quotes, backslashes and newlines escaped).
json_string() {
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "${s//$'\n'/\\n}"
}

# The rules of unrelated policy i (0-based): keys, services, nodes and
# sessions of other teams, exact names and prefixes, none of which the
# benchmarks' keys (bench-c*, rss/) or names (svc-NNNN, node-NNNN, the
# agents') fall under.
unrelated_rules() { # i
	local n
	n=$(printf '%02d' "$1")
	case $(($1 % 4)) in
		0) printf 'key_prefix "team-%s/" { policy = "read" }\nkey "config/team-%s" { policy = "write" }' "$n" "$n" ;;
		1) printf 'service "app-%s" { policy = "write" }\nservice "app-%s-sidecar-proxy" { policy = "write" }' "$n" "$n" ;;
		2) printf 'service_prefix "batch-%s-" { policy = "read" }\nnode_prefix "worker-%s-" { policy = "read" }' "$n" "$n" ;;
		3) printf 'node "host-%s" { policy = "write" }\nsession_prefix "host-%s" { policy = "write" }' "$n" "$n" ;;
	esac
}

# Through the agent at 127.0.0.1:<port>, as the management token (token
# name `management`): makes ACL_POLICIES - 1 unrelated policies
# (<name>-unrelated-NN) and one, <name>-grant, with the rules `grant`,
# then a token holding all of them, kept as the token named <name>
# (keep_secret). Dies unless the token lists all ACL_POLICIES policies.
make_bench_token() { # port name grant
	local port=$1 name=$2 i policies="" listed secret
	for ((i = 0; i < ACL_POLICIES - 1; i++)); do
		acl_call "$port" management PUT /v1/acl/policy \
			"{\"Name\":\"$name-unrelated-$(printf '%02d' "$i")\",\"Rules\":$(json_string "$(unrelated_rules "$i")")}"
		policies+="{\"Name\":\"$name-unrelated-$(printf '%02d' "$i")\"},"
	done
	acl_call "$port" management PUT /v1/acl/policy "{\"Name\":\"$name-grant\",\"Rules\":$(json_string "$3")}"
	policies+="{\"Name\":\"$name-grant\"}"
	acl_call "$port" management PUT /v1/acl/token \
		"{\"Description\":\"$name: $ACL_POLICIES policies\",\"Policies\":[$policies]}"
	secret=$(sed -nE 's/.*"SecretID" *: *"([^"]+)".*/\1/p' "$TMP/acl.out")
	[[ -n $secret ]] || die "PUT /v1/acl/token answered no SecretID: $(cat "$TMP/acl.out")"
	listed=$(grep -oE "\"Name\" *: *\"$name-(unrelated-[0-9]+|grant)\"" "$TMP/acl.out" | sort -u | wc -l)
	((listed == ACL_POLICIES)) || die "the $name token lists $listed of its $ACL_POLICIES policies: $(cat "$TMP/acl.out")"
	keep_secret "$name" "$secret"
}

# True when a KV write without a token is refused (403) by the agent at
# 127.0.0.1:<port>: ACLs are on and deny by default.
denies_anonymous_write() { # port
	[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT --data x \
		"http://127.0.0.1:$1/v1/kv/bench-acl-check") == 403 ]]
}

# ------------------------------------------- one Weft server and its mesh ----
# What chain.sh and mesh.sh both set up: the backend, one Weft server and
# services with sidecars that web reaches through its upstream listeners.
# These use, from the sourcing script: ROOT, BUILD, WEFT, HTTP_BACKEND,
# WEFT_RPC, WEFT_HTTP, WEFT_DNS, BACKEND_PORT, BODY_SIZE, WAIT_SECS; they set
# BACKEND_PID, WEFT_PID, SIDECAR_OF and SIDECAR_PIDS.

has_bench() { [[ " $BENCHES " == *" $1 "* ]]; }
weft_cli() { "$WEFT" "$@" --http-addr "127.0.0.1:$WEFT_HTTP"; }
api_put() { api_put_to "$WEFT_HTTP" "$@"; }
api_get() { curl -sf --max-time 10 "http://127.0.0.1:$WEFT_HTTP$1"; }

# Knobs that must be whole seconds ("10s" or "10"); need_positive_secs also
# rules out 0s (a run of no measured time).
need_secs() { # knob...
	local knob
	for knob in "$@"; do
		duration_secs "${!knob}" >/dev/null || die "$knob must be whole seconds (e.g. 10s), not '${!knob}'"
	done
}
need_positive_secs() { # knob...
	local knob
	need_secs "$@"
	for knob in "$@"; do
		(($(duration_secs "${!knob}") > 0)) || die "$knob must be more than 0s"
	done
}

# Builds weft and the bench tools (release) unless BUILD=0, then checks
# that the given binaries are there either way.
build_binaries() { # binary...
	local bin
	if [[ $BUILD != 0 ]]; then
		log "building: cargo build --release -p weft-cli -p weft-bench"
		(cd "$ROOT" && cargo build --release -p weft-cli -p weft-bench) || die "cargo build failed"
	fi
	for bin in "$@"; do
		[[ -x $bin ]] || die "$bin not found (build it: cargo build --release -p weft-cli -p weft-bench)"
	done
}

# Starts http-backend at 127.0.0.1:$BACKEND_PORT (BODY_SIZE-byte answers)
# and waits until it answers; sets BACKEND_PID.
start_backend() {
	start_process backend "$HTTP_BACKEND" --listen "127.0.0.1:$BACKEND_PORT" --body-size "$BODY_SIZE"
	BACKEND_PID=$STARTED_PID
	wait_until "answer from the backend" backend "$BACKEND_PID" answers "$BACKEND_PORT"
}

# True when the Weft agent has a mesh CA root to sign the sidecars' leaves with.
has_ca() { [[ $(api_get /v1/agent/connect/ca/roots 2>/dev/null) == *'"RootCert":"-----BEGIN'* ]]; }

# Starts one Weft server, node `node`. --bootstrap-expect 1 makes it the
# leader on its own, and intentions deny by default, as in production.
# Waits until it leads and has a CA root (no sidecar can start before);
# sets WEFT_PID.
start_weft_server() { # node
	start_process weft "$WEFT" agent --server --node "$1" --data-dir "$TMP/weft" --bootstrap-expect 1 \
		--rpc-addr "127.0.0.1:$WEFT_RPC" --http-addr "127.0.0.1:$WEFT_HTTP" --dns-addr "127.0.0.1:$WEFT_DNS"
	WEFT_PID=$STARTED_PID
	log "started a Weft server (pid $WEFT_PID); waiting for it to lead (up to ${WAIT_SECS}s)"
	wait_until "Weft leader" weft "$WEFT_PID" has_leader "$WEFT_HTTP"
	wait_until "mesh CA root" weft "$WEFT_PID" has_ca
}

# Writes config entries (JSON or HCL files), in the order given: an entry
# naming another (a router naming a resolver's subsets) must come after it.
write_config_entries() { # file...
	local file
	for file in "$@"; do
		weft_cli config write "$file" >"$TMP/cli.out" 2>&1 || die "weft config write $file: $(cat "$TMP/cli.out")"
	done
}

# Registers an instance of service `name` that the backend serves, with a
# sidecar at 127.0.0.1:<sidecar-port>; `fields` (JSON members, e.g. an ID
# and Meta) go into the registration as they are.
register_backend_service() { # name sidecar-port [fields]
	api_put /v1/agent/service/register \
		"{\"Name\":\"$1\",\"Port\":$BACKEND_PORT,${3:+$3,}\"Connect\":{\"SidecarService\":{\"Port\":$2}}}"
}

# Registers web with a sidecar at 127.0.0.1:<sidecar-port> and, for each
# `destination=local-port`, an upstream listener at 127.0.0.1:<local-port>.
# web itself is the load generator: nothing listens on its own `port`.
register_web() { # port sidecar-port destination=local-port...
	local port=$1 sidecar=$2 upstream upstreams=""
	shift 2
	for upstream in "$@"; do
		upstreams+="${upstreams:+,}{\"DestinationName\":\"${upstream%%=*}\",\"LocalBindPort\":${upstream#*=}}"
	done
	api_put /v1/agent/service/register \
		"{\"Name\":\"web\",\"Port\":$port,\"Connect\":{\"SidecarService\":{\"Port\":$sidecar,\"Proxy\":{\"Upstreams\":[$upstreams]}}}}"
}

# Allows `source` to reach each destination (the server denies by default).
allow_intentions() { # source destination...
	local source=$1 destination
	shift
	for destination in "$@"; do
		weft_cli intention create --allow "$source" "$destination" >"$TMP/cli.out" 2>&1 ||
			die "weft intention create --allow $source $destination: $(cat "$TMP/cli.out")"
	done
}

# The sidecars' PIDs by the service instance they are for (wait_for_mesh).
declare -A SIDECAR_OF=()
SIDECAR_IDS=()

# True when the agent runs exactly one sidecar for each of SIDECAR_IDS;
# sets SIDECAR_OF.
sidecars_found() {
	local id pid
	for id in "${SIDECAR_IDS[@]}"; do
		pid=$(sidecar_pid "$id" "$WEFT_HTTP") || return 1
		SIDECAR_OF[$id]=$pid
	done
}

# True when each sidecar is still the process wait_for_mesh found (none
# was restarted meanwhile).
sidecars_unchanged() {
	local id
	for id in "${SIDECAR_IDS[@]}"; do
		[[ $(sidecar_pid "$id" "$WEFT_HTTP" || true) == "${SIDECAR_OF[$id]}" ]] || return 1
	done
}

# Waits (up to WAIT_SECS for each step) until the agent runs a sidecar for
# each service instance in `ids` and an answer comes through each of web's
# upstream listeners (`destination=local-port`, as for register_web), then
# looks the sidecars up again: a restart meanwhile would have changed them.
# Sets SIDECAR_OF and SIDECAR_PIDS (in the order of `ids`, for cleanup).
wait_for_mesh() { # what "ids" destination=local-port...
	local what=$1 id upstream
	read -r -a SIDECAR_IDS <<<"$2"
	shift 2
	log "waiting for the sidecars to carry traffic (up to ${WAIT_SECS}s)"
	wait_until "sidecar processes for $what" weft "$WEFT_PID" sidecars_found
	SIDECAR_PIDS=()
	for id in "${SIDECAR_IDS[@]}"; do SIDECAR_PIDS+=("${SIDECAR_OF[$id]}"); done
	for upstream in "$@"; do
		wait_until "answer through web's upstream to ${upstream%%=*}" weft "$WEFT_PID" answers "${upstream#*=}"
	done
	sidecars_found || die "the sidecars changed while starting"
	SIDECAR_PIDS=()
	for id in "${SIDECAR_IDS[@]}"; do SIDECAR_PIDS+=("${SIDECAR_OF[$id]}"); done
}

# Copies the tool's JSON lines to RESULTS, if set.
save_results() {
	if [[ -n $RESULTS && -f $TMP/results.jsonl ]]; then
		cp -- "$TMP/results.jsonl" "$RESULTS" && log "reports saved to $RESULTS"
	fi
}

# A field of a tool's one-line JSON report: a number, or `null`.
json_field() { sed -nE "s/.*\"$2\":(null|[-0-9.eE+]+).*/\1/p" <<<"$1"; }

fmt_num() { # value printf-format (a fixed format chosen by the script)
	# shellcheck disable=SC2059
	if [[ -z $1 || $1 == null || $1 == - ]]; then printf -- '-'; else LC_ALL=C printf "$2" "$1"; fi
}

# a - b, a / b ("-" unless both are numbers; a / 0 is "-").
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "null" || b == "null" || a == "-" || b == "-") print "-"; else printf "%.3f\n", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "null" || b == "null" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

# "met" / "not met" for value <op> goal ("-" without a value).
goal() { # value op goal
	if [[ -z $1 || $1 == null || $1 == - ]]; then
		printf -- '-'
	else
		awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN {
			ok = (op == "<" ? v < g : op == "<=" ? v <= g : op == ">" ? v > g : v >= g)
			print (ok ? "met" : "not met")
		}'
	fi
}

# The median of numbers on standard input, one a line ("null" without any).
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "null"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || {
		echo 0
		return
	}
	# Fields after "(comm) ": state is 1, utime 12, stime 13 (clock ticks).
	awk -v ticks="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / ticks }' <<<"${stat##*) }"
}

pids_cpu_secs() {
	local pid total=0
	for pid in "$@"; do total=$(awk -v t="$total" -v c="$(cpu_secs "$pid")" 'BEGIN { print t + c }'); done
	echo "$total"
}

# CPU seconds the whole machine has spent busy so far (all cores), from /proc/stat.
machine_busy_secs() {
	awk -v ticks="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / ticks; exit }' /proc/stat
}

# Sets CHILDREN_CPU to the CPU seconds used so far by this shell's finished
# children (`times`, line 2). Not for $(...): a subshell's children start at zero.
children_cpu() {
	times >"$TMP/times"
	CHILDREN_CPU=$(awk 'NR == 2 {
		for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] }
		printf "%.2f", n
	}' "$TMP/times")
}

# Runs `$HTTP_LOAD` in the background (so `wait` is interrupted by Ctrl-C or
# TERM and the trap stops it) under a `timeout` backstop, and keeps its JSON
# report, with the CPU seconds used meanwhile added to it, in RESULT[key]:
# proxy_cpu_s (the path's proxies: `pids`), backend_cpu_s ($BACKEND_PID),
# tool_cpu_s and others_cpu_s (the rest of the machine: other engineers'
# work, the idle Weft server...). Appends the report to $TMP/results.jsonl.
# shellcheck disable=SC2034 # RESULT is read by the sourcing script
declare -A RESULT=()
# shellcheck disable=SC2034
run_load() { # key "pids" backstop-seconds http-load-arguments...
	local key=$1 pids=$2 secs=$3 rc=0 proxy0 proxy1 backend0 backend1 busy0 busy1 tool0 tool1 out cpu
	shift 3
	# shellcheck disable=SC2086 # `pids` is a list
	proxy0=$(pids_cpu_secs $pids)
	children_cpu
	backend0=$(cpu_secs "$BACKEND_PID") busy0=$(machine_busy_secs) tool0=$CHILDREN_CPU
	timeout -k 5 "$secs" "$HTTP_LOAD" "$@" --label "$key" --format json >"$TMP/load.out" 2>"$TMP/load.err" &
	LOAD_PID=$!
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=""
	# shellcheck disable=SC2086
	proxy1=$(pids_cpu_secs $pids)
	children_cpu
	backend1=$(cpu_secs "$BACKEND_PID") busy1=$(machine_busy_secs) tool1=$CHILDREN_CPU
	if ((rc != 0)); then
		log "http-load ($key) exited with $rc:"
		sed 's/^/    /' "$TMP/load.err" >&2
	elif [[ -s $TMP/load.err ]]; then
		log "http-load ($key) said:"
		sed 's/^/    /' "$TMP/load.err" >&2
	fi
	out=$(grep '^{' "$TMP/load.out" || true)
	[[ -n $out ]] && printf '%s\n' "$out" >>"$TMP/results.jsonl"
	cpu=$(awk -v p0="$proxy0" -v p1="$proxy1" -v b0="$backend0" -v b1="$backend1" -v m0="$busy0" -v m1="$busy1" \
		-v t0="$tool0" -v t1="$tool1" 'BEGIN {
			p = p1 - p0; b = b1 - b0; t = t1 - t0; o = (m1 - m0) - p - b - t
			printf "\"proxy_cpu_s\":%.2f,\"backend_cpu_s\":%.2f,\"tool_cpu_s\":%.2f,\"others_cpu_s\":%.2f", p, b, t, (o < 0 ? 0 : o)
		}')
	RESULT[$key]="$(sed -E "\$s/\\}\$/,$cpu}/" <<<"$out")"
}

# Over the rounds (1..ROUNDS) of the reports RESULT["<bench>/<path>/<round>"]:
# a field's values one a line, their median, largest, sum ("null" / 0
# without values), and the values on one line.
r() { json_field "${RESULT[$1]:-}" "$2"; }
round_values() { # bench/path field
	local i v
	for ((i = 1; i <= ROUNDS; i++)); do
		v=$(r "$1/$i" "$2")
		[[ -n $v && $v != null ]] && echo "$v"
	done
	return 0
}
median_of() { round_values "$1" "$2" | median; }
max_of() { round_values "$1" "$2" | sort -g | tail -n 1; }
sum_of() { round_values "$1" "$2" | awk '{ t += $1 } END { printf "%.2f", t }'; }
list_of() { round_values "$1" "$2" | awk -v f="$3" '{ printf (NR > 1 ? " " : "") f, $1 }'; }
# What a path adds to direct's `field` in each round of the rate runs
# (RESULT["rate/<path>/<round>"] minus RESULT["rate/direct/<round>"]).
added_values() { # path field
	local i
	for ((i = 1; i <= ROUNDS; i++)); do
		minus "$(r "rate/$1/$i" "$2")" "$(r "rate/direct/$i" "$2")"
	done | grep -v '^-$' || true
}
# The added p99 of each round (added_values), on one line.
added_p99_list() { added_values "$1" p99_ms | awk '{ printf (NR > 1 ? " " : "") "%.3f", $1 }'; }

# The tables of the fixed-rate and max-throughput runs, whose first column
# (the path measured) is `width` wide: the header, then one row a path with
# its medians over the rounds (max: the largest; errors, CPU: sums).
rate_table_row() { # width path req/s p50 p90 p99 max added-p50 added-p99 errors lag-p99 proxies-CPU others
	printf "%-${1}s  %8s  %7s  %7s  %7s  %7s  %9s  %9s  %6s  %8s  %11s  %7s\n" "${@:2}"
}
rate_table_header() { rate_table_row "$1" "$2" "req/s" p50 p90 p99 max "added p50" "added p99" errors "lag p99" "proxies CPU" "others"; }
rate_table_path() { # width path added-p50 added-p99 (what the path adds to direct's)
	local k="rate/$2"
	rate_table_row "$1" "$2" \
		"$(fmt_num "$(median_of "$k" per_sec)" %.1f)" "$(fmt_num "$(median_of "$k" p50_ms)" %.3f)" \
		"$(fmt_num "$(median_of "$k" p90_ms)" %.3f)" "$(fmt_num "$(median_of "$k" p99_ms)" %.3f)" \
		"$(fmt_num "$(max_of "$k" max_ms)" %.2f)" "$(fmt_num "$3" %.3f)" "$(fmt_num "$4" %.3f)" \
		"$(fmt_num "$(sum_of "$k" errors)" %.0f)" "$(fmt_num "$(median_of "$k" lag_p99_ms)" %.3f)" \
		"$(fmt_num "$(sum_of "$k" proxy_cpu_s)" %.1f)" "$(fmt_num "$(sum_of "$k" others_cpu_s)" %.1f)"
}
max_table_row() { # width path req/s vs-direct p50 p99 errors proxies-CPU per-proxy-CPU-s others
	printf "%-${1}s  %9s  %9s  %7s  %7s  %6s  %11s  %15s  %7s\n" "${@:2}"
}
max_table_header() { max_table_row "$1" "$2" "req/s" "vs direct" "p50 ms" "p99 ms" errors "proxies CPU" "per proxy CPU s" "others"; }
max_table_path() { # width path per-proxy-CPU-s (per_proxy_cpu)
	local k="max/$2"
	max_table_row "$1" "$2" \
		"$(fmt_num "$(median_of "$k" per_sec)" %.0f)" "$(ratio "$(median_of "$k" per_sec)" "$(median_of max/direct per_sec)")" \
		"$(fmt_num "$(median_of "$k" p50_ms)" %.3f)" "$(fmt_num "$(median_of "$k" p99_ms)" %.3f)" \
		"$(fmt_num "$(sum_of "$k" errors)" %.0f)" "$(fmt_num "$(sum_of "$k" proxy_cpu_s)" %.1f)" "$3" \
		"$(fmt_num "$(sum_of "$k" others_cpu_s)" %.1f)"
}

# Requests (warm-up included) per CPU second of the path's proxies, over all rounds.
per_proxy_cpu() { awk -v n="$(sum_of "$1" total_completed)" -v c="$(sum_of "$1" proxy_cpu_s)" 'BEGIN { if (c > 0) printf "%.0f", n / c; else print "-" }'; }
