//! The replicated state machine. `apply` is deterministic: it reads time only from the
//! entry (stamped by the leader), so every replica reaches the same state. It alone keeps
//! the budget invariant: a grant is made only if, afterwards, the sum of the tenant's
//! allotments over all nodes is within its cluster-wide cap on every dimension.

use std::collections::BTreeSet;

use imbl::{OrdMap, OrdSet, Vector};

use serde::{Deserialize, Serialize};

use super::{
    Amounts, Dim, Limits, Name, Revocations,
    command::{AllotmentView, ApplyError, Command, Reply, Request, Response},
    model::{Allotment, AuditRecord, Counters, LeasePolicy, NodeRecord, QuotaRecord},
    validate,
};

/// How many audit records the state keeps (the oldest are dropped).
pub const AUDIT_KEEP: usize = 10_000;

/// Every collection is persistent (`imbl`): cloning the state for a snapshot shares its
/// structure, O(1) under the state lock whatever the number of nodes and tenants; the first
/// change after a clone copies only the path to what it changes. They encode as the
/// standard maps, sets and sequences did, so snapshots are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub quotas: OrdMap<Name, QuotaRecord>,
    pub nodes: OrdMap<Name, NodeRecord>,
    /// tenant -> node -> allotment.
    pub allotments: OrdMap<Name, OrdMap<Name, Allotment>>,
    /// tenant -> sum of its allotments, kept in step with `allotments`.
    pub totals: OrdMap<Name, Amounts>,
    /// (lease expiry, node) of every node whose lease is live.
    pub lease_index: OrdSet<(u64, Name)>,
    /// (last seen, node) of every node whose lease has expired: the candidates for the
    /// node-dead timeout, so that no apply has to look at every node.
    #[serde(default)]
    pub silent_index: OrdSet<(u64, Name)>,
    pub quota_seq: u64,
    pub audit: Vector<AuditRecord>,
    /// Where in the log the command being applied is (its entry's index, and its place in
    /// the entry): allotment views carry it, so that an agent can tell a newer view of its
    /// allotment from an older one, whatever order replies arrive in.
    #[serde(skip)]
    pub as_of: u64,
    /// The rules of the entry being applied (`Request::format`).
    #[serde(skip)]
    pub format: u32,
    /// The lease clock: the latest time any entry carried; reads use it to tell expired
    /// leases.
    pub now_ms: u64,
    /// The wall clock of the latest entry (Unix ms): what `now_ms` was in people's time.
    #[serde(default)]
    pub wall_ms: u64,
    pub counters: Counters,
    #[serde(default, skip_serializing_if = "Revocations::is_empty")]
    pub revocations: Revocations,
    /// tenant -> lease-clock time until which it is contended: an acquisition was refused,
    /// so every node gives back the spare part of its allotment at its next heartbeat, and
    /// grants carry nothing ahead of demand (format 2).
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub contended: OrdMap<Name, u64>,
}

impl State {
    /// Applies the entry at log `index`, written in `term`.
    pub fn apply(&mut self, req: &Request, index: u64, term: u64) -> Response {
        self.format = req.format;
        // Time is taken only from a stamp made by the leader of the entry's own term (a
        // member that stamped as a follower, or just before an election, would carry a
        // clock nobody vouches for): otherwise it pauses, which only lengthens leases. It
        // never runs backwards (a new leader that has not applied everything yet starts a
        // little behind: time pauses until it catches up).
        if req.format == 0 || req.term == term {
            self.now_ms = self.now_ms.max(req.now_ms);
            if req.wall_ms != 0 {
                self.wall_ms = req.wall_ms;
            }
        }
        self.expire_leases(req.policy);
        let replies = req
            .proposals
            .iter()
            .enumerate()
            .map(|(i, p)| {
                self.as_of = (index << 16) | (i as u64 & 0xffff);
                // A certificate revoked after the call was let in (or on a member that had
                // not applied the revocation yet) acts no more.
                let revoked = p
                    .caller
                    .as_ref()
                    .filter(|_| req.format >= 1)
                    .and_then(|c| self.revocations.refuses_credential(c));
                match revoked {
                    Some(why) => Reply::Error(ApplyError::Revoked(why)),
                    None => self
                        .apply_one(&p.command, req.policy, &p.actor)
                        .unwrap_or_else(Reply::Error),
                }
            })
            .collect();
        Response { replies }
    }

    fn apply_one(
        &mut self,
        cmd: &Command,
        policy: LeasePolicy,
        actor: &str,
    ) -> Result<Reply, ApplyError> {
        match cmd {
            Command::SetQuota { tenant, limits } => self.set_quota(tenant, limits, actor),
            Command::DeleteQuota { tenant } => self.delete_quota(tenant, actor),
            Command::RegisterNode { node, address } => self.register(node, address, policy),
            Command::RemoveNode { node } => self.remove_node(node, actor),
            Command::Acquire {
                node,
                tenant,
                want,
                min,
            } => self.acquire(node, tenant, *want, *min, policy),
            Command::Release {
                node,
                tenant,
                amounts,
            } => self.release(node, tenant, *amounts),
            Command::Heartbeat { node, used } => self.heartbeat(node, used, policy, actor),
            Command::Revoke { what } => {
                let what = what.clone().checked()?;
                let at_ms = self.wall_of(self.now_ms);
                self.revocations.add(&what, at_ms);
                self.audit(actor, format!("revoked {what:?}"));
                Ok(Reply::Done)
            }
            Command::Unrevoke { what } => {
                let what = what.clone().checked()?;
                if !self.revocations.lift(&what) {
                    return Err(ApplyError::Invalid {
                        field: "revocation".into(),
                        reason: format!("{what:?} is not revoked"),
                    });
                }
                self.audit(actor, format!("lifted the revocation of {what:?}"));
                Ok(Reply::Done)
            }
            Command::AuditMembership { action } => {
                self.audit(actor, action.clone());
                Ok(Reply::Done)
            }
        }
    }

    fn audit(&mut self, actor: &str, action: String) {
        if self.audit.len() >= AUDIT_KEEP {
            self.audit.pop_front();
        }
        self.audit.push_back(AuditRecord {
            at_ms: self.wall_of(self.now_ms),
            actor: actor.to_string(),
            action,
        });
    }

    // ------------------------------------------------------------------ quotas

    fn set_quota(
        &mut self,
        tenant: &str,
        limits: &Limits,
        actor: &str,
    ) -> Result<Reply, ApplyError> {
        validate::name("tenant", tenant)?;
        validate::limits(limits)?;
        self.quota_seq += 1;
        let quota = QuotaRecord {
            limits: *limits,
            version: self.quota_seq,
        };
        self.quotas.insert(Name::from(tenant), quota.clone());
        self.shrink_to_caps(tenant, limits);
        self.audit(actor, format!("quota set {tenant} {limits}"));
        Ok(Reply::Quota {
            tenant: tenant.to_string(),
            quota,
        })
    }

    /// After a cap changed: asks each node to give back the allotted budget it is not using
    /// beyond the new caps (`reclaim`), so that no further admission happens above them.
    /// Nothing is taken unilaterally: a node may already have admitted from its allotment
    /// since its last report, so the budget stays counted until the node releases it (it
    /// stops admitting from it first). Budget in use is never asked for: lowering a cap
    /// destroys nothing, the tenant is over quota until its use falls. A raised cap cancels
    /// what is still asked for.
    fn shrink_to_caps(&mut self, tenant: &str, limits: &Limits) {
        let total = self.totals.get(tenant).copied().unwrap_or_default();
        let over_cluster = limits.cluster.exceeded_by(total);
        let Some(per_node) = self.allotments.get_mut(tenant) else {
            return;
        };
        let nodes: Vec<Name> = per_node.keys().cloned().collect();
        for node in nodes {
            if let Some(a) = per_node.get_mut(&node) {
                a.reclaim = reclaim(a, limits, over_cluster);
            }
        }
    }

    fn delete_quota(&mut self, tenant: &str, actor: &str) -> Result<Reply, ApplyError> {
        if self.quotas.remove(tenant).is_none() {
            return Err(ApplyError::UnknownTenant(tenant.to_string()));
        }
        if let Some(per_node) = self.allotments.remove(tenant) {
            for node in per_node.keys() {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.tenants.remove(tenant);
                }
            }
        }
        self.totals.remove(tenant);
        self.audit(actor, format!("quota delete {tenant}"));
        Ok(Reply::Done)
    }

    fn recompute_total(&mut self, tenant: &str) {
        let total = self
            .allotments
            .get(tenant)
            .map(|m| {
                m.values()
                    .fold(Amounts::ZERO, |acc, a| acc.saturating_add(a.allotted))
            })
            .unwrap_or_default();
        self.totals.insert(Name::from(tenant), total);
    }

    // ------------------------------------------------------------------ nodes, leases

    fn renew(&mut self, node: &str, policy: LeasePolicy) -> Result<u64, ApplyError> {
        let now = self.now_ms;
        let rec = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| ApplyError::UnknownNode(node.to_string()))?;
        // One key for both indexes, its time changed in place (every heartbeat comes here).
        let mut key = (rec.lease_expires_ms, Name::from(node));
        self.lease_index.remove(&key);
        if rec.lease_expired {
            key.0 = rec.last_seen_ms;
            self.silent_index.remove(&key);
        }
        rec.last_seen_ms = now;
        rec.lease_expires_ms = now.saturating_add(policy.lease_ttl_ms);
        rec.lease_expired = false;
        key.0 = rec.lease_expires_ms;
        self.lease_index.insert(key);
        Ok(rec.lease_expires_ms)
    }

    fn register(
        &mut self,
        node: &str,
        address: &str,
        policy: LeasePolicy,
    ) -> Result<Reply, ApplyError> {
        validate::name("node", node)?;
        if self.format >= 1 {
            validate::address(address)?;
        }
        let now = self.now_ms;
        let rec = self
            .nodes
            .entry(Name::from(node))
            .or_insert_with(|| NodeRecord {
                address: String::new(),
                registered_ms: now,
                last_seen_ms: now,
                lease_expires_ms: now,
                lease_expired: false,
                tenants: BTreeSet::new(),
                overreported: BTreeSet::new(),
            });
        rec.address = address.to_string();
        let lease_expires_ms = self.renew(node, policy)?;
        Ok(Reply::Registered {
            lease_expires_ms: self.wall_of(lease_expires_ms),
            allotments: self.views_of(node),
        })
    }

    fn remove_node(&mut self, node: &str, actor: &str) -> Result<Reply, ApplyError> {
        let rec = self
            .nodes
            .remove(node)
            .ok_or_else(|| ApplyError::UnknownNode(node.to_string()))?;
        let mut key = (rec.lease_expires_ms, Name::from(node));
        self.lease_index.remove(&key);
        key.0 = rec.last_seen_ms;
        self.silent_index.remove(&key);
        self.drop_allotments(node, &rec.tenants);
        self.audit(actor, format!("node remove {node}"));
        Ok(Reply::Done)
    }

    fn drop_allotments(&mut self, node: &str, tenants: &BTreeSet<Name>) {
        for tenant in tenants {
            if let Some(per_node) = self.allotments.get_mut(tenant) {
                per_node.remove(node);
                if per_node.is_empty() {
                    self.allotments.remove(tenant);
                }
            }
            self.recompute_total(tenant);
        }
    }

    /// Expired leases give back what their node was not using at its last report; nodes
    /// silent for longer than the node-dead timeout give back everything.
    fn expire_leases(&mut self, policy: LeasePolicy) {
        let now = self.now_ms;
        while let Some((expires, node)) = self.lease_index.get_min().cloned() {
            if expires > now {
                break;
            }
            self.lease_index.remove_min();
            let Some(rec) = self.nodes.get_mut(&node) else {
                continue;
            };
            rec.lease_expired = true;
            self.silent_index.insert((rec.last_seen_ms, node.clone()));
            let tenants = rec.tenants.clone();
            for tenant in &tenants {
                if let Some(a) = self
                    .allotments
                    .get_mut(tenant)
                    .and_then(|m| m.get_mut(&node))
                {
                    let taken = a.allotted.saturating_sub(a.charged());
                    if !taken.is_zero() {
                        self.counters.reclaims += 1;
                        self.counters.reclaimed = self.counters.reclaimed.saturating_add(taken);
                    }
                    a.allotted = a.charged();
                    a.reclaim = a.reclaim.min(a.allotted);
                }
                self.recompute_total(tenant);
            }
        }
        while let Some((last_seen, node)) = self.silent_index.get_min().cloned() {
            if now < last_seen.saturating_add(policy.node_dead_ms) {
                break;
            }
            self.silent_index.remove_min();
            let Some(rec) = self.nodes.get_mut(&node) else {
                continue;
            };
            if rec.lease_expired {
                let tenants = std::mem::take(&mut rec.tenants);
                self.drop_allotments(&node, &tenants);
            }
        }
    }

    // ------------------------------------------------------------------ budget

    fn acquire(
        &mut self,
        node: &str,
        tenant: &str,
        want: Amounts,
        min: Amounts,
        policy: LeasePolicy,
    ) -> Result<Reply, ApplyError> {
        let quota = self
            .quotas
            .get(tenant)
            .cloned()
            .ok_or_else(|| ApplyError::UnknownTenant(tenant.to_string()))?;
        if !self.nodes.contains_key(node) {
            return Err(ApplyError::UnknownNode(node.to_string()));
        }
        let current = self.allotment(tenant, node);
        let total = self.totals.get(tenant).copied().unwrap_or_default();
        // Objects a node holds beyond its allotment (created around the library, reported
        // by its agent) are real: they count against the cap like allotted budget.
        let charged = self.charged_total(tenant);
        let room = quota.limits.cluster.headroom(charged).min(
            quota
                .limits
                .per_node
                .headroom(current.allotted.max(current.used)),
        );
        let granted = if self.is_contended(tenant) {
            ahead_of_demand(min, min, room)
        } else if self.format >= 2 {
            ahead_of_demand(want, min, room)
        } else {
            want.min(room)
        };
        for d in Dim::ALL {
            if granted.get(d) < min.get(d) {
                self.counters.denials += 1;
                if self.format >= 2 {
                    // Budget other nodes hold ahead of demand is asked back (found by the
                    // nemesis: a busy node kept its spare while others were denied).
                    self.contended
                        .insert(Name::from(tenant), self.now_ms + policy.lease_ttl_ms / 2);
                }
                return Err(ApplyError::Insufficient {
                    tenant: tenant.to_string(),
                    dim: d,
                    available: room.get(d),
                    min: min.get(d),
                });
            }
        }
        let lease_expires_ms = self.renew(node, policy)?;
        let a = self
            .allotments
            .entry(Name::from(tenant))
            .or_default()
            .entry(Name::from(node))
            .or_default();
        // Objects the node holds beyond its allotment are charged already (above); an
        // allotment that did not cover them would let the node admit nothing: in each
        // dimension granted, it grows to cover them, then by the grant (within the cap: the
        // grant fit in what `charged` left).
        let before = a.allotted;
        for d in Dim::ALL {
            if granted.get(d) > 0 {
                a.allotted.set(d, a.allotted.get(d).max(a.used.get(d)));
                if self.format >= 3 {
                    // A node that needed more has no spare left to give back: budget asked
                    // back at its last heartbeat would eat into what it is granted now, and
                    // it could admit nothing with it (found by the nemesis while a tenant
                    // was contended: each grant of one went straight to what was owed).
                    a.reclaim.set(d, 0);
                }
            }
        }
        a.allotted = a.allotted.saturating_add(granted);
        let grown = a.allotted.saturating_sub(before);
        let allotment = *a;
        self.counters.grants += 1;
        self.counters.granted = self.counters.granted.saturating_add(granted);
        self.totals
            .insert(Name::from(tenant), total.saturating_add(grown));
        self.nodes
            .get_mut(node)
            .expect("checked above")
            .tenants
            .insert(Name::from(tenant));
        Ok(Reply::Granted {
            granted,
            allotment: AllotmentView {
                tenant: tenant.to_string(),
                allotment,
                lease_expires_ms: self.wall_of(lease_expires_ms),
                as_of: self.as_of,
                quota_version: quota.version,
            },
            quota,
        })
    }

    fn release(&mut self, node: &str, tenant: &str, amounts: Amounts) -> Result<Reply, ApplyError> {
        let rec = self
            .nodes
            .get(node)
            .ok_or_else(|| ApplyError::UnknownNode(node.to_string()))?;
        let lease_expires_ms = rec.lease_expires_ms;
        let version = self.quotas.get(tenant).map_or(0, |q| q.version);
        let Some(a) = self
            .allotments
            .get_mut(tenant)
            .and_then(|m| m.get_mut(node))
        else {
            return Ok(Reply::Released {
                allotment: AllotmentView {
                    tenant: tenant.to_string(),
                    allotment: Allotment::default(),
                    lease_expires_ms: self.wall_of(lease_expires_ms),
                    as_of: self.as_of,
                    quota_version: version,
                },
            });
        };
        let returned = amounts.min(a.allotted);
        a.allotted = a.allotted.saturating_sub(returned);
        a.reclaim = a.reclaim.saturating_sub(returned);
        let allotment = *a;
        self.counters.releases += 1;
        self.counters.released = self.counters.released.saturating_add(returned);
        if let Some(t) = self.totals.get_mut(tenant) {
            *t = t.saturating_sub(returned);
        }
        Ok(Reply::Released {
            allotment: AllotmentView {
                tenant: tenant.to_string(),
                allotment,
                lease_expires_ms: self.wall_of(lease_expires_ms),
                as_of: self.as_of,
                quota_version: version,
            },
        })
    }

    fn heartbeat(
        &mut self,
        node: &str,
        used: &[(String, Amounts)],
        policy: LeasePolicy,
        actor: &str,
    ) -> Result<Reply, ApplyError> {
        let lease_expires_ms = self.renew(node, policy)?;
        // What one node reports counts against its tenants' caps only as far as it could be
        // true: a lying (stolen) or buggy agent affects its own share, never everyone's.
        // (Entries of older versions are replayed as they were applied: unbounded.)
        // Every member applies every heartbeat, so each map is looked up once per reported
        // tenant where it can be (coordinator/benches/heartbeat_apply.rs).
        let (max_reports, bounded) = match self.format {
            0 => (usize::MAX, false),
            _ => (validate::MAX_REPORTS, true),
        };
        // (tenant, counted use, whether it has a quota)
        let mut counted = Vec::with_capacity(used.len().min(validate::MAX_REPORTS));
        // (tenant, reported use, its bound if the report went beyond it) of bounded reports
        let mut over = Vec::new();
        for (tenant, reported) in used.iter().take(max_reports) {
            let quota = self.quotas.get(tenant.as_str());
            let Some(q) = quota.filter(|_| bounded) else {
                // Counted as reported (an unknown tenant: not counted anywhere, answered as
                // unknown below).
                counted.push((tenant, *reported, quota.is_some()));
                continue;
            };
            let bound = report_bound(q, self.allotment(tenant, node).allotted);
            over.push((tenant, *reported, reported.exceeds(bound).then_some(bound)));
            counted.push((tenant, reported.min(bound), true));
        }
        let lease_view = self.wall_of(lease_expires_ms);
        let rec = self.nodes.get_mut(node).expect("renewed");
        let mut newly_over = Vec::new();
        for (tenant, reported, beyond_bound) in over {
            match beyond_bound {
                Some(bound) => {
                    if rec.overreported.insert(Name::from(tenant.as_str())) {
                        newly_over.push((tenant, reported, bound));
                    }
                }
                None => {
                    rec.overreported.remove(tenant.as_str());
                }
            }
        }
        // The node's tenants: those it held, and any it now reports use of (with a quota: a
        // node cannot create tenants; the others are answered as unknown).
        let mut unknown = Vec::new();
        for (tenant, _, known) in &counted {
            if !known {
                unknown.push((*tenant).clone());
            } else if !rec.tenants.contains(tenant.as_str()) {
                rec.tenants.insert(Name::from(tenant.as_str()));
            }
        }
        // Tenants this node uses beyond its allotment (objects created around the library).
        let mut beyond = Vec::new();
        // The reply's view of each of the node's tenants, as it stands after this report.
        let mut views = Vec::with_capacity(rec.tenants.len());
        for tenant in &rec.tenants {
            let reported = counted
                .iter()
                .find(|(t, _, _)| *t == tenant)
                .map(|(_, a, _)| *a)
                .unwrap_or_default();
            // (`is_contended`, by field: `rec` borrows the nodes.)
            let contended = self.format >= 2
                && self
                    .contended
                    .get(tenant)
                    .is_some_and(|until| *until > self.now_ms);
            let quota = self.quotas.get(tenant.as_str());
            let per_node = match self.allotments.get_mut(tenant) {
                Some(m) => m,
                None => self.allotments.entry(tenant.clone()).or_default(),
            };
            let allotment = match per_node.get_mut(node) {
                Some(a) => {
                    if reported.exceeds(a.allotted) {
                        beyond.push(tenant.clone());
                    }
                    a.used = reported;
                    // While the tenant is above its caps, what the node is asked to give
                    // back follows its use: budget freed as use falls is asked back
                    // instead of being admitted again above the cap. While another node
                    // was refused, its spare is asked back the same way.
                    if let Some(q) = quota {
                        let total = self.totals.get(tenant).copied().unwrap_or_default();
                        let give_back = q.limits.cluster.exceeded_by(total) || contended;
                        a.reclaim = reclaim(a, &q.limits, give_back);
                    }
                    *a
                }
                None => {
                    if reported.exceeds(Amounts::ZERO) {
                        beyond.push(tenant.clone());
                    }
                    let a = Allotment {
                        used: reported,
                        ..Default::default()
                    };
                    per_node.insert(Name::from(node), a);
                    a
                }
            };
            views.push(AllotmentView {
                tenant: tenant.to_string(),
                allotment,
                lease_expires_ms: lease_view,
                quota_version: quota.map_or(0, |q| q.version),
                as_of: self.as_of,
            });
        }
        for (tenant, reported, bound) in newly_over {
            self.audit(
                actor,
                format!(
                    "node {node} reported tenant {tenant} using {reported:?}, beyond what it may hold ({bound:?}): counted as that"
                ),
            );
        }
        if self.format >= 3 {
            // Use beyond an allotment was never granted, so it may take the tenant over its
            // cap with budget still allotted elsewhere: then every node gives back its
            // spare, as after a refusal (found by the nemesis: a node admitted from an
            // allotment granted before objects made without the library were reported on
            // another node, and the two together exceeded the cap).
            for tenant in beyond {
                let over = self
                    .quotas
                    .get(&tenant)
                    .is_some_and(|q| q.limits.cluster.exceeded_by(self.charged_total(&tenant)));
                if over {
                    self.contended
                        .insert(tenant, self.now_ms + policy.lease_ttl_ms / 2);
                }
            }
        }
        Ok(Reply::HeartbeatAck {
            lease_expires_ms: lease_view,
            allotments: views,
            unknown,
        })
    }

    // ------------------------------------------------------------------ reads

    /// A lease-clock time as people's time (Unix ms), by the latest entry's wall clock; as
    /// is where no entry carried one (tests).
    pub fn wall_of(&self, t: u64) -> u64 {
        if self.wall_ms == 0 {
            return t;
        }
        self.wall_ms
            .saturating_add_signed(t as i64 - self.now_ms as i64)
    }

    pub fn allotment(&self, tenant: &str, node: &str) -> Allotment {
        self.allotments
            .get(tenant)
            .and_then(|m| m.get(node))
            .copied()
            .unwrap_or_default()
    }

    pub fn views_of(&self, node: &str) -> Vec<AllotmentView> {
        let Some(rec) = self.nodes.get(node) else {
            return Vec::new();
        };
        rec.tenants
            .iter()
            .map(|tenant| AllotmentView {
                tenant: tenant.to_string(),
                allotment: self.allotment(tenant, node),
                lease_expires_ms: self.wall_of(rec.lease_expires_ms),
                quota_version: self.quotas.get(tenant).map_or(0, |q| q.version),
                as_of: self.as_of,
            })
            .collect()
    }

    /// What the tenant's nodes are charged: each node's allotment, or its reported use where
    /// that is larger.
    pub fn charged_total(&self, tenant: &str) -> Amounts {
        self.allotments
            .get(tenant)
            .map(|m| {
                m.values().fold(Amounts::ZERO, |acc, a| {
                    acc.saturating_add(a.allotted.max(a.used))
                })
            })
            .unwrap_or_default()
    }

    /// Whether an acquisition for `tenant` was refused within the last half lease (format 2).
    pub fn is_contended(&self, tenant: &str) -> bool {
        self.format >= 2
            && self
                .contended
                .get(tenant)
                .is_some_and(|until| *until > self.now_ms)
    }

    /// Sum of the use the tenant's nodes last reported.
    pub fn used_total(&self, tenant: &str) -> Amounts {
        self.allotments
            .get(tenant)
            .map(|m| {
                m.values()
                    .fold(Amounts::ZERO, |acc, a| acc.saturating_add(a.used))
            })
            .unwrap_or_default()
    }

    /// Whether the tenant uses more than a cap allows (after a cap was lowered).
    pub fn over_quota(&self, tenant: &str) -> bool {
        self.quotas
            .get(tenant)
            .is_some_and(|q| q.limits.cluster.exceeded_by(self.used_total(tenant)))
    }
}

/// What a node is asked to give back of allotment `a` under `limits`: everything beyond the
/// per-node cap that it is not using, and while the tenant is above its cluster-wide cap,
/// everything it is not using.
/// What an acquisition gets: what it needs now (`min`) if it fits, and of what it asks for
/// ahead of demand at most half the room left after that (at least one unit, so that asking
/// again and again ahead of demand reaches the last one) — so that one busy node cannot
/// take a tenant's whole cap ahead of demand while others need it now (found by the
/// nemesis: a node asking for 16 MRs ahead took a cap of 8, and kept it while busy).
fn ahead_of_demand(want: Amounts, min: Amounts, room: Amounts) -> Amounts {
    let mut granted = want.min(room);
    for d in Dim::ALL {
        let (need, asked, left) = (min.get(d), want.get(d), room.get(d));
        if need <= left {
            let half = ((left - need) / 2).max(1).min(left - need);
            let ahead = asked.saturating_sub(need).min(half);
            granted.set(d, need + ahead);
        }
    }
    granted
}

/// The most a node may be charged for a tenant (quota `q`) it reports on: what it was
/// allotted plus what it could plausibly hold around the library, within the tenant's
/// per-node cap where there is one (or its allotment, if that is more).
fn report_bound(q: &QuotaRecord, allotted: Amounts) -> Amounts {
    let plausible = allotted.saturating_add(validate::MAX_UNADMITTED);
    plausible.min(q.limits.per_node.bound()).max(allotted)
}

fn reclaim(a: &Allotment, limits: &Limits, over_cluster: bool) -> Amounts {
    let node_cap = limits.per_node.headroom(Amounts::ZERO);
    let mut target = a.allotted.min(node_cap).max(a.charged());
    if over_cluster {
        target = target.min(a.charged());
    }
    a.allotted.saturating_sub(target)
}
