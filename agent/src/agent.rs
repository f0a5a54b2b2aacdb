//! The agent's shared state and the decisions that need more than the ledger: setting up a
//! tenant (standalone caps, or the coordinator's quota), and admissions that must first
//! acquire more allotment from the coordinator.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rdmaq_proto::v1 as pb;

use crate::{
    budget::{Amounts, Decision, Kind, Ledger, Limits, Source, Tenant},
    config::{Config, LeaseLost, UnknownTenant},
    coordinator::{Coordinator, from_pb},
    metrics::Metrics,
};

/// How long an admission may wait for the coordinator to grant more allotment.
/// (The library waits 2 s for the agent's answer by default, so this stays well below.)
pub const ACQUIRE_WAIT: Duration = Duration::from_millis(1000);
/// After a refused or failed acquisition, the next one waits this long.
pub const ACQUIRE_BACKOFF: Duration = Duration::from_millis(500);

pub struct Agent {
    pub cfg: Config,
    pub node: String,
    pub ledger: Mutex<Ledger>,
    pub coordinator: Option<Coordinator>,
    pub metrics: Metrics,
    next_conn: AtomicU64,
    /// One acquisition in flight per tenant; concurrent admissions wait for it.
    acquiring: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Lease length the coordinator announced.
    pub lease_ttl: Mutex<Duration>,
    /// Live RDMA objects per process, from the eBPF monitor.
    pub kernel: Mutex<crate::monitor::KernelView>,
    pub monitor_up: Mutex<bool>,
    /// Processes that held RDMA objects before the agent started: they may have been
    /// admitted by a previous agent, so the backstop leaves them alone (they are still
    /// charged until their library reconnects and claims them).
    pub preexisting: Mutex<std::collections::HashSet<u32>>,
}

pub fn limits_from_quota(q: &pb::Quota) -> Limits {
    let l = q.limits.unwrap_or_default();
    let cap = |v: Option<u64>| v.unwrap_or(u64::MAX);
    Limits {
        global: Amounts {
            qp: cap(l.max_qp),
            mr: cap(l.max_mr),
            mr_bytes: cap(l.max_mr_bytes),
        },
        node: Amounts {
            qp: cap(l.max_qp_per_node),
            mr: cap(l.max_mr_per_node),
            mr_bytes: cap(l.max_mr_bytes_per_node),
        },
        process: Amounts {
            qp: cap(l.max_qp_per_process),
            mr: cap(l.max_mr_per_process),
            mr_bytes: cap(l.max_mr_bytes_per_process),
        },
        max_send_wr: l.max_send_wr,
        max_recv_wr: l.max_recv_wr,
        deny_wr_over_cap: l.wr_policy == pb::WrPolicy::Deny as i32,
        qp_create_per_sec: l.qp_create_per_sec,
        mr_create_per_sec: l.mr_create_per_sec,
    }
}

impl Agent {
    pub fn new(cfg: Config, node: String, coordinator: Option<Coordinator>) -> Agent {
        Agent {
            cfg,
            node,
            ledger: Mutex::new(Ledger::default()),
            coordinator,
            metrics: Metrics::default(),
            next_conn: AtomicU64::new(1),
            acquiring: tokio::sync::Mutex::new(HashMap::new()),
            lease_ttl: Mutex::new(Duration::from_secs(10)),
            kernel: Mutex::new(HashMap::new()),
            monitor_up: Mutex::new(false),
            preexisting: Mutex::new(std::collections::HashSet::new()),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn floor(&self) -> Amounts {
        match self.cfg.on_lease_lost {
            LeaseLost::FailClosed => Amounts::default(),
            LeaseLost::FailStatic => self.cfg.fail_static_floor.limits().node.min(Amounts {
                qp: self.cfg.fail_static_floor.max_qp.unwrap_or(0),
                mr: self.cfg.fail_static_floor.max_mr.unwrap_or(0),
                mr_bytes: self.cfg.fail_static_floor.max_mr_bytes.map_or(0, |s| s.0),
            }),
        }
    }

    fn local_tenant(&self, name: &str) -> Tenant {
        match (self.cfg.tenants.get(name), self.cfg.unknown_tenant) {
            (Some(t), _) => Tenant::new(t.limits(), Source::Local),
            (None, UnknownTenant::Allow) => Tenant::new(Limits::default(), Source::Local),
            (None, UnknownTenant::Deny) => Tenant::new(
                Limits {
                    node: Amounts::default(),
                    ..Limits::default()
                },
                Source::Local,
            ),
        }
    }

    /// Makes sure the ledger knows `name`, asking the coordinator for its quota if needed.
    pub async fn ensure_tenant(&self, name: &str) {
        if self
            .ledger
            .lock()
            .expect("ledger")
            .tenants
            .contains_key(name)
        {
            return;
        }
        let tenant = match &self.coordinator {
            None => self.local_tenant(name),
            Some(c) => match c.quota(name).await {
                Ok(Some(q)) => {
                    let mut t = Tenant::new(limits_from_quota(&q), Source::Leased);
                    t.quota_version = q.version;
                    t.floor = self.floor();
                    t
                }
                Ok(None) => self.local_tenant(name),
                Err(e) => {
                    tracing::warn!(tenant = name, error = %e, "coordinator unreachable; tenant has no lease yet");
                    let mut t = Tenant::new(Limits::default(), Source::Leased);
                    t.floor = self.floor();
                    t
                }
            },
        };
        self.ledger
            .lock()
            .expect("ledger")
            .tenants
            .entry(name.to_string())
            .or_insert(tenant);
    }

    /// Decides an admission; when the allotment is short, acquires more first (bounded by
    /// ACQUIRE_WAIT, so a slow coordinator costs a denial, never a hang).
    pub async fn admit(&self, conn: u64, kind: Kind, count: u32, bytes: u64) -> Decision {
        let first =
            self.ledger
                .lock()
                .expect("ledger")
                .admit(conn, kind, count, bytes, Instant::now());
        let Decision::NeedMore { want, min } = first else {
            return first;
        };
        let Some(tenant) = self
            .ledger
            .lock()
            .expect("ledger")
            .conns
            .get(&conn)
            .map(|c| c.tenant.clone())
        else {
            return first;
        };
        let _ = tokio::time::timeout(ACQUIRE_WAIT, self.acquire(&tenant, want, min)).await;
        let second =
            self.ledger
                .lock()
                .expect("ledger")
                .admit(conn, kind, count, bytes, Instant::now());
        match second {
            Decision::NeedMore { .. } => {
                let ledger = self.ledger.lock().expect("ledger");
                let t = &ledger.tenants[&tenant];
                let (used, limit) = match kind {
                    Kind::Qp => (t.charged().qp, t.allotment.qp),
                    Kind::Mr => (t.charged().mr, t.allotment.mr),
                };
                Decision::Denied {
                    scope: "tenant",
                    used,
                    limit,
                }
            }
            d => d,
        }
    }

    /// Asks the coordinator for more of `tenant`'s budget; one request at a time per
    /// tenant (a second caller waits for the first and then re-checks the ledger).
    pub async fn acquire(&self, tenant: &str, want: Amounts, min: Amounts) {
        let Some(c) = &self.coordinator else { return };
        let gate = self.gate(tenant).await;
        let Ok(_one) = gate.try_lock() else {
            let _wait = gate.lock().await;
            return;
        };
        let sent = Instant::now();
        self.ledger.lock().expect("ledger").allotment_op(tenant);
        let reply = c.acquire(tenant, want, min).await;
        // A reply lost on the way (a timeout after the grant was applied) leaves budget
        // allotted here that this agent does not know of: the next heartbeat reply, sent
        // after this point, brings it in.
        let mut ledger = self.ledger.lock().expect("ledger");
        ledger.allotment_op(tenant);
        match reply {
            Ok(r) => {
                let granted = from_pb(r.granted);
                let allotted = from_pb(r.allotment.as_ref().and_then(|a| a.allotted));
                let reclaim = from_pb(r.allotment.and_then(|a| a.reclaim));
                let ttl = *self.lease_ttl.lock().expect("ttl");
                if let Some(t) = ledger.tenants.get_mut(tenant) {
                    t.take_in(allotted, reclaim);
                    t.lease_valid_until = Some(self.lease_deadline(sent, ttl));
                    if let Some(q) = &r.quota {
                        t.limits = limits_from_quota(q);
                        t.quota_version = q.version;
                    }
                }
                self.metrics.acquired(tenant, granted);
                tracing::debug!(tenant, ?granted, ?allotted, "acquired");
            }
            Err(e) => {
                self.metrics.acquire_failed(tenant);
                tracing::info!(tenant, error = %e.message(), "acquire refused");
                if let Some(t) = ledger.tenants.get_mut(tenant) {
                    t.acquire_backoff_until = Some(Instant::now() + ACQUIRE_BACKOFF);
                }
            }
        }
    }

    /// The per-tenant gate that keeps acquisitions and releases of one tenant in order, so
    /// that a stale reply can never raise the local allotment above the coordinator's.
    pub async fn gate(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.acquiring
            .lock()
            .await
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// The agent's own deadline for a lease renewed by a request sent at `sent`: the
    /// coordinator's lease, counted from before the request left, less the safety margin.
    pub fn lease_deadline(&self, sent: Instant, ttl: Duration) -> Instant {
        sent + ttl.saturating_sub(Duration::from_millis(self.cfg.lease_margin_ms))
    }
}
