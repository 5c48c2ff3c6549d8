#!/usr/bin/env bash
# memory.sh: what idle connections, blocking queries and oversized uploads
# cost an agent in memory, and whether it gives memory back (issue 20's
# goals, printed beside each figure).
#
# Steps: build weft (release); start `weft dev` with its connection limits
# lifted (the load comes from one address, and passes the default total);
# then
# bench/memory.py holds CONNS idle connections, then CONNS blocking
# queries, reading the agent's RSS (VmRSS) with each and SETTLE seconds
# after they close, and sends UPLOADS parallel uploads of UPLOAD_MB each to
# /v1/kv (over the 512 KiB limit), sampling RSS every 50 ms and counting the
# 413s. Everything started is stopped on exit.
#
# Environment (all optional):
#   CONNS=10000      connections held, idle and then blocking
#   UPLOADS=8        parallel uploads
#   UPLOAD_MB=200    size each upload declares and sends
#   SETTLE=30        seconds after the blocking queries close
#   HTTP_PORT=18550  the agent's HTTP port (DNS and RPC: the next two)
#   WAIT_SECS=60     how long the agent may take to serve
#   BUILD=1          0: do not run cargo, use the existing binary
#   WEFT=path        the binary (default target/release/weft)
#   KEEP_TMP=0       1: keep the temp dir (the agent's log)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
CONNS="${CONNS:-10000}"
UPLOADS="${UPLOADS:-8}"
UPLOAD_MB="${UPLOAD_MB:-200}"
SETTLE="${SETTLE:-30}"
HTTP_PORT="${HTTP_PORT:-18550}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=memory TMP_CONTENTS="the agent's log"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_positive CONNS UPLOADS UPLOAD_MB SETTLE HTTP_PORT WAIT_SECS
need_tools python3 curl
raise_fd_limit $((CONNS + 1024)) "CONNS=$CONNS"
if [[ $BUILD == 1 ]]; then
	log "building weft (release)"
	cargo build --release --locked -p weft-cli --manifest-path "$ROOT/Cargo.toml"
fi
[[ -x $WEFT ]] || die "no weft binary at $WEFT (BUILD=1 builds it)"
check_ports_free "$HTTP_PORT" $((HTTP_PORT + 1)) $((HTTP_PORT + 2))
make_tmp memory
copy_binaries WEFT

printf 'limits {\n  http_max_conns_per_client = 0\n  http_max_conns = 0\n}\n' >"$TMP/no-connection-limit.hcl"
start_process agent "$WEFT" dev --http-addr "127.0.0.1:$HTTP_PORT" --dns-addr "127.0.0.1:$((HTTP_PORT + 1))" \
	--rpc-addr "127.0.0.1:$((HTTP_PORT + 2))" --config-file "$TMP/no-connection-limit.hcl"
agent_pid=$STARTED_PID
serves() { curl -sf --max-time 2 "http://127.0.0.1:$HTTP_PORT/v1/status/leader" | grep -q ':'; }
wait_until "the agent to serve" agent "$agent_pid" serves
sleep 2
log "agent (pid $agent_pid) serves; holding $CONNS connections, then $CONNS blocking queries, then $UPLOADS uploads"
python3 "$ROOT/bench/memory.py" "$HTTP_PORT" "$agent_pid" "$CONNS" "$UPLOADS" "$UPLOAD_MB" "$SETTLE"
