//! Scale simulation of the coordinator: many simulated agents (no VMs) against a 3-member
//! durable cluster with mutual TLS on loopback. Each agent has its own certificate and
//! connection, heartbeats every 2 s with its use, and acquires and releases on a mix of its
//! tenants; every 10 s a few agents go silent for longer than the lease and come back.
//! Meanwhile a checker reads usage every second and counts any tenant whose allotments
//! exceed its cap. Reports member CPU and RSS, snapshot size and time, heartbeat and grant
//! latency.
//!
//!     cargo run --release -p rdmaq-bench --bin scale-sim -- \
//!         [--agents 10000] [--tenants 1000] [--secs 60] [--silent 20] [--cap 150] [--stay]
#![forbid(unsafe_code)]

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use rdmaq_bench::stages;
use rdmaq_common::tls::{
    Role, Tls, TlsFiles,
    issue::{self, Leaf, Pem, Validity},
};
use rdmaq_lab::coordinator::CoordinatorCluster;
use rdmaq_proto::v1::{self as pb, admin_client::AdminClient, agent_client::AgentClient};
use tonic::{Code, transport::Channel};

/// Tenants each agent serves, and QPs it keeps per tenant at most. With 10,000 agents and
/// 1,000 tenants a tenant has ~50 agents wanting up to 8 each: a cap of 150 is reached, so
/// grants are refused at the cap and the invariant is tested where it matters.
const TENANTS_PER_AGENT: usize = 5;
const HOLD_MAX: u64 = 8;
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Mean time between an agent's acquires/releases.
const CHANGE_EVERY: Duration = Duration::from_secs(10);
/// Silent agents stay silent longer than the lease (10 s).
const SILENCE: Duration = Duration::from_secs(15);

/// Many simulated agents against a 3-member coordinator cluster, with a checker of the
/// cluster-wide invariant.
#[derive(Debug, Parser)]
#[command(name = "scale-sim")]
struct Args {
    /// Simulated agents (one node each, own certificate and connection).
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Tenants.
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Seconds between the agents' start (all connect, a TLS handshake each, and register
    /// within one heartbeat interval) and the measured window. The per-5-s p99 shows how long
    /// the cluster needs to drain that storm; a longer warm-up measures the steady state
    /// after it.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Agents that go silent (longer than the lease) every 10 s.
    #[arg(long, default_value_t = 20)]
    silent: usize,
    /// Each tenant's cluster-wide QP cap.
    #[arg(long, default_value_t = 150)]
    cap: u64,
    /// Keep each agent on its first member (member i mod 3) even when that member says it
    /// forwarded the call (real agents then move on; scale-sim did not before session 13).
    #[arg(long)]
    stay: bool,
    /// Where the JSON results go (for scripts/plot-bench.py).
    #[arg(long, default_value = "docs/bench/scale-sim.json")]
    out: String,
}

/// Latencies of one kind of call (ms).
#[derive(Default, serde::Serialize)]
struct Latencies {
    count: usize,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latencies {
    fn of(v: &mut [u32], secs: f64) -> Latencies {
        Latencies {
            count: v.len(),
            per_sec: v.len() as f64 / secs,
            p50_ms: pct(v, 0.5),
            p99_ms: pct(v, 0.99),
            max_ms: pct(v, 1.0),
        }
    }
}

/// One member's cost over the run.
#[derive(serde::Serialize)]
struct MemberCost {
    cores: f64,
    max_rss_mib: f64,
}

/// What scale-sim measured (`--out`).
#[derive(Default, serde::Serialize)]
struct Results {
    agents: usize,
    tenants: usize,
    /// The measured window starts this long after the agents start (their warm-up).
    measured_from_secs: u64,
    secs: f64,
    /// (seconds from the start, heartbeat p99 in ms) per 5 s window, warm-up included.
    heartbeat_p99_per_5s: Vec<(u32, f64)>,
    heartbeats: Latencies,
    grants: Latencies,
    members: Vec<MemberCost>,
    violations: usize,
}

/// A small deterministic generator per agent (no shared RNG on the hot path).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Stats {
    heartbeats: Mutex<Vec<u32>>,
    /// (seconds since the start, µs) of every heartbeat, for the timeline.
    timeline: Mutex<Vec<(u32, u32)>>,
    started: std::sync::OnceLock<Instant>,
    /// Latencies count only for calls that end before this (agents run on a little
    /// longer, so that their shutdown is not measured).
    measure_until: std::sync::OnceLock<Instant>,
    grants: Mutex<Vec<u32>>,
    denied: AtomicU64,
    errors: AtomicU64,
    releases: AtomicU64,
    silences: AtomicU64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
}

/// Writes a certificate per agent, issued in-process (10,000 `rdmaq certs` runs would take
/// minutes), into the cluster's PKI directory.
fn agent_certs(dir: &std::path::Path, n: usize) -> Vec<Arc<Tls>> {
    let ca = Pem {
        cert: std::fs::read_to_string(dir.join("ca.pem")).expect("the cluster CA"),
        key: std::fs::read_to_string(dir.join("ca-key.pem")).expect("the cluster CA key"),
    };
    (0..n)
        .map(|i| {
            let name = format!("sim-{i}");
            let pem = issue::issue(
                &ca,
                &Leaf {
                    role: Role::Agent,
                    name: name.clone(),
                    sans: Vec::new(),
                    validity: Validity::days_from_now(2),
                },
            )
            .expect("issuing an agent certificate");
            let cert = dir.join(format!("{name}.pem"));
            let key = dir.join(format!("{name}-key.pem"));
            std::fs::write(&cert, pem.cert).expect("writing a certificate");
            std::fs::write(&key, pem.key).expect("writing a key");
            Tls::load(TlsFiles {
                ca: dir.join("ca.pem"),
                cert,
                key,
            })
            .expect("loading an agent certificate")
        })
        .collect()
}

fn channel(addr: &str, tls: Arc<Tls>) -> Channel {
    let ep = rdmaq_common::tls::endpoint(addr, Duration::from_secs(5)).expect("an address");
    rdmaq_common::tls::connect_lazy(ep.timeout(Duration::from_secs(10)), Some(tls))
}

struct Agent {
    node: String,
    client: AgentClient<Channel>,
    /// Like rdmaq-agent, an agent moves on to the next member when the one it called says it
    /// forwarded the call (`FORWARDED_HEADER`), so that it soon talks to the leader.
    follow: Option<Follow>,
    tenants: Vec<String>,
    held: Vec<u64>,
    rng: Rng,
}

/// What an agent needs to move to another member.
struct Follow {
    addrs: Arc<Vec<String>>,
    member: usize,
    tls: Arc<Tls>,
}

impl Agent {
    /// After a successful call: if the member forwarded it, the next call goes to the next
    /// member (a new connection; the old one closes when its last clone is dropped).
    fn after<T>(&mut self, r: &tonic::Response<T>) {
        let Some(f) = self.follow.as_mut() else {
            return;
        };
        if r.metadata().contains_key(pb::FORWARDED_HEADER) {
            f.member = (f.member + 1) % f.addrs.len();
            self.client = AgentClient::new(channel(&f.addrs[f.member], f.tls.clone()));
        }
    }

    async fn register(&mut self, stats: &Stats) {
        for _ in 0..100 {
            let r = self
                .client
                .register(pb::RegisterRequest {
                    node: self.node.clone(),
                    address: String::new(),
                })
                .await;
            match r {
                Ok(r) => {
                    self.after(&r);
                    return;
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn heartbeat(&mut self, stats: &Stats) {
        let reports = self
            .tenants
            .iter()
            .zip(&self.held)
            .map(|(t, h)| pb::TenantReport {
                tenant: t.clone(),
                used: Some(pb::Amounts {
                    qp: *h,
                    ..Default::default()
                }),
            })
            .collect();
        let began = Instant::now();
        let r = self
            .client
            .heartbeat(pb::HeartbeatRequest {
                node: self.node.clone(),
                reports,
            })
            .await;
        match r {
            Ok(r) => {
                self.after(&r);
                let us = micros(began.elapsed());
                if stats
                    .measure_until
                    .get()
                    .is_some_and(|t| Instant::now() < *t)
                {
                    stats.heartbeats.lock().unwrap().push(us);
                }
                let at = stats
                    .started
                    .get()
                    .map_or(0, |t| t.elapsed().as_secs() as u32);
                stats.timeline.lock().unwrap().push((at, us));
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn change(&mut self, stats: &Stats) {
        let k = self.rng.below(self.tenants.len() as u64) as usize;
        let n = 1 + self.rng.below(4);
        let amounts = |qp| {
            Some(pb::Amounts {
                qp,
                ..Default::default()
            })
        };
        if self.held[k] + n <= HOLD_MAX {
            let began = Instant::now();
            let r = self
                .client
                .acquire(pb::AcquireRequest {
                    node: self.node.clone(),
                    tenant: self.tenants[k].clone(),
                    want: amounts(n),
                    min: amounts(1),
                })
                .await;
            match r {
                Ok(r) => {
                    self.after(&r);
                    if stats
                        .measure_until
                        .get()
                        .is_some_and(|t| Instant::now() < *t)
                    {
                        stats.grants.lock().unwrap().push(micros(began.elapsed()));
                    }
                    self.held[k] += r.into_inner().granted.map_or(0, |g| g.qp);
                }
                Err(s) if s.code() == Code::ResourceExhausted => {
                    stats.denied.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let n = n.min(self.held[k]);
            let r = self
                .client
                .release(pb::ReleaseRequest {
                    node: self.node.clone(),
                    tenant: self.tenants[k].clone(),
                    amounts: amounts(n),
                })
                .await;
            match r {
                Ok(r) => {
                    self.after(&r);
                    self.held[k] -= n;
                    stats.releases.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// CPU seconds (user + system) and resident bytes of a process, from /proc.
fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kb * 1024))
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() {
    let args = Args::parse();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    // Agents that follow the leader may all end up connected to one member (while fewer
    // nodes than the members' leader_hint_max_nodes are registered).
    let per_member = if args.stay {
        args.agents / 3
    } else {
        args.agents
    } + 64;
    eprintln!(
        "3-member cluster (mTLS, durable); {} agents x {} tenants (cap {} QPs) for {} s",
        args.agents, args.tenants, args.cap, args.secs
    );
    let mut c =
        CoordinatorCluster::start(3, &["--max-connections", &per_member.max(4096).to_string()]);
    let metrics = c.with_metrics();
    let t0 = Instant::now();
    let certs = agent_certs(&c.pki.dir, args.agents);
    eprintln!("{} agent certificates in {:?}", args.agents, t0.elapsed());
    let admin = c.pki.admin();
    let addrs: Arc<Vec<String>> = Arc::new(c.members.iter().map(|m| m.addr.to_string()).collect());
    let pids: Vec<u32> = (1..=3).filter_map(|id| c.pid(id)).collect();
    let stats = Arc::new(Stats::default());
    let violations = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(AtomicU64::new(0));
    let silent: Arc<Mutex<HashSet<usize>>> = Arc::default();

    rt.block_on(async {
        let mut adm = AdminClient::new(admin.channel(&addrs[0], Duration::from_secs(30)));
        for t in 0..args.tenants {
            adm.set_quota(pb::SetQuotaRequest {
                tenant: format!("t{t}"),
                limits: Some(pb::Limits {
                    max_qp: Some(args.cap),
                    ..Default::default()
                }),
            })
            .await
            .expect("quota set");
        }
        eprintln!("{} quotas set; starting agents", args.tenants);
        // All agents connect (a TLS handshake each) and register in the first seconds; the
        // measurement starts `--warmup` seconds later.
        let warmup = Duration::from_secs(args.warmup);
        let _ = stats.started.set(Instant::now());
        let measure_from = Instant::now() + warmup;
        let measure_until = measure_from + Duration::from_secs(args.secs);
        let _ = stats.measure_until.set(measure_until);
        let end = measure_until + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for (i, tls) in certs.into_iter().enumerate() {
            let stats = stats.clone();
            let silent = silent.clone();
            let addrs = addrs.clone();
            let stay = args.stay;
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)));
                let tenants = (0..TENANTS_PER_AGENT)
                    .map(|_| format!("t{}", rng.below(args.tenants as u64)))
                    .collect();
                // Spread like real agents (they start at a member chosen by node name).
                let member = i % addrs.len();
                let mut a = Agent {
                    node: format!("sim-{i}"),
                    client: AgentClient::new(channel(&addrs[member], tls.clone())),
                    follow: (!stay).then(|| Follow {
                        addrs,
                        member,
                        tls,
                    }),
                    tenants,
                    held: vec![0; TENANTS_PER_AGENT],
                    rng,
                };
                // Spread the start over one heartbeat interval, as real agents would be.
                tokio::time::sleep(Duration::from_millis(a.rng.below(2000))).await;
                a.register(&stats).await;
                let mut next_beat = Instant::now() + HEARTBEAT;
                let mut next_change =
                    Instant::now() + Duration::from_millis(a.rng.below(2 * CHANGE_EVERY.as_millis() as u64));
                while Instant::now() < end {
                    let wake = next_beat.min(next_change);
                    tokio::time::sleep_until(wake.into()).await;
                    if silent.lock().unwrap().contains(&i) {
                        next_beat = Instant::now() + HEARTBEAT;
                        next_change = next_beat;
                        continue;
                    }
                    let now = Instant::now();
                    if now >= next_beat {
                        a.heartbeat(&stats).await;
                        next_beat += HEARTBEAT;
                    } else {
                        a.change(&stats).await;
                        next_change = now
                            + Duration::from_millis(a.rng.below(2 * CHANGE_EVERY.as_millis() as u64));
                    }
                }
            }));
        }
        // A few agents go silent for longer than the lease, then come back.
        let chaos = {
            let silent = silent.clone();
            let stats = stats.clone();
            let (agents, n) = (args.agents, args.silent);
            tokio::spawn(async move {
                let mut rng = Rng(42);
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let chosen: Vec<usize> = (0..n).map(|_| rng.below(agents as u64) as usize).collect();
                    silent.lock().unwrap().extend(chosen.iter().copied());
                    stats.silences.fetch_add(chosen.len() as u64, Ordering::Relaxed);
                    let silent = silent.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(SILENCE).await;
                        let mut s = silent.lock().unwrap();
                        for c in chosen {
                            s.remove(&c);
                        }
                    });
                }
            })
        };
        // The invariant, as any admin sees it, every second.
        let checker = {
            let violations = violations.clone();
            let checks = checks.clone();
            let mut adm = adm.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Ok(r) = adm.usage(pb::UsageRequest { tenant: String::new() }).await else {
                        continue;
                    };
                    checks.fetch_add(1, Ordering::Relaxed);
                    for t in r.into_inner().tenants {
                        let cap = t.limits.and_then(|l| l.max_qp).unwrap_or(u64::MAX);
                        let sum: u64 = t.nodes.iter().map(|n| n.allotted.map_or(0, |a| a.qp)).sum();
                        let total = t.allotted.map_or(0, |a| a.qp);
                        if sum > cap || total > cap {
                            violations.fetch_add(1, Ordering::Relaxed);
                            eprintln!("VIOLATION: tenant {} allotted {sum} (total {total}) over cap {cap}", t.tenant);
                        }
                    }
                }
            })
        };
        // Member CPU and memory over the measured window.
        tokio::time::sleep_until(measure_from.into()).await;
        let start: Vec<_> = pids.iter().map(|p| usage(*p)).collect();
        stats.heartbeats.lock().unwrap().clear();
        stats.grants.lock().unwrap().clear();
        let mut max_rss = vec![0u64; pids.len()];
        let measured = Instant::now();
        let stages_before = stages::scrape_all(&metrics);
        while Instant::now() + Duration::from_secs(1) <= measure_until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for (k, p) in pids.iter().enumerate() {
                if let Some((_, rss)) = usage(*p) {
                    max_rss[k] = max_rss[k].max(rss);
                }
            }
        }
        let secs = measured.elapsed().as_secs_f64();
        let cores: Vec<f64> = pids
            .iter()
            .zip(&start)
            .map(|(p, s)| match (usage(*p), s) {
                (Some((now, _)), Some((then, _))) => (now - then) / secs,
                _ => f64::NAN,
            })
            .collect();
        let leader = c.wait_leader(Duration::from_secs(10));
        let stage_times = stages::since(&metrics, leader, &stages_before);
        for t in tasks {
            let _ = t.await;
        }
        chaos.abort();
        checker.abort();

        let mut hb = stats.heartbeats.lock().unwrap().clone();
        // Heartbeat p99 per 5 s, from the start (warm-up included), to show stalls.
        let timeline = stats.timeline.lock().unwrap().clone();
        let mut windows: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (at, us) in timeline {
            windows.entry(at / 5 * 5).or_default().push(us);
        }
        let per_5s: Vec<(u32, f64)> = windows
            .iter_mut()
            .map(|(at, v)| (*at, pct(v, 0.99)))
            .collect();
        let line: Vec<String> = per_5s
            .iter()
            .map(|(at, ms)| format!("{at}s:{ms:.0}"))
            .collect();
        println!("heartbeat p99 (ms) per 5 s from the start: {}", line.join(" "));
        let mut gr = stats.grants.lock().unwrap().clone();
        println!("measured {secs:.0} s with {} agents, {} tenants", args.agents, args.tenants);
        for (k, p) in pids.iter().enumerate() {
            println!(
                "member {} (pid {p}): {:.2} cores on average, max RSS {:.0} MiB",
                k + 1,
                cores[k],
                max_rss[k] as f64 / (1 << 20) as f64
            );
        }
        println!(
            "heartbeats: {} ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            hb.len(),
            hb.len() as f64 / secs,
            pct(&mut hb, 0.5),
            pct(&mut hb, 0.99),
            pct(&mut hb, 1.0)
        );
        println!(
            "grants: {} ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} denied at the cap, {} releases",
            gr.len(),
            gr.len() as f64 / secs,
            pct(&mut gr, 0.5),
            pct(&mut gr, 0.99),
            pct(&mut gr, 1.0),
            stats.denied.load(Ordering::Relaxed),
            stats.releases.load(Ordering::Relaxed)
        );
        println!(
            "silences: {} agents went quiet for {} s; errors (retried): {}",
            stats.silences.load(Ordering::Relaxed),
            SILENCE.as_secs(),
            stats.errors.load(Ordering::Relaxed)
        );
        println!("where a write's time went, per member (mean per observation):");
        println!("{}", stages::describe(&stage_times));
        println!(
            "invariant: {} usage checks, {} violations",
            checks.load(Ordering::Relaxed),
            violations.load(Ordering::Relaxed)
        );
        let results = Results {
            agents: args.agents,
            tenants: args.tenants,
            measured_from_secs: warmup.as_secs(),
            secs,
            heartbeat_p99_per_5s: per_5s,
            heartbeats: Latencies::of(&mut hb, secs),
            grants: Latencies::of(&mut gr, secs),
            members: (0..pids.len())
                .map(|k| MemberCost {
                    cores: cores[k],
                    max_rss_mib: max_rss[k] as f64 / (1 << 20) as f64,
                })
                .collect(),
            violations: violations.load(Ordering::Relaxed) as usize,
        };
        rdmaq_bench::write_results(&args.out, &results);
    });
    // Snapshots the members built during the run (their logs say size and time).
    for m in &c.members {
        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
        let built: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("snapshot built"))
            .collect();
        if let Some(last) = built.last() {
            println!(
                "member {}: {} snapshots, last: {}",
                m.id,
                built.len(),
                last.trim()
            );
        }
    }
}
