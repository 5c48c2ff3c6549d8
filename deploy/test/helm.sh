#!/usr/bin/env bash
# Tests the Helm chart (deploy/helm/weft) offline: renders it for the default
# values and a set of overrides with deploy/helm/render (a stand-in for
# `helm template`, as no helm binary is installed), checks what the servers
# and the injector need of each render, and validates every object against
# the Kubernetes schemas (check_chart.py).
#
# Needs: go and Debian's Go sources for sprig and yaml.v2 (golang-go,
# golang-github-masterminds-sprig-dev, golang-gopkg-yaml.v2-dev), python3 with
# venv, and PyPI for the first run (kubernetes-validate, into a venv kept in
# ${XDG_CACHE_HOME:-~/.cache}/weft-test-venv). The renderer is built once into
# ${CARGO_TARGET_DIR:-target}/helm-render and rebuilt when its source changes.
#
# With WEFT_BIN set (tests/deploy.rs sets it), the real `weft k8s webhook` is
# also run with each rendered injector's arguments and certificate (and, with
# ACLs, --acl-auth-method), and called over TLS as the API server would call
# it; and two servers and a client agent are run with the rendered RPC TLS
# config and certificates, and must form a cluster over TLS. With ACLs (the
# chart's default), the servers run with the rendered management token, the
# rendered ACL Job's `weft acl` commands run against them (twice), and the
# mesh gateway's agent logs in and enrolls with a service-account JWT from a
# stand-in issuer whose JWKS the servers fetch over HTTPS; the gateway then
# registers and turns Ready with that login. (openssl makes the issuer's
# keys and certificates.)
#
# Exit status: 0 passed, 1 failed, 77 skipped because a tool is missing (with
# WEFT_CI set, a missing tool is a failure instead).
# WEFT_KUBE_VERSIONS overrides the Kubernetes versions validated against.
set -euo pipefail

# shellcheck source=deploy/test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
chart=$repo/deploy/helm/weft
render_src=$repo/deploy/helm/render
kube_versions=${WEFT_KUBE_VERSIONS:-1.34.0,1.37.0}
# Pinned so the schemas (and so the verdicts) change only when we choose.
validator=kubernetes-validate==1.37.0
gopath=/usr/share/gocode

command -v go >/dev/null || skip "go not found (apt-get install golang-go)"
[ -d "$gopath/src/github.com/Masterminds/sprig" ] ||
  skip "sprig's Go sources not found in $gopath (apt-get install golang-github-masterminds-sprig-dev)"
[ -d "$gopath/src/gopkg.in/yaml.v2" ] ||
  skip "yaml.v2's Go sources not found in $gopath (apt-get install golang-gopkg-yaml.v2-dev)"
command -v python3 >/dev/null || skip "python3 not found"

start=$SECONDS

# The renderer: Go in GOPATH mode against Debian's packages (there is no
# module proxy), its build cache beside the binary so warm runs are instant.
build=${CARGO_TARGET_DIR:-$repo/target}/helm-render
renderer=$build/render
mkdir -p "$build"
if [ ! -x "$renderer" ] || [ -n "$(find "$render_src" -name '*.go' -newer "$renderer")" ]; then
  echo "==> building the chart renderer"
  (
    cd "$render_src"
    export GO111MODULE=off GOPATH=$gopath GOFLAGS='' GOCACHE=$build/gocache
    go vet .
    go test -count=1 .
    go build -o "$renderer.tmp" .
  )
  mv "$renderer.tmp" "$renderer"
fi

# The validator, in a venv kept warm across runs.
venv=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/weft-test-venv
python=$venv/bin/python
want_version=${validator#*==}
if ! "$python" -c "import yaml, kubernetes_validate.version as v; assert v.__version__ == '$want_version'" 2>/dev/null; then
  echo "==> installing $validator into $venv"
  python3 -m venv "$venv" ||
    skip "python3 cannot create a venv (apt-get install python3-venv)"
  "$python" -m pip install --quiet --disable-pip-version-check "$validator" pyyaml ||
    skip "pip could not install $validator from PyPI"
fi

weft_args=()
if [ -n "${WEFT_BIN:-}" ]; then
  [ -x "$WEFT_BIN" ] || { echo "helm.sh: error: WEFT_BIN=$WEFT_BIN is not an executable" >&2; exit 1; }
  weft_args=(--weft "$WEFT_BIN")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-helm.XXXXXX")
echo "==> rendering and checking the chart (Kubernetes $kube_versions)"
if "$python" "$here/check_chart.py" --renderer "$renderer" --chart "$chart" \
    --workdir "$work" --kube-versions "$kube_versions" "${weft_args[@]}"; then
  rm -rf "$work"
  echo "==> chart checks passed in $((SECONDS - start))s"
else
  echo "==> chart checks failed; the rendered manifests are in $work" >&2
  exit 1
fi
