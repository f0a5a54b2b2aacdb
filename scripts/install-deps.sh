#!/usr/bin/env bash
# Installs everything rdmaq's build, demo and tests need on a Debian 12 machine, skipping
# what is already there so a second run takes seconds. Needs root (apt-get, netns, qemu).
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }

# Debian packages: build (protoc and the well-known .proto files, LLVM for bpf-linker), the soft-RoCE lab (qemu, busybox,
# cpio, kmod for depmod/modprobe, iproute2 for netns/bridge/rdma), rdma-core userspace and
# the real RDMA programs the tests run, etcd for the coordinator benchmark, systemd (for
# `systemd-analyze verify` of the units and `systemd-socket-activate` in the agent tests),
# buildah for the OCI image (scripts/build-image.sh), python3-venv for the manifest checker.
APT_PACKAGES=(
  build-essential pkg-config protobuf-compiler libprotobuf-dev file
  llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
  qemu-system-x86 busybox-static cpio kmod iproute2 iputils-ping xz-utils util-linux procps
  rdma-core ibverbs-utils ibverbs-providers libibverbs-dev librdmacm-dev
  perftest rdmacm-utils python3-pyverbs
  etcd-server etcd-client python3-yaml
  systemd
  buildah python3-venv
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages: all present"
fi

# rust-src lets the stable toolchain build `core` for bpfel-unknown-none (-Z build-std).
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  log "rustup component add rust-src"
  rustup component add rust-src
fi

# bpf-linker links the eBPF object; it must match rustc's LLVM major version (22).
if ! command -v bpf-linker >/dev/null 2>&1; then
  log "cargo install bpf-linker (built against Debian's LLVM 22)"
  PATH=/usr/lib/llvm-22/bin:$PATH cargo install --locked bpf-linker \
    --no-default-features --features llvm-22
fi
# kubectl renders deploy/k8s (`kubectl kustomize`): Debian's kubernetes-client, unless a
# kubectl is already there.
if ! command -v kubectl >/dev/null 2>&1; then
  log "apt-get install kubernetes-client (kubectl)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client
fi

# kubernetes-validate checks the rendered manifests against Kubernetes' JSON schemas, which
# it carries (offline); in a venv of its own, away from the system's Python.
TOOLS=/opt/rdmaq-tools
if ! "$TOOLS/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  log "pip install kubernetes-validate into $TOOLS"
  /usr/bin/python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q 'kubernetes-validate==1.37.0'
fi
log "ready"
