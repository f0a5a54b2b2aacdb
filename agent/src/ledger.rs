//! The node's ledger: per tenant, what the node may use (its allotment from the
//! coordinator, or its standalone caps), what processes hold (tokens admitted and not
//! returned), and what the kernel shows that nobody admitted; per connection, what each
//! process holds. Pure and synchronous: the server and the allotment loop call it under
//! one lock, and every decision here is checked by unit tests.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdmaq_model::{
    Amounts, Limits, MAX_TENANTS_PER_NODE, QpShape, RateBucket, Resource, ShapeDenial,
};

/// Where a tenant's node budget comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetFrom {
    /// The agent's own caps (standalone mode, or an unknown tenant with its policy).
    LocalCaps,
    /// An allotment leased from the coordinator, valid until the lease runs out.
    Lease,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub limits: Limits,
    pub quota_version: u64,
    pub budget_from: BudgetFrom,
    /// What this node may use: the allotment (leased) or the node caps (local).
    pub allotment: Amounts,
    /// Part of the allotment the coordinator asked back (a cap was lowered): not admitted
    /// from, and released as soon as it is not in use.
    pub owed: Amounts,
    /// Where in the coordinator's log the view of the allotment taken in was taken: an
    /// older view (a reply that arrives late) is never taken in over a newer one.
    pub allotment_as_of: u64,
    /// Releases started plus those finished: odd while one is in flight. The node lowers
    /// its allotment before it releases, so a heartbeat reply may take in the coordinator's
    /// view only if no release started or ended while it was on the way (it may predate the
    /// release, and would raise the allotment back).
    pub release_ops: u64,
    /// Tokens held by processes through the library.
    pub used: Amounts,
    /// Objects the kernel shows for this tenant that the library never admitted.
    pub unadmitted: Amounts,
    /// After a restart, what the coordinator last knew this node used, until the agent sees
    /// the kernel's objects itself: programs admitted by the previous agent (not yet
    /// reconnected) or found around the library still hold that much, and neither a local
    /// admission nor a report may act as if they did not.
    pub restart_floor: Amounts,
    pub lease_valid_until: Option<Instant>,
    /// Budget usable while the lease cannot be proven alive (fail-static; zero: fail-closed).
    pub floor: Amounts,
    pub last_admission: Option<Instant>,
    /// Highest `used` recently, to size acquisitions.
    pub recent_peak: Amounts,
    pub admissions: u64,
    pub denials: u64,
    /// After a failed acquisition, no new one before this (admissions are denied at once
    /// instead of each waiting for a coordinator that just said no or did not answer).
    pub acquire_backoff_until: Option<Instant>,
    /// The tenant's creation rates on this node (set up from its limits at first use).
    pub qp_rate: Option<RateBucket>,
    pub mr_rate: Option<RateBucket>,
}

impl Tenant {
    pub fn new(limits: Limits, budget_from: BudgetFrom) -> Tenant {
        Tenant {
            allotment: match budget_from {
                BudgetFrom::LocalCaps => limits.per_node.bound(),
                BudgetFrom::Lease => Amounts::ZERO,
            },
            owed: Amounts::ZERO,
            allotment_as_of: 0,
            release_ops: 0,
            limits,
            quota_version: 0,
            budget_from,
            used: Amounts::ZERO,
            unadmitted: Amounts::ZERO,
            restart_floor: Amounts::ZERO,
            lease_valid_until: None,
            floor: Amounts::ZERO,
            last_admission: None,
            recent_peak: Amounts::ZERO,
            admissions: 0,
            denials: 0,
            acquire_backoff_until: None,
            qp_rate: None,
            mr_rate: None,
        }
    }

    /// Takes in the coordinator's view of this node's allotment, taken at `as_of` in its
    /// log, unless a newer one was taken in already. (A view of 0 is from a coordinator that
    /// does not say: taken as it comes.)
    pub fn take_in(&mut self, allotted: Amounts, reclaim: Amounts, as_of: u64) -> bool {
        if as_of != 0 && as_of < self.allotment_as_of {
            return false;
        }
        self.allotment_as_of = as_of;
        self.allotment = allotted;
        self.owed = reclaim.min(allotted);
        true
    }

    /// Takes in the tenant's quota (version `version`) from the coordinator.
    pub fn take_quota(&mut self, limits: Limits, version: u64) {
        self.limits = limits;
        self.quota_version = version;
    }

    /// Whether the creation rate of `resource` lets one more through at `now` (the bucket
    /// follows the limits: a changed rate starts a full new one).
    fn rate_allows(&mut self, resource: Resource, now: Instant) -> Result<(), u32> {
        let (per_sec, bucket) = match resource {
            Resource::Qp => (self.limits.qp_create_per_sec, &mut self.qp_rate),
            Resource::Mr => (self.limits.mr_create_per_sec, &mut self.mr_rate),
        };
        let Some(per_sec) = per_sec else {
            *bucket = None;
            return Ok(());
        };
        let b = match bucket {
            Some(b) if b.per_sec() == per_sec => b,
            _ => bucket.insert(RateBucket::new(per_sec, now)),
        };
        if b.take_at(now) { Ok(()) } else { Err(per_sec) }
    }

    /// Whether each creation of `resource` must be decided on its own (its shape or rate is
    /// limited): then no tokens are granted ahead of demand.
    pub fn one_at_a_time(&self, resource: Resource) -> bool {
        match resource {
            Resource::Qp => self.limits.shapes_qps(),
            Resource::Mr => self.limits.shapes_mrs(),
        }
    }

    /// Everything charged to the tenant on this node.
    pub fn charged(&self) -> Amounts {
        self.used
            .saturating_add(self.unadmitted)
            .max(self.restart_floor)
    }

    pub fn lease_alive(&self, now: Instant) -> bool {
        self.budget_from == BudgetFrom::LocalCaps || self.lease_valid_until.is_some_and(|t| now < t)
    }

    /// What may still be admitted on this node.
    pub fn headroom(&self, now: Instant) -> Amounts {
        let budget = if self.lease_alive(now) {
            self.allotment.saturating_sub(self.owed)
        } else {
            // Lease lost (or never granted): only the fail-static floor, zero when
            // fail-closed. A floor is the operator accepting that much overshoot per node.
            self.floor
        };
        budget
            .min(self.limits.per_node.bound())
            .saturating_sub(self.charged())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `count` tokens (and `bytes` of MR budget) now held by the connection; for a QP whose
    /// work requests were above the caps (clamp policy), the depths it may have.
    Granted {
        count: u32,
        bytes: u64,
        clamp: Option<(u32, u32)>,
    },
    /// The QP's type or work requests are refused by the tenant's limits.
    Shape(ShapeDenial),
    /// Over the tenant's creation rate on this node.
    RateLimited { per_sec: u32 },
    /// Over a cap: `used` against `limit` in `scope`.
    Denied {
        scope: &'static str,
        used: u64,
        limit: u64,
    },
    /// `tenant`'s allotment is short: ask the coordinator, then decide again.
    NeedMore {
        tenant: String,
        want: Amounts,
        min: Amounts,
    },
}

/// Whether an admission short of allotment may ask the coordinator for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The first try: a short allotment is `NeedMore`.
    First,
    /// After an acquisition: a short allotment is a denial.
    Last,
}

/// One connected process.
#[derive(Debug, Clone)]
pub struct Conn {
    pub pid: u32,
    pub tenant: String,
    pub held: Amounts,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub tenants: HashMap<String, Tenant>,
    pub conns: HashMap<u64, Conn>,
}

/// Acquisitions ask for at least this many QPs / MRs beyond what is needed now.
const CHUNK_QP: u64 = 4;
const CHUNK_MR: u64 = 16;
/// ... and at least this much MR memory.
const CHUNK_BYTES: u64 = 256 << 20;

impl Ledger {
    /// Marks the start or the end of a release for `tenant`.
    pub fn release_op(&mut self, tenant: &str) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.release_ops += 1;
        }
    }

    pub fn connect(&mut self, id: u64, pid: u32, tenant: &str) {
        self.conns.insert(
            id,
            Conn {
                pid,
                tenant: tenant.to_string(),
                held: Amounts::ZERO,
            },
        );
    }

    /// A (re)connecting process says what it already holds: adopted as held by this
    /// connection (the caller bounds the claim by what the kernel shows).
    pub fn adopt(&mut self, id: u64, held: Amounts) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.held = conn.held.saturating_add(held);
        if let Some(t) = self.tenants.get_mut(&conn.tenant) {
            t.used = t.used.saturating_add(held);
        }
    }

    /// The process closed its connection (or died): what it held is free again.
    pub fn disconnect(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(t) = self.tenants.get_mut(&conn.tenant) {
            t.used = t.used.saturating_sub(conn.held);
        }
        Some(conn)
    }

    /// Decides an admission for connection `id`: `count` objects of `resource` (the first
    /// for the call in progress, the rest ahead of demand), of `bytes` each for MRs.
    pub fn admit(
        &mut self,
        id: u64,
        resource: Resource,
        count: u32,
        bytes: u64,
        now: Instant,
        attempt: Attempt,
    ) -> Decision {
        let Some(conn) = self.conns.get(&id) else {
            return Decision::Denied {
                scope: "connection",
                used: 0,
                limit: 0,
            };
        };
        let Some(t) = self.tenants.get(&conn.tenant) else {
            return Decision::Denied {
                scope: "tenant",
                used: 0,
                limit: 0,
            };
        };
        if t.charged().is_zero() {
            // A tenant's first object here: within the tenants a node may hold (and report).
            let in_use = self
                .tenants
                .values()
                .filter(|t| !t.charged().is_zero())
                .count();
            if in_use >= MAX_TENANTS_PER_NODE {
                return Decision::Denied {
                    scope: "node-tenants",
                    used: in_use as u64,
                    limit: MAX_TENANTS_PER_NODE as u64,
                };
            }
        }
        let t = self.tenants.get_mut(&conn.tenant).expect("looked up above");
        let count = if t.one_at_a_time(resource) {
            1
        } else {
            u64::from(count.max(1))
        };
        let one = Amounts::of(resource, 1, bytes);
        let have = t.headroom(now).fits(resource, bytes);
        let proc_room = t.limits.per_process.headroom(conn.held);
        let proc_have = proc_room.fits(resource, bytes);
        if proc_have == 0 {
            t.denials += 1;
            let caps = t.limits.per_process.bound();
            let (used, limit) = match resource {
                Resource::Mr if proc_room.mr > 0 => (conn.held.mr_bytes, caps.mr_bytes),
                r => (conn.held.count(r), caps.count(r)),
            };
            return Decision::Denied {
                scope: "process",
                used,
                limit,
            };
        }
        if have == 0 {
            let node_room = t.limits.per_node.headroom(t.charged());
            let node_full = node_room.fits(resource, bytes) == 0;
            let backoff = t.acquire_backoff_until.is_some_and(|b| now < b);
            if attempt == Attempt::First
                && t.budget_from == BudgetFrom::Lease
                && !backoff
                && !node_full
            {
                // Short of allotment (or of a live lease), not of caps: the coordinator may
                // grant more, and an acquisition renews the lease.
                let want = match resource {
                    Resource::Qp => Amounts::qps(CHUNK_QP.max(t.recent_peak.qp / 2).max(count)),
                    Resource::Mr => Amounts {
                        qp: 0,
                        mr: CHUNK_MR.max(t.recent_peak.mr / 2).max(count),
                        mr_bytes: CHUNK_BYTES
                            .max(t.recent_peak.mr_bytes / 2)
                            .max(bytes.saturating_mul(count)),
                    },
                };
                return Decision::NeedMore {
                    tenant: conn.tenant.clone(),
                    want,
                    min: one,
                };
            }
            t.denials += 1;
            let charged = t.charged().count(resource);
            return if node_full {
                Decision::Denied {
                    scope: "node",
                    used: charged,
                    limit: t.limits.per_node.bound().count(resource),
                }
            } else {
                Decision::Denied {
                    scope: "tenant",
                    used: charged,
                    limit: t.allotment.count(resource),
                }
            };
        }
        // Within the budget: the creation rate has the last word (a denial by budget
        // spends no rate).
        if let Err(per_sec) = t.rate_allows(resource, now) {
            t.denials += 1;
            return Decision::RateLimited { per_sec };
        }
        // The first token is for the call in progress. Tokens ahead of demand are charged to
        // the tenant while the process holds them, so they are earned: at most half of what
        // the process already holds (a process creating one or two QPs strands none, one
        // creating many saves most round trips and strands at most a third of its tokens),
        // and at most half of what is left, so one process cannot strand the node's budget.
        let earned = conn.held.count(resource);
        let ahead = (count - 1).min(have.saturating_sub(1) / 2).min(earned / 2);
        let granted = (1 + ahead).min(have).min(proc_have);
        let take = Amounts::of(resource, granted, bytes);
        t.used = t.used.saturating_add(take);
        t.recent_peak = t.recent_peak.max(t.used);
        t.admissions += 1;
        t.last_admission = Some(now);
        let conn = self.conns.get_mut(&id).expect("looked up above");
        conn.held = conn.held.saturating_add(take);
        Decision::Granted {
            count: granted as u32,
            bytes: take.mr_bytes,
            clamp: None,
        }
    }

    /// Decides a QP creation of connection `id` with its `shape`: the tenant's QP types and
    /// work-request caps first (a refusal, or depths lowered to the caps), then as `admit`.
    pub fn admit_qp(
        &mut self,
        id: u64,
        shape: QpShape,
        count: u32,
        now: Instant,
        attempt: Attempt,
    ) -> Decision {
        let tenant = self.conns.get(&id).map(|c| c.tenant.clone());
        let checked = tenant
            .and_then(|name| self.tenants.get_mut(&name))
            .map(|t| {
                let checked = t.limits.check_qp_shape(shape);
                if checked.is_err() {
                    t.denials += 1;
                }
                checked
            });
        let clamp = match checked {
            Some(Ok(clamp)) => clamp,
            Some(Err(why)) => return Decision::Shape(why),
            None => None,
        };
        match self.admit(id, Resource::Qp, count, 0, now, attempt) {
            Decision::Granted { count, bytes, .. } => Decision::Granted {
                count,
                bytes,
                clamp,
            },
            other => other,
        }
    }

    /// Decides `bytes` more for an MR connection `id` already holds (`ibv_rereg_mr` growing
    /// it): bytes only, by the same caps as a new MR's bytes. Granted with `count` 0.
    pub fn grow(&mut self, id: u64, bytes: u64, now: Instant, attempt: Attempt) -> Decision {
        let Some(conn) = self.conns.get(&id) else {
            return Decision::Denied {
                scope: "connection",
                used: 0,
                limit: 0,
            };
        };
        let Some(t) = self.tenants.get_mut(&conn.tenant) else {
            return Decision::Denied {
                scope: "tenant",
                used: 0,
                limit: 0,
            };
        };
        let ask = Amounts {
            qp: 0,
            mr: 0,
            mr_bytes: bytes,
        };
        if t.limits.per_process.headroom(conn.held).mr_bytes < bytes {
            t.denials += 1;
            return Decision::Denied {
                scope: "process",
                used: conn.held.mr_bytes,
                limit: t.limits.per_process.bound().mr_bytes,
            };
        }
        if t.headroom(now).mr_bytes < bytes {
            let node_full = t.limits.per_node.headroom(t.charged()).mr_bytes < bytes;
            let backoff = t.acquire_backoff_until.is_some_and(|b| now < b);
            if attempt == Attempt::First
                && t.budget_from == BudgetFrom::Lease
                && !backoff
                && !node_full
            {
                return Decision::NeedMore {
                    tenant: conn.tenant.clone(),
                    want: Amounts {
                        mr_bytes: CHUNK_BYTES.max(bytes),
                        ..Amounts::ZERO
                    },
                    min: ask,
                };
            }
            t.denials += 1;
            let used = t.charged().mr_bytes;
            return if node_full {
                Decision::Denied {
                    scope: "node",
                    used,
                    limit: t.limits.per_node.bound().mr_bytes,
                }
            } else {
                Decision::Denied {
                    scope: "tenant",
                    used,
                    limit: t.allotment.mr_bytes,
                }
            };
        }
        t.used = t.used.saturating_add(ask);
        t.recent_peak = t.recent_peak.max(t.used);
        t.admissions += 1;
        t.last_admission = Some(now);
        let conn = self.conns.get_mut(&id).expect("looked up above");
        conn.held = conn.held.saturating_add(ask);
        Decision::Granted {
            count: 0,
            bytes,
            clamp: None,
        }
    }

    /// Connection `id` returns tokens; never more than it holds.
    pub fn release(&mut self, id: u64, resource: Resource, count: u32, bytes: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let back = match resource {
            Resource::Qp => Amounts::qps(u64::from(count)),
            Resource::Mr => Amounts {
                qp: 0,
                mr: u64::from(count),
                mr_bytes: bytes,
            },
        }
        .min(conn.held);
        conn.held = conn.held.saturating_sub(back);
        if let Some(t) = self.tenants.get_mut(&conn.tenant) {
            t.used = t.used.saturating_sub(back);
        }
    }

    /// Budget to give back to the coordinator, so that another node can use it: what the
    /// coordinator asked back (`owed`) as far as it is not in use, and, for tenants idle for
    /// `idle`, all that is spare (their next admission acquires again).
    pub fn surplus(&self, now: Instant, idle: Duration) -> Vec<(String, Amounts)> {
        self.tenants
            .iter()
            .filter(|(_, t)| t.budget_from == BudgetFrom::Lease)
            .filter_map(|(name, t)| {
                let spare = t.allotment.saturating_sub(t.charged());
                let idle = t
                    .last_admission
                    .is_none_or(|l| now.duration_since(l) >= idle);
                let give = if idle { spare } else { spare.min(t.owed) };
                (!give.is_zero()).then(|| (name.clone(), give))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rdmaq_model::Caps;

    use super::*;

    fn ledger(limits: Limits, budget_from: BudgetFrom) -> Ledger {
        let mut l = Ledger::default();
        l.tenants
            .insert("t".into(), Tenant::new(limits, budget_from));
        l.connect(1, 100, "t");
        l.connect(2, 200, "t");
        l
    }

    fn qp_cap(node: u64, process: u64) -> Limits {
        Limits {
            per_node: Caps {
                qp: Some(node),
                ..Caps::NONE
            },
            per_process: Caps {
                qp: Some(process),
                ..Caps::NONE
            },
            ..Limits::NONE
        }
    }

    #[test]
    fn standalone_node_cap_is_shared_by_processes() {
        let now = Instant::now();
        let mut l = ledger(qp_cap(5, 100), BudgetFrom::LocalCaps);
        let grant = |count| Decision::Granted {
            count,
            bytes: 0,
            clamp: None,
        };
        // A process's first admissions are for the call alone; later ones bring tokens
        // ahead of demand, at most half as many as it holds and half of what remains.
        assert_eq!(
            l.admit(1, Resource::Qp, 4, 0, now, Attempt::First),
            grant(1)
        );
        assert_eq!(
            l.admit(1, Resource::Qp, 4, 0, now, Attempt::First),
            grant(1)
        );
        assert_eq!(
            l.admit(1, Resource::Qp, 4, 0, now, Attempt::First),
            grant(2)
        );
        assert_eq!(
            l.admit(2, Resource::Qp, 4, 0, now, Attempt::First),
            grant(1)
        );
        assert!(matches!(
            l.admit(2, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Denied {
                scope: "node",
                used: 5,
                limit: 5
            }
        ));
        l.release(1, Resource::Qp, 2, 0);
        assert_eq!(
            l.admit(2, Resource::Qp, 4, 0, now, Attempt::First),
            grant(1)
        );
        // A process that dies returns what it held (2 left after its release).
        l.disconnect(1);
        assert_eq!(l.tenants["t"].used.qp, 2);
    }

    #[test]
    fn a_node_holds_resources_for_a_bounded_number_of_tenants() {
        // Tenant names through the launcher could otherwise grow a heartbeat without end.
        let now = Instant::now();
        let mut l = ledger(qp_cap(100, 100), BudgetFrom::LocalCaps);
        for i in 0..=MAX_TENANTS_PER_NODE as u64 {
            let name = format!("t{i}");
            l.tenants.insert(
                name.clone(),
                Tenant::new(qp_cap(100, 100), BudgetFrom::LocalCaps),
            );
            l.connect(1_000 + i, 1_000 + i as u32, &name);
        }
        for i in 0..MAX_TENANTS_PER_NODE as u64 - 1 {
            let d = l.admit(1_000 + i, Resource::Qp, 1, 0, now, Attempt::First);
            assert!(matches!(d, Decision::Granted { .. }), "{d:?}");
        }
        // With "t" (holding one) that is the limit: the next tenant is refused...
        assert!(matches!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted { .. }
        ));
        let last = 1_000 + MAX_TENANTS_PER_NODE as u64;
        assert_eq!(
            l.admit(last, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Denied {
                scope: "node-tenants",
                used: MAX_TENANTS_PER_NODE as u64,
                limit: MAX_TENANTS_PER_NODE as u64
            }
        );
        // ...while tenants already holding some go on, and room comes back on release.
        assert!(matches!(
            l.admit(1_000, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted { .. }
        ));
        l.disconnect(1);
        assert!(matches!(
            l.admit(last, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted { .. }
        ));
    }

    #[test]
    fn per_process_cap_and_release_never_exceeds_holdings() {
        let now = Instant::now();
        let mut l = ledger(qp_cap(100, 2), BudgetFrom::LocalCaps);
        for _ in 0..2 {
            assert_eq!(
                l.admit(1, Resource::Qp, 4, 0, now, Attempt::First),
                Decision::Granted {
                    count: 1,
                    bytes: 0,
                    clamp: None
                }
            );
        }
        assert!(matches!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Denied {
                scope: "process",
                ..
            }
        ));
        // Releasing more than held (a confused or hostile client) frees only what it holds.
        l.release(1, Resource::Qp, 50, 0);
        assert_eq!(l.tenants["t"].used.qp, 0);
        l.release(2, Resource::Qp, 50, 0);
        assert_eq!(l.tenants["t"].used.qp, 0);
    }

    #[test]
    fn leased_budget_asks_for_more_then_fails_closed_when_the_lease_lapses() {
        let now = Instant::now();
        let mut l = ledger(Limits::NONE, BudgetFrom::Lease);
        assert!(
            matches!(
                l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
                Decision::NeedMore { .. }
            ),
            "no lease yet: ask the coordinator"
        );
        let t = l.tenants.get_mut("t").unwrap();
        t.allotment = Amounts {
            qp: 2,
            ..Default::default()
        };
        t.lease_valid_until = Some(now + Duration::from_secs(5));
        assert_eq!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
        assert_eq!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
        assert!(matches!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::NeedMore {
                min: Amounts { qp: 1, .. },
                ..
            }
        ));
        // The lease lapses and the coordinator cannot be reached (backoff after a failed
        // acquisition): nothing more, even after a release, unless a floor is set.
        l.release(1, Resource::Qp, 1, 0);
        let later = now + Duration::from_secs(6);
        l.tenants.get_mut("t").unwrap().acquire_backoff_until =
            Some(later + Duration::from_secs(1));
        assert!(matches!(
            l.admit(1, Resource::Qp, 1, 0, later, Attempt::First),
            Decision::Denied { .. }
        ));
        l.tenants.get_mut("t").unwrap().floor = Amounts {
            qp: 2,
            ..Default::default()
        };
        assert_eq!(
            l.admit(1, Resource::Qp, 1, 0, later, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
    }

    #[test]
    fn after_an_acquisition_a_short_allotment_is_a_denial_naming_it() {
        let now = Instant::now();
        let mut l = ledger(Limits::NONE, BudgetFrom::Lease);
        let t = l.tenants.get_mut("t").unwrap();
        t.allotment = Amounts::qps(1);
        t.lease_valid_until = Some(now + Duration::from_secs(5));
        assert!(matches!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted { count: 1, .. }
        ));
        assert_eq!(
            l.admit(2, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::NeedMore {
                tenant: "t".into(),
                want: Amounts::qps(4),
                min: Amounts::qps(1)
            }
        );
        assert_eq!(
            l.admit(2, Resource::Qp, 1, 0, now, Attempt::Last),
            Decision::Denied {
                scope: "tenant",
                used: 1,
                limit: 1
            }
        );
    }

    #[test]
    fn a_growing_mr_is_admitted_for_its_growth_in_bytes_only() {
        let now = Instant::now();
        let limits = Limits {
            per_node: Caps {
                mr_bytes: Some(10 << 20),
                ..Caps::NONE
            },
            per_process: Caps {
                mr_bytes: Some(8 << 20),
                ..Caps::NONE
            },
            ..Limits::NONE
        };
        let mut l = ledger(limits, BudgetFrom::LocalCaps);
        assert!(matches!(
            l.admit(1, Resource::Mr, 1, 4 << 20, now, Attempt::First),
            Decision::Granted { count: 1, .. }
        ));
        // +3 MiB: within the process's 8 MiB; +2 MiB more: not.
        assert_eq!(
            l.grow(1, 3 << 20, now, Attempt::First),
            Decision::Granted {
                count: 0,
                bytes: 3 << 20,
                clamp: None
            }
        );
        assert!(matches!(
            l.grow(1, 2 << 20, now, Attempt::First),
            Decision::Denied {
                scope: "process",
                ..
            }
        ));
        // The node has 3 MiB left; another process may take them, not more.
        assert!(matches!(
            l.admit(2, Resource::Mr, 1, 1 << 20, now, Attempt::First),
            Decision::Granted { .. }
        ));
        assert!(matches!(
            l.grow(2, 3 << 20, now, Attempt::First),
            Decision::Denied { scope: "node", .. }
        ));
        let t = &l.tenants["t"];
        assert_eq!(t.used.mr, 2, "growth is not an MR");
        assert_eq!(t.used.mr_bytes, 8 << 20);
        // Shrinking gives bytes back without an MR.
        l.release(1, Resource::Mr, 0, 3 << 20);
        assert_eq!(
            l.tenants["t"].used,
            Amounts {
                qp: 0,
                mr: 2,
                mr_bytes: 5 << 20
            }
        );
    }

    #[test]
    fn a_qps_type_work_requests_and_rate_are_the_agents_to_decide() {
        use rdmaq_model::{QpTypes, WrPolicy, qpt};
        let now = Instant::now();
        let limits = Limits {
            max_send_wr: Some(64),
            qp_types: Some(QpTypes::parse("RC").unwrap()),
            qp_create_per_sec: Some(2),
            ..Limits::NONE
        };
        let mut l = ledger(limits, BudgetFrom::LocalCaps);
        let rc = |send| QpShape {
            qp_type: qpt::RC,
            max_send_wr: send,
            max_recv_wr: 8,
        };
        // Lowered to the cap, one token at a time (the next QP's shape is unknown).
        assert_eq!(
            l.admit_qp(1, rc(100), 4, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: Some((64, 8))
            }
        );
        // A type not in the list.
        let ud = QpShape {
            qp_type: qpt::UD,
            ..rc(1)
        };
        assert!(matches!(
            l.admit_qp(1, ud, 1, now, Attempt::First),
            Decision::Shape(ShapeDenial::Type { qp_type: 4, .. })
        ));
        // 2 per second: the second passes, the third waits for the bucket to refill.
        assert!(matches!(
            l.admit_qp(1, rc(1), 1, now, Attempt::First),
            Decision::Granted { clamp: None, .. }
        ));
        assert_eq!(
            l.admit_qp(1, rc(1), 1, now, Attempt::First),
            Decision::RateLimited { per_sec: 2 }
        );
        assert!(matches!(
            l.admit_qp(
                2,
                rc(1),
                1,
                now + Duration::from_millis(600),
                Attempt::First
            ),
            Decision::Granted { .. }
        ));
        // Deny policy: over the cap is a refusal, not a clamp.
        l.tenants.get_mut("t").unwrap().limits.wr_policy = WrPolicy::Deny;
        assert!(matches!(
            l.admit_qp(2, rc(100), 1, now + Duration::from_secs(5), Attempt::First),
            Decision::Shape(ShapeDenial::WorkRequests {
                asked: 100,
                cap: 64,
                ..
            })
        ));
        assert_eq!(l.tenants["t"].used.qp, 3);
    }

    #[test]
    fn mr_bytes_are_admitted_per_mr() {
        let now = Instant::now();
        let limits = Limits {
            per_node: Caps {
                mr_bytes: Some(10 << 20),
                ..Caps::NONE
            },
            ..Limits::NONE
        };
        let mut l = ledger(limits, BudgetFrom::LocalCaps);
        let grant = |count, bytes| Decision::Granted {
            count,
            bytes,
            clamp: None,
        };
        // 3 MiB MRs: 3 fit; after one, 2 are left: one for the call, none ahead (half of
        // the one left over rounds down).
        assert_eq!(
            l.admit(1, Resource::Mr, 4, 3 << 20, now, Attempt::First),
            grant(1, 3 << 20)
        );
        assert_eq!(
            l.admit(1, Resource::Mr, 4, 3 << 20, now, Attempt::First),
            grant(1, 3 << 20)
        );
        assert_eq!(
            l.admit(2, Resource::Mr, 1, 2 << 20, now, Attempt::First),
            grant(1, 2 << 20)
        );
        assert!(matches!(
            l.admit(2, Resource::Mr, 1, 3 << 20, now, Attempt::First),
            Decision::Denied { .. }
        ));
        assert_eq!(
            l.admit(2, Resource::Mr, 1, 1 << 20, now, Attempt::First),
            grant(1, 1 << 20)
        );
    }

    #[test]
    fn idle_tenants_give_back_everything_they_do_not_use() {
        let now = Instant::now();
        let mut l = ledger(Limits::NONE, BudgetFrom::Lease);
        let t = l.tenants.get_mut("t").unwrap();
        t.allotment = Amounts {
            qp: 8,
            ..Default::default()
        };
        t.lease_valid_until = Some(now + Duration::from_secs(10));
        assert_eq!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
        assert_eq!(
            l.admit(1, Resource::Qp, 4, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
        assert!(
            l.surplus(now, Duration::from_secs(5)).is_empty(),
            "active: keeps its allotment"
        );
        let later = now + Duration::from_secs(6);
        assert_eq!(
            l.surplus(later, Duration::from_secs(5)),
            vec![(
                "t".to_string(),
                Amounts {
                    qp: 6,
                    ..Default::default()
                }
            )]
        );
    }

    #[test]
    fn budget_asked_back_is_not_admitted_from_and_is_returned_once_free() {
        let now = Instant::now();
        let qps = |qp| Amounts {
            qp,
            ..Default::default()
        };
        let mut l = ledger(Limits::NONE, BudgetFrom::Lease);
        let t = l.tenants.get_mut("t").unwrap();
        t.take_in(qps(6), qps(4), 1);
        t.lease_valid_until = Some(now + Duration::from_secs(10));
        // 6 allotted, 4 of them asked back: 2 may be admitted, and nothing is free to return.
        assert_eq!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
        assert_eq!(
            l.admit(2, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
        assert!(matches!(
            l.admit(2, Resource::Qp, 1, 0, now, Attempt::First),
            Decision::NeedMore { .. }
        ));
        // Busy (not idle), yet what is asked back and unused goes back: 4 of the 6.
        assert_eq!(
            l.surplus(now, Duration::from_secs(5)),
            vec![("t".to_string(), qps(4))]
        );
        // Once use falls, more of what is asked back becomes free, never more than asked.
        l.disconnect(1);
        l.tenants.get_mut("t").unwrap().take_in(qps(6), qps(5), 2);
        assert_eq!(
            l.surplus(now, Duration::from_secs(5)),
            vec![("t".to_string(), qps(5))]
        );
    }

    #[test]
    fn a_late_view_of_the_allotment_never_replaces_a_newer_one() {
        let mut t = Tenant::new(Limits::NONE, BudgetFrom::Lease);
        // A grant's reply (as of 20), then a heartbeat reply computed before it (as of 12).
        assert!(t.take_in(Amounts::qps(8), Amounts::qps(0), 20));
        assert!(!t.take_in(Amounts::qps(2), Amounts::qps(0), 12));
        assert_eq!(t.allotment, Amounts::qps(8));
        // A later heartbeat brings what a lost reply did not.
        assert!(t.take_in(Amounts::qps(10), Amounts::qps(1), 31));
        assert_eq!((t.allotment, t.owed), (Amounts::qps(10), Amounts::qps(1)));
    }

    #[test]
    fn after_a_restart_the_last_known_use_counts_until_the_kernel_is_seen() {
        let qps = Amounts::qps;
        let now = Instant::now();
        let mut l = ledger(Limits::NONE, BudgetFrom::Lease);
        let t = l.tenants.get_mut("t").unwrap();
        t.take_in(qps(4), Amounts::ZERO, 1);
        t.lease_valid_until = Some(now + Duration::from_secs(10));
        // The previous agent admitted 4 QPs that are still held; nobody has claimed them.
        t.restart_floor = qps(4);
        assert!(matches!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::Last),
            Decision::Denied { .. }
        ));
        // Their program reconnects and claims 3; the floor still holds the fourth.
        l.tenants.get_mut("t").unwrap().used = qps(3);
        assert_eq!(l.tenants["t"].charged(), qps(4));
        // The kernel view is in: what is really held counts, no more.
        l.tenants.get_mut("t").unwrap().restart_floor = Amounts::ZERO;
        assert_eq!(
            l.admit(1, Resource::Qp, 1, 0, now, Attempt::Last),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
    }

    #[test]
    fn unadmitted_objects_count_against_the_budget() {
        let now = Instant::now();
        let mut l = ledger(qp_cap(3, 100), BudgetFrom::LocalCaps);
        l.tenants.get_mut("t").unwrap().unadmitted = Amounts {
            qp: 2,
            ..Default::default()
        };
        assert_eq!(
            l.admit(1, Resource::Qp, 4, 0, now, Attempt::First),
            Decision::Granted {
                count: 1,
                bytes: 0,
                clamp: None
            }
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use rdmaq_model::Caps;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u64, u32),
        Release(u64, u32),
        Disconnect(u64),
        TakeIn(u64, u64),
        Unadmitted(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (1..4u64, 1..6u32).prop_map(|(c, n)| Op::Admit(c, n)),
            2 => (1..4u64, 0..5u32).prop_map(|(c, n)| Op::Release(c, n)),
            1 => (1..4u64).prop_map(Op::Disconnect),
            2 => (0..14u64, 0..14u64).prop_map(|(a, r)| Op::TakeIn(a, r)),
            1 => (0..4u64).prop_map(Op::Unadmitted),
        ]
    }

    fn qps(qp: u64) -> Amounts {
        Amounts::qps(qp)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the coordinator says and processes do, a grant never takes the node's
        /// charge above what it may use (its allotment less what is asked back, and its
        /// per-node cap), no process above its own cap, and the ledger's books balance;
        /// what is given back is never in use, and beyond what is asked back only when idle.
        #[test]
        fn the_node_never_admits_beyond_its_budget(ops in prop::collection::vec(op(), 1..80)) {
            let now = Instant::now();
            let limits = Limits {
                per_node: Caps { qp: Some(9), ..Caps::NONE },
                per_process: Caps { qp: Some(4), ..Caps::NONE },
                ..Limits::NONE
            };
            let mut l = Ledger::default();
            let mut t = Tenant::new(limits, BudgetFrom::Lease);
            t.lease_valid_until = Some(now + Duration::from_secs(60));
            l.tenants.insert("t".into(), t);
            for op in ops {
                for c in 1..4u64 {
                    if !l.conns.contains_key(&c) {
                        l.connect(c, c as u32, "t");
                    }
                }
                let before = l.tenants["t"].charged();
                match op {
                    Op::Admit(c, n) => {
                        if let Decision::Granted { .. } = l.admit(c, Resource::Qp, n, 0, now, Attempt::First) {
                            let t = &l.tenants["t"];
                            let budget = t.allotment.saturating_sub(t.owed).min(t.limits.per_node.bound());
                            prop_assert!(t.charged().qp <= budget.qp.max(before.qp),
                                "granted to {} with a budget of {}", t.charged().qp, budget.qp);
                            prop_assert!(l.conns[&c].held.qp <= 4, "process cap");
                        }
                    }
                    Op::Release(c, n) => l.release(c, Resource::Qp, n, 0),
                    Op::Disconnect(c) => { l.disconnect(c); }
                    Op::TakeIn(a, r) => { l.tenants.get_mut("t").unwrap().take_in(qps(a), qps(r), 0); }
                    Op::Unadmitted(u) => l.tenants.get_mut("t").unwrap().unadmitted = qps(u),
                }
                let t = &l.tenants["t"];
                let held: u64 = l.conns.values().map(|c| c.held.qp).sum();
                prop_assert_eq!(held, t.used.qp, "the books balance");
                prop_assert!(t.owed.qp <= t.allotment.qp);
                for (busy, at) in [(true, now), (false, now + Duration::from_secs(60))] {
                    for (_, give) in l.surplus(at, Duration::from_secs(5)) {
                        prop_assert!(give.qp <= t.allotment.qp.saturating_sub(t.charged().qp),
                            "gives back budget in use");
                        if busy && t.last_admission.is_some() {
                            prop_assert!(give.qp <= t.owed.qp, "a busy node gives back only what is asked");
                        }
                    }
                }
            }
        }
    }
}
