#!/usr/bin/env bash
# chain.sh: what a discovery chain (service-router + service-splitter +
# service-resolver with subsets) costs in the sidecar, against the plain L7
# path, measured in the same run.
#
# Why: traffic management runs on every request in web's sidecar (match the
# routes in order, draw a split, pick the subset's endpoints), so it must
# not cost much over a destination without it. The issue's goal: with a
# router + splitter + resolver chain in the path, the sidecar's throughput
# and added p99 stay within 10% of the plain L7 path. See bench/README.md
# for what the figures mean and their caveats.
#
# Three paths in the same run, to the same backend (`http-backend`, 1 KiB
# bodies):
#   direct  http-load -> backend
#   plain   http-load -> web's sidecar (upstream api: protocol http, no
#           router, splitter or resolver) =mTLS=> an api sidecar -> backend
#   chain   http-load -> web's sidecar (upstream api-chain: protocol http, a
#           router with DECOY_ROUTES routes that do not match and a catch-all,
#           a 50/50 splitter over subsets v1 and v2, a resolver defining them
#           by Service.Meta.version) =mTLS=> the v1 or v2 sidecar -> backend
# api has PLAIN_INSTANCES instances (2 by default, as api-chain has one per
# subset), each with its own sidecar, so both paths spread over as many
# destination sidecars and differ only in the chain.
#
# Steps: build weft, http-backend and http-load (release); copy them into
# the temp dir; start the backend and one Weft server (--bootstrap-expect 1,
# so intentions deny by default); write the config entries; register the
# api and api-chain instances and web (a sidecar with upstreams to both);
# allow web -> api and web -> api-chain; check that the chain is what it
# should be (`weft troubleshoot route`); run http-load against each path
# (fixed rate, then max throughput: ROUNDS rounds, direct first, then plain
# and chain, their order swapped every round); print one table (medians
# over the rounds) with the ratio chain/plain and the goal next to it, and
# how the requests of the chain path were split between v1 and v2.
# Everything started here is stopped (and the temp dir removed) on exit, on
# failure and on Ctrl-C.
#
# Environment (all optional):
#   BENCHES="rate max"      which measurements to run
#   ROUNDS=3                rounds; each runs every path in turn, the table shows medians
#   RATE=1000               the fixed request rate of the latency runs (req/s)
#   RATE_DURATION=15s       measured time of each fixed-rate run
#   RATE_CONNECTIONS=10     keep-alive connections the fixed rate is spread over
#   MAX_DURATION=10s        measured time of each max-throughput run
#   MAX_CONNECTIONS=32      keep-alive connections of the max-throughput runs
#   WARMUP=1s               load before each run's measured time, not counted
#   BODY_SIZE=1024          bytes of every answer's body
#   DECOY_ROUTES=3          routes before the catch-all that no request matches
#                           (header exact, path prefix, header regex, in turn)
#   PLAIN_INSTANCES=2       instances (sidecars) of api, the plain path's destination: 1 or 2
#   WAIT_SECS=60            how long Weft may take to start, and the mesh to carry traffic
#   BUILD=1                 0: do not run cargo, use existing binaries
#   COPY_BINARIES=1         0: run the binaries where they are, not copies in the temp dir
#   WEFT=path HTTP_LOAD=path HTTP_BACKEND=path  binaries (default target/release/...)
#   KEEP_TMP=0              1: keep the temp dir (logs, config entries)
#   RESULTS=file            also save the tool's JSON lines to this file
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
HTTP_LOAD="${HTTP_LOAD:-$TARGET_DIR/release/http-load}"
HTTP_BACKEND="${HTTP_BACKEND:-$TARGET_DIR/release/http-backend}"
BENCHES="${BENCHES:-rate max}"
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-1000}"
RATE_DURATION="${RATE_DURATION:-15s}"
RATE_CONNECTIONS="${RATE_CONNECTIONS:-10}"
MAX_DURATION="${MAX_DURATION:-10s}"
MAX_CONNECTIONS="${MAX_CONNECTIONS:-32}"
WARMUP="${WARMUP:-1s}"
BODY_SIZE="${BODY_SIZE:-1024}"
DECOY_ROUTES="${DECOY_ROUTES:-3}"
PLAIN_INSTANCES="${PLAIN_INSTANCES:-2}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"
COPY_BINARIES="${COPY_BINARIES:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS:-}"

# The issue's goal: within 10% of the plain path.
GOAL_TOLERANCE=0.10

# Loopback ports. Weft's server: RPC, HTTP, DNS. The backend. The sidecars'
# public (mTLS) ports: web, api's two instances, api-chain's v1 and v2.
# web's upstream listeners: api, api-chain.
WEFT_RPC=23300 WEFT_HTTP=23500 WEFT_DNS=23600
BACKEND_PORT=23700
WEB_SIDECAR=23710 API_SIDECARS=(23711 23712) CHAIN_SIDECARS=(23713 23714)
WEB_UPSTREAM_PLAIN=23720 WEB_UPSTREAM_CHAIN=23721

LOG_TAG=chain
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WEFT_PID="" BACKEND_PID="" WEB_PID=""
API_PIDS=() CHAIN_PIDS=()

# ---------------------------------------------------------------- checks ----

need_positive ROUNDS RATE RATE_CONNECTIONS MAX_CONNECTIONS
[[ $DECOY_ROUTES =~ ^[0-9]+$ ]] || die "DECOY_ROUTES must be a number, not '$DECOY_ROUTES'"
[[ $PLAIN_INSTANCES == 1 || $PLAIN_INSTANCES == 2 ]] || die "PLAIN_INSTANCES must be 1 or 2, not '$PLAIN_INSTANCES'"
need_number BODY_SIZE "a number of bytes"
need_number WAIT_SECS "a number of seconds"
need_secs RATE_DURATION MAX_DURATION WARMUP
need_positive_secs RATE_DURATION MAX_DURATION
for b in $BENCHES; do
	[[ $b == rate || $b == max ]] || die "BENCHES may name only rate and max, not '$b'"
done
[[ -n ${BENCHES// /} ]] || die "nothing to run (BENCHES='$BENCHES')"
need_tools curl awk sed grep pgrep timeout getconf

# ----------------------------------------------------------------- build ----

build_binaries "$WEFT" "$HTTP_LOAD" "$HTTP_BACKEND"

make_tmp chain
[[ $COPY_BINARIES == 0 ]] || copy_binaries WEFT HTTP_LOAD HTTP_BACKEND

# ------------------------------------------------------ backend and weft ----

check_ports_free "$WEFT_RPC" "$WEFT_HTTP" "$WEFT_DNS" "$BACKEND_PORT" "$WEB_SIDECAR" "${API_SIDECARS[@]}" \
	"${CHAIN_SIDECARS[@]}" "$WEB_UPSTREAM_PLAIN" "$WEB_UPSTREAM_CHAIN"

start_backend
start_weft_server chain-bench

# ------------------------------------------------------- config entries ----

# The router: DECOY_ROUTES routes no request of http-load matches (it sends
# GET / with only a Host header), each sending to a subset, then a catch-all
# to api-chain itself, i.e. on to its splitter.
decoy_route() { # i
	case $(($1 % 3)) in
	0) printf '{"Match":{"HTTP":{"Header":[{"Name":"x-decoy-%d","Exact":"1"}]}},"Destination":{"ServiceSubset":"v2"}}' "$1" ;;
	1) printf '{"Match":{"HTTP":{"PathPrefix":"/decoy-%d/"}},"Destination":{"ServiceSubset":"v1","PrefixRewrite":"/"}}' "$1" ;;
	2) printf '{"Match":{"HTTP":{"Header":[{"Name":"User-Agent","Regex":".*Decoy-%d.*"}]}},"Destination":{"ServiceSubset":"v2"}}' "$1" ;;
	esac
}
routes=""
for ((i = 0; i < DECOY_ROUTES; i++)); do routes+="$(decoy_route "$i"),"; done
routes+='{"Match":{"HTTP":{"PathPrefix":"/"}},"Destination":{"Service":"api-chain"}}'

mkdir -p "$TMP/entries"
# In dependency order: protocols first, the resolver's subsets before what names them.
cat >"$TMP/entries/1-api-defaults.json" <<<'{"Kind":"service-defaults","Name":"api","Protocol":"http"}'
cat >"$TMP/entries/2-api-chain-defaults.json" <<<'{"Kind":"service-defaults","Name":"api-chain","Protocol":"http"}'
cat >"$TMP/entries/3-api-chain-resolver.json" <<<'{"Kind":"service-resolver","Name":"api-chain","DefaultSubset":"v1",
 "Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2"}}}'
cat >"$TMP/entries/4-api-chain-splitter.json" <<<'{"Kind":"service-splitter","Name":"api-chain",
 "Splits":[{"Weight":50,"ServiceSubset":"v1"},{"Weight":50,"ServiceSubset":"v2"}]}'
cat >"$TMP/entries/5-api-chain-router.json" <<<"{\"Kind\":\"service-router\",\"Name\":\"api-chain\",\"Routes\":[$routes]}"
write_config_entries "$TMP/entries/"*.json

# ---------------------------------------------------------- registrations ----

api_ids="" chain_ids=""
for ((i = 1; i <= PLAIN_INSTANCES; i++)); do
	register_backend_service api "${API_SIDECARS[i - 1]}" "\"ID\":\"api-$i\""
	api_ids+=" api-$i"
done
for i in 1 2; do
	register_backend_service api-chain "${CHAIN_SIDECARS[i - 1]}" "\"ID\":\"api-chain-v$i\",\"Meta\":{\"version\":\"v$i\"}"
	chain_ids+=" api-chain-v$i"
done
upstreams=("api=$WEB_UPSTREAM_PLAIN" "api-chain=$WEB_UPSTREAM_CHAIN")
register_web 23701 "$WEB_SIDECAR" "${upstreams[@]}"
allow_intentions web api api-chain

wait_for_mesh "web, api and api-chain" "web$api_ids$chain_ids" "${upstreams[@]}"
WEB_PID=${SIDECAR_OF[web]} API_PIDS=() CHAIN_PIDS=()
for id in $api_ids; do API_PIDS+=("${SIDECAR_OF[$id]}"); done
for id in $chain_ids; do CHAIN_PIDS+=("${SIDECAR_OF[$id]}"); done
log "sidecars: web $WEB_PID, api ${API_PIDS[*]}, api-chain v1 ${CHAIN_PIDS[0]} v2 ${CHAIN_PIDS[1]}"

# The chain must be what this benchmark is about: GET / falls through the
# decoy routes to the catch-all, and on to a 50/50 split of v1 and v2.
weft_cli troubleshoot route --source web --destination api-chain >"$TMP/troubleshoot.out" 2>&1 ||
	die "weft troubleshoot route: $(cat "$TMP/troubleshoot.out")"
if ! grep -q "route $((DECOY_ROUTES + 1))" "$TMP/troubleshoot.out" || ! grep -q '50% to v1\.api-chain' "$TMP/troubleshoot.out" ||
	! grep -q '50% to v2\.api-chain' "$TMP/troubleshoot.out"; then
	sed 's/^/    /' "$TMP/troubleshoot.out" >&2
	die "GET / to api-chain does not take route $((DECOY_ROUTES + 1)) and a 50/50 split of v1 and v2 (above)"
fi
weft_cli troubleshoot route --source web --destination api >"$TMP/troubleshoot-plain.out" 2>&1 || true
log "GET / to api-chain: $(grep -m1 -o "service-router api-chain, route [0-9]*" "$TMP/troubleshoot.out"), 50% to v1, 50% to v2"

# Inbound requests a sidecar has served (its Prometheus counters, through
# the admin port that `weft proxy config-dump` names).
served() { # sidecar-owner-id
	local admin
	admin=$(weft_cli proxy config-dump --sidecar-for "$1" 2>/dev/null | sed -nE 's/^ *"admin": *"([^"]+)".*/\1/p')
	[[ -n $admin ]] || return 0
	curl -sf --max-time 5 "http://$admin/metrics" 2>/dev/null |
		awk '/^weft_proxy_requests(_total)?\{/ && /direction="[Ii]nbound"/ { n += $NF } END { printf "%.0f", n }'
}
declare -A SERVED0=()
for id in api-chain-v1 api-chain-v2; do SERVED0[$id]=$(served "$id"); done

# ------------------------------------------------------------------ runs ----

addr_of() { case $1 in direct) echo "127.0.0.1:$BACKEND_PORT" ;; plain) echo "127.0.0.1:$WEB_UPSTREAM_PLAIN" ;; chain) echo "127.0.0.1:$WEB_UPSTREAM_CHAIN" ;; esac }
pids_of() { case $1 in direct) echo "" ;; plain) echo "$WEB_PID ${API_PIDS[*]}" ;; chain) echo "$WEB_PID ${CHAIN_PIDS[*]}" ;; esac }
# direct first (the baseline of the round), then plain and chain, swapped every round.
round_order() { if (($1 % 2)); then echo "direct plain chain"; else echo "direct chain plain"; fi; }

warmup_s=$(duration_secs "$WARMUP")
common_args=(--expect-bytes "$BODY_SIZE" --warmup "${warmup_s}s")
run_rounds() { # bench seconds http-load-arguments...
	local bench=$1 secs=$2 round path
	shift 2
	for ((round = 1; round <= ROUNDS; round++)); do
		for path in $(round_order "$round"); do
			log "$bench, round $round of $ROUNDS: $path (${warmup_s}s + ${secs}s)"
			run_load "$bench/$path/$round" "$(pids_of "$path")" $((secs + warmup_s + 90)) "$@" \
				--addr "$(addr_of "$path")" --duration "${secs}s" "${common_args[@]}"
		done
	done
}

has_bench rate && run_rounds rate "$(duration_secs "$RATE_DURATION")" rate --rate "$RATE" --connections "$RATE_CONNECTIONS"
has_bench max && run_rounds max "$(duration_secs "$MAX_DURATION")" max --connections "$MAX_CONNECTIONS"

declare -A SERVED=()
for id in api-chain-v1 api-chain-v2; do SERVED[$id]=$(awk -v a="$(served "$id")" -v b="${SERVED0[$id]}" 'BEGIN { print a - b }'); done
for pid in "${SIDECAR_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || log "warning: sidecar $pid is no longer running"; done
sidecars_unchanged || log "warning: a sidecar was restarted during the run"

# ----------------------------------------------------------------- table ----

low=$(awk -v t="$GOAL_TOLERANCE" 'BEGIN { printf "%.2f", 1 - t }')
high=$(awk -v t="$GOAL_TOLERANCE" 'BEGIN { printf "%.2f", 1 + t }')

cores=$(nproc 2>/dev/null || echo '?')
echo
echo "Discovery chain cost on 127.0.0.1, $cores cores: HTTP/1.1 keep-alive GET /, ${BODY_SIZE}-byte answers from http-backend"
echo "  direct  http-load -> backend"
echo "  plain   http-load -> web's sidecar (upstream api, protocol http, no router/splitter/resolver) =mTLS=>" \
	"one of api's $PLAIN_INSTANCES sidecar(s) -> backend"
echo "  chain   http-load -> web's sidecar (upstream api-chain: router with $DECOY_ROUTES non-matching routes + catch-all," \
	"splitter 50/50 v1/v2, resolver subsets by Service.Meta.version) =mTLS=> the v1 or v2 sidecar -> backend"
echo "  CPU s: CPU seconds used during the runs by the path's proxies / by everything else on the machine" \
	"(but the tool and the backend); a large 'others' means the run was disturbed"

if has_bench rate; then
	declare -A ADDED50=() ADDED99=()
	echo
	echo "Latency at a fixed $RATE req/s (open loop over $RATE_CONNECTIONS keep-alive connections, $(duration_secs "$RATE_DURATION")s" \
		"measured after ${warmup_s}s warm-up); ms from each request's scheduled send time; added = path - direct (per round);" \
		"medians over $ROUNDS rounds (max: the largest; errors, CPU: sums)"
	rate_table_header 7 path
	for path in direct plain chain; do
		added50=- added99=-
		if [[ $path != direct ]]; then
			added50=$(added_values "$path" p50_ms | median)
			added99=$(added_values "$path" p99_ms | median)
		fi
		ADDED50[$path]=$added50 ADDED99[$path]=$added99
		rate_table_path 7 "$path" "$added50" "$added99"
	done
	echo "added p99 by round, ms: plain $(added_p99_list plain)," \
		"chain $(added_p99_list chain)"
	q=$(ratio "${ADDED99[chain]}" "${ADDED99[plain]}")
	echo "added p99, chain/plain: $q (chain - plain: $(fmt_num "$(minus "${ADDED99[chain]}" "${ADDED99[plain]}")" %.3f) ms)" \
		"  (goal: within 10%, <= $high: $(goal "$q" '<=' "$high"))"
	echo "added p50, chain/plain: $(ratio "${ADDED50[chain]}" "${ADDED50[plain]}")" \
		"(chain - plain: $(fmt_num "$(minus "${ADDED50[chain]}" "${ADDED50[plain]}")" %.3f) ms)"
fi

if has_bench max; then
	echo
	echo "Max throughput (closed loop, $MAX_CONNECTIONS keep-alive connections, $(duration_secs "$MAX_DURATION")s measured after" \
		"${warmup_s}s warm-up); medians over $ROUNDS rounds (errors, CPU: sums); per proxy CPU s = requests per CPU second" \
		"of the path's proxies"
	max_table_header 7 path
	declare -A PER_CPU=()
	for path in direct plain chain; do
		PER_CPU[$path]=$(per_proxy_cpu "max/$path")
		max_table_path 7 "$path" "${PER_CPU[$path]}"
	done
	echo "req/s by round: plain $(list_of max/plain per_sec %.0f), chain $(list_of max/chain per_sec %.0f)"
	q=$(ratio "$(median_of max/chain per_sec)" "$(median_of max/plain per_sec)")
	echo "req/s, chain/plain: $q   (goal: within 10%, >= $low: $(goal "$q" '>=' "$low"))"
	echo "req per proxy CPU s, chain/plain: $(ratio "${PER_CPU[chain]}" "${PER_CPU[plain]}")"
fi

v1=${SERVED[api-chain-v1]:-} v2=${SERVED[api-chain-v2]:-}
if [[ $v1 =~ ^[0-9]+$ && $v2 =~ ^[0-9]+$ ]] && ((v1 + v2 > 0)); then
	echo
	echo "chain split: v1's sidecar served $v1 requests, v2's $v2 ($(awk -v a="$v1" -v b="$v2" 'BEGIN { printf "%.1f", 100 * a / (a + b) }')%" \
		"to v1; the splitter says 50%)"
else
	log "warning: could not read the api-chain sidecars' request counters (v1: '${v1}', v2: '${v2}')"
fi

save_results
