//! Overhead of librdmaq_intercept.so in the soft-RoCE lab, as ratios within one VM and one
//! run (software emulation is too noisy for absolute numbers): control path (QP
//! create+destroy, MR reg+dereg) in standalone and agent mode, and data path (ib_write_bw,
//! ib_send_lat) with and without the library. Runs alternate A/B to spread drift evenly.
//!
//!     cargo build --release --workspace
//!     target/release/intercept-bench [ITERATIONS] [ROUNDS]
#![forbid(unsafe_code)]

use clap::Parser;
use rdmaq_bench::median;
use rdmaq_lab::{Kernel, Lab, LabSpec, Node, bins, node_agent, programs};

fn value(out: &str, key: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
}

/// ib_write_bw's average MB/s or ib_send_lat's typical latency (usec), from the client.
fn perftest(n: &Node, prefix: &str, tool: &str) -> f64 {
    let server = n.spawn(&format!("{prefix} {tool} -d rxe0 -x 1 -n 2000"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let client = n
        .run_ok(&format!(
            "{prefix} {tool} -d rxe0 -x 1 -n 2000 {}",
            n.addr()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    server.wait_ok().unwrap_or_else(|e| panic!("{e}"));
    // The result row is the last line starting with a number: "#bytes #iter ... value".
    let row = client
        .stdout
        .lines()
        .rfind(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no result row:\n{}", client.stdout))
        .to_string();
    let cols: Vec<f64> = row
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    match tool {
        // #bytes #iterations BW-peak BW-average MsgRate
        "ib_write_bw" => cols[3],
        // #bytes #iterations t_min t_max t_typical ...
        _ => cols[4],
    }
}

/// The intercept library's overhead in one soft-RoCE VM: control path in standalone and
/// agent mode, data path with and without the library, as ratios within one run.
#[derive(Debug, Parser)]
#[command(name = "intercept-bench")]
struct Args {
    /// Create+destroy pairs per measurement.
    #[arg(default_value_t = 1000)]
    iterations: u32,
    /// Rounds, modes alternating within each.
    #[arg(default_value_t = 3)]
    rounds: usize,
    /// First count each mode's system calls (`strace -c -f`, one run of each verb pair) and
    /// print those the library adds or removes per pair: where its time goes in the VM.
    #[arg(long)]
    strace: bool,
    /// First profile each mode's verb pairs inside the VM (`perf record -e cpu-clock` and
    /// `perf stat`, one run of 20x the iterations each) and print where the CPU time went,
    /// by object and function: what the library's share is made of under emulation.
    #[arg(long)]
    perf: bool,
    /// One more mode to measure, as `NAME=SETTINGS`: the library loaded with these
    /// environment settings (e.g. `disabled=RDMA_INTERCEPT_ENABLE=0`). Repeatable.
    #[arg(long = "mode", value_name = "NAME=SETTINGS")]
    extra_modes: Vec<String>,
    /// Where the JSON results go (for scripts/plot-bench.py).
    #[arg(long, default_value = "docs/bench/intercept-bench.json")]
    out: String,
}

/// One measured ratio (with the library against without), as printed and written to
/// `--out`: for the control path the time per pair (µs), for the data path the tool's
/// figure (MB/s or µs) without and with.
#[derive(serde::Serialize)]
struct Ratio {
    what: String,
    mode: String,
    without: f64,
    with: f64,
    unit: &'static str,
    /// Above 1: the library costs (time per pair, or throughput lost).
    ratio: f64,
}

/// System call -> calls, from `strace -c` output.
fn syscall_counts(summary: &str) -> std::collections::BTreeMap<String, u64> {
    summary
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // "% time seconds usecs/call calls [errors] syscall"; not the header, rules or total.
            if cols.len() < 5 || cols[0].parse::<f64>().is_err() || cols.last() == Some(&"total") {
                return None;
            }
            Some((cols.last()?.to_string(), cols[3].parse().ok()?))
        })
        .collect()
}

/// Runs each mode once per verb pair under strace and prints, per system call, the calls per
/// pair each mode makes where they differ from the run without the library.
fn count_syscalls(n: &Node, modes: &[(&str, String)], bench: &str, iters: u32) {
    for what in ["qp", "mr"] {
        let counts: Vec<_> = modes
            .iter()
            .map(|(_, prefix)| {
                let out = n
                    .run_ok(&format!(
                        "strace -c -f -o /tmp/strace.txt {prefix} {bench} {what} {iters} >/dev/null && cat /tmp/strace.txt"
                    ))
                    .unwrap_or_else(|e| panic!("{e}"));
                syscall_counts(&out.stdout)
            })
            .collect();
        let names: std::collections::BTreeSet<&String> =
            counts.iter().flat_map(|c| c.keys()).collect();
        println!(
            "{what} pair: system calls per pair where a mode differs from the run without the library"
        );
        for name in names {
            let per_pair: Vec<f64> = counts
                .iter()
                .map(|c| c.get(name).copied().unwrap_or(0) as f64 / iters as f64)
                .collect();
            if per_pair.iter().any(|p| (p - per_pair[0]).abs() >= 0.01) {
                let cells: Vec<String> = modes
                    .iter()
                    .zip(&per_pair)
                    .map(|((mode, _), p)| format!("{mode} {p:.3}"))
                    .collect();
                println!("  {name:<16} {}", cells.join("   "));
            }
        }
    }
}

/// Profiles each mode's loop of each verb pair in the VM (20x the iterations, so that the
/// program's start is a small part) and prints: the agent's CPU meanwhile, page faults,
/// context switches and migrations (`perf stat`), the CPU time by object, the 40 functions
/// that took most of it, and the library's own time by function.
fn profile(n: &Node, modes: &[(&str, String)], bench: &str, iters: u32) {
    for what in ["qp", "mr"] {
        for (mode, prefix) in modes {
            let report = |sort: &str, limit: &str| {
                format!(
                    "perf report -n -i /tmp/perf.data --stdio --no-children --sort {sort} --percent-limit {limit} 2>/dev/null"
                )
            };
            let out = n
                .run_ok(&format!(
                    "ticks() {{ awk '{{print $14+$15}}' /proc/$(pgrep -o rdmaq-agent)/stat; }}; a0=$(ticks); \
                     perf record -q -e cpu-clock -F 4000 -o /tmp/perf.data -- {prefix} {bench} {what} {} >/dev/null 2>&1 && \
                     echo \"# agent CPU ticks during the run: $(( $(ticks) - a0 ))\" && \
                     perf stat -x, -e page-faults,context-switches,cpu-migrations -- {prefix} {bench} {what} {} 2>&1 >/dev/null | sed 's/^/# stat /' && \
                     {} && echo --- && {} && echo --- && ({} --dsos librdmaq_intercept.so --percentage relative || true)",
                    iters * 20,
                    iters * 20,
                    report("dso", "0.5"),
                    report("dso,sym", "0.2"),
                    report("sym", "2"),
                ))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut parts = out.stdout.split("---");
            let (by_dso, by_sym, in_library) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            println!("{what} pair, {mode}: CPU time by object");
            for line in by_dso.lines().filter(|l| {
                l.starts_with("# Samples")
                    || l.starts_with("# agent")
                    || l.starts_with("# stat")
                    || !(l.starts_with('#') || l.trim().is_empty())
            }) {
                println!("  {}", line.trim());
            }
            println!("{what} pair, {mode}: functions (samples)");
            for line in by_sym
                .lines()
                .filter(|l| !(l.starts_with('#') || l.trim().is_empty()))
                .take(40)
            {
                println!("  {}", line.trim());
            }
            if !in_library.trim().is_empty() {
                println!("{what} pair, {mode}: the library's own time by function");
                for line in in_library
                    .lines()
                    .filter(|l| !(l.starts_with('#') || l.trim().is_empty()))
                {
                    println!("  {}", line.trim());
                }
            }
        }
    }
}

fn main() {
    let Args {
        iterations: iters,
        rounds,
        strace,
        perf,
        extra_modes,
        out,
    } = Args::parse();
    let mut results: Vec<Ratio> = Vec::new();
    let lab = Lab::start(&LabSpec::new(1, Kernel::from_env())).expect("lab");
    let n = lab.node(1);
    let lib = bins::bin("librdmaq_intercept.so").display().to_string();
    let bench = programs::verbs_bench().display().to_string();
    // The real agent, standalone, its default tenant uncapped: agent mode's cost is the
    // library's and the agent's work, never a denial.
    let _agent = node_agent::start_named(n, "bench", "", "--no-ebpf");

    let mut modes = vec![
        ("without the library", "env".to_string()),
        (
            "standalone",
            format!(
                "env LD_PRELOAD={lib} RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_LOG_FILE_PATH=/dev/null"
            ),
        ),
        (
            "agent mode",
            format!(
                "env LD_PRELOAD={lib} RDMAQ_AGENT_SOCKET=/tmp/bench.sock RDMA_INTERCEPT_LOG_FILE_PATH=/dev/null"
            ),
        ),
    ];
    for m in &extra_modes {
        let (name, settings) = m
            .split_once('=')
            .unwrap_or_else(|| panic!("--mode {m:?}: expected NAME=SETTINGS"));
        modes.push((name, format!("env LD_PRELOAD={lib} {settings}")));
    }
    println!(
        "kernel {}, {iters} iterations x {rounds} rounds, medians",
        lab.kernel_release()
    );
    if strace {
        count_syscalls(n, &modes, &bench, iters);
    }
    if perf {
        profile(n, &modes, &bench, iters);
    }
    for what in ["qp", "mr"] {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut firsts: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        // Each round starts with the next mode, so that where a mode runs in the round is
        // not part of what is measured (checked when the MR agent-mode gap was looked into:
        // it was not the cause, but it should not be a variable either).
        for round in 0..rounds {
            let mut line = Vec::new();
            for k in 0..modes.len() {
                let i = (round + k) % modes.len();
                let out = n
                    .run_ok(&format!("{} {bench} {what} {iters}", modes[i].1))
                    .unwrap_or_else(|e| panic!("{e}"));
                let ns = value(&out.stdout, &format!("{what}_ns_per_pair"));
                line.push(format!("{} {:.1}", modes[i].0, ns / 1000.0));
                samples[i].push(ns);
                firsts[i].push(value(&out.stdout, "first_pair_ns"));
            }
            println!(
                "{what} round {}: {} (us per pair)",
                round + 1,
                line.join(", ")
            );
        }
        // The first pair carries the one-time costs (the agent's hello and first budget,
        // the host table's opening); the per-pair figures below are the steady state.
        let first: Vec<String> = modes
            .iter()
            .zip(&firsts)
            .map(|((name, _), f)| format!("{name} {:.0}", median(f.clone()) / 1000.0))
            .collect();
        println!(
            "{what} first pair (us, one-time costs): {}",
            first.join(", ")
        );
        let base = median(samples[0].clone());
        for (i, (name, _)) in modes.iter().enumerate() {
            let m = median(samples[i].clone());
            println!(
                "{what} create+destroy {name:<20} {:>9.1} us   ratio {:.3}",
                m / 1000.0,
                m / base
            );
            if i > 0 {
                results.push(Ratio {
                    what: if what == "qp" {
                        "QP create+destroy"
                    } else {
                        "MR reg+dereg"
                    }
                    .into(),
                    mode: name.to_string(),
                    without: base / 1000.0,
                    with: m / 1000.0,
                    unit: "us",
                    ratio: m / base,
                });
            }
        }
    }
    for tool in ["ib_write_bw", "ib_send_lat"] {
        let (mut plain, mut with) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            plain.push(perftest(n, "env", tool));
            with.push(perftest(
                n,
                &format!("env LD_PRELOAD={lib} RDMA_INTERCEPT_LOG_FILE_PATH=/dev/null"),
                tool,
            ));
        }
        let (p, w) = (median(plain), median(with));
        let (unit, ratio) = if tool == "ib_write_bw" {
            ("MB/s", w / p)
        } else {
            ("usec", p / w)
        };
        println!(
            "{tool:<12} without {p:>10.2} {unit}   with {w:>10.2} {unit}   throughput ratio {ratio:.3}"
        );
        results.push(Ratio {
            what: tool.to_string(),
            mode: "standalone".into(),
            without: p,
            with: w,
            unit,
            ratio: 1.0 / ratio,
        });
    }
    rdmaq_bench::write_results(&out, &results);
}
