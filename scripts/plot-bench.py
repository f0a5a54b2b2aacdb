#!/usr/bin/python3
"""Plots the benchmarks' JSON results (each bench's --out) as PNGs beside them.

    scripts/plot-bench.py                      # every docs/bench/*.json
    scripts/plot-bench.py docs/bench/agent-bench.json

Which plot a file gets follows its name: grant-bench, agent-bench, intercept-bench,
scale-sim. Runs with Debian's /usr/bin/python3 and python3-matplotlib (installed if missing,
as root).
"""
import glob
import json
import os
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.run(["apt-get", "install", "-y", "-q", "python3-matplotlib"], check=True)
    import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HOST = "one 2-core host"


def grant_bench(data, fig):
    """Grants/s and p99 against clients, rdmaq and etcd, per tenant count."""
    thr, lat = fig.subplots(1, 2)
    styles = {"rdmaq": "-o", "etcd": "--s"}
    for system in ("rdmaq", "etcd"):
        for tenants in sorted({p["tenants"] for p in data}):
            series = sorted(
                (p for p in data if p["system"] == system and p["tenants"] == tenants),
                key=lambda p: p["clients"],
            )
            if not series:
                continue
            clients = [p["clients"] for p in series]
            label = f"{system}, {tenants} tenant{'s' if tenants > 1 else ''}"
            thr.plot(clients, [p["grants_per_sec"] for p in series], styles[system], label=label)
            lat.plot(clients, [p["p99_ms"] for p in series], styles[system], label=label)
    lat.axhline(10, color="grey", linestyle=":", label="target p99 at 64 clients")
    for ax, title, unit in ((thr, "grants per second", "grants/s"), (lat, "p99 grant latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"rdmaq coordinator vs etcd compare-and-swap, 3 durable members each, {HOST}")


def agent_bench(data, fig):
    """Admission round trip p50/p99 per case, floors beside the agent."""
    ax = fig.subplots(1, 1)
    cases = data["cases"]
    ys = range(len(cases))
    ax.barh([y + 0.2 for y in ys], [c["p50_us"] for c in cases], height=0.4, label="p50")
    ax.barh([y - 0.2 for y in ys], [c["p99_us"] for c in cases], height=0.4, label="p99")
    ax.set_yticks(list(ys), [c["case"] for c in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("µs per admission round trip (log)")
    ax.axvline(50, color="grey", linestyle=":", label="p99 target 50 µs")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"rdmaq-agent admission round trip ({HOST}); own work {data['own_work_us']:.1f} µs, "
        f"idle {data['idle_cpu_percent']:.1f} % CPU, 10k/s {data['busy_cpu_percent']:.1f} % CPU"
    )


def intercept_bench(data, fig):
    """The library's cost as a ratio per verb pair and mode, against the 1.05 target."""
    ax = fig.subplots(1, 1)
    labels = [f"{r['what']}\n{r['mode']}" for r in data]
    ax.bar(range(len(data)), [r["ratio"] for r in data], color="tab:blue")
    ax.set_xticks(range(len(data)), labels, fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.05, color="grey", linestyle=":", label="target 1.05")
    ax.set_ylim(0.9, max(1.1, max(r["ratio"] for r in data) + 0.05))
    ax.set_ylabel("with the library / without (time)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("librdmaq_intercept.so in one soft-RoCE VM (qemu TCG), modes alternating")


def scale_sim(data, fig):
    """Heartbeat p99 over time and each member's CPU."""
    hb, cpu = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    at = [t for t, _ in data["heartbeat_p99_per_5s"]]
    hb.plot(at, [ms for _, ms in data["heartbeat_p99_per_5s"]], "-o")
    start = data["measured_from_secs"]
    hb.axvspan(start, start + data["secs"], color="tab:green", alpha=0.08, label="measured window")
    hb.axhline(50, color="grey", linestyle=":", label="target p99 50 ms")
    hb.set_yscale("log")
    hb.set_xlabel("seconds from the start (5 s windows)")
    hb.set_ylabel("heartbeat p99, ms (log)")
    hb.grid(True, which="both", alpha=0.3)
    hb.legend(fontsize=8)
    members = data["members"]
    cpu.bar([f"member {i + 1}" for i in range(len(members))], [m["cores"] for m in members])
    cpu.axhline(0.5, color="grey", linestyle=":", label="target 0.5 core")
    cpu.set_ylabel("cores on average")
    cpu.legend(fontsize=8)
    fig.suptitle(
        f"scale-sim: {data['agents']} agents x {data['tenants']} tenants, "
        f"{data['heartbeats']['per_sec']:.0f} heartbeats/s, p99 {data['heartbeats']['p99_ms']:.0f} ms ({HOST})"
    )


PLOTS = {
    "grant-bench": grant_bench,
    "agent-bench": agent_bench,
    "intercept-bench": intercept_bench,
    "scale-sim": scale_sim,
}


def plot(src):
    name = os.path.basename(src).removesuffix(".json")
    draw = PLOTS.get(name)
    if draw is None:
        sys.exit(f"{src}: no plot for {name!r} (one of {', '.join(PLOTS)})")
    fig = plt.figure(figsize=(11, 4.2))
    draw(json.load(open(src)), fig)
    fig.tight_layout()
    dst = src.removesuffix(".json") + ".png"
    fig.savefig(dst, dpi=110)
    plt.close(fig)
    print(f"wrote {dst}")


if __name__ == "__main__":
    for src in sys.argv[1:] or sorted(glob.glob("docs/bench/*.json")):
        plot(src)
