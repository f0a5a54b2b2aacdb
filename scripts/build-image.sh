#!/usr/bin/env bash
# Builds rdmaq's OCI image, rdmaq:<version>, from nothing but this machine's Debian packages
# and rdmaq's release binaries — no base image, no registry: the binaries, the shared
# libraries they link (glibc, libgcc_s, from this Debian system), `rdma` (Debian's iproute2:
# the agent reads the kernel's resource dump with it), busybox (Debian's busybox-static) for
# /bin/sh and cp, and the intercept library for injection into pods.
# Writes target/image/rdmaq-<version>.oci.tar (an OCI archive: `ctr -n k8s.io images
# import`, `podman load`, or `skopeo copy oci-archive:... docker://your-registry/...`) and
# leaves the image in buildah's local storage as localhost/rdmaq:<version>.
#
#   scripts/build-image.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/image}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
image="rdmaq:$version"
log() { printf '[build-image] %s\n' "$*" >&2; }

for tool in buildah busybox rdma; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/install-deps.sh" >&2; exit 1; }
done

log "release binaries"
cargo build --release -p rdmaq-coordinator -p rdmaq-agent -p rdmaq-cli -p rdmaq-intercept
bins=(target/release/rdmaq-coordinator target/release/rdmaq-agent target/release/rdmaq)
lib=target/release/librdmaq_intercept.so

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")

log "root filesystem in $root"
install -d "$root"/{usr/bin,usr/lib/rdmaq,bin,etc,tmp,var/lib/rdmaq,run/rdmaq}
chmod 1777 "$root/tmp"
rdma=$(readlink -f "$(command -v rdma)")
# Stripped: the release profile keeps debug info, which the image does not need.
install -s -m 0755 "${bins[@]}" "$rdma" "$root/usr/bin/"
install -s -m 0644 "$lib" "$root/usr/lib/rdmaq/"
# The shared libraries the binaries load, at the paths the dynamic linker looks for them.
for f in "${bins[@]}" "$rdma" "$lib"; do
  ldd "$f" | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}'
done | sort -u | while read -r so; do
  install -D -m 0755 "$(readlink -f "$so")" "$root$so"
done
# A shell and the few commands the manifests run (`sh -c` in the coordinator's start,
# `cp` in the workload's init container).
install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
for applet in sh cp ls cat mkdir rm; do ln -s busybox "$root/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
buildah unmount "$ctr" >/dev/null

buildah config \
  --env PATH=/usr/bin:/bin \
  --workingdir /var/lib/rdmaq \
  --cmd '["rdmaq-coordinator", "--help"]' \
  --label "org.opencontainers.image.title=rdmaq" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.description=rdmaq coordinator, agent, CLI and intercept library" \
  "$ctr"
# The previous build of this tag would stay behind, untagged, at every rebuild.
buildah rmi "$image" >/dev/null 2>&1 || true
buildah commit --rm -q "$ctr" "$image" >/dev/null
trap - EXIT

mkdir -p "$out"
archive="$out/rdmaq-$version.oci.tar"
rm -f "$archive"
buildah push -q "$image" "oci-archive:$archive:$image"
log "$image -> $archive ($(du -h "$archive" | cut -f1))"
echo "$archive"
