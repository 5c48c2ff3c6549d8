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

LOG_TAG=raft-kv TMP_CONTENTS="server logs and data"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WEFT_PIDS=() # Weft servers, by index

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# DURATION as whole seconds (for the outer safety timeout around kv-load).
load_secs() { if [[ $1 =~ ^([0-9]+)m$ ]]; then echo $((BASH_REMATCH[1] * 60)); else duration_secs "$1"; fi; }

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
	secs=$(load_secs "$duration") || secs=600
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
load_secs "$DURATION" >/dev/null || die "DURATION must look like 10, 10s or 2m, not '$DURATION'"
for c in $CLIENTS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive numbers, not '$c'"
done
for t in $TARGETS; do
	[[ $t == weft || $t == etcd ]] || die "TARGETS may name only weft and etcd, not '$t'"
done
need_tools curl du awk sed timeout

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

make_tmp raft-kv

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
		start_process "s$((i + 1))" "$WEFT" agent --server --node "s$((i + 1))" \
			--data-dir "$TMP/s$((i + 1))" --bootstrap-expect 3 "${joins[@]}" \
			--rpc-addr "127.0.0.1:${WEFT_RPC[i]}" --http-addr "127.0.0.1:${WEFT_HTTP[i]}" \
			--dns-addr "127.0.0.1:${WEFT_DNS[i]}"
		WEFT_PIDS+=("$STARTED_PID")
		weft_http_addrs+=("127.0.0.1:${WEFT_HTTP[i]}")
	done
	log "started Weft servers (pids ${WEFT_PIDS[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
	server_has_leader() { has_leader "${WEFT_HTTP[$1]}"; }
	wait_all "Weft server" "the Weft cluster had no leader on all 3 servers" "s1 s2 s3" "${WEFT_PIDS[*]}" server_has_leader
	log "Weft leader: $LEADER"
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
		start_process "e$((i + 1))" etcd --name "e$((i + 1))" --data-dir "$TMP/e$((i + 1))" \
			--listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
			--listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token "weft-raft-kv-$$" --logger zap --log-outputs stderr
		etcd_pids+=("$STARTED_PID")
		etcd_addrs+=("127.0.0.1:${ETCD_CLIENT[i]}")
	done
	log "started etcd members (pids ${etcd_pids[*]}); waiting for health (up to ${WAIT_SECS}s)"
	member_healthy() { [[ $(curl -s --max-time 2 "http://127.0.0.1:${ETCD_CLIENT[$1]}/health" || true) == *'"health":"true"'* ]]; }
	wait_all "etcd member" "the etcd cluster was not healthy on all 3 members" "e1 e2 e3" "${etcd_pids[*]}" member_healthy
	log "etcd healthy"
fi

# ------------------------------------------------------------- the runs -----

declare -A KV_RATE KV_P50 KV_P99 KV_ERR # by "<target>/<clients>"
for c in $CLIENTS; do
	for t in weft etcd; do
		has_target "$t" || continue
		log "$t: $c client(s) for $DURATION"
		if [[ $t == weft ]]; then addrs=("${weft_http_addrs[@]}"); else addrs=("${etcd_addrs[@]}"); fi
		kv_load "$t" "$c" "$DURATION" --key-prefix "bench-c$c" -- "${addrs[@]}"
		KV_RATE[$t/$c]=$(json_field "$LOAD_OUT" writes_per_sec)
		KV_P50[$t/$c]=$(json_field "$LOAD_OUT" p50_ms)
		KV_P99[$t/$c]=$(json_field "$LOAD_OUT" p99_ms)
		KV_ERR[$t/$c]=$(json_field "$LOAD_OUT" errors)
	done
done

echo
echo "KV PUT, 3 servers each on 127.0.0.1, ${VALUE_SIZE} B values, $DURATION per run, fsync on"
printf '%7s  %10s  %17s  %10s  %17s  %9s  %9s  %9s\n' \
	clients "weft w/s" "weft p50/p99 ms" "etcd w/s" "etcd p50/p99 ms" weft/etcd "weft err" "etcd err"
for c in $CLIENTS; do
	w=${KV_RATE[weft/$c]:-} e=${KV_RATE[etcd/$c]:-}
	printf '%7s  %10s  %17s  %10s  %17s  %9s  %9s  %9s\n' "$c" \
		"$(fmt_num "$w" %.0f)" "$(fmt_num "${KV_P50[weft/$c]:-}" %.2f)/$(fmt_num "${KV_P99[weft/$c]:-}" %.2f)" \
		"$(fmt_num "$e" %.0f)" "$(fmt_num "${KV_P50[etcd/$c]:-}" %.2f)/$(fmt_num "${KV_P99[etcd/$c]:-}" %.2f)" \
		"$(ratio "$w" "$e")" "$(fmt_num "${KV_ERR[weft/$c]:-}" %s)" "$(fmt_num "${KV_ERR[etcd/$c]:-}" %s)"
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
