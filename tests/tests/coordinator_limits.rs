//! Requests at the size limits: many agents heartbeating the most tenants with the longest
//! names at once, while grants go on; then a member that missed all of it catches up
//! through the log (no snapshot to skip it), in appends sized by bytes.

use std::time::{Duration, Instant};

use rdmaq_lab::{coordinator::CoordinatorCluster, pki::Cert};
use rdmaq_proto::v1::{self as pb, agent_client::AgentClient};

const AGENTS: usize = 16;
const HEARTBEATS_EACH: usize = 6;
/// The coordinator's limits (coordinator/src/state/validate.rs, model/src/name.rs).
const MAX_REPORTS: usize = 1_024;
const MAX_NAME_LEN: usize = 128;

fn qps(n: u64) -> Option<pb::Amounts> {
    Some(pb::Amounts {
        qp: n,
        ..Default::default()
    })
}

/// A heartbeat at the limits: the most tenants, each with the longest name.
fn largest_heartbeat(node: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        node: node.into(),
        reports: (0..MAX_REPORTS)
            .map(|i| pb::TenantReport {
                tenant: format!("t{i:0width$}", width = MAX_NAME_LEN - 1),
                used: qps(u32::MAX as u64),
            })
            .collect(),
    }
}

#[test]
fn heartbeats_at_the_limits_from_many_agents_replicate_and_a_far_behind_member_catches_up() {
    let mut c = CoordinatorCluster::start(3, &["--snapshot-every", "1000000"]);
    c.cli_ok(&["quota", "set", "grants", "--max-qp", "1000000"]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let behind = (1..=3).find(|i| *i != leader).unwrap();
    c.kill(behind);
    let addr = c.addr(leader).to_string();
    let certs: Vec<Cert> = (0..=AGENTS)
        .map(|w| c.pki.agent(&format!("n{w}")))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (failures, grants) = rt.block_on(async {
        let client = |w: usize| {
            AgentClient::new(certs[w].channel(&addr, Duration::from_secs(30)))
                .max_encoding_message_size(8 << 20)
        };
        for w in 0..=AGENTS {
            client(w)
                .register(pb::RegisterRequest {
                    node: format!("n{w}"),
                    address: "x".repeat(256),
                })
                .await
                .unwrap();
        }
        let heartbeats: Vec<_> = (0..AGENTS)
            .map(|w| {
                let mut a = client(w);
                tokio::spawn(async move {
                    let req = largest_heartbeat(&format!("n{w}"));
                    let mut failures = Vec::new();
                    for i in 0..HEARTBEATS_EACH {
                        if let Err(e) = a.heartbeat(req.clone()).await {
                            failures.push(format!("n{w} heartbeat {i}: {e}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        // Meanwhile another node keeps being granted budget.
        let mut a = client(AGENTS);
        let mut grants = 0;
        while !heartbeats.iter().all(|h| h.is_finished()) {
            a.acquire(pb::AcquireRequest {
                node: format!("n{AGENTS}"),
                tenant: "grants".into(),
                want: qps(1),
                min: qps(1),
            })
            .await
            .expect("a grant while the log fills with large heartbeats");
            grants += 1;
        }
        let mut failures = Vec::new();
        for h in heartbeats {
            failures.extend(h.await.unwrap());
        }
        (failures, grants)
    });
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(grants > 0);
    eprintln!(
        "{} heartbeats of {MAX_REPORTS} tenants and {grants} grants in {:?}",
        AGENTS * HEARTBEATS_EACH,
        started.elapsed()
    );

    // The member that missed it all catches up through the log.
    let target = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    c.start_member(behind);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = c.status(behind)
            && s["commit_index"].as_u64().unwrap() >= target
        {
            assert_eq!(s["snapshot_index"].as_u64().unwrap_or(0), 0, "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member {behind} did not catch up to {target}:\n{}",
            c.log_tail(behind)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let usage: serde_json::Value = serde_json::from_slice(
        &c.cli_at(
            &c.addr(behind).to_string(),
            &["usage", "grants", "-o", "json"],
        )
        .stdout,
    )
    .unwrap();
    assert!(
        usage["tenants"][0]["allotted"]["qp"].as_u64() >= Some(grants),
        "{usage}"
    );
}
