#!/usr/bin/env bash
# Runs every rdmaq test: formatting, clippy (warnings are errors), the unit and
# multi-process tests, and the soft-RoCE lab tests (which need root and boot qemu VMs).
# Installs what is missing first, so it works on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The multi-process and lab tests run the workspace's binaries (agent, coordinator, CLI,
# the intercept library), which `cargo test` alone does not build.
cargo build --workspace
# Here the lab must run: a lab test that cannot start fails instead of skipping.
RDMAQ_REQUIRE_LAB=1 cargo test --workspace "$@"

# The lab must leave nothing behind.
leftover=$(ip netns list | grep -c '^rdmaq-lab-' || true)
qemus=$(pgrep -c -f 'qemu-system.*rdmaq.name=' || true)
if [[ "$leftover" != 0 || "$qemus" != 0 ]]; then
  echo "lab left $leftover namespaces and $qemus qemu processes behind" >&2
  exit 1
fi
