#!/usr/bin/env bash
# Checks deploy/systemd/weft.service with systemd's own tools, offline (no
# running systemd needed):
#   - the unit has the settings the deployment relies on (Type=notify, the
#     weft user, reload by SIGHUP, the data dir as the only writable path);
#   - `systemd-analyze verify` prints nothing at all, for the unit as
#     shipped and for the unit install.sh writes under a prefix (verify
#     needs ExecStart's binary to exist, so the first points at $WEFT_BIN);
#   - `systemd-analyze security --offline` rates the sandbox 2.0 or better
#     ("OK"), on systemd 250 and later (older ones cannot rate offline).
#
# Exit status: 0 passed, 1 failed, 77 skipped (a tool is missing; in CI,
# where WEFT_CI is set, a missing tool fails instead).
set -euo pipefail

# shellcheck source=deploy/test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
unit=$deploy/systemd/weft.service

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

command -v systemd-analyze >/dev/null || skip "systemd-analyze not found (Debian package: systemd)"
need_weft
[[ -x /bin/kill ]] || skip "/bin/kill, which ExecReload runs, not found (Debian package: procps)"

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

echo "--- settings the deployment relies on"
# shellcheck disable=SC2016 # $MAINPID is systemd's, not the shell's.
for line in \
  'Type=notify' \
  'User=weft' \
  'ExecStart=/usr/local/bin/weft agent --config-dir /etc/weft.d' \
  'ExecReload=/bin/kill -HUP $MAINPID' \
  'Restart=on-failure' \
  'After=network-online.target' \
  'Wants=network-online.target' \
  'ReadWritePaths=/var/lib/weft' \
  'ProtectSystem=strict' \
  'NoNewPrivileges=yes' \
  'CapabilityBoundingSet=' \
  'AmbientCapabilities=' \
  'LimitNOFILE=65536' \
  'WantedBy=multi-user.target'; do
  grep -qxF -- "$line" "$unit" || fail "$unit lacks the line: $line"
done
# Nothing else may be writable: the data dir is the only ReadWritePaths.
[[ $(grep -c '^ReadWritePaths=' "$unit") == 1 ]] || fail "$unit has more than one ReadWritePaths="
echo ok

# Prints verify's output and fails if there is any: a warning is a failure.
verify() {
  local output
  output=$(systemd-analyze verify "$1" 2>&1) || fail "systemd-analyze verify $1 failed: $output"
  [[ -z $output ]] || fail "systemd-analyze verify $1 is not clean:"$'\n'"$output"
  echo ok
}

echo "--- systemd-analyze verify: the unit as shipped, ExecStart at $weft"
mkdir "$work/shipped"
sed "s|^ExecStart=/usr/local/bin/weft |ExecStart=$weft |" "$unit" >"$work/shipped/weft.service"
grep -q "^ExecStart=$weft " "$work/shipped/weft.service" || fail "could not point ExecStart at $weft"
verify "$work/shipped/weft.service"

echo "--- systemd-analyze verify: the unit install.sh writes"
"$deploy/vm/install.sh" --binary "$weft" --prefix "$work/root" --no-systemctl \
  --server --bootstrap-expect 1 --bind 127.0.0.1 >"$work/install.log" 2>&1 ||
  fail "install.sh failed: $(cat "$work/install.log")"
verify "$work/root/etc/systemd/system/weft.service"

echo "--- systemd-analyze security --offline"
if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
  # --threshold is in tenths: 20 means an exposure of 2.0 at most.
  report=$(systemd-analyze security --offline=true --threshold=20 "$work/shipped/weft.service" 2>&1) ||
    fail "the sandbox is weaker than it should be (exposure above 2.0):"$'\n'"$report"
  grep 'Overall exposure level' <<<"$report"
else
  echo "not checked: this systemd ($(systemd-analyze --version | head -n1)) cannot rate units offline"
fi

echo "systemd unit checks passed"
