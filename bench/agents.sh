#!/usr/bin/env bash
# agents.sh: how fast changes reach client agents: registration-to-DNS
# propagation between two agents, and many blocking queries woken by a write.
#
# Why: in production, services register on their local client agent and are
# found through other client agents (DNS or blocking queries), so what
# matters is the time from a change on one agent to its being seen on
# another. The issue's goals: propagation p99 <= 50 ms; 2,000 blocking
# queries on one agent all woken <= 100 ms after a write. See
# bench/README.md for what the figures mean and their caveats.
#
# Steps: build weft, propagation and watchers (release); start 3 Weft
# servers and 2 client agents (A and B) on 127.0.0.1; run `propagation`
# (register COUNT services on A, poll B's DNS for each); run `watchers`
# (WATCHERS blocking queries on B, ROUNDS writes); print both reports with
# the goals next to the figures. Everything started here is stopped (and the
# temp dir removed) on exit, on failure and on Ctrl-C.
#
# Environment (all optional):
#   BENCHES="propagation watchers"  which benchmarks to run
#   COUNT=500               registrations for the propagation run
#   PROP_TIMEOUT=5s         a registration not seen on B within this is a failure
#   POLL_INTERVAL=1ms       pause between B's negative DNS answer and the next query
#   WATCHERS=2000           concurrent blocking queries (one connection each) on B
#   ROUNDS=5                writes, each waking all the watchers
#   SETTLE=2s               pause between the watchers' queries and each write
#   WAIT_SECS=60            how long the cluster may take to elect a leader and
#                           the client agents to join
#   BUILD=1                 0: do not run cargo, use existing binaries
#   WEFT=path PROPAGATION=path WATCHERS_BIN=path  binaries (default target/release/...)
#   KEEP_TMP=0              1: keep the temp dir (agent logs) for a post-mortem
#   RESULTS=file            also save both tools' JSON lines to this file
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
PROPAGATION="${PROPAGATION:-$TARGET_DIR/release/propagation}"
WATCHERS_BIN="${WATCHERS_BIN:-$TARGET_DIR/release/watchers}"
BENCHES="${BENCHES:-propagation watchers}"
COUNT="${COUNT:-500}"
PROP_TIMEOUT="${PROP_TIMEOUT:-5s}"
POLL_INTERVAL="${POLL_INTERVAL:-1ms}"
WATCHERS="${WATCHERS:-2000}"
ROUNDS="${ROUNDS:-5}"
SETTLE="${SETTLE:-2s}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS:-}"

# The propagation run stops starting registrations after this (a safety cap).
PROP_MAX_TIME=600

# Loopback ports. Servers: RPC, HTTP and DNS each. Client agents (no RPC
# listener): HTTP and DNS.
WEFT_RPC=(20301 20311 20321)
WEFT_HTTP=(20501 20511 20521)
WEFT_DNS=(20601 20611 20621)
A_HTTP=20531 A_DNS=20631
B_HTTP=20541 B_DNS=20641

LOG_TAG=agents TMP_CONTENTS="agent logs and data"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mib() { if [[ -z $1 || $1 == null ]]; then printf -- '-'; else awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; fi; }

# Runs a benchmark tool in the background (so `wait` is interrupted by Ctrl-C
# or TERM and the trap stops it with the agents) under a `timeout` backstop;
# sets TOOL_OUT to its standard output (JSON lines) and CPU_LINE to the CPU
# seconds used meanwhile by the agents, the tool and everything else.
run_tool() { # name backstop-seconds command...
	local name=$1 secs=$2 rc=0 started=$SECONDS agents0 b0 busy0 tool0 agents1 b1 busy1 tool1
	shift 2
	children_cpu
	agents0=$(pids_cpu_secs "${PIDS[@]}") b0=$(cpu_secs "$b_pid") busy0=$(machine_busy_secs) tool0=$CHILDREN_CPU
	timeout -k 5 "$secs" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	LOAD_PID=$!
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=""
	children_cpu
	agents1=$(pids_cpu_secs "${PIDS[@]}") b1=$(cpu_secs "$b_pid") busy1=$(machine_busy_secs) tool1=$CHILDREN_CPU
	CPU_LINE=$(awk -v a0="$agents0" -v a1="$agents1" -v b0="$b0" -v b1="$b1" -v m0="$busy0" -v m1="$busy1" \
		-v t0="$tool0" -v t1="$tool1" -v wall=$((SECONDS - started)) 'BEGIN {
			a = a1 - a0; t = t1 - t0; o = (m1 - m0) - a - t
			printf "CPU used in ~%d s: the 5 agents %.1f s (vm-b %.1f s), the tool %.1f s, everything else %.1f s", \
				wall, a, b1 - b0, t, (o < 0 ? 0 : o)
		}')
	if ((rc != 0)); then
		log "$name exited with $rc:"
		sed 's/^/    /' "$TMP/$name.err" >&2
	elif [[ -s $TMP/$name.err ]]; then
		log "$name said:"
		sed 's/^/    /' "$TMP/$name.err" >&2
	fi
	TOOL_OUT=$(grep '^{' "$TMP/$name.out" || true)
	[[ -n $TOOL_OUT ]] && printf '%s\n' "$TOOL_OUT" >>"$TMP/results.jsonl"
	return 0
}

# ---------------------------------------------------------------- checks ----

is_duration() { [[ $1 =~ ^[0-9]+(ms|s|m)?$ ]]; }
need_positive COUNT WATCHERS ROUNDS
[[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "WAIT_SECS must be a number of seconds, not '$WAIT_SECS'"
for knob in PROP_TIMEOUT POLL_INTERVAL SETTLE; do
	is_duration "${!knob}" || die "$knob must look like 5s, 500ms or 1m, not '${!knob}'"
done
for b in $BENCHES; do
	[[ $b == propagation || $b == watchers ]] || die "BENCHES may name only propagation and watchers, not '$b'"
done
[[ -n ${BENCHES// /} ]] || die "nothing to run (BENCHES='$BENCHES')"
need_tools curl awk sed grep timeout getconf

# Each watcher is a connection, in the watchers tool and in agent B (which
# inherits this shell's limit): raise the open-files limit before starting.
has_bench watchers && raise_fd_limit $((WATCHERS + 1024)) "WATCHERS=$WATCHERS"

# ----------------------------------------------------------------- build ----

if [[ $BUILD != 0 ]]; then
	log "building: cargo build --release -p weft-cli -p weft-bench"
	(cd "$ROOT" && cargo build --release -p weft-cli -p weft-bench) || die "cargo build failed"
fi
for bin in "$WEFT" "$PROPAGATION" "$WATCHERS_BIN"; do
	[[ -x $bin ]] || die "$bin not found (build it: cargo build --release -p weft-cli -p weft-bench)"
done

make_tmp agents

# ----------------------------------------------------------- agents start ---

check_ports_free "${WEFT_RPC[@]}" "${WEFT_HTTP[@]}" "${WEFT_DNS[@]}" "$A_HTTP" "$A_DNS" "$B_HTTP" "$B_DNS"
server_pids=()
all_joins=()
for i in 0 1 2; do all_joins+=(--retry-join "127.0.0.1:${WEFT_RPC[i]}"); done
for i in 0 1 2; do
	joins=()
	for j in 0 1 2; do
		((j == i)) || joins+=(--retry-join "127.0.0.1:${WEFT_RPC[j]}")
	done
	start_process "s$((i + 1))" "$WEFT" agent --server --node "s$((i + 1))" --data-dir "$TMP/s$((i + 1))" \
		--bootstrap-expect 3 "${joins[@]}" --rpc-addr "127.0.0.1:${WEFT_RPC[i]}" \
		--http-addr "127.0.0.1:${WEFT_HTTP[i]}" --dns-addr "127.0.0.1:${WEFT_DNS[i]}"
	server_pids+=("$STARTED_PID")
done
log "started Weft servers (pids ${server_pids[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
server_has_leader() { has_leader "${WEFT_HTTP[$1]}"; }
wait_all "Weft server" "the Weft cluster had no leader on all 3 servers" "s1 s2 s3" "${server_pids[*]}" server_has_leader
log "Weft leader: $LEADER"

# Client agents: no --server, no --rpc-addr; they join through any server.
start_process vm-a "$WEFT" agent --node vm-a --data-dir "$TMP/vm-a" "${all_joins[@]}" \
	--http-addr "127.0.0.1:$A_HTTP" --dns-addr "127.0.0.1:$A_DNS"
a_pid=$STARTED_PID
start_process vm-b "$WEFT" agent --node vm-b --data-dir "$TMP/vm-b" "${all_joins[@]}" \
	--http-addr "127.0.0.1:$B_HTTP" --dns-addr "127.0.0.1:$B_DNS"
b_pid=$STARTED_PID
# Client agents first: they leave the catalog while the servers are up.
STOP_FIRST=("$a_pid" "$b_pid")
log "started client agents vm-a (pid $a_pid) and vm-b (pid $b_pid); waiting until each sees both (up to ${WAIT_SECS}s)"
CLIENT_HTTP=("$A_HTTP" "$B_HTTP")
sees_both() { # client index
	local nodes
	nodes=$(curl -s --max-time 2 "http://127.0.0.1:${CLIENT_HTTP[$1]}/v1/catalog/nodes" || true)
	[[ $nodes == *'"Node":"vm-a"'* && $nodes == *'"Node":"vm-b"'* ]]
}
wait_all "client agent" "the client agents did not both see vm-a and vm-b in the catalog" "vm-a vm-b" "$a_pid $b_pid" sees_both
log "client agents ready"

# ------------------------------------------------------------ propagation ---

if has_bench propagation; then
	log "propagation: $COUNT registrations on vm-a, polling vm-b's DNS"
	run_tool propagation $((PROP_MAX_TIME + 120)) "$PROPAGATION" \
		--register-addr "127.0.0.1:$A_HTTP" --dns-addr "127.0.0.1:$B_DNS" --count "$COUNT" \
		--timeout "$PROP_TIMEOUT" --poll-interval "$POLL_INTERVAL" --max-time "${PROP_MAX_TIME}s" --format json
	out=$TOOL_OUT
	echo
	echo "Propagation: PUT /v1/agent/service/register on client agent vm-a, then DNS A queries to client agent" \
		"vm-b every $POLL_INTERVAL until answered; 3 servers, all on 127.0.0.1; $COUNT registrations, timeout $PROP_TIMEOUT"
	printf '%11s  %8s  %8s  %8s  %8s  %8s  %15s  %8s  %8s  %s\n' \
		visible "p50 ms" "p90 ms" "p99 ms" "max ms" "mean ms" "PUT p50/p99 ms" failures "DNS lost" "goal p99 <= 50 ms"
	p99=$(json_field "$out" p99_ms)
	printf '%11s  %8s  %8s  %8s  %8s  %8s  %15s  %8s  %8s  %s\n' \
		"$(fmt_num "$(json_field "$out" visible)" %s)/$(fmt_num "$(json_field "$out" attempted)" %s)" \
		"$(fmt_num "$(json_field "$out" p50_ms)" %.2f)" "$(fmt_num "$(json_field "$out" p90_ms)" %.2f)" \
		"$(fmt_num "$p99" %.2f)" "$(fmt_num "$(json_field "$out" max_ms)" %.2f)" \
		"$(fmt_num "$(json_field "$out" mean_ms)" %.2f)" \
		"$(fmt_num "$(json_field "$out" put_p50_ms)" %.2f)/$(fmt_num "$(json_field "$out" put_p99_ms)" %.2f)" \
		"$(fmt_num "$(json_field "$out" failures)" %s)" "$(fmt_num "$(json_field "$out" dns_lost)" %s)" \
		"$(goal "$p99" '<=' 50)"
	kinds=$(sed -nE 's/.*"failure_kinds":\{([^}]*)\}.*/\1/p' <<<"$out")
	[[ -n $kinds ]] && echo "  failures by kind: $kinds"
	first=$(sed -nE 's/.*"first_failure":"(([^"\\]|\\.)*)".*/\1/p' <<<"$out")
	[[ -n $first ]] && echo "  first failure: $first"
	echo "$CPU_LINE"
	for agent in "vm-a $a_pid" "vm-b $b_pid"; do
		read -r name pid <<<"$agent"
		kill -0 "$pid" 2>/dev/null || log "warning: client agent $name is no longer running"
	done
fi

# --------------------------------------------------------------- watchers ---

if has_bench watchers; then
	log "watchers: $WATCHERS blocking queries on vm-b, $ROUNDS rounds"
	# Each round is bounded (arming 60 s, settle, write 10 s, wake 10 s), as is opening.
	run_tool watchers $((180 + ROUNDS * 120)) "$WATCHERS_BIN" \
		--addr "127.0.0.1:$B_HTTP" --watchers "$WATCHERS" --rounds "$ROUNDS" --settle "$SETTLE" \
		--pid "$b_pid" --format json
	echo
	echo "Blocking queries: $WATCHERS watchers on client agent vm-b (GET /v1/health/service/watched?index=..&wait=60s," \
		"one connection each); each round one PUT /v1/catalog/register on vm-b adds an instance; times from" \
		"sending the write"
	printf '%5s  %6s  %6s  %6s  %8s  %6s  %9s  %9s  %9s  %9s  %9s  %s\n' \
		round armed woken missed spurious failed "write ms" "first ms" "p50 ms" "p99 ms" "last ms" "goal last <= 100 ms"
	summary=""
	while IFS= read -r line; do
		if [[ $line == *'"kind":"summary"'* ]]; then
			summary=$line
			continue
		fi
		[[ $line == *'"kind":"round"'* ]] || continue
		last=$(json_field "$line" last_ms)
		printf '%5s  %6s  %6s  %6s  %8s  %6s  %9s  %9s  %9s  %9s  %9s  %s\n' \
			"$(json_field "$line" round)" "$(json_field "$line" armed)" "$(json_field "$line" woken)" \
			"$(json_field "$line" missed)" "$(json_field "$line" spurious)" "$(json_field "$line" failed)" \
			"$(fmt_num "$(json_field "$line" write_ms)" %.2f)" "$(fmt_num "$(json_field "$line" first_ms)" %.2f)" \
			"$(fmt_num "$(json_field "$line" p50_ms)" %.2f)" "$(fmt_num "$(json_field "$line" p99_ms)" %.2f)" \
			"$(fmt_num "$last" %.2f)" "$(goal "$last" '<=' 100)"
	done <<<"$TOOL_OUT"
	if [[ -n $summary ]]; then
		echo "vm-b RSS (pid $b_pid): before the watchers $(mib "$(json_field "$summary" rss_before_kib)")," \
			"with them open $(mib "$(json_field "$summary" rss_open_kib)")," \
			"after closing them $(mib "$(json_field "$summary" rss_after_kib)")" \
			"(peak $(mib "$(json_field "$summary" rss_peak_kib)"))"
	fi
	echo "$CPU_LINE"
	kill -0 "$b_pid" 2>/dev/null || log "warning: client agent vm-b is no longer running"
fi

if [[ -n $RESULTS && -f $TMP/results.jsonl ]]; then
	cp -- "$TMP/results.jsonl" "$RESULTS" && log "reports saved to $RESULTS"
fi
