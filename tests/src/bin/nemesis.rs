//! `rdmaq-nemesis`: randomized faults on a whole rdmaq cluster in the soft-RoCE lab, with
//! a checker that reads the kernel's objects on every node. Prints the seed first (a
//! failing run's schedule replays with `--seed`), the faults as they happen, and a JSON
//! report at the end; exits 1 if the checker found anything. Needs root and qemu.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rdmaq_lab::{
    Kernel,
    nemesis::{self, Options, check::Bounds},
};

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Seed of the fault schedule (random if not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to inject faults, in seconds.
    #[arg(long, default_value_t = 180)]
    duration: u64,
    /// Shortest quiet time between faults, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    min_gap_ms: u64,
    /// Longest quiet time between faults, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    max_gap_ms: u64,
    /// Time without faults at the end before the final checks, in seconds.
    #[arg(long, default_value_t = 20)]
    settle: u64,
    /// How long agents may take to hear of a quota change (ms): one agent heartbeat
    /// interval (2 s) and a round trip.
    #[arg(long, default_value_t = 3000)]
    lag_ms: u64,
    /// How long an object created without the library may go uncharged (ms): the eBPF
    /// view's event, the agent's next heartbeat and a round trip.
    #[arg(long, default_value_t = 5000)]
    bypass_grace_ms: u64,
    /// How long a restarted agent takes to see the kernel's objects again (ms): its eBPF
    /// monitor attached and the resource dump read — up to half a minute for a debug build
    /// under emulation.
    #[arg(long, default_value_t = 40_000)]
    agent_start_ms: u64,
    /// The documented bound on stranded budget (ms): see docs/reliability.md.
    #[arg(long, default_value_t = 30_000)]
    strand_bound_ms: u64,
    /// Keep every agent's and member's whole log in this directory at the end. With
    /// `RDMAQ_LAB_AGENT_LOG` set (a `RUST_LOG` filter), agents log at that level.
    #[arg(long)]
    keep_logs: Option<std::path::PathBuf>,
    /// Write the JSON report here too.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("rdmaq-nemesis seed {seed} (replay with --seed {seed})");
    let opts = Options {
        seed,
        duration: Duration::from_secs(args.duration),
        gap: (
            Duration::from_millis(args.min_gap_ms),
            Duration::from_millis(args.max_gap_ms.max(args.min_gap_ms)),
        ),
        settle: Duration::from_secs(args.settle),
        kernel: Kernel::from_env(),
        bounds: Bounds {
            lag: Duration::from_millis(args.lag_ms),
            bypass_grace: Duration::from_millis(args.bypass_grace_ms),
            agent_start: Duration::from_millis(args.agent_start_ms),
            strand_bound: Duration::from_millis(args.strand_bound_ms),
        },
        keep_logs: args.keep_logs,
    };
    let report = nemesis::run(&opts).context("starting the lab")?;
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.verdict.passed() {
        eprintln!("rdmaq-nemesis: the checker failed the run (seed {seed})");
        std::process::exit(1);
    }
    Ok(())
}
