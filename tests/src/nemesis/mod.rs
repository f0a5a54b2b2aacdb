//! `rdmaq-nemesis`: the whole system in the soft-RoCE lab (3 coordinator members, each in
//! a network namespace of its own on the lab bridge, 3 RDMA nodes with agents, mutual TLS)
//! under a randomized fault schedule for minutes, while programs on every node keep
//! creating and destroying QPs and MRs for several tenants — and a checker that judges the
//! run from the kernel's own object lists (see `check.rs`).
//!
//! The schedule (which fault, where, for how long, which caps) follows from the seed, so a
//! failing run's seed replays its schedule; timing under emulation does not replay exactly.

pub mod caps;
pub mod check;
pub mod faults;
pub mod record;
pub mod sampler;
pub mod views;
pub mod workload;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use self::{
    check::{Bounds, Verdict},
    faults::{Deck, Nemesis},
    record::{Crash, Journal, QuotaRead},
    workload::Workload,
};
use crate::{Kernel, LabError, cluster_lab::ClusterLab};

pub struct Options {
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Quiet time between one fault's heal and the next injection.
    pub gap: (Duration, Duration),
    /// Time without faults at the end, before the last reads.
    pub settle: Duration,
    pub kernel: Kernel,
    pub bounds: Bounds,
    /// Where to keep every agent's and member's whole log at the end (for diagnosis).
    pub keep_logs: Option<std::path::PathBuf>,
}

/// Tenants and their caps ([QPs, MRs]) at the start. "root" is also what the program
/// without the library is charged to (the agents' uid-0 rule).
const TENANTS: [(&str, [u64; 2]); 3] = [("t1", [10, 8]), ("t2", [6, 4]), ("root", [6, 6])];

/// The node that runs a program without the library.
const BYPASS_NODE: usize = 3;

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_secs: f64,
    pub faults_by_kind: BTreeMap<&'static str, usize>,
    pub runs: u64,
    pub attempts: usize,
    pub verdict: Verdict,
}

pub fn run(opts: &Options) -> Result<Report, LabError> {
    let mut cl = ClusterLab::start_apart(3, opts.kernel, &[], "")?;
    let agent_config = cl.agent_config().to_string();
    let ClusterLab { lab, coord, .. } = &mut cl;
    let lab = &*lab;
    let journal = Journal::default();
    let cli = views::Cli {
        netns: lab.netns().to_string(),
        endpoints: coord.endpoints(),
        admin: coord.pki.admin().flags(),
    };
    let start = Instant::now();
    let mut nemesis = Nemesis {
        lab,
        coord,
        agent_config,
        journal: &journal,
        cli: cli.clone(),
        start,
        rng: StdRng::seed_from_u64(opts.seed),
        tenants: TENANTS.iter().map(|(t, _)| t.to_string()).collect(),
        agent_started: vec![Duration::ZERO; lab.nodes().len()],
    };
    for (tenant, caps) in TENANTS {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nemesis.set_quota(tenant, caps) {
            assert!(
                Instant::now() < deadline,
                "the first quota set never succeeded"
            );
        }
    }
    // The initial caps are writes like any other; the checker starts from no cap at all.
    let initial: BTreeMap<String, [u64; 2]> = TENANTS
        .iter()
        .map(|(t, _)| (t.to_string(), [0, 0]))
        .collect();

    let stop_sampler = Arc::new(AtomicBool::new(false));
    let workload = Workload {
        lab,
        journal: &journal,
        start,
        stop: Arc::new(AtomicBool::new(false)),
        runs: AtomicU64::new(0),
    };
    let tenants: Vec<&str> = TENANTS.iter().map(|(t, _)| *t).collect();
    std::thread::scope(|s| {
        let (j, st) = (&journal, stop_sampler.clone());
        s.spawn(move || sampler::sample_until(lab, j, start, st));
        let (j, st, cli) = (&journal, stop_sampler.clone(), &cli);
        s.spawn(move || views::record_until(cli, j, start, st));
        let w = &workload;
        // Two programs at a time per node: a VM under emulation has little more to give
        // (an overloaded one makes every timeout in the system fire).
        for node in 1..=lab.nodes().len() {
            for k in 0..2u64 {
                let (tenants, seed) = (&tenants, opts.seed ^ ((node as u64) << 8 | k));
                s.spawn(move || w.drive(node, tenants, seed));
            }
        }
        s.spawn(move || w.bypass(BYPASS_NODE, "root", opts.seed ^ 0xb1));
        let mut deck = Deck::default();
        let faults_until = Instant::now() + opts.duration;
        while Instant::now() < faults_until {
            let gap = nemesis.rng.gen_range(opts.gap.0..=opts.gap.1);
            watch(&mut nemesis, gap);
            let kind = deck.deal(&mut nemesis.rng);
            eprintln!(
                "nemesis {:>6.1}s: {}",
                start.elapsed().as_secs_f64(),
                kind.name()
            );
            nemesis.inject(kind);
            // Reads during the run too: a write lost in a later failover shows up here.
            if nemesis.rng.gen_bool(0.3) {
                let k = nemesis.rng.gen_range(0..TENANTS.len());
                read_caps(&nemesis, TENANTS[k].0, Duration::from_secs(15));
            }
        }
        watch(&mut nemesis, opts.settle);
        workload.stop.store(true, Ordering::Relaxed);
        // The workload's last runs end within their hold time; the sampler sees them go.
        std::thread::sleep(Duration::from_secs(5));
        stop_sampler.store(true, Ordering::Relaxed);
    });
    final_reads(&nemesis);
    watch(&mut nemesis, Duration::ZERO);
    let records = journal.records(initial);
    let verdict = check::check(&records, &opts.bounds);
    if !verdict.passed() {
        for node in lab.nodes() {
            let log = node
                .run("tail -40 /tmp/agent.log")
                .map(|o| o.stdout)
                .unwrap_or_default();
            eprintln!("--- {}'s agent log, last lines\n{log}", node.name());
        }
        for id in 1..=3 {
            eprintln!(
                "--- member {id}'s log, last lines\n{}",
                nemesis.coord.log_tail(id)
            );
        }
    }
    if let Some(dir) = &opts.keep_logs {
        keep_logs(&nemesis, dir);
    }
    let mut faults_by_kind = BTreeMap::new();
    for f in &records.faults {
        *faults_by_kind.entry(f.kind).or_default() += 1;
    }
    Ok(Report {
        seed: opts.seed,
        duration_secs: start.elapsed().as_secs_f64(),
        faults_by_kind,
        runs: workload.runs.load(Ordering::Relaxed),
        attempts: records.attempts.len(),
        verdict,
    })
}

/// Waits `span`, watching for rdmaq processes that ended without the nemesis killing them:
/// members (their exit status) and agents (absent from the latest sample although the
/// nemesis last started them well before it). Each crash is recorded and the process
/// started again so the run goes on.
fn watch(n: &mut Nemesis<'_>, span: Duration) {
    let until = Instant::now() + span;
    loop {
        for id in 1..=3 {
            if let Some(status) = n.coord.exited(id) {
                record_crash(
                    n,
                    format!("member {id}"),
                    format!("{status}: {}", n.coord.log_tail(id)),
                );
                n.coord.start_member(id);
            }
        }
        let latest = n.journal.samples.lock().unwrap().last().cloned();
        if let Some(s) = latest {
            for (k, node) in s.nodes.iter().enumerate() {
                if !node.agent_up && s.at > n.agent_started[k] + Duration::from_secs(1) {
                    let log = n
                        .lab
                        .node(k + 1)
                        .run("tail -30 /tmp/agent.log")
                        .map(|o| o.stdout)
                        .unwrap_or_default();
                    record_crash(n, format!("node{}'s agent", k + 1), log);
                    n.restart_agent(k + 1);
                }
            }
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(250).min(until - Instant::now()));
    }
}

/// Copies every agent's log (all its restarts) and every member's into `dir`.
fn keep_logs(n: &Nemesis<'_>, dir: &std::path::Path) {
    let _ = std::fs::create_dir_all(dir);
    for node in n.lab.nodes() {
        let log = node
            .run("cat /tmp/agent.log")
            .map(|o| o.stdout)
            .unwrap_or_default();
        let _ = std::fs::write(dir.join(format!("{}-agent.log", node.name())), log);
    }
    for id in 1..=3 {
        let _ = std::fs::copy(n.coord.log_path(id), dir.join(format!("member{id}.log")));
    }
    eprintln!("nemesis: logs kept in {}", dir.display());
}

fn record_crash(n: &Nemesis<'_>, what: String, detail: String) {
    eprintln!("nemesis: {what} crashed: {detail}");
    n.journal.crashes.lock().unwrap().push(Crash {
        what,
        at: n.start.elapsed(),
        detail,
    });
}

/// Reads every tenant's caps at the end (retrying while the cluster settles).
fn final_reads(n: &Nemesis<'_>) {
    for (tenant, _) in TENANTS {
        if !read_caps(n, tenant, Duration::from_secs(60)) {
            record_crash(
                n,
                "the coordinator".into(),
                format!("no answer to reading {tenant}'s caps for 60 s"),
            );
        }
    }
}

/// Reads `tenant`'s caps for the lost-write check, retrying for up to `within`.
fn read_caps(n: &Nemesis<'_>, tenant: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let sent = n.start.elapsed();
        let caps = n
            .cli
            .run(&["quota", "get", tenant, "-o", "json"])
            .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
            .and_then(|v| {
                Some([
                    v["limits"]["max_qp"].as_u64()?,
                    v["limits"]["max_mr"].as_u64()?,
                ])
            });
        if let Some(caps) = caps {
            n.journal.reads.lock().unwrap().push(QuotaRead {
                tenant: tenant.to_string(),
                caps,
                sent,
            });
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
