//! Grants per second, rdmaq against etcd, side by side in one run. Both are 3-member
//! durable clusters on loopback. N concurrent clients each repeatedly take one unit of a
//! tenant's QP budget:
//! - rdmaq: an agent (its own certificate and connection, spread over the members) calls
//!   `Acquire` for one QP; the coordinator decides inside its replicated state machine.
//! - etcd: what an operator would build: read the tenant's allotment key, then a
//!   transaction that writes +1 if its mod revision is unchanged; on conflict, again.
//!
//! Variants: one tenant, and the clients spread over 100 tenants. Prints a table and writes
//! JSON for `scripts/plot-bench.py`.
//!
//!     cargo run --release -p rdmaq-bench --bin grant-bench -- \
//!         [--secs 5] [--clients 1,8,64,256] [--tenants 1,100] [--systems rdmaq,etcd]
//!         [--out docs/bench/grant-bench.json]
#![forbid(unsafe_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use rdmaq_bench::{
    etcd::EtcdCluster,
    stages::{self, StageTime},
};
use rdmaq_lab::{coordinator::CoordinatorCluster, pki::Cert};
use rdmaq_proto::v1::{self as pb, admin_client::AdminClient, agent_client::AgentClient};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
struct Point {
    system: &'static str,
    clients: usize,
    tenants: usize,
    grants: u64,
    grants_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// etcd: transactions that lost the compare-and-swap and were retried.
    conflicts: u64,
    errors: u64,
    /// rdmaq: each member's mean time per stage of a write during the point.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stages: Vec<StageTime>,
}

/// Grants per second and latency, rdmaq's coordinator against an etcd compare-and-swap
/// counter, side by side in one run.
#[derive(Debug, Parser)]
#[command(name = "grant-bench")]
struct Args {
    /// Systems to measure.
    #[arg(long, value_delimiter = ',', default_value = "rdmaq,etcd")]
    systems: Vec<String>,
    /// Tenant counts the clients are spread over.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    tenants: Vec<usize>,
    /// Seconds per point.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Concurrent clients per point.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    clients: Vec<usize>,
    /// rdmaq clients stay on the member they first call (a follower forwards their writes),
    /// as agents did before they followed the leader: to measure what following saves.
    #[arg(long)]
    stay: bool,
    /// Where the JSON results go (for scripts/plot-bench.py).
    #[arg(long, default_value = "docs/bench/grant-bench.json")]
    out: String,
}

/// What each client saw: latencies of its grants (µs), conflicts, errors.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    conflicts: u64,
    errors: u64,
}

fn point(
    system: &'static str,
    clients: usize,
    tenants: usize,
    secs: f64,
    tallies: Vec<Tally>,
) -> Point {
    let mut lat: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0
        }
    };
    Point {
        system,
        clients,
        tenants,
        grants: lat.len() as u64,
        grants_per_sec: lat.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        conflicts: tallies.iter().map(|t| t.conflicts).sum(),
        errors: tallies.iter().map(|t| t.errors).sum(),
        stages: Vec::new(),
    }
}

/// Runs `one` in a loop on each of `clients` tasks: a warm-up, then `secs` measured.
async fn drive<F, Fut>(clients: usize, secs: f64, one: F) -> Vec<Tally>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, ()>> + Send,
{
    let one = Arc::new(one);
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut i = 0u64;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let result = one(c, i).await;
                    i += 1;
                    let done = Instant::now();
                    if began < start || done > end {
                        continue;
                    }
                    match result {
                        Ok(conflicts) => {
                            t.latencies.push((done - began).as_micros() as u64);
                            t.conflicts += conflicts;
                        }
                        Err(()) => t.errors += 1,
                    }
                }
                t
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a client task"));
    }
    out
}

async fn rdmaq_point(
    c: &CoordinatorCluster,
    metrics: &[std::net::SocketAddr],
    certs: &[Cert],
    stay: bool,
    clients: usize,
    tenants: usize,
    secs: f64,
) -> Point {
    let mut addrs: Vec<String> = c.members.iter().map(|m| m.addr.to_string()).collect();
    if std::env::var_os("GRANT_BENCH_LEADER_ONLY").is_some() {
        addrs = vec![c.addr(c.wait_leader(Duration::from_secs(10))).to_string()];
    }
    // Each client is an agent: a connection to every member (opened when first used), the
    // first call to member i mod 3, and like rdmaq-agent it moves on to the next member when
    // one says it forwarded the call (see `FORWARDED_HEADER`), so it soon talks to the leader.
    let agents: Vec<Vec<AgentClient<_>>> = (0..clients)
        .map(|i| {
            (0..addrs.len())
                .map(|k| {
                    let addr = &addrs[(i + k) % addrs.len()];
                    AgentClient::new(certs[i].channel(addr, Duration::from_secs(10)))
                })
                .collect()
        })
        .collect();
    for (i, a) in agents.iter().enumerate() {
        // Right after an election a follower may not know the leader yet: agents retry.
        let mut tries = 0;
        while let Err(e) = a[0]
            .clone()
            .register(pb::RegisterRequest {
                node: format!("bench-{i}"),
                address: String::new(),
            })
            .await
        {
            tries += 1;
            assert!(tries < 50, "register: {e:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let agents = Arc::new(agents);
    let leader = c.wait_leader(Duration::from_secs(10));
    let before = stages::scrape_all(metrics);
    let preferred: Arc<Vec<AtomicUsize>> =
        Arc::new((0..clients).map(|_| AtomicUsize::new(0)).collect());
    let tallies = drive(clients, secs, move |i, n| {
        let k = preferred[i].load(Ordering::Relaxed);
        let mut a = agents[i][k].clone();
        let preferred = preferred.clone();
        let members = agents[i].len();
        let tenant = format!("t{}", (i + n as usize) % tenants);
        async move {
            let r = a
                .acquire(pb::AcquireRequest {
                    node: format!("bench-{i}"),
                    tenant,
                    want: Some(pb::Amounts {
                        qp: 1,
                        ..Default::default()
                    }),
                    min: Some(pb::Amounts {
                        qp: 1,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|_| ())?;
            if !stay && r.metadata().contains_key(pb::FORWARDED_HEADER) {
                preferred[i].store((k + 1) % members, Ordering::Relaxed);
            }
            Ok(0)
        }
    })
    .await;
    let mut p = point("rdmaq", clients, tenants, secs, tallies);
    // (The warm-up's grants are in these too: means, not counts, are what they are for.)
    p.stages = stages::since(metrics, leader, &before);
    p
}

async fn etcd_point(e: &EtcdCluster, clients: usize, tenants: usize, secs: f64) -> Point {
    let mut conns = Vec::new();
    for i in 0..clients {
        let endpoint = &e.endpoints[i % e.endpoints.len()];
        conns.push(
            etcd_client::Client::connect([endpoint.as_str()], None)
                .await
                .expect("connecting to etcd"),
        );
    }
    let mut setup = conns[0].clone();
    for t in 0..tenants {
        setup
            .put(format!("/rdmaq/allot/t{t}"), "0", None)
            .await
            .expect("etcd put");
    }
    let conns = Arc::new(conns);
    let tallies = drive(clients, secs, move |i, n| {
        let mut kv = conns[i].clone();
        let key = format!("/rdmaq/allot/t{}", (i + n as usize) % tenants);
        async move {
            let mut conflicts = 0;
            loop {
                let got = kv.get(key.as_str(), None).await.map_err(|_| ())?;
                let kv0 = got.kvs().first().ok_or(())?;
                let value: u64 = std::str::from_utf8(kv0.value())
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or(())?;
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        kv0.mod_revision(),
                    )])
                    .and_then([TxnOp::put(key.as_str(), (value + 1).to_string(), None)]);
                if kv.txn(txn).await.map_err(|_| ())?.succeeded() {
                    return Ok(conflicts);
                }
                conflicts += 1;
            }
        }
    })
    .await;
    point("etcd", clients, tenants, secs, tallies)
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    eprintln!(
        "starting a 3-member rdmaq cluster (mTLS, durable) and a 3-member etcd cluster (durable)"
    );
    let mut c = CoordinatorCluster::start(3, &[]);
    let metrics = c.with_metrics();
    let e = args
        .systems
        .iter()
        .any(|s| s == "etcd")
        .then(|| EtcdCluster::start(3).expect("etcd cluster"));
    let certs: Vec<Cert> = (0..max_clients)
        .map(|i| c.pki.agent(&format!("bench-{i}")))
        .collect();
    let admin = c.pki.admin();
    let mut points = Vec::new();
    rt.block_on(async {
        let mut adm =
            AdminClient::new(admin.channel(&c.addr(1).to_string(), Duration::from_secs(10)));
        for t in 0..100 {
            adm.set_quota(pb::SetQuotaRequest {
                tenant: format!("t{t}"),
                limits: Some(pb::Limits {
                    max_qp: Some(1 << 32),
                    ..Default::default()
                }),
            })
            .await
            .expect("quota set");
        }
        println!(
            "{:>6} {:>7} {:>7} {:>10} {:>8} {:>8} {:>9} {:>9}",
            "system", "clients", "tenants", "grants/s", "p50 ms", "p99 ms", "max ms", "conflicts"
        );
        for &tenants in &args.tenants {
            for &n in &args.clients {
                for system in &args.systems {
                    let p = match system.as_str() {
                        "rdmaq" => {
                            rdmaq_point(&c, &metrics, &certs, args.stay, n, tenants, args.secs)
                                .await
                        }
                        "etcd" => {
                            etcd_point(e.as_ref().expect("etcd"), n, tenants, args.secs).await
                        }
                        other => panic!("unknown system {other:?} (rdmaq, etcd)"),
                    };
                    println!(
                        "{:>6} {:>7} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>9}{}",
                        p.system,
                        p.clients,
                        p.tenants,
                        p.grants_per_sec,
                        p.p50_ms,
                        p.p99_ms,
                        p.max_ms,
                        p.conflicts,
                        if p.errors > 0 {
                            format!("  ({} errors)", p.errors)
                        } else {
                            String::new()
                        }
                    );
                    if !p.stages.is_empty() {
                        println!("{}", stages::describe(&p.stages));
                    }
                    points.push(p);
                }
            }
        }
    });
    rdmaq_bench::write_results(&args.out, &points);
}
