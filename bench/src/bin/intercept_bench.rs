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
}

fn main() {
    let Args {
        iterations: iters,
        rounds,
    } = Args::parse();
    let lab = Lab::start(&LabSpec::new(1, Kernel::from_env())).expect("lab");
    let n = lab.node(1);
    let lib = bins::bin("librdmaq_intercept.so").display().to_string();
    let bench = programs::verbs_bench().display().to_string();
    // The real agent, standalone, its default tenant uncapped: agent mode's cost is the
    // library's and the agent's work, never a denial.
    let _agent = node_agent::start_named(n, "bench", "", "--no-ebpf");

    let modes = [
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
    println!(
        "kernel {}, {iters} iterations x {rounds} rounds, medians",
        lab.kernel_release()
    );
    for what in ["qp", "mr"] {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..rounds {
            for (i, (_, prefix)) in modes.iter().enumerate() {
                let out = n
                    .run_ok(&format!("{prefix} {bench} {what} {iters}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                samples[i].push(value(&out.stdout, &format!("{what}_ns_per_pair")));
            }
        }
        let base = median(samples[0].clone());
        for (i, (name, _)) in modes.iter().enumerate() {
            let m = median(samples[i].clone());
            println!(
                "{what} create+destroy {name:<20} {:>9.1} us   ratio {:.3}",
                m / 1000.0,
                m / base
            );
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
    }
}
