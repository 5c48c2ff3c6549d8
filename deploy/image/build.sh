#!/usr/bin/env bash
# build.sh: the container image the Helm chart runs (weft/weft:<appVersion>),
# built with no daemon and no registry: umoci writes an OCI image layout.
#
# What is in it: weft at /usr/local/bin/weft (the entrypoint), the shared
# libraries it links (glibc: this toolchain has no musl target, so the binary
# is not static), iptables (nf_tables; the injected weft-init container runs
# it for transparent proxying) with its libraries and extensions, the host's
# CA certificates, /etc/passwd and /etc/group naming the chart's users (weft
# 1000, the proxy 5995), and /tmp. No shell, no package manager. It runs as
# 1000:1000, as the chart's pods do.
#
# Usage: deploy/image/build.sh [OUT_DIR]            (default: target/image)
# Environment (optional):
#   WEFT=path   the weft binary (default target/release/weft, built if missing)
#   TAG=...     the image tag (default: the chart's appVersion)
# Output: OUT_DIR/oci, an OCI image layout holding the tag, and
# OUT_DIR/weft-TAG.oci.tar, the same as one archive; it prints the image's
# compressed size. To push it (skopeo, from Debian's packages):
#   skopeo copy oci:OUT_DIR/oci:TAG docker://registry.example.com/weft/weft:TAG
# and set the chart's image.repository to registry.example.com/weft/weft.
# To try it locally: podman load -i OUT_DIR/weft-TAG.oci.tar, or
# kind load image-archive OUT_DIR/weft-TAG.oci.tar.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-${CARGO_TARGET_DIR:-$ROOT/target}/image}"
WEFT="${WEFT:-${CARGO_TARGET_DIR:-$ROOT/target}/release/weft}"
TAG="${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/helm/weft/Chart.yaml")}"

for tool in umoci ldd tar; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is required (apt-get install umoci libc-bin tar)" >&2; exit 1; }
done
if [ ! -x "$WEFT" ]; then
  echo "==> building weft (release)"
  cargo build --release --locked -p weft-cli --manifest-path "$ROOT/Cargo.toml"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{usr/local/bin,usr/sbin,etc/ssl/certs,weft}
install -d -m 1777 "$rootfs/tmp"

# A file and, for a program, every library it loads, at the same paths.
copy() {
  local file="$1"
  install -D -m "$(stat -c '%a' "$(readlink -f "$file")")" "$(readlink -f "$file")" "$rootfs$file"
}
copy_with_libraries() {
  local program="$1" library
  for library in $(ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$rootfs$library" ] || copy "$library"
  done
}

# weft, without its debug information.
if command -v strip >/dev/null; then
  strip --strip-debug -o "$rootfs/usr/local/bin/weft" "$WEFT"
else
  cp "$WEFT" "$rootfs/usr/local/bin/weft"
fi
chmod 0755 "$rootfs/usr/local/bin/weft"
copy_with_libraries "$WEFT"

# iptables (the nf_tables variant), its libraries and its extensions.
xtables="$(command -v xtables-nft-multi || true)"
if [ -z "$xtables" ]; then
  echo "build.sh: iptables is required (apt-get install iptables)" >&2
  exit 1
fi
copy "$xtables"
copy_with_libraries "$xtables"
for name in iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save; do
  ln -sf "$(basename "$xtables")" "$rootfs/usr/sbin/$name"
done
extensions="$(dirname "$(readlink -f "$(ldd "$xtables" | awk '/libxtables/ { print $3 }')")")/xtables"
for extension in "$extensions"/*.so; do
  copy "$extension"
done
[ -e /etc/protocols ] && copy /etc/protocols

cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nweft:x:1000:1000:weft:/weft:/sbin/nologin\nweft-proxy:x:5995:5995:weft proxy:/weft:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nweft:x:1000:\nweft-proxy:x:5995:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

# The image: one layer with the rootfs above, and its configuration.
rm -rf "$OUT/oci"
mkdir -p "$OUT"
rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$TAG"
umoci unpack "${rootless[@]}" --image "$OUT/oci:$TAG" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
chown -R 1000:1000 "$work/bundle/rootfs/weft" 2>/dev/null || true
umoci repack --image "$OUT/oci:$TAG" "$work/bundle"
umoci config --image "$OUT/oci:$TAG" --os linux --architecture amd64 \
  --config.entrypoint /usr/local/bin/weft --config.user 1000:1000 --config.workingdir /weft \
  --config.env PATH=/usr/local/bin:/usr/sbin:/usr/bin --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.label org.opencontainers.image.title=weft --config.label "org.opencontainers.image.version=$TAG"
umoci gc --layout "$OUT/oci"
tar -C "$OUT/oci" -cf "$OUT/weft-$TAG.oci.tar" .

compressed="$(python3 - "$OUT/oci" "$TAG" <<'PY'
import json, sys, os
layout, tag = sys.argv[1], sys.argv[2]
def blob(digest):
    algorithm, value = digest.split(":")
    return os.path.join(layout, "blobs", algorithm, value)
index = json.load(open(os.path.join(layout, "index.json")))
manifest = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(blob(manifest["digest"])))
print(sum(layer["size"] for layer in manifest["layers"]))
PY
)"
echo "==> weft/weft:$TAG in $OUT/oci and $OUT/weft-$TAG.oci.tar: $((compressed / 1024)) KiB compressed ($(du -sh "$rootfs" | cut -f1) unpacked)"
