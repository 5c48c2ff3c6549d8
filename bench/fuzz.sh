#!/usr/bin/env bash
# fuzz.sh: random requests against every route of the HTTP API of a server
# (weft dev) and of a client agent joined to it, for SECS seconds; then
# checks that neither panicked and both still serve. Prints the count of
# each status and every 5xx with its request; exits 1 on a 5xx or a panic.
#
# Environment (all optional):
#   SECS=180        how long to send requests
#   SEED=1          the random sequence (another seed, other requests)
#   HTTP_PORT=18650 the server's HTTP port (DNS, RPC and the client's: the next four)
#   WAIT_SECS=60    how long the agents may take to serve
#   BUILD=1         0: do not run cargo, use the existing binary
#   WEFT=path       the binary (default target/release/weft)
#   KEEP_TMP=0      1: keep the temp dir (the agents' logs)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
SECS="${SECS:-180}"
SEED="${SEED:-1}"
HTTP_PORT="${HTTP_PORT:-18650}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"

# shellcheck disable=SC2034 # read by lib.sh
LOG_TAG=fuzz TMP_CONTENTS="the agents' logs"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_positive SECS SEED HTTP_PORT WAIT_SECS
need_tools python3 curl
if [[ $BUILD == 1 ]]; then
	log "building weft (release)"
	cargo build --release --locked -p weft-cli --manifest-path "$ROOT/Cargo.toml"
fi
[[ -x $WEFT ]] || die "no weft binary at $WEFT (BUILD=1 builds it)"
SERVER_HTTP=$HTTP_PORT CLIENT_HTTP=$((HTTP_PORT + 3))
check_ports_free "$SERVER_HTTP" $((HTTP_PORT + 1)) $((HTTP_PORT + 2)) "$CLIENT_HTTP" $((HTTP_PORT + 4))
make_tmp fuzz
copy_binaries WEFT

start_process server "$WEFT" dev --node fuzz-server --http-addr "127.0.0.1:$SERVER_HTTP" \
	--dns-addr "127.0.0.1:$((HTTP_PORT + 1))" --rpc-addr "127.0.0.1:$((HTTP_PORT + 2))"
server_pid=$STARTED_PID
serves() { curl -sf --max-time 2 "http://127.0.0.1:$1/v1/status/leader" | grep -q ':'; }
wait_until "the server to serve" server "$server_pid" serves "$SERVER_HTTP"
start_process client "$WEFT" agent --node fuzz-client --data-dir "$TMP/client" \
	--retry-join "127.0.0.1:$((HTTP_PORT + 2))" --http-addr "127.0.0.1:$CLIENT_HTTP" \
	--dns-addr "127.0.0.1:$((HTTP_PORT + 4))"
client_pid=$STARTED_PID
STOP_FIRST=("$client_pid")
wait_until "the client agent to serve" client "$client_pid" serves "$CLIENT_HTTP"
log "server (pid $server_pid) and client agent (pid $client_pid) serve; fuzzing for ${SECS}s, seed $SEED"

status=0
python3 "$ROOT/bench/fuzz.py" "$SECS" "$SEED" "$ROOT/agent/src/http/mod.rs" \
	"127.0.0.1:$SERVER_HTTP" "127.0.0.1:$CLIENT_HTTP" || status=1
for name in server client; do
	if grep -q "panicked" "$TMP/$name.log"; then
		log "$name panicked:"
		grep -A3 "panicked" "$TMP/$name.log" | head -20 >&2
		status=1
	fi
done
serves "$SERVER_HTTP" || { log "the server no longer serves"; status=1; }
serves "$CLIENT_HTTP" || { log "the client agent no longer serves"; status=1; }
((status == 0)) && log "no 5xx, no panic, both agents still serve"
exit "$status"
