#!/usr/bin/env bash
# propagation.sh: how fast a config entry change reaches every sidecar it
# affects, and whether open connections survive it.
#
# Why: a route, split or resolver change must take effect in every caller's
# sidecar within moments, without a restart and without dropping the
# connections in flight. The issue's goal: from the write to the last of 50
# sidecars applying it, p99 <= 100 ms (Istio's istiod takes up to ~1 s to
# push a change). See bench/README.md for what the figures mean and their
# caveats.
#
# The set-up: SERVERS Weft servers and N_AGENTS client agents on 127.0.0.1;
# SIDECARS services web-0 ... web-<SIDECARS-1>, spread round robin over the
# client agents, each with a sidecar whose one upstream is `api` (protocol
# http); `api`, one instance with a sidecar (on the first client agent) in
# front of `http-backend`; an intention allowing * -> api.
#
# How "applied" is seen: a sidecar logs `applying a new configuration
# leaf=<its leaf's serial> ...` when it switches to a new snapshot, with a
# UTC timestamp (tracing's default format, microseconds); the agents run
# their sidecars with the agent's own standard error, so the lines land in
# the agents' logs. The line does not name the sidecar's service, but its
# leaf serial is the sidecar's own: the script maps serial -> service with
# `weft proxy config-dump --sidecar-for web-<i>` before the rounds, so each
# line is attributed exactly. All processes share one clock.
#
# Steps: build weft and http-backend (release); copy them into the temp
# dir; start the backend, the servers and the client agents; write api's
# service-defaults (http) and the intention; register api and the web-<i>
# services; wait until every web-<i> reaches api through its sidecar and
# the logs are quiet; map the leaf serials; one warm-up round (not counted);
# then KEEPALIVE keep-alive connections through the upstreams of the first
# KEEPALIVE_SIDECARS web sidecars start sending requests (bash, on fixed
# connections: one dropped is seen as such, never silently reopened), and
# ROUNDS times: take T0, send a service-router for api (`PUT /v1/config` on
# server 1, on a connection opened before T0) whose route prefix changes
# every round, then read the agents' logs until every web sidecar has
# logged an apply at or after T0 (or APPLY_TIMEOUT); pause ROUND_GAP. Print
# every round and the percentiles over the rounds, the keep-alive
# connections' requests and failures, and whether any sidecar restarted.
# Everything started here is stopped (and the temp dir removed) on exit, on
# failure and on Ctrl-C.
#
# Environment (all optional):
#   SERVERS=1               Weft servers: 1 or 3
#   N_AGENTS=5              client agents the sidecars are spread over (1-50)
#   SIDECARS=50             web services, each with a sidecar with an upstream to api (1-200)
#   ROUNDS=20               config writes measured (after one warm-up write)
#   ROUND_GAP=1s            pause after each round (e.g. 1s, 500ms)
#   APPLY_TIMEOUT=5s        a sidecar that has not applied a write by then is missed
#   KEEPALIVE=10            keep-alive connections sending requests during the rounds (0: none)
#   KEEPALIVE_SIDECARS=3    over the upstreams of this many web sidecars (web-0, web-1, ...)
#   KEEPALIVE_INTERVAL=100ms  pause between two requests on one connection
#   BODY_SIZE=16            bytes of the backend's answers
#   WAIT_SECS=120           how long the cluster may take to start, and the mesh to carry traffic
#   BUILD=1                 0: do not run cargo, use existing binaries
#   COPY_BINARIES=1         0: run the binaries where they are, not copies in the temp dir
#   WEFT=path HTTP_BACKEND=path  binaries (default target/release/...)
#   KEEP_TMP=0              1: keep the temp dir (agent logs with the sidecars' lines, per-round files)
#   RESULTS=file            also save one JSON line per round to this file
set -Eeuo pipefail
# EPOCHREALTIME and awk must use "." as the decimal point; read -N counts bytes.
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
HTTP_BACKEND="${HTTP_BACKEND:-$TARGET_DIR/release/http-backend}"
SERVERS="${SERVERS:-1}"
N_AGENTS="${N_AGENTS:-5}"
SIDECARS="${SIDECARS:-50}"
ROUNDS="${ROUNDS:-20}"
ROUND_GAP="${ROUND_GAP:-1s}"
APPLY_TIMEOUT="${APPLY_TIMEOUT:-5s}"
KEEPALIVE="${KEEPALIVE:-10}"
KEEPALIVE_SIDECARS="${KEEPALIVE_SIDECARS:-3}"
KEEPALIVE_INTERVAL="${KEEPALIVE_INTERVAL:-100ms}"
BODY_SIZE="${BODY_SIZE:-16}"
WAIT_SECS="${WAIT_SECS:-120}"
BUILD="${BUILD:-1}"
COPY_BINARIES="${COPY_BINARIES:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS:-}"

# The issue's goal, in ms, for the last sidecar at p99.
GOAL_MS=100
# The logs are first read this long after a write, then as often, until all applied.
POLL_SECS=0.25
# The logs count as quiet after this long without a sidecar applying anything.
QUIET_SECS=2

# Loopback ports. Servers: RPC, HTTP, DNS. Client agents (no RPC
# listener): HTTP and DNS. The backend and api's sidecar. web-<i>'s
# sidecar and its upstream listener for api.
SERVER_RPC=(24300 24310 24320) SERVER_HTTP=(24500 24510 24520) SERVER_DNS=(24600 24610 24620)
AGENT_HTTP_BASE=24540 AGENT_DNS_BASE=24640
BACKEND_PORT=24700 API_SIDECAR=24701 WEB_APP_PORT=24702
WEB_SIDECAR_BASE=24800 WEB_UPSTREAM_BASE=25000

LOG_TAG=propagation
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVER_PIDS=() AGENT_PIDS=() KEEPER_PIDS=()
BACKEND_PID=""

agent_http() { echo $((AGENT_HTTP_BASE + $1)); }
agent_of_web() { echo $(($1 % N_AGENTS)); } # web-<i> is registered on client agent i mod N_AGENTS
web_upstream() { echo $((WEB_UPSTREAM_BASE + $1)); }

# Seconds (with a fraction) of "1s", "250ms", "1m" or a plain number of seconds.
to_secs() {
	if [[ $1 =~ ^([0-9]+)ms$ ]]; then
		awk -v n="${BASH_REMATCH[1]}" 'BEGIN { printf "%.3f", n / 1000 }'
	elif [[ $1 =~ ^([0-9]+)s?$ ]]; then
		echo "${BASH_REMATCH[1]}"
	elif [[ $1 =~ ^([0-9]+)m$ ]]; then
		echo $((BASH_REMATCH[1] * 60))
	else
		return 1
	fi
}

# Sleeps without a process: a read that times out on a FIFO nobody writes to.
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }

# ---------------------------------------------------------------- checks ----

need_positive ROUNDS N_AGENTS SIDECARS KEEPALIVE_SIDECARS BODY_SIZE
[[ $SERVERS == 1 || $SERVERS == 3 ]] || die "SERVERS must be 1 or 3, not '$SERVERS'"
((N_AGENTS <= 50)) || die "N_AGENTS must be at most 50, not $N_AGENTS"
((SIDECARS <= 200)) || die "SIDECARS must be at most 200, not $SIDECARS"
[[ $KEEPALIVE =~ ^[0-9]+$ ]] || die "KEEPALIVE must be a number, not '$KEEPALIVE'"
((KEEPALIVE_SIDECARS <= SIDECARS)) || die "KEEPALIVE_SIDECARS ($KEEPALIVE_SIDECARS) must be at most SIDECARS ($SIDECARS)"
[[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "WAIT_SECS must be a number of seconds, not '$WAIT_SECS'"
for knob in ROUND_GAP APPLY_TIMEOUT KEEPALIVE_INTERVAL; do
	to_secs "${!knob}" >/dev/null || die "$knob must look like 1s, 500ms or 1m, not '${!knob}'"
done
ROUND_GAP_S=$(to_secs "$ROUND_GAP") APPLY_TIMEOUT_S=$(to_secs "$APPLY_TIMEOUT")
KEEPALIVE_INTERVAL_S=$(to_secs "$KEEPALIVE_INTERVAL")
awk -v t="$APPLY_TIMEOUT_S" 'BEGIN { exit !(t > 0) }' || die "APPLY_TIMEOUT must be more than 0"
need_tools curl awk sed grep pgrep stat mkfifo getconf

# 2 per sidecar, the agents' and the keep-alive connections: well within
# the usual 1,024, but say so if the limit is lower still.
need_fds=$((SIDECARS * 4 + 256))
if (($(ulimit -n) < need_fds)); then
	ulimit -n "$need_fds" 2>/dev/null || die "SIDECARS=$SIDECARS needs $need_fds open files; raise ulimit -n"
fi

# ----------------------------------------------------------------- build ----

if [[ $BUILD != 0 ]]; then
	log "building: cargo build --release -p weft-cli -p weft-bench"
	(cd "$ROOT" && cargo build --release -p weft-cli -p weft-bench) || die "cargo build failed"
fi
for bin in "$WEFT" "$HTTP_BACKEND"; do
	[[ -x $bin ]] || die "$bin not found (build it: cargo build --release -p weft-cli -p weft-bench)"
done

make_tmp propagation
[[ $COPY_BINARIES == 0 ]] || copy_binaries WEFT HTTP_BACKEND
mkfifo "$TMP/nap.fifo"
exec {NAP_FD}<>"$TMP/nap.fifo"

# -------------------------------------------------------------- cluster ----

ports=("$BACKEND_PORT" "$API_SIDECAR")
for ((s = 0; s < SERVERS; s++)); do ports+=("${SERVER_RPC[s]}" "${SERVER_HTTP[s]}" "${SERVER_DNS[s]}"); done
for ((a = 0; a < N_AGENTS; a++)); do ports+=("$(agent_http "$a")" $((AGENT_DNS_BASE + a))); done
for ((i = 0; i < SIDECARS; i++)); do ports+=($((WEB_SIDECAR_BASE + i)) "$(web_upstream "$i")"); done
check_ports_free "${ports[@]}"

start_process backend "$HTTP_BACKEND" --listen "127.0.0.1:$BACKEND_PORT" --body-size "$BODY_SIZE"
BACKEND_PID=$STARTED_PID
wait_until "answer from the backend" backend "$BACKEND_PID" answers "$BACKEND_PORT"

# The agents' standard error carries their sidecars' lines: no colours, so
# they parse as plain text (the parser strips them anyway).
export NO_COLOR=1
joins=()
for ((s = 0; s < SERVERS; s++)); do joins+=(--retry-join "127.0.0.1:${SERVER_RPC[s]}"); done
for ((s = 0; s < SERVERS; s++)); do
	start_process "s$((s + 1))" "$WEFT" agent --server --node "s$((s + 1))" --data-dir "$TMP/s$((s + 1))" \
		--bootstrap-expect "$SERVERS" "${joins[@]}" --rpc-addr "127.0.0.1:${SERVER_RPC[s]}" \
		--http-addr "127.0.0.1:${SERVER_HTTP[s]}" --dns-addr "127.0.0.1:${SERVER_DNS[s]}"
	SERVER_PIDS+=("$STARTED_PID")
done
log "started $SERVERS Weft server(s) (pids ${SERVER_PIDS[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
for ((s = 0; s < SERVERS; s++)); do
	wait_until "leader known to s$((s + 1))" "s$((s + 1))" "${SERVER_PIDS[s]}" has_leader "${SERVER_HTTP[s]}"
done
WRITE_PORT=${SERVER_HTTP[0]}
has_ca() { [[ $(curl -sf --max-time 10 "http://127.0.0.1:$WRITE_PORT/v1/agent/connect/ca/roots" 2>/dev/null) == *'"RootCert":"-----BEGIN'* ]]; }
wait_until "mesh CA root" s1 "${SERVER_PIDS[0]}" has_ca

for ((a = 0; a < N_AGENTS; a++)); do
	start_process "c$a" "$WEFT" agent --node "c$a" --data-dir "$TMP/c$a" "${joins[@]}" \
		--http-addr "127.0.0.1:$(agent_http "$a")" --dns-addr "127.0.0.1:$((AGENT_DNS_BASE + a))"
	AGENT_PIDS+=("$STARTED_PID")
done
# Client agents leave before the servers stop.
STOP_FIRST=("${AGENT_PIDS[@]}")
agent_joined() { # agent-index: it sees the servers' state (its own node in the catalog)
	[[ $(curl -s --max-time 2 "http://127.0.0.1:$(agent_http "$1")/v1/catalog/node/c$1" 2>/dev/null) == *'"Node":'* ]]
}
for ((a = 0; a < N_AGENTS; a++)); do
	wait_until "client agent c$a in the catalog" "c$a" "${AGENT_PIDS[a]}" agent_joined "$a"
done
log "client agents: ${AGENT_PIDS[*]}"

# -------------------------------------------------------- registrations ----

api_put_to "$WRITE_PORT" /v1/config '{"Kind":"service-defaults","Name":"api","Protocol":"http"}'
"$WEFT" intention create --allow '*' api --http-addr "127.0.0.1:$WRITE_PORT" >"$TMP/cli.out" 2>&1 ||
	die "weft intention create --allow '*' api: $(cat "$TMP/cli.out")"
api_put_to "$(agent_http 0)" /v1/agent/service/register \
	"{\"Name\":\"api\",\"Port\":$BACKEND_PORT,\"Connect\":{\"SidecarService\":{\"Port\":$API_SIDECAR}}}"
for ((i = 0; i < SIDECARS; i++)); do
	# web-<i> itself is not running: nothing listens on its own port.
	api_put_to "$(agent_http "$(agent_of_web "$i")")" /v1/agent/service/register \
		"{\"Name\":\"web-$i\",\"Port\":$WEB_APP_PORT,\"Connect\":{\"SidecarService\":{\"Port\":$((WEB_SIDECAR_BASE + i)),
		\"Proxy\":{\"Upstreams\":[{\"DestinationName\":\"api\",\"LocalBindPort\":$(web_upstream "$i")}]}}}}"
done
log "registered api and $SIDECARS web services; waiting for every sidecar to reach api (up to ${WAIT_SECS}s each)"

# Sets SIDECARS_FOUND to the PIDs of api's sidecar and web-0's, web-1's...;
# fails unless each has exactly one.
all_sidecar_pids() {
	local i pid
	SIDECARS_FOUND=()
	pid=$(sidecar_pid api "$(agent_http 0)") || return 1
	SIDECARS_FOUND+=("$pid")
	for ((i = 0; i < SIDECARS; i++)); do
		pid=$(sidecar_pid "web-$i" "$(agent_http "$(agent_of_web "$i")")") || return 1
		SIDECARS_FOUND+=("$pid")
	done
}
for ((i = 0; i < SIDECARS; i++)); do
	a=$(agent_of_web "$i")
	wait_until "answer through web-$i's upstream" "c$a" "${AGENT_PIDS[a]}" answers "$(web_upstream "$i")"
done
wait_until "one sidecar process per service" c0 "${AGENT_PIDS[0]}" all_sidecar_pids
SIDECARS_AT_START=("${SIDECARS_FOUND[@]}")
SIDECAR_PIDS=("${SIDECARS_FOUND[@]}")
log "${#SIDECAR_PIDS[@]} sidecars running (api's and $SIDECARS web ones)"

# ------------------------------------------------------- reading the logs ----

AGENT_LOGS=()
for ((a = 0; a < N_AGENTS; a++)); do AGENT_LOGS+=("$TMP/c$a.log"); done
for ((s = 0; s < SERVERS; s++)); do AGENT_LOGS+=("$TMP/s$((s + 1)).log"); done

# leaf serial -> service, from what each sidecar runs on.
: >"$TMP/leaves.map"
leaf_of() { # service agent-port
	"$WEFT" proxy config-dump --sidecar-for "$1" --http-addr "127.0.0.1:$2" 2>/dev/null |
		sed -nE 's/^ *"leaf_serial": *"([^"]+)".*/\1/p' || true
}
serial=$(leaf_of api "$(agent_http 0)")
[[ -n $serial ]] || die "no leaf serial in weft proxy config-dump --sidecar-for api"
echo "$serial api" >>"$TMP/leaves.map"
for ((i = 0; i < SIDECARS; i++)); do
	serial=$(leaf_of "web-$i" "$(agent_http "$(agent_of_web "$i")")")
	[[ -n $serial ]] || die "no leaf serial in weft proxy config-dump --sidecar-for web-$i"
	echo "$serial web-$i" >>"$TMP/leaves.map"
done
distinct=$(awk '{ print $1 }' "$TMP/leaves.map" | sort -u | wc -l)
((distinct == SIDECARS + 1)) || die "the $((SIDECARS + 1)) sidecars have only $distinct distinct leaf serials: their log lines cannot be told apart"

# Reads the agents' logs for `applying a new configuration` lines stamped
# at or after t0 (and before t-end, if given; seconds since the epoch) and
# prints one line:
#   applied=<web sidecars with one> first_ms= p50_ms= last_ms= dups=<extra
#   lines of web sidecars> other=<api's or unknown sidecars' lines> missing=<a few names>
# (ms from t0 to each sidecar's first line). An apply line reads, colours aside:
#   2026-01-02T03:04:05.123456Z  INFO weft_proxy::sidecar: applying a new configuration leaf=61:b5:... upstreams=1 rules=0
applies_since() { # t0 [t-end]
	awk -v t0="$1" -v t1="${2:-0}" -v want="$SIDECARS" -v map="$TMP/leaves.map" '
		function epoch(ts,    y, m, d, era, yoe, doy, doe) {
			y = substr(ts, 1, 4) + 0; m = substr(ts, 6, 2) + 0; d = substr(ts, 9, 2) + 0
			y -= (m <= 2)
			era = int(y / 400); yoe = y - era * 400
			doy = int((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1
			doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
			return (era * 146097 + doe - 719468) * 86400 + substr(ts, 12, 2) * 3600 + substr(ts, 15, 2) * 60 + substr(ts, 18, 9)
		}
		BEGIN { while ((getline line < map) > 0) { split(line, f, " "); svc[f[1]] = f[2] } }
		/applying a new configuration/ {
			gsub(/\033\[[0-9;]*m/, "")
			if ($1 !~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:.]+Z$/) next
			e = epoch($1)
			if (e < t0 || (t1 > 0 && e >= t1)) next
			ms = (e - t0) * 1000
			if (!match($0, /leaf=[0-9a-fA-F:]+/)) { other++; next }
			s = svc[substr($0, RSTART + 5, RLENGTH - 5)]
			if (s !~ /^web-/) { other++; next }
			if (s in first) { dups++; if (ms < first[s]) first[s] = ms } else { first[s] = ms; n++ }
		}
		END {
			k = 0
			for (s in first) v[++k] = first[s]
			for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
			missing = ""; shown = 0
			for (i = 0; i < want && shown < 5; i++) if (!(("web-" i) in first)) { missing = missing (shown++ ? "," : "") "web-" i }
			printf "applied=%d first_ms=%s p50_ms=%s last_ms=%s dups=%d other=%d missing=%s\n", n, \
				(k ? sprintf("%.3f", v[1]) : "null"), (k ? sprintf("%.3f", v[int((k + 1) / 2)]) : "null"), \
				(k ? sprintf("%.3f", v[k]) : "null"), dups, other, (missing == "" ? "-" : missing)
		}' "${AGENT_LOGS[@]}"
}
field() { sed -nE "s/.*(^| )$2=([^ ]*).*/\2/p" <<<"$1"; }

# Waits (up to WAIT_SECS) until no sidecar has applied anything for QUIET_SECS.
wait_quiet() {
	local deadline=$((SECONDS + WAIT_SECS)) since seen
	while :; do
		since=$EPOCHREALTIME
		nap "$QUIET_SECS"
		seen=$(applies_since "$since")
		(($(field "$seen" applied) == 0)) && [[ $(field "$seen" other) == 0 ]] && return 0
		((SECONDS < deadline)) || die "the sidecars kept applying new configurations for ${WAIT_SECS}s"
	done
}

# ------------------------------------------------------------- the write ----

# The change of round r: a service-router for api whose one route's prefix
# is new every round (GET /, what the keep-alive connections send, takes
# the default route either way).
router_of() { printf '{"Kind":"service-router","Name":"api","Routes":[{"Match":{"HTTP":{"PathPrefix":"/round-%d/"}},"Destination":{"Service":"api","PrefixRewrite":"/"}}]}' "$1"; }

# Sends `body` as PUT /v1/config to 127.0.0.1:WRITE_PORT on a connection
# opened beforehand, so T0 is taken just before the request's bytes leave
# (no process start in between). Sets T0, WRITE_MS (to the status line) and
# WRITE_OK (1 on "200" with body true).
write_entry() { # body
	local body=$1 fd status line answer="" t1
	exec {fd}<>"/dev/tcp/127.0.0.1/$WRITE_PORT" || die "cannot connect to 127.0.0.1:$WRITE_PORT"
	local request="PUT /v1/config HTTP/1.1"$'\r\n'"Host: 127.0.0.1:$WRITE_PORT"$'\r\n'"Content-Type: application/json"$'\r\n'
	request+="Content-Length: ${#body}"$'\r\n'"Connection: close"$'\r\n\r\n'"$body"
	T0=$EPOCHREALTIME
	printf '%s' "$request" >&"$fd"
	IFS= read -r -t 10 -u "$fd" status || status=""
	t1=$EPOCHREALTIME
	while IFS= read -r -t 10 -u "$fd" line; do answer+="$line"$'\n'; done
	answer+=$line
	exec {fd}>&-
	WRITE_MS=$(awk -v a="$T0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 }')
	WRITE_OK=0
	[[ $status == "HTTP/1.1 200"* && $answer == *$'\r\n\r\n'true* ]] && WRITE_OK=1
	((WRITE_OK)) || log "warning: the write answered '${status%$'\r'}': $(tail -c 200 <<<"$answer")"
	return 0
}

# One round: the write, then the logs until every web sidecar has applied
# it or APPLY_TIMEOUT has passed. Sets ROUND_LINE.
run_round() { # r
	local since
	write_entry "$(router_of "$1")"
	since=$EPOCHREALTIME
	while :; do
		nap "$POLL_SECS"
		ROUND_LINE=$(applies_since "$T0")
		(($(field "$ROUND_LINE" applied) >= SIDECARS)) && break
		awk -v a="$since" -v b="$EPOCHREALTIME" -v t="$APPLY_TIMEOUT_S" 'BEGIN { exit !(b - a >= t) }' && break
	done
	ROUND_LINE="$ROUND_LINE write_ms=$WRITE_MS write_ok=$WRITE_OK"
}

# ------------------------------------------------------ keep-alive check ----

# KEEPALIVE connections, each a bash file descriptor opened once: GET /
# again and again (KEEPALIVE_INTERVAL apart) until $TMP/keepers.stop
# appears or the deadline passes. A connection that fails (no answer, not
# 200, closed) is counted and not reopened. Writes one summary line to
# $TMP/keeper-<id>.out and one line per failure to $TMP/keeper-<id>.failures.
keeper() { # id port connections deadline-seconds
	local id=$1 port=$2 count=$3 deadline=$((SECONDS + $4)) fd c ok=0 failed=0 opened=0 max_ms=0 t line len chunked ms rc
	local -a fds=() alive=()
	set +e
	trap '' PIPE # a write to a closed connection fails, not kills
	trap 'exit 0' TERM
	: >"$TMP/keeper-$id.failures"
	fail() { # connection reason
		local cfd=${fds[$1]}
		failed=$((failed + 1))
		alive[$1]=0
		printf '%s web-%s connection %d: %s\n' "$(date -u +%H:%M:%S.%6N)" "$id" "$1" "$2" >>"$TMP/keeper-$id.failures"
		exec {cfd}>&- 2>/dev/null
	}
	for ((c = 0; c < count; c++)); do
		if exec {fd}<>"/dev/tcp/127.0.0.1/$port"; then
			fds[c]=$fd alive[c]=1 opened=$((opened + 1))
		else
			alive[c]=0
			printf '%s web-%s connection %d: could not connect\n' "$(date -u +%H:%M:%S.%6N)" "$id" "$c" >>"$TMP/keeper-$id.failures"
		fi
	done
	while [[ ! -e $TMP/keepers.stop ]] && ((SECONDS < deadline)); do
		for ((c = 0; c < count; c++)); do
			((alive[c])) || continue
			fd=${fds[c]}
			t=$EPOCHREALTIME
			printf 'GET / HTTP/1.1\r\nHost: api\r\n\r\n' 2>/dev/null 1>&"$fd" || { fail "$c" "send failed (closed)"; continue; }
			rc=0
			IFS= read -r -t 5 -u "$fd" line || rc=$?
			if ((rc > 128)); then
				fail "$c" "no answer within 5 s"
				continue
			elif ((rc != 0)); then
				fail "$c" "closed by the sidecar"
				continue
			fi
			[[ $line == "HTTP/1.1 200"* ]] || { fail "$c" "answered '${line%$'\r'}'"; continue; }
			len=-1 chunked=0
			while IFS= read -r -t 5 -u "$fd" line && [[ $line != $'\r' && -n $line ]]; do
				line=${line%$'\r'}
				case ${line,,} in
				content-length:*) len=${line#*:} len=${len// /} ;;
				transfer-encoding:*chunked*) chunked=1 ;;
				connection:*close*) fail "$c" "the answer says Connection: close" ;;
				esac
			done
			((alive[c])) || continue
			if ((chunked)); then
				while IFS= read -r -t 5 -u "$fd" line; do
					len=$((16#${line%$'\r'}))
					((len == 0)) && { IFS= read -r -t 5 -u "$fd" line; break; }
					if ! read -r -N "$len" -t 5 -u "$fd" _ || ! IFS= read -r -t 5 -u "$fd" line; then break; fi
				done
			elif ((len != BODY_SIZE)); then
				fail "$c" "Content-Length '$len', expected $BODY_SIZE"
				continue
			else
				read -r -N "$len" -t 5 -u "$fd" line || { fail "$c" "body cut short"; continue; }
			fi
			ok=$((ok + 1))
			ms=$(((${EPOCHREALTIME/./} - ${t/./}) / 1000))
			((ms > max_ms)) && max_ms=$ms
		done
		nap "$KEEPALIVE_INTERVAL_S"
	done
	local open=0
	for ((c = 0; c < count; c++)); do ((alive[c])) && open=$((open + 1)); done
	echo "connections=$count opened=$opened open=$open ok=$ok failed=$failed max_ms=$max_ms" >"$TMP/keeper-$id.out"
}

# ------------------------------------------------------------- the rounds ----

wait_quiet
log "warm-up round (not counted)"
run_round 0
(($(field "$ROUND_LINE" applied) == SIDECARS)) ||
	log "warning: in the warm-up round only $(field "$ROUND_LINE" applied) of $SIDECARS sidecars applied the write"
wait_quiet

restarts_before=$(cat "${AGENT_LOGS[@]}" | grep -c 'sidecar proxy exited; restarting\|lost the sidecar proxy' || true)
if ((KEEPALIVE > 0)); then
	# Generous: every round at its longest, and some.
	keeper_secs=$(awk -v r="$ROUNDS" -v g="$ROUND_GAP_S" -v t="$APPLY_TIMEOUT_S" 'BEGIN { printf "%d", r * (g + t + 1) + 30 }')
	for ((k = 0; k < KEEPALIVE_SIDECARS; k++)); do
		n=$((KEEPALIVE / KEEPALIVE_SIDECARS + (k < KEEPALIVE % KEEPALIVE_SIDECARS ? 1 : 0)))
		((n > 0)) || continue
		keeper "$k" "$(web_upstream "$k")" "$n" "$keeper_secs" &
		KEEPER_PIDS+=($!)
		STOP_FIRST=("$!" "${STOP_FIRST[@]}")
	done
	nap 1
	log "$KEEPALIVE keep-alive connections sending requests through web-0..web-$((KEEPALIVE_SIDECARS - 1))'s upstreams"
fi

cpu_agents0=$(pids_cpu_secs "${PIDS[@]}") cpu_sidecars0=$(pids_cpu_secs "${SIDECAR_PIDS[@]}") busy0=$(machine_busy_secs)
started=$SECONDS
: >"$TMP/rounds.jsonl"
declare -a ROUND_LINES=() ROUND_T0=() ROUND_WRITE=()
for ((r = 1; r <= ROUNDS; r++)); do
	run_round "$r"
	ROUND_T0[r]=$T0 ROUND_WRITE[r]="write_ms=$WRITE_MS write_ok=$WRITE_OK"
	log "round $r of $ROUNDS: write $(field "$ROUND_LINE" write_ms) ms; last sidecar applied at" \
		"$(field "$ROUND_LINE" last_ms) ms; $(field "$ROUND_LINE" applied) of $SIDECARS"
	nap "$ROUND_GAP_S"
done
rounds_secs=$((SECONDS - started))
cpu_agents1=$(pids_cpu_secs "${PIDS[@]}") cpu_sidecars1=$(pids_cpu_secs "${SIDECAR_PIDS[@]}") busy1=$(machine_busy_secs)
# Each round's lines again, now from its T0 to the next round's: a sidecar's
# late or doubled lines count in the round they belong to.
for ((r = 1; r <= ROUNDS; r++)); do
	ROUND_LINES[r]="$(applies_since "${ROUND_T0[r]}" "${ROUND_T0[r + 1]:-0}") ${ROUND_WRITE[r]}"
done

if ((${#KEEPER_PIDS[@]} > 0)); then
	: >"$TMP/keepers.stop"
	for pid in "${KEEPER_PIDS[@]}"; do wait "$pid" || true; done
fi
restarts_after=$(cat "${AGENT_LOGS[@]}" | grep -c 'sidecar proxy exited; restarting\|lost the sidecar proxy' || true)
all_sidecar_pids || true
changed=0
for ((i = 0; i < ${#SIDECARS_AT_START[@]}; i++)); do
	[[ ${SIDECARS_AT_START[i]} == "${SIDECARS_FOUND[i]:-}" ]] || changed=$((changed + 1))
done
((${#SIDECARS_FOUND[@]} > 0)) && SIDECAR_PIDS+=("${SIDECARS_FOUND[@]}")

# ----------------------------------------------------------------- table ----

leader=$(curl -s --max-time 2 "http://127.0.0.1:$WRITE_PORT/v1/status/leader" || true)
echo
echo "Config entry propagation on 127.0.0.1, $(nproc 2>/dev/null || echo '?') cores: $SERVERS server(s), $N_AGENTS client agents," \
	"$SIDECARS web sidecars (upstream api, protocol http) spread over them"
echo "  each round: PUT /v1/config (a service-router for api with a new route prefix) to server s1" \
	"($([[ $leader == "\"127.0.0.1:${SERVER_RPC[0]}\"" ]] && echo "the leader" || echo "leader: $leader"));" \
	"ms from just before the request is sent (T0) to each web sidecar's first 'applying a new configuration' log line"
echo "  write ms: T0 to the write's status line; first / p50 / last: the first, median and last sidecar to apply;" \
	"dups: extra apply lines of a web sidecar for the same write; other: apply lines of other sidecars (api's) after T0"
printf '%5s  %8s  %8s  %8s  %8s  %9s  %4s  %5s  %s\n' round "write ms" "first ms" "p50 ms" "last ms" applied dups other missing
for ((r = 1; r <= ROUNDS; r++)); do
	l=${ROUND_LINES[r]}
	printf '%5d  %8s  %8s  %8s  %8s  %9s  %4s  %5s  %s\n' "$r" "$(fmt_num "$(field "$l" write_ms)" %.2f)" \
		"$(fmt_num "$(field "$l" first_ms)" %.2f)" "$(fmt_num "$(field "$l" p50_ms)" %.2f)" \
		"$(fmt_num "$(field "$l" last_ms)" %.2f)" "$(field "$l" applied)/$SIDECARS" "$(field "$l" dups)" \
		"$(field "$l" other)" "$(field "$l" missing)"
	printf '{"round":%d,"write_ms":%s,"write_ok":%s,"applied":%s,"sidecars":%d,"first_ms":%s,"p50_ms":%s,"last_ms":%s,"dups":%s,"other":%s}\n' \
		"$r" "$(field "$l" write_ms)" "$(field "$l" write_ok)" "$(field "$l" applied)" "$SIDECARS" "$(field "$l" first_ms)" \
		"$(field "$l" p50_ms)" "$(field "$l" last_ms)" "$(field "$l" dups)" "$(field "$l" other)" >>"$TMP/rounds.jsonl"
done

# Nearest-rank percentiles of a column over the rounds where every sidecar applied.
percentiles() { # field
	local r l
	for ((r = 1; r <= ROUNDS; r++)); do
		l=${ROUND_LINES[r]}
		(($(field "$l" applied) == SIDECARS)) && field "$l" "$1"
	done | sort -g | awk '{ v[NR] = $1 }
		function q(p,    i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return v[i] }
		END { if (NR == 0) print "null null null null 0"; else printf "%.2f %.2f %.2f %.2f %d\n", q(0.5), q(0.9), q(0.99), v[NR], NR }'
}
read -r p50 p90 p99 pmax nfull <<<"$(percentiles last_ms)"
read -r w50 w90 w99 wmax _ <<<"$(percentiles write_ms)"
short=0 dups=0 others=0 bad_writes=0
for ((r = 1; r <= ROUNDS; r++)); do
	l=${ROUND_LINES[r]}
	(($(field "$l" applied) == SIDECARS)) || short=$((short + 1))
	dups=$((dups + $(field "$l" dups))) others=$((others + $(field "$l" other)))
	(($(field "$l" write_ok) == 1)) || bad_writes=$((bad_writes + 1))
done
echo
echo "last sidecar applied, over the $nfull of $ROUNDS rounds where all $SIDECARS did: p50 $p50, p90 $p90, p99 $p99, max $pmax ms" \
	"(nearest rank: with fewer than 100 rounds p99 is the max)"
echo "  goal: p99 <= $GOAL_MS ms with 50 sidecars: $(goal "$p99" '<=' "$GOAL_MS")$( ((SIDECARS == 50)) || echo " (this run: $SIDECARS sidecars)")" \
	"(Istio's istiod: up to ~1 s)"
echo "the write itself: p50 $w50, p90 $w90, p99 $w99, max $wmax ms; writes not answered 200 true: $bad_writes"
echo "rounds where fewer than $SIDECARS sidecars applied within $APPLY_TIMEOUT: $short; extra apply lines: $dups;" \
	"other sidecars' apply lines: $others"
echo "sidecar restarts: $((changed)) of $((${#SIDECARS_AT_START[@]})) sidecar PIDs changed;" \
	"$((restarts_after - restarts_before)) 'restarting' lines in the agents' logs during the rounds"
if ((${#KEEPER_PIDS[@]} > 0)); then
	total_ok=0 total_failed=0 total_open=0 total_conns=0 worst=0
	for ((k = 0; k < KEEPALIVE_SIDECARS; k++)); do
		[[ -f $TMP/keeper-$k.out ]] || continue
		l=$(cat "$TMP/keeper-$k.out")
		total_ok=$((total_ok + $(field "$l" ok))) total_failed=$((total_failed + $(field "$l" failed)))
		total_open=$((total_open + $(field "$l" open))) total_conns=$((total_conns + $(field "$l" connections)))
		(($(field "$l" max_ms) > worst)) && worst=$(field "$l" max_ms)
	done
	echo "open connections: $total_conns keep-alive connections through web-0..web-$((KEEPALIVE_SIDECARS - 1))'s upstreams" \
		"during the rounds: $total_open still open at the end, $total_ok requests answered, $total_failed failed" \
		"(slowest answer $worst ms)"
	cat "$TMP"/keeper-*.failures 2>/dev/null | head -n 10 | sed 's/^/  failed: /'
fi
awk -v a0="$cpu_agents0" -v a1="$cpu_agents1" -v s0="$cpu_sidecars0" -v s1="$cpu_sidecars1" -v m0="$busy0" -v m1="$busy1" \
	-v w="$rounds_secs" 'BEGIN {
		a = a1 - a0; s = s1 - s0; o = (m1 - m0) - a - s
		printf "CPU during the rounds (%d s): agents and backend %.1f s, sidecars %.1f s, everything else (this script, the keep-alive" \
			" connections, other work on the machine) %.1f s\n", w, a, s, (o < 0 ? 0 : o)
	}'

if [[ -n $RESULTS ]]; then
	cp -- "$TMP/rounds.jsonl" "$RESULTS" && log "rounds saved to $RESULTS"
fi
