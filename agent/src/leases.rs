//! The allotment loop (coordinator mode): register the node, then every heartbeat
//! interval report each tenant's use, renew the lease (by the agent's own clock, with the
//! safety margin), take in the coordinator's view of the allotments and quota changes, and
//! give back budget that idle tenants do not need.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rdmaq_model::{Amounts, Limits, MAX_TENANTS_PER_NODE};

use crate::{ledger::BudgetFrom, node::Agent};

/// A tenant idle this long gives back its spare allotment.
const IDLE: Duration = Duration::from_secs(5);

pub async fn run(agent: Arc<Agent>) {
    let Some(c) = &agent.coordinator else { return };
    let interval = loop {
        match c.register().await {
            Ok(r) => {
                *agent.lease_ttl.lock().expect("ttl") = Duration::from_millis(r.lease_ttl_ms);
                let sent = Instant::now();
                let deadline = agent.lease_deadline(sent, Duration::from_millis(r.lease_ttl_ms));
                // Until this agent sees the kernel's objects, what the coordinator knew this
                // node to use stays charged here (see `Tenant::restart_floor`).
                let blind = !agent.kernel_seen.load(std::sync::atomic::Ordering::SeqCst);
                for a in &r.allotments {
                    // After a restart: the allotments this node still holds.
                    agent.ensure_tenant(&a.tenant).await;
                    let mut ledger = agent.ledger();
                    if let Some(t) = ledger.tenants.get_mut(&a.tenant) {
                        t.take_in(
                            Amounts::from_pb(a.allotted),
                            Amounts::from_pb(a.reclaim),
                            a.as_of,
                        );
                        if blind {
                            t.restart_floor = Amounts::from_pb(a.used);
                        }
                        t.lease_valid_until = Some(deadline);
                    }
                }
                tracing::info!(node = %c.node, lease_ttl_ms = r.lease_ttl_ms, allotments = r.allotments.len(), "registered with the coordinator");
                break Duration::from_millis(r.heartbeat_interval_ms.clamp(100, 60_000));
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "cannot register with the coordinator; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        heartbeat(&agent).await;
        give_back(&agent).await;
    }
}

async fn heartbeat(agent: &Agent) {
    let Some(c) = &agent.coordinator else { return };
    // Each tenant's use, and its release count at sending time.
    let (reports, ops): (Vec<(String, Amounts)>, HashMap<String, u64>) = agent
        .ledger()
        .tenants
        .iter()
        .filter(|(_, t)| t.budget_from == BudgetFrom::Lease)
        .map(|(n, t)| ((n.clone(), t.charged()), (n.clone(), t.release_ops)))
        .unzip();
    // A tenant not listed has no use here: listing only those with use keeps a report
    // within what the coordinator takes (admission holds them to MAX_TENANTS_PER_NODE;
    // objects found around the library could add more, the largest are reported).
    let mut reports: Vec<_> = reports.into_iter().filter(|(_, u)| !u.is_zero()).collect();
    if reports.len() > MAX_TENANTS_PER_NODE {
        tracing::warn!(
            tenants = reports.len(),
            max = MAX_TENANTS_PER_NODE,
            "more tenants in use than one heartbeat may report; reporting the largest"
        );
        reports.sort_by_key(|(_, u)| std::cmp::Reverse((u.qp, u.mr, u.mr_bytes)));
        reports.truncate(MAX_TENANTS_PER_NODE);
    }
    let sent = Instant::now();
    // One line per heartbeat (debug): what was reported, and what the coordinator asked
    // back — to tell, in a nemesis run, when a node heard of a contention. Built only when
    // it is logged.
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let reported = debug.then(|| format!("{reports:?}"));
    match c.heartbeat(reports).await {
        Ok(r) => {
            if let Some(reported) = reported {
                let asked: Vec<_> = r
                    .allotments
                    .iter()
                    .map(|a| (&a.tenant, Amounts::from_pb(a.reclaim)))
                    .filter(|(_, reclaim)| !reclaim.is_zero())
                    .collect();
                tracing::debug!(
                    reported,
                    ?asked,
                    ms = sent.elapsed().as_millis() as u64,
                    "heartbeat acknowledged"
                );
            }
            for refusal in &r.refused {
                tracing::debug!(tenant = %refusal.tenant, reason = %refusal.reason, "report not taken by the coordinator");
            }
            let ttl = *agent.lease_ttl.lock().expect("ttl");
            let deadline = agent.lease_deadline(sent, ttl);
            let mut stale = Vec::new();
            {
                let mut ledger = agent.ledger();
                for a in &r.allotments {
                    if let Some(t) = ledger.tenants.get_mut(&a.tenant) {
                        // Taken in unless a release started or ended meanwhile (the view
                        // may predate it: the agent lowered its allotment before releasing),
                        // or a newer view (an acquisition's reply) was taken in already.
                        let quiet =
                            ops.get(&a.tenant) == Some(&t.release_ops) && t.release_ops % 2 == 0;
                        if quiet {
                            t.take_in(
                                Amounts::from_pb(a.allotted),
                                Amounts::from_pb(a.reclaim),
                                a.as_of,
                            );
                        }
                        if a.quota_version != t.quota_version {
                            stale.push(a.tenant.clone());
                        }
                    }
                }
                for t in ledger
                    .tenants
                    .values_mut()
                    .filter(|t| t.budget_from == BudgetFrom::Lease)
                {
                    t.lease_valid_until = Some(deadline);
                    t.recent_peak = t.used;
                }
            }
            // A quota changed: take in the new per-node/process caps at once.
            for tenant in stale {
                if let Ok(Some(q)) = c.quota(&tenant).await {
                    let mut ledger = agent.ledger();
                    if let Some(t) = ledger.tenants.get_mut(&tenant) {
                        t.take_quota(Limits::of_quota(&q), q.version);
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e.message(), "heartbeat failed; the lease runs out unless one succeeds")
        }
    }
}

async fn give_back(agent: &Agent) {
    let Some(c) = &agent.coordinator else { return };
    let surplus = agent.ledger().surplus(Instant::now(), IDLE);
    for (tenant, amounts) in surplus {
        let gate = agent.gate(&tenant).await;
        let _in_order = gate.lock().await;
        // Lower the local allotment first: never admit from budget being returned.
        {
            let mut ledger = agent.ledger();
            ledger.release_op(&tenant);
            let Some(t) = ledger.tenants.get_mut(&tenant) else {
                continue;
            };
            t.allotment = t.allotment.saturating_sub(amounts);
            t.owed = t.owed.saturating_sub(amounts);
        }
        let reply = c.release(&tenant, amounts).await;
        let mut ledger = agent.ledger();
        ledger.release_op(&tenant);
        match reply {
            Ok(r) => {
                if let Some(a) = r.allotment
                    && let Some(t) = ledger.tenants.get_mut(&tenant)
                {
                    t.take_in(
                        Amounts::from_pb(a.allotted),
                        Amounts::from_pb(a.reclaim),
                        a.as_of,
                    );
                }
                tracing::debug!(tenant, ?amounts, "released surplus");
            }
            Err(e) => {
                tracing::info!(tenant, error = %e.message(), "release failed; the coordinator reclaims it at lease expiry")
            }
        }
    }
}

/// Follows the coordinator's quota changes: each one triggers a heartbeat at once, whose
/// reply carries the node's new allotments (shrunk when a cap was lowered) and the new quota
/// versions, so a lowered cap holds for new admissions within a round trip instead of
/// within a heartbeat interval.
pub async fn watch_quotas(agent: Arc<Agent>) {
    let Some(c) = &agent.coordinator else { return };
    loop {
        match c.watch_quotas().await {
            Ok(mut stream) => {
                let mut first = true;
                loop {
                    match stream.message().await {
                        Ok(Some(change)) => {
                            // The first message is the current state: nothing to do.
                            if std::mem::take(&mut first) {
                                continue;
                            }
                            let ours = {
                                let ledger = agent.ledger();
                                change.tenants.is_empty()
                                    || change
                                        .tenants
                                        .iter()
                                        .any(|t| ledger.tenants.contains_key(t))
                            };
                            if ours {
                                tracing::debug!(seq = change.seq, tenants = ?change.tenants, "quota changed; heartbeat now");
                                // Tenants this node knows but the coordinator had no quota
                                // for take theirs on now (the heartbeat only carries the
                                // node's allotments).
                                let unleased: Vec<String> = {
                                    let ledger = agent.ledger();
                                    ledger
                                        .tenants
                                        .iter()
                                        .filter(|(n, t)| {
                                            t.quota_version == 0
                                                && (change.tenants.is_empty()
                                                    || change.tenants.contains(n))
                                        })
                                        .map(|(n, _)| n.clone())
                                        .collect()
                                };
                                for tenant in unleased {
                                    agent.refresh_quota(&tenant).await;
                                }
                                heartbeat(&agent).await;
                                // A lowered cap asks budget back: return what is free now.
                                give_back(&agent).await;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e.message(), "quota watch ended");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e.message(), "cannot watch quotas; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
