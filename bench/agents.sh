#!/usr/bin/env bash
# agents.sh: how fast changes reach client agents: registration-to-DNS
# propagation between two agents, and many blocking queries woken by a write,
# with the cluster's RPC in plaintext and over TLS.
#
# Why: in production, services register on their local client agent and are
# found through other client agents (DNS or blocking queries), so what
# matters is the time from a change on one agent to its being seen on
# another. The issue's goals: propagation p99 <= 50 ms; 2,000 blocking
# queries on one agent all woken <= 100 ms after a write; and (issue 13)
# propagation p99 with TLS on server RPC within 10% of plaintext. See
# bench/README.md for what the figures mean and their caveats.
#
# Steps: build weft, propagation and watchers (release); for each RPC mode
# (plaintext, then TLS), start 3 Weft servers and 2 client agents (A and B)
# on 127.0.0.1, run `propagation` (register COUNT services on A, poll B's
# DNS for each) and `watchers` (WATCHERS blocking queries on B, ROUNDS
# writes), and stop them; then print both modes' reports side by side, with
# the goals next to the figures. With TLS, the servers have certificates
# from `weft tls` and the client agents enroll with join tokens. Everything
# started here is stopped (and the temp dir removed) on exit, on failure and
# on Ctrl-C.
#
# Environment (all optional):
#   BENCHES="propagation watchers"  which benchmarks to run
#   RPC_TLS=both            plain: only plaintext RPC; tls: only TLS; both: plaintext, then TLS
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
#   KEEP_TMP=0              1: keep the temp dir (agent logs, certificates) for a post-mortem
#   RESULTS=file            also save both tools' JSON lines (with "rpc":"plain"|"tls") to this file
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
PROPAGATION="${PROPAGATION:-$TARGET_DIR/release/propagation}"
WATCHERS_BIN="${WATCHERS_BIN:-$TARGET_DIR/release/watchers}"
BENCHES="${BENCHES:-propagation watchers}"
RPC_TLS="${RPC_TLS:-both}"
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

# Loopback ports, by mode. Servers: RPC, HTTP and DNS each. Client agents
# (no RPC listener): HTTP and DNS.
declare -A PORTS=(
	[plain/rpc]="20301 20311 20321" [plain/http]="20501 20511 20521" [plain/dns]="20601 20611 20621"
	[plain/a]="20531 20631" [plain/b]="20541 20641"
	[tls/rpc]="20302 20312 20322" [tls/http]="20502 20512 20522" [tls/dns]="20602 20612 20622"
	[tls/a]="20532 20632" [tls/b]="20542 20642"
)

LOG_TAG=agents TMP_CONTENTS="agent logs, data and certificates"
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
	[[ -n $TOOL_OUT ]] && sed -E "s/^\\{/{\"rpc\":\"$MODE\",/" <<<"$TOOL_OUT" >>"$TMP/results.jsonl"
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
case $RPC_TLS in
plain) MODES=(plain) ;;
tls) MODES=(tls) ;;
both) MODES=(plain tls) ;;
*) die "RPC_TLS must be plain, tls or both, not '$RPC_TLS'" ;;
esac
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

# All modes' ports must be free before the first starts.
for mode in "${MODES[@]}"; do
	# shellcheck disable=SC2086 # lists of ports
	check_ports_free ${PORTS[$mode/rpc]} ${PORTS[$mode/http]} ${PORTS[$mode/dns]} ${PORTS[$mode/a]} ${PORTS[$mode/b]}
done

# ---------------------------------------------------------- certificates ----

# `weft tls` writes into its working directory: a relative WEFT=path must
# still name the binary from there.
if [[ $WEFT == */* && $WEFT != /* ]]; then WEFT="$PWD/$WEFT"; fi

# For TLS: a CA and one certificate per server, made with `weft tls` as an
# operator would (server.dc1.weft and localhost; the servers dial each other
# by 127.0.0.1 and verify the name server.dc1.weft).
CA_FILE="" CERT_FILES=() KEY_FILES=()
if [[ " ${MODES[*]} " == *" tls "* ]]; then
	mkdir -p "$TMP/certs"
	(cd "$TMP/certs" && "$WEFT" tls ca create) >"$TMP/certs/ca.out" 2>&1 ||
		die "weft tls ca create: $(cat "$TMP/certs/ca.out")"
	CA_FILE=$(sed -n 's/^==> Saved \(.*-agent-ca\.pem\)$/\1/p' "$TMP/certs/ca.out")
	[[ -f $CA_FILE ]] || die "weft tls ca create did not say where it saved the CA: $(cat "$TMP/certs/ca.out")"
	for i in 0 1 2; do
		(cd "$TMP/certs" && "$WEFT" tls cert create -server) >"$TMP/certs/cert$i.out" 2>&1 ||
			die "weft tls cert create -server: $(cat "$TMP/certs/cert$i.out")"
		saved=()
		mapfile -t saved < <(sed -n 's/^==> Saved //p' "$TMP/certs/cert$i.out")
		[[ ${#saved[@]} == 2 && -f ${saved[0]} && -f ${saved[1]} ]] ||
			die "weft tls cert create -server did not save a certificate and a key: $(cat "$TMP/certs/cert$i.out")"
		CERT_FILES+=("${saved[0]}") KEY_FILES+=("${saved[1]}")
	done
	log "made a CA and 3 server certificates in $TMP/certs with weft tls"
fi

# True when a TLS 1.3 handshake with 127.0.0.1:<port>, verifying the
# certificate against the CA and the name server.dc1.weft, succeeds (the
# HTTP answer does not matter).
speaks_tls() { # port
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --tlsv1.3 --cacert "$CA_FILE" \
		--resolve "server.dc1.weft:$1:127.0.0.1" "https://server.dc1.weft:$1/" 2>/dev/null) || return 1
	[[ $code =~ ^[0-9]+$ ]]
}

# ---------------------------------------------------------- the clusters ----

# Starts 3 servers and client agents A and B in `mode` (plain or tls); sets
# MODE, WEFT_RPC, WEFT_HTTP, WEFT_DNS, A_HTTP, A_DNS, B_HTTP, B_DNS, a_pid,
# b_pid, and WRITER (index of the first follower, where the watchers' writes
# go); the processes go in PIDS (the clients also in STOP_FIRST).
start_cluster() { # mode
	local i j label node token
	local -a joins all_joins config server_pids=() names=() a_token=() b_token=()
	MODE=$1
	read -r -a WEFT_RPC <<<"${PORTS[$MODE/rpc]}"
	read -r -a WEFT_HTTP <<<"${PORTS[$MODE/http]}"
	read -r -a WEFT_DNS <<<"${PORTS[$MODE/dns]}"
	read -r A_HTTP A_DNS <<<"${PORTS[$MODE/a]}"
	read -r B_HTTP B_DNS <<<"${PORTS[$MODE/b]}"
	all_joins=()
	for i in 0 1 2; do all_joins+=(--retry-join "127.0.0.1:${WEFT_RPC[i]}"); done
	for i in 0 1 2; do
		label="$MODE-s$((i + 1))"
		joins=()
		for j in 0 1 2; do
			((j == i)) || joins+=(--retry-join "127.0.0.1:${WEFT_RPC[j]}")
		done
		config=()
		if [[ $MODE == tls ]]; then
			# verify_incoming, verify_outgoing and verify_server_hostname are on by default.
			cat >"$TMP/$label.hcl" <<-HCL
				tls {
				  defaults {
				    ca_file   = "$CA_FILE"
				    cert_file = "${CERT_FILES[i]}"
				    key_file  = "${KEY_FILES[i]}"
				  }
				}
			HCL
			config=(--config-file "$TMP/$label.hcl")
		fi
		start_process "$label" "$WEFT" agent --server --node "s$((i + 1))" --data-dir "$TMP/$label" \
			--bootstrap-expect 3 "${joins[@]}" "${config[@]}" --rpc-addr "127.0.0.1:${WEFT_RPC[i]}" \
			--http-addr "127.0.0.1:${WEFT_HTTP[i]}" --dns-addr "127.0.0.1:${WEFT_DNS[i]}"
		server_pids+=("$STARTED_PID")
		names+=("$label")
	done
	log "$MODE: started Weft servers (pids ${server_pids[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
	server_has_leader() { has_leader "${WEFT_HTTP[$1]}"; }
	wait_all "Weft server" "the Weft cluster had no leader on all 3 servers" "${names[*]}" "${server_pids[*]}" server_has_leader
	log "$MODE: Weft leader: $LEADER"
	WRITER=""
	for i in 0 1 2; do
		if [[ $LEADER != "\"127.0.0.1:${WEFT_RPC[i]}\"" ]]; then
			WRITER=$i
			break
		fi
	done
	[[ -n $WRITER ]] || die "$MODE: no server is a follower"

	# Client agents: no --server, no --rpc-addr; they join through any server.
	# With TLS each enrolls with its own one-use join token (which carries
	# the servers' CA), as an operator would start them.
	if [[ $MODE == tls ]]; then
		for i in 0 1 2; do
			speaks_tls "${WEFT_RPC[i]}" || die "tls: server ${names[i]}'s RPC port ${WEFT_RPC[i]} does not answer TLS 1.3 with its certificate"
		done
		for node in vm-a vm-b; do
			token=$("$WEFT" operator join-token create --description "agents.sh $node" \
				--http-addr "127.0.0.1:${WEFT_HTTP[0]}" 2>"$TMP/join-token.err") ||
				die "weft operator join-token create: $(cat "$TMP/join-token.err")"
			[[ $token == weftjoin* ]] || die "weft operator join-token create printed '$token', not a token"
			if [[ $node == vm-a ]]; then a_token=(--join-token "$token"); else b_token=(--join-token "$token"); fi
		done
		log "tls: RPC ports speak TLS 1.3; made a join token for each client agent"
	fi
	start_process "$MODE-vm-a" "$WEFT" agent --node vm-a --data-dir "$TMP/$MODE-vm-a" "${all_joins[@]}" \
		"${a_token[@]}" --http-addr "127.0.0.1:$A_HTTP" --dns-addr "127.0.0.1:$A_DNS"
	a_pid=$STARTED_PID
	# B holds WATCHERS connections from one address: above Consul's default
	# limits { http_max_conns_per_client = 200 }.
	printf 'limits {\n  http_max_conns_per_client = 0\n  http_max_conns = 0\n}\n' >"$TMP/no-connection-limit.hcl"
	start_process "$MODE-vm-b" "$WEFT" agent --node vm-b --data-dir "$TMP/$MODE-vm-b" "${all_joins[@]}" \
		"${b_token[@]}" --http-addr "127.0.0.1:$B_HTTP" --dns-addr "127.0.0.1:$B_DNS" \
		--config-file "$TMP/no-connection-limit.hcl"
	b_pid=$STARTED_PID
	# Client agents first: they leave the catalog while the servers are up.
	STOP_FIRST=("$a_pid" "$b_pid")
	log "$MODE: started client agents vm-a (pid $a_pid) and vm-b (pid $b_pid); waiting until each sees both (up to ${WAIT_SECS}s)"
	CLIENT_HTTP=("$A_HTTP" "$B_HTTP")
	sees_both() { # client index
		local nodes
		nodes=$(curl -s --max-time 2 "http://127.0.0.1:${CLIENT_HTTP[$1]}/v1/catalog/nodes" || true)
		[[ $nodes == *'"Node":"vm-a"'* && $nodes == *'"Node":"vm-b"'* ]]
	}
	wait_all "client agent" "the client agents did not both see vm-a and vm-b in the catalog" \
		"$MODE-vm-a $MODE-vm-b" "$a_pid $b_pid" sees_both
	log "$MODE: client agents ready"
}

# Stops the mode's agents (clients first), so the next mode runs alone.
stop_cluster() {
	local pid
	log "$MODE: stopping the cluster"
	stop_pids "${STOP_FIRST[@]}"
	stop_pids "${PIDS[@]}"
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	STOP_FIRST=() PIDS=()
}

# --------------------------------------------------------------- the runs ---

declare -A PROP_OUT=() PROP_CPU=() WATCH_OUT=() WATCH_CPU=() B_PID=()
for mode in "${MODES[@]}"; do
	start_cluster "$mode"
	B_PID[$MODE]=$b_pid
	if has_bench propagation; then
		log "$MODE: propagation: $COUNT registrations on vm-a, polling vm-b's DNS"
		run_tool "$MODE-propagation" $((PROP_MAX_TIME + 120)) "$PROPAGATION" \
			--register-addr "127.0.0.1:$A_HTTP" --dns-addr "127.0.0.1:$B_DNS" --count "$COUNT" \
			--timeout "$PROP_TIMEOUT" --poll-interval "$POLL_INTERVAL" --max-time "${PROP_MAX_TIME}s" --format json
		PROP_OUT[$MODE]=$TOOL_OUT PROP_CPU[$MODE]=$CPU_LINE
		for agent in "vm-a $a_pid" "vm-b $b_pid"; do
			read -r name pid <<<"$agent"
			kill -0 "$pid" 2>/dev/null || log "warning: $MODE: client agent $name is no longer running"
		done
	fi
	if has_bench watchers; then
		log "$MODE: watchers: $WATCHERS blocking queries on vm-b, $ROUNDS rounds, writes to server s$((WRITER + 1))"
		# The write registers node watched-<pid>, which a client agent enrolled
		# with a join token may not write (only its own node's entries), so it
		# goes to a follower server's HTTP API in both modes (forwarded to the
		# leader), not to B. Each round is bounded (arming 60 s, settle, write
		# 10 s, wake 10 s), as is opening.
		run_tool "$MODE-watchers" $((180 + ROUNDS * 120)) "$WATCHERS_BIN" \
			--addr "127.0.0.1:$B_HTTP" --write-addr "127.0.0.1:${WEFT_HTTP[WRITER]}" --watchers "$WATCHERS" \
			--rounds "$ROUNDS" --settle "$SETTLE" --pid "$b_pid" --format json
		WATCH_OUT[$MODE]=$TOOL_OUT WATCH_CPU[$MODE]=$CPU_LINE
		kill -0 "$b_pid" 2>/dev/null || log "warning: $MODE: client agent vm-b is no longer running"
	fi
	stop_cluster
done

# ----------------------------------------------------------------- report ---

mode_name() { if [[ $1 == tls ]]; then echo "tls"; else echo "plaintext"; fi; }
both_modes() { [[ " ${MODES[*]} " == *" plain "* && " ${MODES[*]} " == *" tls "* ]]; }

if has_bench propagation; then
	echo
	echo "Propagation: PUT /v1/agent/service/register on client agent vm-a, then DNS A queries to client agent" \
		"vm-b every $POLL_INTERVAL until answered; 3 servers, all on 127.0.0.1; $COUNT registrations, timeout" \
		"$PROP_TIMEOUT; rpc: the cluster's RPC (Raft, agents to servers) in plaintext or over TLS"
	prow() { printf '%-9s  %11s  %8s  %8s  %8s  %8s  %8s  %15s  %8s  %8s  %s\n' "$@"; }
	prow rpc visible "p50 ms" "p90 ms" "p99 ms" "max ms" "mean ms" "PUT p50/p99 ms" failures "DNS lost" "goal p99 <= 50 ms"
	for mode in "${MODES[@]}"; do
		out=${PROP_OUT[$mode]:-}
		p99=$(json_field "$out" p99_ms)
		prow "$(mode_name "$mode")" \
			"$(fmt_num "$(json_field "$out" visible)" %s)/$(fmt_num "$(json_field "$out" attempted)" %s)" \
			"$(fmt_num "$(json_field "$out" p50_ms)" %.2f)" "$(fmt_num "$(json_field "$out" p90_ms)" %.2f)" \
			"$(fmt_num "$p99" %.2f)" "$(fmt_num "$(json_field "$out" max_ms)" %.2f)" \
			"$(fmt_num "$(json_field "$out" mean_ms)" %.2f)" \
			"$(fmt_num "$(json_field "$out" put_p50_ms)" %.2f)/$(fmt_num "$(json_field "$out" put_p99_ms)" %.2f)" \
			"$(fmt_num "$(json_field "$out" failures)" %s)" "$(fmt_num "$(json_field "$out" dns_lost)" %s)" \
			"$(goal "$p99" '<=' 50)"
	done
	if both_modes; then
		p99_ratio=$(ratio "$(json_field "${PROP_OUT[tls]:-}" p99_ms)" "$(json_field "${PROP_OUT[plain]:-}" p99_ms)")
		echo "tls/plaintext: p50 $(ratio "$(json_field "${PROP_OUT[tls]:-}" p50_ms)" "$(json_field "${PROP_OUT[plain]:-}" p50_ms)")," \
			"p99 $p99_ratio (goal p99 <= 1.10: $(goal "$p99_ratio" '<=' 1.10))," \
			"mean $(ratio "$(json_field "${PROP_OUT[tls]:-}" mean_ms)" "$(json_field "${PROP_OUT[plain]:-}" mean_ms)")"
	fi
	for mode in "${MODES[@]}"; do
		out=${PROP_OUT[$mode]:-}
		kinds=$(sed -nE 's/.*"failure_kinds":\{([^}]*)\}.*/\1/p' <<<"$out")
		[[ -n $kinds ]] && echo "  $(mode_name "$mode") failures by kind: $kinds"
		first=$(sed -nE 's/.*"first_failure":"(([^"\\]|\\.)*)".*/\1/p' <<<"$out")
		[[ -n $first ]] && echo "  $(mode_name "$mode") first failure: $first"
		echo "$(mode_name "$mode"): ${PROP_CPU[$mode]:-}"
	done
fi

if has_bench watchers; then
	echo
	echo "Blocking queries: $WATCHERS watchers on client agent vm-b (GET /v1/health/service/watched?index=..&wait=60s," \
		"one connection each); each round one PUT /v1/catalog/register on a follower server (forwarded to the" \
		"leader) adds an instance; times from sending the write; rpc as above"
	wrow() { printf '%-9s  %5s  %6s  %6s  %6s  %8s  %6s  %9s  %9s  %9s  %9s  %9s  %s\n' "$@"; }
	wrow rpc round armed woken missed spurious failed "write ms" "first ms" "p50 ms" "p99 ms" "last ms" "goal last <= 100 ms"
	declare -A LASTS=()
	for mode in "${MODES[@]}"; do
		while IFS= read -r line; do
			[[ $line == *'"kind":"round"'* ]] || continue
			last=$(json_field "$line" last_ms)
			[[ -n $last && $last != null ]] && LASTS[$mode]+="$last"$'\n'
			wrow "$(mode_name "$mode")" "$(json_field "$line" round)" "$(json_field "$line" armed)" "$(json_field "$line" woken)" \
				"$(json_field "$line" missed)" "$(json_field "$line" spurious)" "$(json_field "$line" failed)" \
				"$(fmt_num "$(json_field "$line" write_ms)" %.2f)" "$(fmt_num "$(json_field "$line" first_ms)" %.2f)" \
				"$(fmt_num "$(json_field "$line" p50_ms)" %.2f)" "$(fmt_num "$(json_field "$line" p99_ms)" %.2f)" \
				"$(fmt_num "$last" %.2f)" "$(goal "$last" '<=' 100)"
		done <<<"${WATCH_OUT[$mode]:-}"
	done
	if both_modes; then
		plain_last=$(printf '%s' "${LASTS[plain]:-}" | median) tls_last=$(printf '%s' "${LASTS[tls]:-}" | median)
		echo "last ms, median of the rounds: plaintext $(fmt_num "$plain_last" %.2f), tls $(fmt_num "$tls_last" %.2f);" \
			"tls/plaintext $(ratio "$tls_last" "$plain_last")"
	fi
	for mode in "${MODES[@]}"; do
		summary=$(grep '"kind":"summary"' <<<"${WATCH_OUT[$mode]:-}" || true)
		if [[ -n $summary ]]; then
			echo "$(mode_name "$mode"): vm-b RSS (pid ${B_PID[$mode]}): before the watchers $(mib "$(json_field "$summary" rss_before_kib)")," \
				"with them open $(mib "$(json_field "$summary" rss_open_kib)")," \
				"after closing them $(mib "$(json_field "$summary" rss_after_kib)")" \
				"(peak $(mib "$(json_field "$summary" rss_peak_kib)"))"
		fi
		echo "$(mode_name "$mode"): ${WATCH_CPU[$mode]:-}"
	done
fi

if [[ -n $RESULTS && -f $TMP/results.jsonl ]]; then
	cp -- "$TMP/results.jsonl" "$RESULTS" && log "reports saved to $RESULTS"
fi
