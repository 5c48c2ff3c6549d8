#!/usr/bin/env bash
# mesh.sh: the sidecar data plane, Weft vs HAProxy, HTTP/1.1 keep-alive with
# 1 KiB answers on loopback.
#
# Why: every request between services in a mesh crosses two sidecars, so
# what they add to latency, what they cost in throughput, memory and
# handshakes is what users pay for the mesh. The issue's goals: Weft's added
# p99 (at a fixed 1,000 req/s) below HAProxy's; Weft's max throughput >=
# 1.0x HAProxy's; a sidecar's idle RSS <= 10 MB (Linkerd's proxy peaks at
# ~26 MB, Envoy at 40-150 MB). See bench/README.md for what the figures mean
# and their caveats.
#
# Three chains in the same run, to the same backend (`http-backend`, 1 KiB
# bodies):
#   direct   http-load -> backend
#   weft     http-load -> web's sidecar (upstream api) =mTLS=> api's sidecar -> backend
#   haproxy  http-load -> HAProxy A =mTLS=> HAProxy B -> backend
# with HAProxy presenting leaves from the Weft CA (web's and api's, fetched
# from the agent API) and verifying the peer against the Weft roots. The
# new-connection figure uses a TCP service (`api-tcp`: each local connection
# is one mTLS connection between the sidecars) against HAProxy in mode tcp.
#
# Steps: build weft, http-backend and http-load (release); start the
# backend and one Weft server (--bootstrap-expect 1, so intentions deny by
# default as in production); write service-defaults (api: http, api-tcp:
# tcp); register api, api-tcp (sidecars) and web (a sidecar with upstreams
# to both); allow web -> api and web -> api-tcp; fetch the leaves and roots
# for HAProxy's two instances and start them; run http-load against each
# chain (fixed rate, max throughput, new connections: ROUNDS rounds, each
# chain in turn within a round; then held connections); print one table
# (medians over the rounds) with the ratios and the goals next to them.
# Everything started here is stopped (and the temp dir removed) on exit, on
# failure and on Ctrl-C.
#
# Environment (all optional):
#   BENCHES="rate max connect hold"  which measurements to run
#   CHAINS="direct weft haproxy"     which chains to measure
#   ROUNDS=3                rounds of the rate, max and connect runs; each round
#                           runs every chain in turn, and the table shows medians
#   RATE=1000               the fixed request rate of the latency runs (req/s)
#   RATE_DURATION=15s       measured time of each fixed-rate run
#   RATE_CONNECTIONS=10     keep-alive connections the fixed rate is spread over
#   MAX_DURATION=10s        measured time of each max-throughput run
#   MAX_CONNECTIONS=32      keep-alive connections of the max-throughput runs
#   CONNECT_DURATION=10s    measured time of each new-connection run
#   CONNECT_CONCURRENCY=16  connections being made at once in those runs
#   WARMUP=1s               load before each run's measured time, not counted
#   HOLD=1000               connections held open for the RSS figures
#   SETTLE=30               seconds after the held connections close before the
#                           "after" RSS reading (issue 20: within 5 MB of idle by then)
#   BODY_SIZE=1024          bytes of every answer's body
#   HAPROXY_HOP=h1          what HAProxy A speaks to B over mTLS: h1 (HTTP/1.1,
#                           HAProxy's default) or h2 (HTTP/2, like Weft's sidecars)
#   HAPROXY_THREADS=$(nproc)  nbthread of each HAProxy instance
#   HAPROXY_TLS_RESUME=1    0: A never resumes a TLS session with B (no-ssl-reuse),
#                           so every new connection is a full handshake
#   WAIT_SECS=60            how long Weft may take to start, and the mesh to carry traffic
#   BUILD=1                 0: do not run cargo, use existing binaries
#   WEFT=path HTTP_LOAD=path HTTP_BACKEND=path HAPROXY=path  binaries
#                           (default target/release/..., /usr/sbin/haproxy)
#   KEEP_TMP=0              1: keep the temp dir (logs, configs, certificates)
#   RESULTS=file            also save the tool's JSON lines to this file
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
HTTP_LOAD="${HTTP_LOAD:-$TARGET_DIR/release/http-load}"
HTTP_BACKEND="${HTTP_BACKEND:-$TARGET_DIR/release/http-backend}"
HAPROXY="${HAPROXY:-$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)}"
BENCHES="${BENCHES:-rate max connect hold}"
CHAINS="${CHAINS:-direct weft haproxy}"
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-1000}"
RATE_DURATION="${RATE_DURATION:-15s}"
RATE_CONNECTIONS="${RATE_CONNECTIONS:-10}"
MAX_DURATION="${MAX_DURATION:-10s}"
MAX_CONNECTIONS="${MAX_CONNECTIONS:-32}"
CONNECT_DURATION="${CONNECT_DURATION:-10s}"
CONNECT_CONCURRENCY="${CONNECT_CONCURRENCY:-16}"
WARMUP="${WARMUP:-1s}"
HOLD="${HOLD:-1000}"
BODY_SIZE="${BODY_SIZE:-1024}"
HAPROXY_HOP="${HAPROXY_HOP:-h1}"
HAPROXY_THREADS="${HAPROXY_THREADS:-$(nproc 2>/dev/null || echo 2)}"
HAPROXY_TLS_RESUME="${HAPROXY_TLS_RESUME:-1}"
WAIT_SECS="${WAIT_SECS:-60}"
SETTLE="${SETTLE:-30}"
BUILD="${BUILD:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS:-}"

# The issue's goal for a sidecar's idle RSS, 10 MB, in KiB (as /proc reports).
IDLE_RSS_GOAL_KIB=$((10 * 1000 * 1000 / 1024))
# Issue 20: a sidecar SETTLE s after its held connections close, at most this above its idle RSS.
AFTER_RSS_GOAL_KIB=$((5 * 1000 * 1000 / 1024))

# Loopback ports. Weft's server: RPC, HTTP, DNS. The backend. The sidecars'
# public (mTLS) ports and web's two upstream listeners. HAProxy A (web's
# side): plain HTTP and TCP frontends; B (api's side): the mTLS frontends;
# each instance's stats socket (read-only, for its TLS counters).
WEFT_RPC=22300 WEFT_HTTP=22500 WEFT_DNS=22600
BACKEND_PORT=22700
WEB_SIDECAR=22710 API_SIDECAR=22711 API_TCP_SIDECAR=22712
WEB_UPSTREAM_HTTP=22720 WEB_UPSTREAM_TCP=22721
HAPROXY_A_HTTP=22730 HAPROXY_A_TCP=22731 HAPROXY_A_STATS=22739
HAPROXY_B_HTTP=22740 HAPROXY_B_TCP=22741 HAPROXY_B_STATS=22749

LOG_TAG=mesh TMP_CONTENTS="logs, configs and certificates"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WEFT_PID="" BACKEND_PID="" HAPROXY_A_PID="" HAPROXY_B_PID=""
WEB_PID="" API_PID="" API_TCP_PID=""
declare -A ADDED50=() ADDED99=() PER_CPU=()

has_chain() { [[ " $CHAINS " == *" $1 "* ]]; }

# A PEM field of the agent's JSON (`"CertPEM":"-----BEGIN...\n..."`) as text.
json_pem() { sed -nE "s/.*\"$2\":\"([^\"]*)\".*/\1/p" <<<"$1" | sed 's/\\n/\n/g'; }

mib() { if [[ -z $1 || $1 == null ]]; then printf -- '-'; else awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; fi; }

# A kB field of /proc/<pid>/status (VmRSS, VmHWM), or nothing.
status_kib() { awk -v f="$2:" '$1 == f { print $2; exit }' "/proc/$1/status" 2>/dev/null || true; }

# A counter from HAProxy's `show info` on its stats socket (nothing if unreadable).
haproxy_info() { # port field
	local reply
	# shellcheck disable=SC2016 # $1 is the inner shell's
	reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "show info\n" >&3 && cat <&3' _ "$1" 2>/dev/null) || true
	sed -nE "s/^$2: *([0-9]+).*/\1/p" <<<"$reply"
}

# ---------------------------------------------------------------- checks ----

need_positive ROUNDS RATE RATE_CONNECTIONS MAX_CONNECTIONS CONNECT_CONCURRENCY HOLD HAPROXY_THREADS
need_number BODY_SIZE "a number of bytes"
need_number WAIT_SECS "a number of seconds"
need_secs RATE_DURATION MAX_DURATION CONNECT_DURATION WARMUP
need_positive_secs RATE_DURATION MAX_DURATION CONNECT_DURATION
for b in $BENCHES; do
	[[ $b =~ ^(rate|max|connect|hold)$ ]] || die "BENCHES may name only rate, max, connect and hold, not '$b'"
done
for c in $CHAINS; do
	[[ $c =~ ^(direct|weft|haproxy)$ ]] || die "CHAINS may name only direct, weft and haproxy, not '$c'"
done
[[ -n ${BENCHES// /} ]] || die "nothing to run (BENCHES='$BENCHES')"
[[ -n ${CHAINS// /} ]] || die "nothing to measure (CHAINS='$CHAINS')"
[[ $HAPROXY_HOP == h1 || $HAPROXY_HOP == h2 ]] || die "HAPROXY_HOP must be h1 or h2, not '$HAPROXY_HOP'"
[[ $HAPROXY_TLS_RESUME == 0 || $HAPROXY_TLS_RESUME == 1 ]] || die "HAPROXY_TLS_RESUME must be 0 or 1, not '$HAPROXY_TLS_RESUME'"
need_tools curl awk sed grep pgrep timeout getconf
if has_chain haproxy && [[ ! -x $HAPROXY ]]; then
	die "HAProxy not found at $HAPROXY (apt-get install haproxy; or CHAINS='direct weft')"
fi

# Every held connection is a socket in the tool, the sidecars (two each on
# the TCP chain: local and mTLS), HAProxy and the backend, which all inherit
# this shell's limit: raise the open-files limit before starting them.
raise_fd_limit $((HOLD * 2 + 1024)) "HOLD=$HOLD"

# ----------------------------------------------------------------- build ----

build_binaries "$WEFT" "$HTTP_LOAD" "$HTTP_BACKEND"

make_tmp mesh

# ------------------------------------------------------ backend and weft ----

check_ports_free "$WEFT_RPC" "$WEFT_HTTP" "$WEFT_DNS" "$BACKEND_PORT" "$WEB_SIDECAR" "$API_SIDECAR" \
	"$API_TCP_SIDECAR" "$WEB_UPSTREAM_HTTP" "$WEB_UPSTREAM_TCP" "$HAPROXY_A_HTTP" "$HAPROXY_A_TCP" \
	"$HAPROXY_A_STATS" "$HAPROXY_B_HTTP" "$HAPROXY_B_TCP" "$HAPROXY_B_STATS"

start_backend
start_weft_server mesh-bench

# api speaks HTTP (its sidecars carry requests over pooled HTTP/2);
# api-tcp is spliced connection by connection.
printf 'Kind = "service-defaults"\nName = "api"\nProtocol = "http"\n' >"$TMP/api-defaults.hcl"
printf 'Kind = "service-defaults"\nName = "api-tcp"\nProtocol = "tcp"\n' >"$TMP/api-tcp-defaults.hcl"
write_config_entries "$TMP/api-defaults.hcl" "$TMP/api-tcp-defaults.hcl"
register_backend_service api "$API_SIDECAR"
register_backend_service api-tcp "$API_TCP_SIDECAR"
upstreams=("api=$WEB_UPSTREAM_HTTP" "api-tcp=$WEB_UPSTREAM_TCP")
register_web 22701 "$WEB_SIDECAR" "${upstreams[@]}"
allow_intentions web api api-tcp

wait_for_mesh "web, api and api-tcp" "web api api-tcp" "${upstreams[@]}"
WEB_PID=${SIDECAR_OF[web]} API_PID=${SIDECAR_OF[api]} API_TCP_PID=${SIDECAR_OF[api-tcp]}
log "sidecars: web $WEB_PID, api $API_PID, api-tcp $API_TCP_PID (connection threads: ${WEFT_PROXY_THREADS:-2, the default})"

# ---------------------------------------------------------------- haproxy ---

if has_chain haproxy; then
	mkdir -p "$TMP/haproxy"
	roots=$(api_get /v1/agent/connect/ca/roots) || die "could not read the CA roots"
	grep -oE '"RootCert":"[^"]*"' <<<"$roots" | sed -E 's/^"RootCert":"//; s/"$//; s/\\n/\n/g' >"$TMP/haproxy/roots.pem"
	grep -q 'BEGIN CERTIFICATE' "$TMP/haproxy/roots.pem" || die "no root certificate in /v1/agent/connect/ca/roots"
	for service in web api api-tcp; do
		leaf=$(api_get "/v1/agent/connect/ca/leaf/$service") || die "could not get a leaf for $service"
		{
			json_pem "$leaf" CertPEM
			json_pem "$leaf" PrivateKeyPEM
		} >"$TMP/haproxy/$service.pem"
		if ! grep -q 'BEGIN CERTIFICATE' "$TMP/haproxy/$service.pem" || ! grep -q 'PRIVATE KEY' "$TMP/haproxy/$service.pem"; then
			die "the leaf for $service has no certificate or key"
		fi
	done
	chmod 600 "$TMP/haproxy/"*.pem
	tls_out="crt $TMP/haproxy/web.pem ca-file $TMP/haproxy/roots.pem verify required"
	[[ $HAPROXY_TLS_RESUME == 0 ]] && tls_out="$tls_out no-ssl-reuse"
	if [[ $HAPROXY_HOP == h2 ]]; then hop_http="$tls_out alpn h2" bind_alpn="alpn h2,http/1.1"; else hop_http=$tls_out bind_alpn=""; fi
	maxconn=$((HOLD * 2 + 4096))
	# The same settings for both; a stats socket (read-only) for the TLS counters.
	haproxy_common() { # stats-port
		cat <<EOF
global
    nbthread $HAPROXY_THREADS
    maxconn $maxconn
    stats socket ipv4@127.0.0.1:$1 level user
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    maxconn $maxconn
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 30s
    timeout http-keep-alive 60s
EOF
	}
	# A: web's side. Plain HTTP (and TCP) in, mTLS out with web's leaf.
	cat >"$TMP/haproxy/a.cfg" <<EOF
$(haproxy_common "$HAPROXY_A_STATS")

frontend web_http
    mode http
    bind 127.0.0.1:$HAPROXY_A_HTTP
    default_backend api_http

backend api_http
    mode http
    server api 127.0.0.1:$HAPROXY_B_HTTP ssl $hop_http

frontend web_tcp
    mode tcp
    bind 127.0.0.1:$HAPROXY_A_TCP
    default_backend api_tcp

backend api_tcp
    mode tcp
    server api-tcp 127.0.0.1:$HAPROXY_B_TCP ssl $tls_out
EOF
	# B: api's side. mTLS in with api's (api-tcp's) leaf, callers verified
	# against the Weft roots; plain out to the backend.
	tls_in="ca-file $TMP/haproxy/roots.pem verify required"
	cat >"$TMP/haproxy/b.cfg" <<EOF
$(haproxy_common "$HAPROXY_B_STATS")

frontend api_http
    mode http
    bind 127.0.0.1:$HAPROXY_B_HTTP ssl crt $TMP/haproxy/api.pem $tls_in $bind_alpn
    default_backend app_http

backend app_http
    mode http
    server app 127.0.0.1:$BACKEND_PORT

frontend api_tcp
    mode tcp
    bind 127.0.0.1:$HAPROXY_B_TCP ssl crt $TMP/haproxy/api-tcp.pem $tls_in
    default_backend app_tcp

backend app_tcp
    mode tcp
    server app 127.0.0.1:$BACKEND_PORT
EOF
	for instance in a b; do
		"$HAPROXY" -c -q -f "$TMP/haproxy/$instance.cfg" >"$TMP/haproxy-$instance.check" 2>&1 || {
			cat "$TMP/haproxy-$instance.check" >&2
			die "HAProxy refused $TMP/haproxy/$instance.cfg"
		}
	done
	start_process haproxy-b "$HAPROXY" -db -f "$TMP/haproxy/b.cfg"
	HAPROXY_B_PID=$STARTED_PID
	start_process haproxy-a "$HAPROXY" -db -f "$TMP/haproxy/a.cfg"
	HAPROXY_A_PID=$STARTED_PID
	wait_until "answer through HAProxy (http)" haproxy-a "$HAPROXY_A_PID" answers "$HAPROXY_A_HTTP"
	wait_until "answer through HAProxy (tcp)" haproxy-a "$HAPROXY_A_PID" answers "$HAPROXY_A_TCP"
	kill -0 "$HAPROXY_B_PID" 2>/dev/null || die "HAProxy B exited"
	log "HAProxy: A $HAPROXY_A_PID, B $HAPROXY_B_PID ($HAPROXY_THREADS threads each, $HAPROXY_HOP between them)"
fi

# Idle memory, after start-up and one request through each chain.
sleep 1
declare -A IDLE_KIB=() IDLE_ANON_KIB=()
for pid in "$WEB_PID" "$API_PID" "$API_TCP_PID" $HAPROXY_A_PID $HAPROXY_B_PID; do
	IDLE_KIB[$pid]=$(status_kib "$pid" VmRSS)
	IDLE_ANON_KIB[$pid]=$(status_kib "$pid" RssAnon)
done

# ------------------------------------------------------------------ runs ----

# The chain's address for HTTP (keep-alive) and for new connections, and its proxies.
http_addr() { case $1 in direct) echo "127.0.0.1:$BACKEND_PORT" ;; weft) echo "127.0.0.1:$WEB_UPSTREAM_HTTP" ;; haproxy) echo "127.0.0.1:$HAPROXY_A_HTTP" ;; esac }
tcp_addr() { case $1 in direct) echo "127.0.0.1:$BACKEND_PORT" ;; weft) echo "127.0.0.1:$WEB_UPSTREAM_TCP" ;; haproxy) echo "127.0.0.1:$HAPROXY_A_TCP" ;; esac }
http_pids() { case $1 in direct) echo "" ;; weft) echo "$WEB_PID $API_PID" ;; haproxy) echo "$HAPROXY_A_PID $HAPROXY_B_PID" ;; esac }
tcp_pids() { case $1 in direct) echo "" ;; weft) echo "$WEB_PID $API_TCP_PID" ;; haproxy) echo "$HAPROXY_A_PID $HAPROXY_B_PID" ;; esac }

warmup_s=$(duration_secs "$WARMUP")
common_args=(--expect-bytes "$BODY_SIZE" --warmup "${warmup_s}s")
# Runs one measurement ROUNDS times; within a round, every chain in turn, so
# a disturbance (another engineer's build) lands on all of them alike.
run_rounds() { # bench seconds address-function pids-function http-load-arguments...
	local bench=$1 secs=$2 addr_of=$3 pids_of=$4 round chain
	shift 4
	for ((round = 1; round <= ROUNDS; round++)); do
		for chain in direct weft haproxy; do
			has_chain "$chain" || continue
			log "$bench, round $round of $ROUNDS: $chain (${warmup_s}s + ${secs}s)"
			run_load "$bench/$chain/$round" "$($pids_of "$chain")" $((secs + warmup_s + 90)) "$@" \
				--addr "$($addr_of "$chain")" --duration "${secs}s" "${common_args[@]}"
		done
	done
}

if has_bench rate; then
	run_rounds rate "$(duration_secs "$RATE_DURATION")" http_addr http_pids \
		rate --rate "$RATE" --connections "$RATE_CONNECTIONS"
fi
if has_bench max; then
	run_rounds max "$(duration_secs "$MAX_DURATION")" http_addr http_pids max --connections "$MAX_CONNECTIONS"
fi
if has_bench connect; then
	run_rounds connect "$(duration_secs "$CONNECT_DURATION")" tcp_addr tcp_pids \
		connect --concurrency "$CONNECT_CONCURRENCY"
	if has_chain haproxy; then
		HAPROXY_REUSE_PCT=$(haproxy_info "$HAPROXY_B_STATS" SslFrontendSessionReuse_pct)
	fi
fi
if has_bench hold; then
	for proto in http tcp; do
		for chain in weft haproxy; do
			has_chain "$chain" || continue
			if [[ $chain == weft ]]; then pids=("$WEB_PID" "$API_PID" "$API_TCP_PID"); else pids=("$HAPROXY_A_PID" "$HAPROXY_B_PID"); fi
			if [[ $proto == http ]]; then addr=$(http_addr "$chain"); else addr=$(tcp_addr "$chain"); fi
			pid_args=()
			for pid in "${pids[@]}"; do pid_args+=(--pid "$pid"); done
			log "holding $HOLD connections open through $chain ($proto)"
			run_load "hold/$chain/$proto" "" 180 hold --addr "$addr" --connections "$HOLD" --expect-bytes "$BODY_SIZE" \
				"${pid_args[@]}"
		done
	done
fi

if has_bench hold; then
	log "waiting ${SETTLE}s for the proxies to give memory back"
	sleep "$SETTLE"
else
	sleep 1
fi
declare -A AFTER_KIB=() PEAK_KIB=()
for pid in "$WEB_PID" "$API_PID" "$API_TCP_PID" $HAPROXY_A_PID $HAPROXY_B_PID; do
	AFTER_KIB[$pid]=$(status_kib "$pid" VmRSS)
	PEAK_KIB[$pid]=$(status_kib "$pid" VmHWM)
	kill -0 "$pid" 2>/dev/null || log "warning: process $pid (a proxy) is no longer running"
done
[[ $(sidecar_pid web "$WEFT_HTTP" || true) == "$WEB_PID" ]] || log "warning: web's sidecar was restarted during the run"

# ----------------------------------------------------------------- table ----

cores=$(nproc 2>/dev/null || echo '?')
echo
echo "Mesh data plane on 127.0.0.1, $cores cores: HTTP/1.1 keep-alive GET /, ${BODY_SIZE}-byte answers from http-backend"
has_chain direct && echo "  direct   http-load -> backend"
has_chain weft && echo "  weft     http-load -> web's sidecar (upstream api, protocol http) =HTTP/1.1 keep-alive over mTLS=> api's sidecar -> backend"
has_chain haproxy && echo "  haproxy  http-load -> HAProxy A (mode http) =$([[ $HAPROXY_HOP == h2 ]] && echo HTTP/2 || echo HTTP/1.1) over" \
	"mTLS=> HAProxy B -> backend (HAProxy $("$HAPROXY" -v 2>/dev/null | sed -nE '1s/^HAProxy version ([^ ]+).*/\1/p')," \
	"nbthread $HAPROXY_THREADS, leaves from the Weft CA)"
echo "  CPU s: CPU seconds used during the run by the chain's two proxies / by everything else on the machine" \
	"(but the tool and the backend); a large 'others' means the run was disturbed"

if has_bench rate; then
	echo
	echo "Latency at a fixed $RATE req/s (open loop over $RATE_CONNECTIONS keep-alive connections, $(duration_secs "$RATE_DURATION")s" \
		"measured after ${warmup_s}s warm-up); ms from each request's scheduled send time; added = chain - direct (per round);" \
		"medians over $ROUNDS rounds (max: the largest; errors, CPU: sums)"
	rate_table_header 8 chain
	for chain in direct weft haproxy; do
		has_chain "$chain" || continue
		added50=- added99=-
		if [[ $chain != direct ]] && has_chain direct; then
			added50=$(added_values "$chain" p50_ms | median)
			added99=$(added_values "$chain" p99_ms | median)
		fi
		ADDED50[$chain]=$added50 ADDED99[$chain]=$added99
		rate_table_path 8 "$chain" "$added50" "$added99"
	done
	if has_chain weft && has_chain haproxy && has_chain direct; then
		echo "added p99 by round, ms: weft $(added_p99_list weft)," \
			"haproxy $(added_p99_list haproxy)"
		q=$(ratio "${ADDED99[weft]}" "${ADDED99[haproxy]}")
		echo "added p99, weft/haproxy: $q   (goal: Weft adds less than HAProxy at p99, < 1.00: $(goal "$q" '<' 1))"
		echo "added p50, weft/haproxy: $(ratio "${ADDED50[weft]}" "${ADDED50[haproxy]}")"
	fi
fi

if has_bench max; then
	echo
	echo "Max throughput (closed loop, $MAX_CONNECTIONS keep-alive connections, $(duration_secs "$MAX_DURATION")s measured after" \
		"${warmup_s}s warm-up); medians over $ROUNDS rounds (errors, CPU: sums); per proxy CPU s = requests per CPU second" \
		"of the chain's two proxies"
	max_table_header 8 chain
	for chain in direct weft haproxy; do
		has_chain "$chain" || continue
		PER_CPU[$chain]=$(per_proxy_cpu "max/$chain")
		max_table_path 8 "$chain" "${PER_CPU[$chain]}"
	done
	if has_chain weft && has_chain haproxy; then
		echo "req/s by round: weft $(list_of max/weft per_sec %.0f), haproxy $(list_of max/haproxy per_sec %.0f)"
		q=$(ratio "$(median_of max/weft per_sec)" "$(median_of max/haproxy per_sec)")
		echo "req/s, weft/haproxy: $q   (goal >= 1.00: $(goal "$q" '>=' 1))"
		echo "req per proxy CPU s, weft/haproxy: $(ratio "${PER_CPU[weft]}" "${PER_CPU[haproxy]}")"
	fi
fi

if has_bench connect; then
	echo
	echo "New mTLS connections per second: each request on a new connection (Connection: close; $CONNECT_CONCURRENCY at a time," \
		"$(duration_secs "$CONNECT_DURATION")s after ${warmup_s}s warm-up) through the TCP chains: weft = web's upstream to" \
		"api-tcp (protocol tcp), haproxy = mode tcp; each one is a new TLS 1.3 handshake between the two proxies" \
		"(TLS session resumption as each proxy does it; HAProxy's share is shown below); direct = plain TCP to the backend;" \
		"medians over $ROUNDS rounds (errors, CPU: sums)"
	printf '%-8s  %9s  %7s  %7s  %6s  %11s  %15s  %7s\n' \
		chain "conn/s" "p50 ms" "p99 ms" errors "proxies CPU" "per proxy CPU s" "others"
	for chain in direct weft haproxy; do
		has_chain "$chain" || continue
		k="connect/$chain"
		printf '%-8s  %9s  %7s  %7s  %6s  %11s  %15s  %7s\n' "$chain" \
			"$(fmt_num "$(median_of "$k" per_sec)" %.0f)" "$(fmt_num "$(median_of "$k" p50_ms)" %.3f)" \
			"$(fmt_num "$(median_of "$k" p99_ms)" %.3f)" "$(fmt_num "$(sum_of "$k" errors)" %.0f)" \
			"$(fmt_num "$(sum_of "$k" proxy_cpu_s)" %.1f)" "$(per_proxy_cpu "$k")" \
			"$(fmt_num "$(sum_of "$k" others_cpu_s)" %.1f)"
	done
	if has_chain weft && has_chain haproxy; then
		echo "conn/s by round: weft $(list_of connect/weft per_sec %.0f), haproxy $(list_of connect/haproxy per_sec %.0f)"
		echo "conn/s, weft/haproxy: $(ratio "$(median_of connect/weft per_sec)" "$(median_of connect/haproxy per_sec)")   (no goal)"
		[[ -n ${HAPROXY_REUSE_PCT:-} ]] &&
			echo "HAProxy B resumed $HAPROXY_REUSE_PCT% of its TLS sessions (show info: SslFrontendSessionReuse_pct;" \
				"HAPROXY_TLS_RESUME=$HAPROXY_TLS_RESUME)"
	fi
fi

if has_bench hold; then
	echo
	echo "Memory in MiB: VmRSS idle (after start-up and one request), with $HOLD connections held open through the chain" \
		"(one request each; http: web's upstream to api / HAProxy mode http; tcp: to api-tcp / mode tcp), idle after all" \
		"the runs ($SETTLE s after the last), and the peak (VmHWM); (anon) = RssAnon, the process's own heap and stacks: the rest of VmRSS is pages" \
		"of its executable and libraries, shared with every process mapping the same files (the agent and each sidecar" \
		"run the one $(du -m "$WEFT" 2>/dev/null | cut -f1) MB weft binary)"
	printf '%-20s  %5s  %6s  %9s  %6s  %9s  %6s  %6s  %5s  %s\n' process idle "(anon)" "$HOLD http" "(anon)" \
		"$HOLD tcp" "(anon)" after peak "goals: idle <= 10 MB; after - idle <= 5 MB"
	rows=("web's sidecar|$WEB_PID|weft" "api's sidecar|$API_PID|weft" "api-tcp's sidecar|$API_TCP_PID|weft")
	has_chain haproxy && rows+=("HAProxy A (web side)|$HAPROXY_A_PID|haproxy" "HAProxy B (api side)|$HAPROXY_B_PID|haproxy")
	for row in "${rows[@]}"; do
		IFS='|' read -r name pid chain <<<"$row"
		has_chain "$chain" || continue
		http_line=$(grep "\"pid\":$pid," <<<"${RESULT[hold/$chain/http]:-}" | head -n 1 || true)
		tcp_line=$(grep "\"pid\":$pid," <<<"${RESULT[hold/$chain/tcp]:-}" | head -n 1 || true)
		verdict=""
		[[ $pid == "$WEB_PID" ]] && verdict="$(goal "${IDLE_KIB[$pid]:-}" '<=' "$IDLE_RSS_GOAL_KIB") (anon:" &&
			verdict="$verdict $(goal "${IDLE_ANON_KIB[$pid]:-}" '<=' "$IDLE_RSS_GOAL_KIB"));"
		if [[ $chain == weft && -n ${AFTER_KIB[$pid]:-} && -n ${IDLE_KIB[$pid]:-} ]]; then
			verdict="$verdict after - idle $(mib $((AFTER_KIB[$pid] - IDLE_KIB[$pid]))):"
			verdict="$verdict $(goal $((AFTER_KIB[$pid] - IDLE_KIB[$pid])) '<=' "$AFTER_RSS_GOAL_KIB")"
		fi
		printf '%-20s  %5s  %6s  %9s  %6s  %9s  %6s  %6s  %5s  %s\n' "$name" "$(mib "${IDLE_KIB[$pid]:-}")" \
			"$(mib "${IDLE_ANON_KIB[$pid]:-}")" "$(mib "$(json_field "$http_line" open_kib)")" \
			"$(mib "$(json_field "$http_line" open_anon_kib)")" "$(mib "$(json_field "$tcp_line" open_kib)")" \
			"$(mib "$(json_field "$tcp_line" open_anon_kib)")" "$(mib "${AFTER_KIB[$pid]:-}")" \
			"$(mib "${PEAK_KIB[$pid]:-}")" "$verdict"
	done
	for key in hold/weft/http hold/weft/tcp hold/haproxy/http hold/haproxy/tcp; do
		line=$(grep '"kind":"hold"' <<<"${RESULT[$key]:-}" || true)
		[[ -z $line ]] && continue
		opened=$(json_field "$line" opened)
		((opened == HOLD)) || echo "  warning: $key held only $opened of $HOLD connections"
	done
fi

save_results
