//! Members whose wall clocks are hours apart, and step each time they restart: leases run on
//! the leader's elapsed time only, so a new leader neither reclaims a lease early (a tenant
//! over its cap) nor freezes expiry (budget stranded). The agents here are simulated over
//! gRPC, each keeping the deadline a real agent would (with no safety margin at all).

use std::time::{Duration, Instant};

use rdmaq_lab::{coordinator::CoordinatorCluster, pki::Cert};
use rdmaq_proto::v1::{self as pb, agent_client::AgentClient};

const TTL_MS: u64 = 4_000;
const CAP: u64 = 10;
const USED: u64 = 5;
const HOUR_MS: i64 = 3_600_000;
/// Each member's wall clock, per restart: an hour ahead or behind, and past a day (the
/// default time after which even a silent node's used budget is released).
const OFFSETS_MS: [i64; 6] = [
    HOUR_MS,
    -HOUR_MS,
    25 * HOUR_MS,
    -25 * HOUR_MS,
    2 * HOUR_MS,
    0,
];

fn qps(n: u64) -> Option<pb::Amounts> {
    Some(pb::Amounts {
        qp: n,
        ..Default::default()
    })
}

/// Member `id` (re)started with its wall clock at `offset_ms`.
fn restart_skewed(c: &mut CoordinatorCluster, id: u64, offset_ms: i64) {
    c.kill(id);
    let flag = format!("--test-clock-offset-ms={offset_ms}");
    c.set_flags(id, &[&flag]);
    c.start_member(id);
}

/// One call of `f` on an agent client for `cert` at any live member, retried (a leader
/// change in progress) until it succeeds or `within` passes.
async fn call<T>(
    c: &CoordinatorCluster,
    cert: &Cert,
    within: Duration,
    f: impl AsyncFn(&mut AgentClient<tonic::transport::Channel>) -> Result<T, tonic::Status>,
) -> T {
    let deadline = Instant::now() + within;
    for i in 0.. {
        let addr = c.addr(1 + (i % c.members.len() as u64));
        let mut a = AgentClient::new(cert.channel(&addr.to_string(), Duration::from_secs(3)));
        match f(&mut a).await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "no member answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[test]
fn members_with_skewed_clocks_never_let_a_tenant_over_its_cap() {
    let ttl = TTL_MS.to_string();
    let mut c = CoordinatorCluster::start(3, &["--lease-ttl-ms", &ttl]);
    for id in 1..=3 {
        restart_skewed(&mut c, id, OFFSETS_MS[id as usize - 1]);
        c.wait_leader(Duration::from_secs(20));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..3 {
        // Members 1-3 started with the first three offsets; restarts step to the next ones.
        let next_offset = 3 + round;
        let tenant = format!("t{round}");
        c.cli_ok(&["quota", "set", &tenant, "--max-qp", &CAP.to_string()]);
        let (holder, taker) = (format!("h{round}"), format!("k{round}"));
        let (hc, kc) = (c.pki.agent(&holder), c.pki.agent(&taker));
        // The holder takes the whole cap and admits from half of it; its last renewal is
        // sent at `sent`: a real agent admits from its allotment until sent + TTL.
        let sent = rt.block_on(async {
            let t = Duration::from_secs(20);
            for (node, cert) in [(&holder, &hc), (&taker, &kc)] {
                call(&c, cert, t, async |a| {
                    a.register(pb::RegisterRequest {
                        node: node.clone(),
                        address: String::new(),
                    })
                    .await
                })
                .await;
            }
            call(&c, &hc, t, async |a| {
                a.acquire(pb::AcquireRequest {
                    node: holder.clone(),
                    tenant: tenant.clone(),
                    want: qps(CAP),
                    min: qps(CAP),
                })
                .await
            })
            .await;
            let sent = Instant::now();
            call(&c, &hc, t, async |a| {
                a.heartbeat(pb::HeartbeatRequest {
                    node: holder.clone(),
                    reports: vec![pb::TenantReport {
                        tenant: tenant.clone(),
                        used: qps(USED),
                    }],
                })
                .await
            })
            .await;
            sent
        });
        let holder_until = sent + Duration::from_millis(TTL_MS);
        // The holder falls silent; its leader dies and comes back with its clock stepped,
        // and another member (with its own skew) leads.
        let leader = c.wait_leader(Duration::from_secs(20));
        restart_skewed(&mut c, leader, OFFSETS_MS[next_offset % OFFSETS_MS.len()]);
        // The taker asks for the tenant's budget until it has all that is not in use.
        let (held, violations, done_at) = rt.block_on(async {
            let mut held = 0;
            let mut violations = Vec::new();
            let give_up = holder_until + Duration::from_secs(20);
            while held < CAP - USED && Instant::now() < give_up {
                let r = call(&c, &kc, Duration::from_secs(20), async |a| {
                    a.heartbeat(pb::HeartbeatRequest {
                        node: taker.clone(),
                        reports: vec![],
                    })
                    .await?;
                    a.acquire(pb::AcquireRequest {
                        node: taker.clone(),
                        tenant: tenant.clone(),
                        want: qps(CAP),
                        min: qps(0),
                    })
                    .await
                })
                .await;
                let got = r.into_inner().granted.unwrap_or_default().qp;
                let answered = Instant::now();
                held += got;
                // What the holder may still admit from when this grant was certainly made.
                let holder_may = if answered < holder_until { CAP } else { USED };
                if got > 0 && held + holder_may > CAP {
                    violations.push(format!(
                        "{tenant}: {taker} holds {held} while {holder} may admit from {holder_may} ({:?} before its deadline)",
                        holder_until.saturating_duration_since(answered)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (held, violations, Instant::now())
        });
        assert!(violations.is_empty(), "over the cap: {violations:#?}");
        // Nothing stranded: the unused half came back soon after the lease ran out (an
        // election, a few heartbeats), not an hour or a day later.
        assert_eq!(
            held,
            CAP - USED,
            "{tenant}: the silent holder's unused budget never came back ({:?} after its lease ended); logs in {}",
            done_at.saturating_duration_since(holder_until),
            c.dir.display()
        );
    }
}
