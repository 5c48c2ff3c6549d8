#!/usr/bin/env bash
# raft-kv.sh: replicated KV write throughput and latency, Weft vs etcd.
#
# Why: Weft's KV store is a Raft log like etcd's; this script measures both
# on the same machine, three servers each, on loopback, with the same load
# generator (kv-load, bench/src/main.rs), so the comparison is like for like.
# See bench/README.md for what the figures mean and their caveats.
#
# Steps: build weft and kv-load (release); start a 3-server Weft cluster and
# a 3-member etcd cluster on 127.0.0.1; for each client count, run kv-load
# against each; print a table; then write RSS_KEYS keys to Weft and report a
# server's RSS and data-dir size. Everything started here is stopped (and the
# temp dir removed) on exit, on failure and on Ctrl-C.
#
# Environment (all optional):
#   CLIENTS="1 16 64 256"   client counts to run
#   DURATION=10s            length of each run (N, Ns or Nm)
#   VALUE_SIZE=128          value size in bytes
#   TARGETS="weft etcd"     which systems to run (e.g. TARGETS=etcd)
#   RSS_KEYS=100000         keys written for the memory/disk report (0 skips it)
#   SETTLE=10               seconds to wait before the last disk-size reading
#   WAIT_SECS=60            how long a cluster may take to elect a leader
#   BUILD=1                 0: do not run cargo, use existing binaries
#   WEFT=path KV_LOAD=path  binaries to use (default target/release/...)
#   INSTALL_ETCD=1          0: never try `apt-get install etcd-server`
#   KEEP_TMP=0              1: keep the temp dir (server logs) for a post-mortem
#   RESULTS=file            also save kv-load's JSON lines to this file
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
KV_LOAD="${KV_LOAD:-$TARGET_DIR/release/kv-load}"
CLIENTS="${CLIENTS:-1 16 64 256}"
DURATION="${DURATION:-10s}"
VALUE_SIZE="${VALUE_SIZE:-128}"
TARGETS="${TARGETS:-weft etcd}"
RSS_KEYS="${RSS_KEYS:-100000}"
SETTLE="${SETTLE:-10}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"
INSTALL_ETCD="${INSTALL_ETCD:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS:-}"

# Loopback ports. Weft: RPC, HTTP and DNS per server. etcd: client and peer
# per member (not 2379/2380, so a system etcd does not get in the way).
WEFT_RPC=(18301 18311 18321)
WEFT_HTTP=(18501 18511 18521)
WEFT_DNS=(18601 18611 18621)
ETCD_CLIENT=(22379 22389 22399)
ETCD_PEER=(22380 22390 22400)

PIDS=()      # every server this script started
WEFT_PIDS=() # Weft servers, by index
LOAD_PID=""  # the kv-load run in progress, if any
TMP=""

log() { printf '[raft-kv] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

cleanup() {
	local status=$?
	trap - EXIT
	trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short
	local all=("${PIDS[@]}")
	[[ -n $LOAD_PID ]] && all+=("$LOAD_PID")
	if ((${#all[@]} > 0)); then
		log "stopping ${#all[@]} process(es)"
		local pid alive _
		for pid in "${all[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
		for _ in $(seq 1 100); do # up to 10 s for a clean shutdown
			alive=0
			for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
			((alive)) || break
			sleep 0.1
		done
		for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
		wait 2>/dev/null || true
	fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ $KEEP_TMP == 1 ]]; then
			log "kept $TMP (server logs and data)"
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

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# DURATION as whole seconds (for the outer safety timeout around kv-load).
duration_secs() {
	if [[ $1 =~ ^([0-9]+)s?$ ]]; then
		echo "${BASH_REMATCH[1]}"
	elif [[ $1 =~ ^([0-9]+)m$ ]]; then
		echo $((BASH_REMATCH[1] * 60))
	else
		return 1
	fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports_free() {
	local port
	for port in "$@"; do
		port_in_use "$port" && die "port 127.0.0.1:$port is already in use (a previous run still going?); free it first"
	done
	return 0
}

# Starts a server in the background, logging to $TMP/<name>.log; sets STARTED_PID.
start_server() {
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

# A field of kv-load's one-line JSON report: a number, or `null`.
json_field() { sed -nE "s/.*\"$2\":(null|[-0-9.eE+]+).*/\1/p" <<<"$1"; }

fmt_num() { # value printf-format (a fixed format chosen by this script)
	# shellcheck disable=SC2059
	if [[ -z $1 || $1 == null ]]; then printf -- '-'; else LC_ALL=C printf "$2" "$1"; fi
}

# Runs kv-load and sets LOAD_OUT to its one-line JSON report ("" if none).
# It runs in the background so that `wait` (unlike a foreground command) is
# interrupted by Ctrl-C or TERM, and the trap stops it with the servers.
kv_load() { # target clients duration extra-args... -- addrs...
	local target=$1 clients=$2 duration=$3
	shift 3
	local extra=() addrs=()
	while (($#)) && [[ $1 != -- ]]; do
		extra+=("$1")
		shift
	done
	shift # --
	local addr
	for addr in "$@"; do addrs+=(--addr "$addr"); done
	local secs rc=0
	secs=$(duration_secs "$duration") || secs=600
	LOAD_OUT=""
	# `timeout` is only a backstop: kv-load stops by itself at duration + grace.
	timeout -k 5 $((secs + 60)) "$KV_LOAD" --target "$target" "${addrs[@]}" --clients "$clients" \
		--duration "$duration" --value-size "$VALUE_SIZE" --format json "${extra[@]}" \
		>"$TMP/kv-load.out" 2>"$TMP/kv-load.err" &
	LOAD_PID=$!
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=""
	if ((rc != 0)); then
		log "kv-load against $target with $clients clients exited with $rc:"
		sed 's/^/    /' "$TMP/kv-load.err" >&2
	fi
	LOAD_OUT=$(head -n 1 "$TMP/kv-load.out")
	if [[ $LOAD_OUT == '{'* ]]; then
		printf '%s\n' "$LOAD_OUT" >>"$TMP/results.jsonl"
	else
		LOAD_OUT=""
	fi
}

# ---------------------------------------------------------------- checks ----

[[ $VALUE_SIZE =~ ^[0-9]+$ ]] || die "VALUE_SIZE must be a number of bytes, not '$VALUE_SIZE'"
[[ $RSS_KEYS =~ ^[0-9]+$ ]] || die "RSS_KEYS must be a number, not '$RSS_KEYS'"
[[ $SETTLE =~ ^[0-9]+$ ]] || die "SETTLE must be a number of seconds, not '$SETTLE'"
[[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "WAIT_SECS must be a number of seconds, not '$WAIT_SECS'"
duration_secs "$DURATION" >/dev/null || die "DURATION must look like 10, 10s or 2m, not '$DURATION'"
for c in $CLIENTS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive numbers, not '$c'"
done
for t in $TARGETS; do
	[[ $t == weft || $t == etcd ]] || die "TARGETS may name only weft and etcd, not '$t'"
done
for tool in curl du awk sed timeout; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

# ----------------------------------------------------------------- build ----

if [[ $BUILD != 0 ]]; then
	packages=(-p weft-bench)
	has_target weft && packages+=(-p weft-cli)
	log "building: cargo build --release ${packages[*]}"
	(cd "$ROOT" && cargo build --release "${packages[@]}") || die "cargo build failed"
fi
[[ -x $KV_LOAD ]] || die "kv-load not found at $KV_LOAD (build it: cargo build --release -p weft-bench)"
if has_target weft && [[ ! -x $WEFT ]]; then
	die "weft not found at $WEFT (build it: cargo build --release -p weft-cli)"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weft-raft-kv.XXXXXX")
log "temp dir $TMP"

if has_target etcd && ! command -v etcd >/dev/null; then
	if [[ $INSTALL_ETCD == 1 && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
		log "etcd not found; installing Debian's etcd-server (apt-get install -y etcd-server)"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y etcd-server >"$TMP/apt.log" 2>&1; then
			if apt-get update >>"$TMP/apt.log" 2>&1; then
				apt-get install -y etcd-server >>"$TMP/apt.log" 2>&1 || true
			fi
		fi
		command -v etcd >/dev/null || tail -n 5 "$TMP/apt.log" >&2
	fi
	if ! command -v etcd >/dev/null; then
		log "etcd is not installed; to compare with it, run as root: apt-get install -y etcd-server"
		log "continuing with Weft only"
		TARGETS=${TARGETS//etcd/}
	fi
fi
has_target weft || has_target etcd || die "nothing to run (TARGETS='$TARGETS')"

# ------------------------------------------------------------ weft start ----

weft_http_addrs=()
if has_target weft; then
	check_ports_free "${WEFT_RPC[@]}" "${WEFT_HTTP[@]}" "${WEFT_DNS[@]}"
	for i in 0 1 2; do
		joins=()
		for j in 0 1 2; do
			((j == i)) || joins+=(--retry-join "127.0.0.1:${WEFT_RPC[j]}")
		done
		start_server "s$((i + 1))" "$WEFT" agent --server --node "s$((i + 1))" \
			--data-dir "$TMP/s$((i + 1))" --bootstrap-expect 3 "${joins[@]}" \
			--rpc-addr "127.0.0.1:${WEFT_RPC[i]}" --http-addr "127.0.0.1:${WEFT_HTTP[i]}" \
			--dns-addr "127.0.0.1:${WEFT_DNS[i]}"
		WEFT_PIDS+=("$STARTED_PID")
		weft_http_addrs+=("127.0.0.1:${WEFT_HTTP[i]}")
	done
	log "started Weft servers (pids ${WEFT_PIDS[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
	deadline=$((SECONDS + WAIT_SECS))
	while :; do
		ready=0
		for i in 0 1 2; do
			if ! kill -0 "${WEFT_PIDS[i]}" 2>/dev/null; then
				show_log "s$((i + 1))"
				die "Weft server s$((i + 1)) exited during startup"
			fi
			leader=$(curl -s --max-time 2 "http://127.0.0.1:${WEFT_HTTP[i]}/v1/status/leader" || true)
			[[ $leader =~ ^\"[^\"]+\"$ ]] && ready=$((ready + 1))
		done
		((ready == 3)) && break
		if ((SECONDS >= deadline)); then
			for i in 0 1 2; do show_log "s$((i + 1))"; done
			die "the Weft cluster had no leader on all 3 servers after ${WAIT_SECS}s"
		fi
		sleep 0.5
	done
	log "Weft leader: $leader"
fi

# ------------------------------------------------------------ etcd start ----

etcd_addrs=()
if has_target etcd; then
	log "$(etcd --version | head -n 1)"
	check_ports_free "${ETCD_CLIENT[@]}" "${ETCD_PEER[@]}"
	cluster="e1=http://127.0.0.1:${ETCD_PEER[0]},e2=http://127.0.0.1:${ETCD_PEER[1]},e3=http://127.0.0.1:${ETCD_PEER[2]}"
	etcd_pids=()
	for i in 0 1 2; do
		client_url="http://127.0.0.1:${ETCD_CLIENT[i]}"
		peer_url="http://127.0.0.1:${ETCD_PEER[i]}"
		start_server "e$((i + 1))" etcd --name "e$((i + 1))" --data-dir "$TMP/e$((i + 1))" \
			--listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
			--listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token "weft-raft-kv-$$" --logger zap --log-outputs stderr
		etcd_pids+=("$STARTED_PID")
		etcd_addrs+=("127.0.0.1:${ETCD_CLIENT[i]}")
	done
	log "started etcd members (pids ${etcd_pids[*]}); waiting for health (up to ${WAIT_SECS}s)"
	deadline=$((SECONDS + WAIT_SECS))
	while :; do
		ready=0
		for i in 0 1 2; do
			if ! kill -0 "${etcd_pids[i]}" 2>/dev/null; then
				show_log "e$((i + 1))"
				die "etcd member e$((i + 1)) exited during startup"
			fi
			health=$(curl -s --max-time 2 "http://127.0.0.1:${ETCD_CLIENT[i]}/health" || true)
			[[ $health == *'"health":"true"'* ]] && ready=$((ready + 1))
		done
		((ready == 3)) && break
		if ((SECONDS >= deadline)); then
			for i in 0 1 2; do show_log "e$((i + 1))"; done
			die "the etcd cluster was not healthy on all 3 members after ${WAIT_SECS}s"
		fi
		sleep 0.5
	done
	log "etcd healthy"
fi

# ------------------------------------------------------------- the runs -----

declare -A W_RATE W_P50 W_P99 W_ERR E_RATE E_P50 E_P99 E_ERR
for c in $CLIENTS; do
	if has_target weft; then
		log "weft: $c client(s) for $DURATION"
		kv_load weft "$c" "$DURATION" --key-prefix "bench-c$c" -- "${weft_http_addrs[@]}"
		out=$LOAD_OUT
		W_RATE[$c]=$(json_field "$out" writes_per_sec)
		W_P50[$c]=$(json_field "$out" p50_ms)
		W_P99[$c]=$(json_field "$out" p99_ms)
		W_ERR[$c]=$(json_field "$out" errors)
	fi
	if has_target etcd; then
		log "etcd: $c client(s) for $DURATION"
		kv_load etcd "$c" "$DURATION" --key-prefix "bench-c$c" -- "${etcd_addrs[@]}"
		out=$LOAD_OUT
		E_RATE[$c]=$(json_field "$out" writes_per_sec)
		E_P50[$c]=$(json_field "$out" p50_ms)
		E_P99[$c]=$(json_field "$out" p99_ms)
		E_ERR[$c]=$(json_field "$out" errors)
	fi
done

echo
echo "KV PUT, 3 servers each on 127.0.0.1, ${VALUE_SIZE} B values, $DURATION per run, fsync on"
printf '%7s  %10s  %17s  %10s  %17s  %9s  %9s  %9s\n' \
	clients "weft w/s" "weft p50/p99 ms" "etcd w/s" "etcd p50/p99 ms" weft/etcd "weft err" "etcd err"
for c in $CLIENTS; do
	ratio=-
	w=${W_RATE[$c]:-} e=${E_RATE[$c]:-}
	if [[ -n $w && $w != null && -n $e && $e != null ]]; then
		ratio=$(awk -v w="$w" -v e="$e" 'BEGIN { if (e > 0) printf "%.2f", w / e; else print "-" }')
	fi
	printf '%7s  %10s  %17s  %10s  %17s  %9s  %9s  %9s\n' "$c" \
		"$(fmt_num "$w" %.0f)" "$(fmt_num "${W_P50[$c]:-}" %.2f)/$(fmt_num "${W_P99[$c]:-}" %.2f)" \
		"$(fmt_num "$e" %.0f)" "$(fmt_num "${E_P50[$c]:-}" %.2f)/$(fmt_num "${E_P99[$c]:-}" %.2f)" \
		"$ratio" "$(fmt_num "${W_ERR[$c]:-}" %s)" "$(fmt_num "${E_ERR[$c]:-}" %s)"
done

# ------------------------------------------------- Weft memory and disk -----

rss_of() { awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
du_of() { du -sb "$1" 2>/dev/null | awk '{ printf "%d B (%.1f MiB)", $1, $1 / 1048576 }'; }

if has_target weft && ((RSS_KEYS > 0)); then
	# Report the leader: it does the most work (replication to both followers).
	idx=0 role="not the leader"
	leader=$(curl -s --max-time 2 "http://${weft_http_addrs[0]}/v1/status/leader" || true)
	for i in 0 1 2; do
		if [[ $leader == "\"127.0.0.1:${WEFT_RPC[i]}\"" ]]; then
			idx=$i role="leader"
		fi
	done
	name="s$((idx + 1))"
	pid=${WEFT_PIDS[idx]}
	dir="$TMP/$name"
	echo
	echo "Weft server $name (pid $pid, $role):"
	usage() { printf '  %-27s RSS %s, data dir %s\n' "$1:" "$(rss_of "$pid")" "$(du_of "$dir")"; }
	usage "before $RSS_KEYS writes"
	log "weft: writing $RSS_KEYS keys with 64 clients"
	kv_load weft 64 600s --count "$RSS_KEYS" --key-prefix rss -- "${weft_http_addrs[@]}"
	written=$(json_field "$LOAD_OUT" writes)
	usage "right after ${written:-?} writes"
	sleep "$SETTLE"
	usage "${SETTLE}s later"
	kill -0 "$pid" 2>/dev/null || log "warning: Weft server $name is no longer running"
fi

if [[ -n $RESULTS && -f $TMP/results.jsonl ]]; then
	cp -- "$TMP/results.jsonl" "$RESULTS" && log "kv-load reports saved to $RESULTS"
fi
