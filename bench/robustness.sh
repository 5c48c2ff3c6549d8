#!/usr/bin/env bash
# The robustness test (tests/robustness.rs) with a long seed: 3 servers in
# network namespaces, concurrent KV clients, a nemesis that kills, pauses,
# partitions, fills disks and restarts servers, and every history checked
# for linearizability. Prints the operations, the faults injected, the
# failovers and "linearizable: yes". Needs root.
#
# Knobs: SECS (default 600: seconds of load), SEED (default 19; another seed
# orders the faults and picks the operations differently), PROFILE (debug or
# release; default release, the binary users run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-600}
SEED=${SEED:-19}
PROFILE=${PROFILE:-release}
profile_flag=()
[ "$PROFILE" = release ] && profile_flag=(--release)
WEFT_ROBUSTNESS_SECS=$SECS WEFT_ROBUSTNESS_SEED=$SEED \
  cargo test "${profile_flag[@]}" -p weft-cli --test robustness -- --nocapture --test-threads 1
