//! The README's main job: a 3-member coordinator cluster and 3 soft-RoCE nodes with an
//! agent each; a tenant capped at 12 QPs cluster-wide; unmodified programs on every node ask
//! for 8 QPs each. Prints, once a second, each node's QPs in use (as the coordinator sees
//! them, and as the kernel really holds them) against the global cap, then the outcome.
#![forbid(unsafe_code)]

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use rdmaq_lab::{
    Kernel,
    cluster_lab::{ClusterLab, kernel_qps},
};

/// rdmaq's main job: 3 soft-RoCE nodes with an agent each and a 3-member coordinator
/// cluster; a tenant capped cluster-wide; an unmodified program on every node asks for more
/// than its share. The lab's kernel comes from RDMAQ_LAB_KERNEL (6.1, the default, or 6.12).
#[derive(Debug, Parser)]
#[command(name = "rdmaq-demo")]
struct Args {
    /// The tenant's cluster-wide QP cap.
    #[arg(long, default_value_t = 12)]
    cap: u64,
    /// QPs the program on each node asks for.
    #[arg(long, default_value_t = 8)]
    ask: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.cap, args.ask) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cap: u64, ask: u64) -> Result<(), Box<dyn std::error::Error>> {
    let kernel = Kernel::from_env();
    let started = Instant::now();
    println!(
        "booting 3 soft-RoCE nodes ({}), a 3-member coordinator and 3 agents ...",
        kernel.meta_package()
    );
    let cl = ClusterLab::start(3, kernel, &[])?;
    println!(
        "up in {:.0} s (kernel {}; coordinator at {})",
        started.elapsed().as_secs_f64(),
        cl.lab.kernel_release(),
        cl.endpoints()
    );
    let out = cl.cli(&["quota", "set", "t1", "--max-qp", &cap.to_string()]);
    if !out.status.success() {
        return Err(format!("quota set failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    println!("$ rdmaq quota set t1 --max-qp {cap}");
    println!(
        "each node: rdmaq exec --tenant t1 -- verbs_check hold {ask} 12   (asks for {ask} QPs, holds them 12 s)\n"
    );

    let holders: Vec<_> = cl.spawn_everywhere(&format!(
        "{} > /tmp/h.out 2>&1",
        ClusterLab::exec("t1", &format!("hold {ask} 12"))
    ));
    let names: Vec<String> = cl
        .lab
        .nodes()
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    println!(
        "{:>5}  {}  {:>13}  {:>6}",
        "time",
        names
            .iter()
            .map(|n| format!("{n:>16}"))
            .collect::<Vec<_>>()
            .join(" "),
        "cluster total",
        "cap"
    );
    println!(
        "{:>5}  {}",
        "",
        names
            .iter()
            .map(|_| format!("{:>16}", "rdmaq / kernel"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let t0 = Instant::now();
    let mut max_kernel_total = 0;
    while t0.elapsed() < Duration::from_secs(14) {
        let usage = cl.cli(&["usage", "t1", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&usage.stdout).unwrap_or_default();
        let mut cells = Vec::new();
        let mut kernel_total = 0;
        for node in cl.lab.nodes() {
            let seen = v["tenants"][0]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["node"] == node.name())
                .and_then(|n| n["used"]["qp"].as_u64())
                .unwrap_or(0);
            let real = kernel_qps(node, "verbs_check").unwrap_or(0);
            kernel_total += real;
            cells.push(format!("{:>16}", format!("{seen} / {real}")));
        }
        max_kernel_total = max_kernel_total.max(kernel_total);
        let used = v["tenants"][0]["used"]["qp"].as_u64().unwrap_or(0);
        println!(
            "{:>4}s  {}  {:>13}  {cap:>6}",
            t0.elapsed().as_secs(),
            cells.join(" "),
            format!("{used} / {kernel_total}")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    println!();
    let mut total = 0;
    for (node, h) in cl.lab.nodes().iter().zip(holders) {
        let _ = h.wait();
        let out = node.run("cat /tmp/h.out")?.stdout;
        let created: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("created "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let errno = out
            .lines()
            .find_map(|l| l.strip_prefix("first_errno "))
            .unwrap_or("-");
        total += created;
        println!(
            "{}: asked {ask}, got {created}, {} denied (errno {errno})",
            node.name(),
            ask - created
        );
    }
    println!(
        "\ncluster-wide: {total} QPs granted of {} asked; the kernels never held more than {max_kernel_total} (cap {cap})",
        ask * 3
    );
    if total != cap || max_kernel_total > cap {
        return Err(
            format!("the cap did not hold: granted {total}, peak {max_kernel_total}").into(),
        );
    }
    println!(
        "tearing down (demo took {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
