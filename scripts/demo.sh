#!/usr/bin/env bash
# rdmaq's main job on this machine: installs what is missing, builds, and runs the demo in
# the soft-RoCE lab. Needs root (network namespaces, qemu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --workspace
exec target/release/rdmaq-demo "$@"
