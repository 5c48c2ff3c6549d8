# lib.sh: what the deployment checks share, sourced (not run) by install.sh,
# systemd-units.sh and helm.sh: where the repository and the weft binary
# are, and what a missing tool means.
#
# Exit status of the checks: 0 passed, 1 failed, 77 skipped (automake's
# convention, which tests/deploy.rs follows). A check skips when something
# it needs is missing here; in CI, where WEFT_CI is set and every tool is
# installed, that is a failure instead.
# shellcheck shell=bash
# shellcheck disable=SC2034 # here, deploy, repo and weft are the sourcing script's

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) # deploy/test
deploy=$(dirname "$here")
repo=$(dirname "$deploy")

# The binary under test: $WEFT_BIN (made absolute), else target/release/weft.
weft=${WEFT_BIN:-$repo/target/release/weft}
[[ $weft == /* ]] || weft=$PWD/$weft

# Skips the check (exit 77), saying why; fails it instead where WEFT_CI is set.
skip() {
  if [[ -n ${WEFT_CI:-} ]]; then
    echo "FAIL: $* (required in CI)" >&2
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

# Skips the check unless the weft binary is there.
need_weft() {
  [[ -x $weft ]] || skip "no weft binary at $weft (set WEFT_BIN, or cargo build --release)"
}
