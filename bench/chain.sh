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

has_bench() { [[ " $BENCHES " == *" $1 "* ]]; }
weft_cli() { "$WEFT" "$@" --http-addr "127.0.0.1:$WEFT_HTTP"; }
api_put() { api_put_to "$WEFT_HTTP" "$@"; }

# ---------------------------------------------------------------- checks ----

need_positive ROUNDS RATE RATE_CONNECTIONS MAX_CONNECTIONS
[[ $DECOY_ROUTES =~ ^[0-9]+$ ]] || die "DECOY_ROUTES must be a number, not '$DECOY_ROUTES'"
[[ $PLAIN_INSTANCES == 1 || $PLAIN_INSTANCES == 2 ]] || die "PLAIN_INSTANCES must be 1 or 2, not '$PLAIN_INSTANCES'"
[[ $BODY_SIZE =~ ^[0-9]+$ ]] || die "BODY_SIZE must be a number of bytes, not '$BODY_SIZE'"
[[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "WAIT_SECS must be a number of seconds, not '$WAIT_SECS'"
for knob in RATE_DURATION MAX_DURATION WARMUP; do
	duration_secs "${!knob}" >/dev/null || die "$knob must be whole seconds (e.g. 10s), not '${!knob}'"
done
for knob in RATE_DURATION MAX_DURATION; do
	(($(duration_secs "${!knob}") > 0)) || die "$knob must be more than 0s"
done
for b in $BENCHES; do
	[[ $b == rate || $b == max ]] || die "BENCHES may name only rate and max, not '$b'"
done
[[ -n ${BENCHES// /} ]] || die "nothing to run (BENCHES='$BENCHES')"
need_tools curl awk sed grep pgrep timeout getconf

# ----------------------------------------------------------------- build ----

if [[ $BUILD != 0 ]]; then
	log "building: cargo build --release -p weft-cli -p weft-bench"
	(cd "$ROOT" && cargo build --release -p weft-cli -p weft-bench) || die "cargo build failed"
fi
for bin in "$WEFT" "$HTTP_LOAD" "$HTTP_BACKEND"; do
	[[ -x $bin ]] || die "$bin not found (build it: cargo build --release -p weft-cli -p weft-bench)"
done

make_tmp chain
[[ $COPY_BINARIES == 0 ]] || copy_binaries WEFT HTTP_LOAD HTTP_BACKEND

# ------------------------------------------------------ backend and weft ----

check_ports_free "$WEFT_RPC" "$WEFT_HTTP" "$WEFT_DNS" "$BACKEND_PORT" "$WEB_SIDECAR" "${API_SIDECARS[@]}" \
	"${CHAIN_SIDECARS[@]}" "$WEB_UPSTREAM_PLAIN" "$WEB_UPSTREAM_CHAIN"

start_process backend "$HTTP_BACKEND" --listen "127.0.0.1:$BACKEND_PORT" --body-size "$BODY_SIZE"
BACKEND_PID=$STARTED_PID
wait_until "answer from the backend" backend "$BACKEND_PID" answers "$BACKEND_PORT"

start_process weft "$WEFT" agent --server --node chain-bench --data-dir "$TMP/weft" --bootstrap-expect 1 \
	--rpc-addr "127.0.0.1:$WEFT_RPC" --http-addr "127.0.0.1:$WEFT_HTTP" --dns-addr "127.0.0.1:$WEFT_DNS"
WEFT_PID=$STARTED_PID
log "started a Weft server (pid $WEFT_PID); waiting for it to lead (up to ${WAIT_SECS}s)"
wait_until "Weft leader" weft "$WEFT_PID" has_leader "$WEFT_HTTP"
has_ca() { [[ $(curl -sf --max-time 10 "http://127.0.0.1:$WEFT_HTTP/v1/agent/connect/ca/roots" 2>/dev/null) == *'"RootCert":"-----BEGIN'* ]]; }
wait_until "mesh CA root" weft "$WEFT_PID" has_ca

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
for file in "$TMP/entries/"*.json; do
	weft_cli config write "$file" >"$TMP/cli.out" 2>&1 || die "weft config write $file: $(cat "$TMP/cli.out")"
done

# ---------------------------------------------------------- registrations ----

for ((i = 0; i < PLAIN_INSTANCES; i++)); do
	api_put /v1/agent/service/register \
		"{\"ID\":\"api-$((i + 1))\",\"Name\":\"api\",\"Port\":$BACKEND_PORT,\"Connect\":{\"SidecarService\":{\"Port\":${API_SIDECARS[i]}}}}"
done
for i in 0 1; do
	api_put /v1/agent/service/register \
		"{\"ID\":\"api-chain-v$((i + 1))\",\"Name\":\"api-chain\",\"Port\":$BACKEND_PORT,\"Meta\":{\"version\":\"v$((i + 1))\"},
		\"Connect\":{\"SidecarService\":{\"Port\":${CHAIN_SIDECARS[i]}}}}"
done
# web itself is the load generator: nothing listens on its own port.
api_put /v1/agent/service/register \
	"{\"Name\":\"web\",\"Port\":23701,\"Connect\":{\"SidecarService\":{\"Port\":$WEB_SIDECAR,\"Proxy\":{\"Upstreams\":[
		{\"DestinationName\":\"api\",\"LocalBindPort\":$WEB_UPSTREAM_PLAIN},
		{\"DestinationName\":\"api-chain\",\"LocalBindPort\":$WEB_UPSTREAM_CHAIN}]}}}}"
for destination in api api-chain; do
	weft_cli intention create --allow web "$destination" >"$TMP/cli.out" 2>&1 ||
		die "weft intention create --allow web $destination: $(cat "$TMP/cli.out")"
done

log "waiting for the sidecars to carry traffic (up to ${WAIT_SECS}s)"
sidecars_found() {
	local i pid
	WEB_PID=$(sidecar_pid web "$WEFT_HTTP") || return 1
	API_PIDS=() CHAIN_PIDS=()
	for ((i = 1; i <= PLAIN_INSTANCES; i++)); do
		pid=$(sidecar_pid "api-$i" "$WEFT_HTTP") || return 1
		API_PIDS+=("$pid")
	done
	for i in 1 2; do
		pid=$(sidecar_pid "api-chain-v$i" "$WEFT_HTTP") || return 1
		CHAIN_PIDS+=("$pid")
	done
}
wait_until "sidecar processes for web, api and api-chain" weft "$WEFT_PID" sidecars_found
SIDECAR_PIDS=("$WEB_PID" "${API_PIDS[@]}" "${CHAIN_PIDS[@]}")
wait_until "answer through web's upstream to api" weft "$WEFT_PID" answers "$WEB_UPSTREAM_PLAIN"
wait_until "answer through web's upstream to api-chain" weft "$WEFT_PID" answers "$WEB_UPSTREAM_CHAIN"
sidecars_found || die "the sidecars changed while starting"
SIDECAR_PIDS=("$WEB_PID" "${API_PIDS[@]}" "${CHAIN_PIDS[@]}")
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
if ! sidecars_found || [[ "$WEB_PID ${API_PIDS[*]} ${CHAIN_PIDS[*]}" != "${SIDECAR_PIDS[*]}" ]]; then
	log "warning: a sidecar was restarted during the run"
fi

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
	printf '%-7s  %8s  %7s  %7s  %7s  %7s  %9s  %9s  %6s  %8s  %11s  %7s\n' \
		path "req/s" p50 p90 p99 max "added p50" "added p99" errors "lag p99" "proxies CPU" "others"
	for path in direct plain chain; do
		k="rate/$path"
		added50=- added99=-
		if [[ $path != direct ]]; then
			added50=$(added_values "$path" p50_ms | median)
			added99=$(added_values "$path" p99_ms | median)
		fi
		ADDED50[$path]=$added50 ADDED99[$path]=$added99
		printf '%-7s  %8s  %7s  %7s  %7s  %7s  %9s  %9s  %6s  %8s  %11s  %7s\n' "$path" \
			"$(fmt_num "$(median_of "$k" per_sec)" %.1f)" "$(fmt_num "$(median_of "$k" p50_ms)" %.3f)" \
			"$(fmt_num "$(median_of "$k" p90_ms)" %.3f)" "$(fmt_num "$(median_of "$k" p99_ms)" %.3f)" \
			"$(fmt_num "$(max_of "$k" max_ms)" %.2f)" "$(fmt_num "$added50" %.3f)" "$(fmt_num "$added99" %.3f)" \
			"$(fmt_num "$(sum_of "$k" errors)" %.0f)" "$(fmt_num "$(median_of "$k" lag_p99_ms)" %.3f)" \
			"$(fmt_num "$(sum_of "$k" proxy_cpu_s)" %.1f)" "$(fmt_num "$(sum_of "$k" others_cpu_s)" %.1f)"
	done
	echo "added p99 by round, ms: plain $(added_values plain p99_ms | awk '{ printf (NR > 1 ? " " : "") "%.3f", $1 }')," \
		"chain $(added_values chain p99_ms | awk '{ printf (NR > 1 ? " " : "") "%.3f", $1 }')"
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
	printf '%-7s  %9s  %9s  %7s  %7s  %6s  %11s  %15s  %7s\n' \
		path "req/s" "vs direct" "p50 ms" "p99 ms" errors "proxies CPU" "per proxy CPU s" "others"
	declare -A PER_CPU=()
	for path in direct plain chain; do
		k="max/$path"
		PER_CPU[$path]=$(per_proxy_cpu "$k")
		printf '%-7s  %9s  %9s  %7s  %7s  %6s  %11s  %15s  %7s\n' "$path" \
			"$(fmt_num "$(median_of "$k" per_sec)" %.0f)" "$(ratio "$(median_of "$k" per_sec)" "$(median_of max/direct per_sec)")" \
			"$(fmt_num "$(median_of "$k" p50_ms)" %.3f)" "$(fmt_num "$(median_of "$k" p99_ms)" %.3f)" \
			"$(fmt_num "$(sum_of "$k" errors)" %.0f)" "$(fmt_num "$(sum_of "$k" proxy_cpu_s)" %.1f)" "${PER_CPU[$path]}" \
			"$(fmt_num "$(sum_of "$k" others_cpu_s)" %.1f)"
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

if [[ -n $RESULTS && -f $TMP/results.jsonl ]]; then
	cp -- "$TMP/results.jsonl" "$RESULTS" && log "reports saved to $RESULTS"
fi
