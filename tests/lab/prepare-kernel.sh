#!/usr/bin/env bash
# Prepares one soft-RoCE lab kernel: installs the lab's Debian packages if missing, downloads
# the Debian kernel package that META depends on (resolved with apt-cache, never
# hard-coded), and builds a busybox initramfs with the RDMA and virtio modules.
#
#   prepare-kernel.sh META CACHE_DIR      e.g. prepare-kernel.sh linux-image-amd64 /var/cache/rdmaq-lab
#
# Prints the directory holding `vmlinuz`, `initrd.img` and `release` as its last line.
# Re-runs are cheap: nothing is rebuilt unless this script or the init changed.
set -euo pipefail

META=${1:?usage: prepare-kernel.sh META CACHE_DIR}
CACHE=${2:?usage: prepare-kernel.sh META CACHE_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
log() { printf '[lab-prepare] %s\n' "$*" >&2; }

LAB_PACKAGES=(qemu-system-x86 busybox-static cpio kmod iproute2 iputils-ping xz-utils util-linux
  rdma-core ibverbs-utils ibverbs-providers perftest rdmacm-utils)
missing=()
for p in "${LAB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$META"
flock 9

resolve() {
  apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
}
PKG=$(resolve)
if [[ -z "$PKG" ]]; then
  log "apt-cache knows no dependency of $META; updating the package lists"
  apt-get update -q >&2
  PKG=$(resolve)
fi
[[ -n "$PKG" ]] || { log "cannot resolve the kernel package of $META"; exit 1; }

OUT="$CACHE/$PKG"
STAMP=$(cat "$0" "$HERE/init.sh" | sha256sum | cut -c1-16)
if [[ -f "$OUT/stamp" && "$(cat "$OUT/stamp")" == "$STAMP" ]]; then
  echo "$OUT"
  exit 0
fi

log "building $OUT from $PKG"
rm -rf "$OUT"
mkdir -p "$OUT/pkg"
(cd "$OUT" && apt-get download "$PKG" >&2)
dpkg -x "$OUT"/"$PKG"_*.deb "$OUT/pkg"
KVER=$(ls "$OUT/pkg/lib/modules")
depmod -b "$OUT/pkg" "$KVER"

ROOT="$OUT/initramfs"
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,host,lib/modules}
cp /bin/busybox "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done

# Load order matters: crc32_generic before rdma_rxe, or `rdma link add` fails with ENOENT.
# Modules built into one kernel and modular in the other show up as "builtin" and are
# skipped; .ko.xz modules are decompressed here so busybox insmod loads them as they are.
MODULES=(crc32_generic virtio_pci virtio_net virtio_console 9pnet_virtio 9p overlay
  rdma_rxe ib_uverbs rdma_ucm)
: >"$ROOT/modules.load"
for m in "${MODULES[@]}"; do
  modprobe -d "$OUT/pkg" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}' |
    while read -r path; do
      name=$(basename "$path")
      name=${name%.xz}
      if ! grep -qx "/lib/modules/$name" "$ROOT/modules.load"; then
        case "$path" in
        *.xz) xz -dc "$path" >"$ROOT/lib/modules/$name" ;;
        *) cp "$path" "$ROOT/lib/modules/$name" ;;
        esac
        echo "/lib/modules/$name" >>"$ROOT/modules.load"
      fi
    done
done
install -m 0755 "$HERE/init.sh" "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initrd.img"
cp "$OUT/pkg/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/release"
rm -rf "$OUT/pkg" "$ROOT" "$OUT"/*.deb
echo "$STAMP" >"$OUT/stamp"
log "ready: $OUT (kernel $KVER)"
echo "$OUT"
