//! One node's agent: the state its tasks share (the ledger, the kernel view, the link to the
//! coordinator), and the node's one admission entry point, [`Agent::admit`]: the ledger
//! decides, and when the node's allotment is short, more is acquired from the coordinator
//! first. Also sets up a tenant the node has not seen (standalone caps, or the
//! coordinator's quota).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rdmaq_model::{Amounts, Limits, QpShape, Resource};
use rdmaq_proto::v1 as pb;

use crate::{
    config::{Config, LeaseLost, UnknownTenant},
    coordinator::Coordinator,
    ledger::{Attempt, BudgetFrom, Decision, Ledger, Tenant},
    metrics::Metrics,
};

/// How long a tenant's first sight on this node waits for its quota.
const QUOTA_WAIT: Duration = Duration::from_secs(1);

/// After a refused or failed acquisition, the next one waits this long.
pub const ACQUIRE_BACKOFF: Duration = Duration::from_millis(500);

pub struct Agent {
    pub cfg: Config,
    pub node: String,
    ledger: Mutex<Ledger>,
    pub coordinator: Option<Coordinator>,
    pub metrics: Metrics,
    next_conn: AtomicU64,
    /// One acquisition in flight per tenant; concurrent admissions wait for it.
    acquiring: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Lease length the coordinator announced.
    pub lease_ttl: Mutex<Duration>,
    /// Live RDMA objects per process, from the eBPF monitor.
    pub kernel: Mutex<crate::kernel::KernelView>,
    pub monitor_up: Mutex<bool>,
    /// Processes that held RDMA objects before the agent started: they may have been
    /// admitted by a previous agent, so the backstop leaves them alone (they are still
    /// charged until their library reconnects and claims them).
    pub preexisting: Mutex<std::collections::HashSet<u32>>,
    /// The eBPF monitor has seeded the kernel view from the resource dump.
    pub kernel_seeded: std::sync::atomic::AtomicBool,
    /// The kernel's objects are in the view (the eBPF monitor seeded it from the resource
    /// dump and reconciliation counted what the library did not admit), or there is no
    /// monitor to wait for. Until then, a restarted agent keeps each tenant's last known
    /// use as a floor (`Tenant::restart_floor`).
    pub kernel_seen: std::sync::atomic::AtomicBool,
    /// The node's Kubernetes pods, for rules that charge a pod's namespace.
    pub pods: crate::pod::PodDirectory,
}

impl Agent {
    pub fn new(cfg: Config, node: String, coordinator: Option<Coordinator>) -> Agent {
        Agent {
            pods: crate::pod::PodDirectory::new(&cfg.pod_log_dir),
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
            kernel_seeded: std::sync::atomic::AtomicBool::new(false),
            kernel_seen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// What a tenant may use on this node while its lease cannot be proven alive.
    fn floor(&self) -> Amounts {
        match self.cfg.on_lease_lost {
            LeaseLost::FailClosed => Amounts::ZERO,
            // Unset dimensions of the floor are zero, not unlimited.
            LeaseLost::FailStatic => self.cfg.fail_static_floor.limits().per_node.or_zero(),
        }
    }

    fn local_tenant(&self, name: &str) -> Tenant {
        match (self.cfg.tenants.get(name), self.cfg.unknown_tenant()) {
            (Some(t), _) => Tenant::new(t.limits(), BudgetFrom::LocalCaps),
            (None, UnknownTenant::Allow) => Tenant::new(Limits::NONE, BudgetFrom::LocalCaps),
            (None, UnknownTenant::Deny) => {
                let mut nothing = Limits::NONE;
                nothing.per_node = rdmaq_model::Caps {
                    qp: Some(0),
                    mr: Some(0),
                    mr_bytes: Some(0),
                };
                Tenant::new(nothing, BudgetFrom::LocalCaps)
            }
        }
    }

    /// A tenant whose budget is leased from the coordinator, with its quota if it has one
    /// (without, it has no allotment: its admissions ask, and are refused until a quota is
    /// set).
    fn leased_tenant(&self, quota: Option<&pb::Quota>) -> Tenant {
        let mut t = Tenant::new(Limits::NONE, BudgetFrom::Lease);
        if let Some(q) = quota {
            t.take_quota(Limits::of_quota(q), q.version);
        }
        t.floor = self.floor();
        t
    }

    /// Takes in `name`'s quota as it is now at the coordinator (after a change announced on
    /// the quota stream): a tenant this node ran on local caps or uncapped while the
    /// coordinator had no quota for it is from now on leased, with these caps.
    pub async fn refresh_quota(&self, name: &str) {
        let Some(c) = &self.coordinator else { return };
        let Ok(Some(q)) = c.quota(name).await else {
            return;
        };
        let mut ledger = self.ledger();
        let Some(t) = ledger.tenants.get_mut(name) else {
            return;
        };
        if t.budget_from == BudgetFrom::LocalCaps {
            tracing::info!(
                tenant = name,
                "a quota was set: the tenant is capped by the coordinator from now on"
            );
            t.budget_from = BudgetFrom::Lease;
            t.allotment = Amounts::ZERO;
            t.owed = Amounts::ZERO;
            t.floor = self.floor();
        }
        t.take_quota(Limits::of_quota(&q), q.version);
    }

    /// Makes sure the ledger knows `name`, asking the coordinator for its quota if needed.
    pub async fn ensure_tenant(&self, name: &str) {
        if self.ledger().tenants.contains_key(name) {
            return;
        }
        let tenant = match &self.coordinator {
            None => self.local_tenant(name),
            // Bounded: a program's hello waits on this, and the library gives up on its
            // hello after RDMAQ_AGENT_TIMEOUT_MS (2 s by default); without it, the tenant's
            // caps come with its first grant.
            Some(c) => match tokio::time::timeout(QUOTA_WAIT, c.quota(name))
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "no answer within {QUOTA_WAIT:?}"
                    )))
                }) {
                Ok(Some(q)) => self.leased_tenant(Some(&q)),
                // No quota at the coordinator: denied (and reported) unless the operator
                // lets such tenants run uncapped here.
                Ok(None) => match self.cfg.unknown_tenant() {
                    UnknownTenant::Allow if !self.cfg.tenants.contains_key(name) => {
                        tracing::warn!(
                            tenant = name,
                            "no quota anywhere: not capped on this node (unknown_tenant = \"allow\")"
                        );
                        self.local_tenant(name)
                    }
                    _ => self.leased_tenant(None),
                },
                Err(e) => {
                    tracing::warn!(tenant = name, error = %e, "coordinator unreachable; tenant has no lease yet");
                    self.leased_tenant(None)
                }
            },
        };
        self.ledger()
            .tenants
            .entry(name.to_string())
            .or_insert(tenant);
    }

    /// Decides an admission for connection `conn`: `count` objects of `resource` (the first
    /// for the call in progress), `bytes` each for MRs. One ledger decision; only when the
    /// node's allotment is short, an acquisition from the coordinator (bounded by
    /// `acquire_wait_ms`, so a slow coordinator costs a denial, never a hang) and a second one.
    pub async fn admit(&self, conn: u64, resource: Resource, count: u32, bytes: u64) -> Decision {
        self.decide(|l, now, attempt| l.admit(conn, resource, count, bytes, now, attempt))
            .await
    }

    /// Decides a QP creation of connection `conn` with its shape (type, work requests), the
    /// same way: the tenant's QP limits first, then the budget.
    pub async fn admit_qp(&self, conn: u64, shape: QpShape, count: u32) -> Decision {
        self.decide(|l, now, attempt| l.admit_qp(conn, shape, count, now, attempt))
            .await
    }

    /// Whether connection `conn`'s tenant needs each creation of `resource` decided here.
    pub fn one_at_a_time(&self, conn: u64, resource: Resource) -> bool {
        let ledger = self.ledger();
        ledger
            .conns
            .get(&conn)
            .and_then(|c| ledger.tenants.get(&c.tenant))
            .is_some_and(|t| t.one_at_a_time(resource))
    }

    /// Decides `bytes` more for an MR connection `conn` holds (`ibv_rereg_mr` growing it),
    /// the same way.
    pub async fn grow(&self, conn: u64, bytes: u64) -> Decision {
        self.decide(|l, now, attempt| l.grow(conn, bytes, now, attempt))
            .await
    }

    async fn decide(
        &self,
        ledger_decides: impl Fn(&mut Ledger, Instant, Attempt) -> Decision,
    ) -> Decision {
        let decide = |attempt| ledger_decides(&mut self.ledger(), Instant::now(), attempt);
        let (tenant, want, min) = match decide(Attempt::First) {
            Decision::NeedMore { tenant, want, min } => (tenant, want, min),
            d => return d,
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.acquire_wait_ms);
        let asked = tokio::time::timeout_at(deadline, self.acquire(&tenant, want, min)).await;
        if asked.is_err() {
            // Its grant, if any, comes in with the next heartbeat's view.
            tracing::info!(
                tenant,
                acquire_wait_ms = self.cfg.acquire_wait_ms,
                "the coordinator did not answer within acquire_wait_ms"
            );
        }
        if asked == Ok(false) {
            // Another connection's acquisition for the tenant was under way, perhaps of
            // another resource: look again, and ask for this one if still short (found by the
            // nemesis: a program asking for QPs was denied without any acquisition of QPs
            // while another program of its tenant acquired MRs).
            match decide(Attempt::First) {
                Decision::NeedMore { tenant, want, min } => {
                    let _ =
                        tokio::time::timeout_at(deadline, self.acquire(&tenant, want, min)).await;
                }
                d => return d,
            }
        }
        decide(Attempt::Last)
    }

    /// The node's ledger, locked.
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger")
    }

    /// Asks the coordinator for more of `tenant`'s budget; one request at a time per
    /// tenant (a second caller waits for the first and then re-checks the ledger). Returns
    /// whether this call asked (false: it waited for another's acquisition, or there is
    /// no coordinator).
    pub async fn acquire(&self, tenant: &str, want: Amounts, min: Amounts) -> bool {
        let Some(c) = &self.coordinator else {
            return false;
        };
        let gate = self.gate(tenant).await;
        let Ok(_one) = gate.try_lock() else {
            let _wait = gate.lock().await;
            return false;
        };
        let sent = Instant::now();
        let reply = c.acquire(tenant, want, min).await;
        // A reply lost on the way (a timeout after the grant was applied) leaves budget
        // allotted here that this agent does not know of: the next heartbeat reply brings it
        // in (its view is newer than any this agent took in).
        let mut ledger = self.ledger();
        match reply {
            Ok(r) => {
                let granted = Amounts::from_pb(r.granted);
                let view = r.allotment.unwrap_or_default();
                let (allotted, reclaim) = (
                    Amounts::from_pb(view.allotted),
                    Amounts::from_pb(view.reclaim),
                );
                let ttl = *self.lease_ttl.lock().expect("ttl");
                if let Some(t) = ledger.tenants.get_mut(tenant) {
                    t.take_in(allotted, reclaim, view.as_of);
                    t.lease_valid_until = Some(self.lease_deadline(sent, ttl));
                    if let Some(q) = &r.quota {
                        t.take_quota(Limits::of_quota(q), q.version);
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
        true
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
