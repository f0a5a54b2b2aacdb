#!/usr/bin/python3
"""Plots grant-bench results: grants/s and p99 latency against clients, rdmaq and etcd.

    target/release/grant-bench --out docs/bench/grant-bench.json
    scripts/plot-grant-bench.py docs/bench/grant-bench.json docs/bench/grant-bench.png

Runs with Debian's /usr/bin/python3 and python3-matplotlib (installed if missing, as root).
"""
import json
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.run(["apt-get", "install", "-y", "-q", "python3-matplotlib"], check=True)
    import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    points = json.load(open(src))
    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"rdmaq": "-o", "etcd": "--s"}
    for system in ("rdmaq", "etcd"):
        for tenants in sorted({p["tenants"] for p in points}):
            series = sorted(
                (p for p in points if p["system"] == system and p["tenants"] == tenants),
                key=lambda p: p["clients"],
            )
            if not series:
                continue
            clients = [p["clients"] for p in series]
            label = f"{system}, {tenants} tenant{'s' if tenants > 1 else ''}"
            thr.plot(clients, [p["grants_per_sec"] for p in series], styles[system], label=label)
            lat.plot(clients, [p["p99_ms"] for p in series], styles[system], label=label)
    for ax, title, unit in (
        (thr, "grants per second", "grants/s"),
        (lat, "p99 grant latency", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("rdmaq coordinator vs etcd compare-and-swap, 3 durable members each, one 2-core host")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(*(sys.argv[1:3] if len(sys.argv) >= 3 else ("docs/bench/grant-bench.json", "docs/bench/grant-bench.png")))
