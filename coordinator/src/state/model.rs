//! What the replicated state holds: quotas, nodes, allotments, the audit trail.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::amounts::{Amounts, Caps};

/// What to do with a QP asking for more work requests than the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrPolicy {
    #[default]
    Clamp,
    Deny,
}

/// A tenant's caps (DESIGN.md, "Budget model").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Cluster-global caps: the sum of allotments never exceeds them.
    pub global: Caps,
    pub per_node: Caps,
    /// Enforced by the agents, carried here so every agent learns them.
    pub per_process: Caps,
    pub max_send_wr: Option<u32>,
    pub max_recv_wr: Option<u32>,
    pub wr_policy: WrPolicy,
    pub qp_create_per_sec: Option<u32>,
    pub mr_create_per_sec: Option<u32>,
}

impl std::fmt::Display for Limits {
    /// The caps that are set, as `rdmaq quota set` flags would name them (for the audit).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (scope, caps) in [
            ("", &self.global),
            ("-per-node", &self.per_node),
            ("-per-process", &self.per_process),
        ] {
            for (name, v) in [
                ("qp", caps.qp),
                ("mr", caps.mr),
                ("mr-bytes", caps.mr_bytes),
            ] {
                if let Some(v) = v {
                    parts.push(format!("max-{name}{scope}={v}"));
                }
            }
        }
        for (name, v) in [
            ("max-send-wr", self.max_send_wr),
            ("max-recv-wr", self.max_recv_wr),
            ("qp-create-per-sec", self.qp_create_per_sec),
            ("mr-create-per-sec", self.mr_create_per_sec),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        }
        if self.wr_policy == WrPolicy::Deny {
            parts.push("wr-policy=deny".into());
        }
        if parts.is_empty() {
            f.write_str("(no caps)")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub limits: Limits,
    /// Bumped on every change of this quota (from a cluster-wide sequence).
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub address: String,
    pub registered_ms: u64,
    /// Last register, acquire or heartbeat: the last time the node proved it was alive.
    pub last_seen_ms: u64,
    pub lease_expires_ms: u64,
    /// The lease ran out: the unused part of its allotments has been reclaimed.
    pub lease_expired: bool,
    /// Tenants this node holds allotments for.
    pub tenants: BTreeSet<String>,
}

/// One node's share of one tenant's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allotment {
    pub allotted: Amounts,
    /// Use the node last reported; it may exceed `allotted` when the node found objects
    /// created around the library (they are real, so they show in usage).
    pub used: Amounts,
    /// Part of `allotted` the node is asked to give back (a cap was lowered below the
    /// allotments). It stays counted until the node releases it: the node may have admitted
    /// from it already, and only the node knows when it has stopped doing so. Left out of
    /// snapshots when zero (almost always): node allotments are most of a snapshot.
    #[serde(default, skip_serializing_if = "Amounts::is_zero")]
    pub reclaim: Amounts,
}

impl Allotment {
    /// What stays charged when the lease expires: only what backs live objects.
    pub fn charged(&self) -> Amounts {
        self.allotted.min(self.used)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// Who asked: the subject of the caller's certificate ("insecure (no TLS)" without TLS).
    pub actor: String,
    pub action: String,
}

/// Lease timing, stamped into every log entry by the leader from its configuration so that
/// every replica computes the same expiries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePolicy {
    pub lease_ttl_ms: u64,
    /// After this long without hearing from a node, even its used budget is released.
    pub node_dead_ms: u64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            lease_ttl_ms: 10_000,
            node_dead_ms: 24 * 3600 * 1000,
        }
    }
}

/// Cumulative counts of what `apply` did, identical on every member (they are part of the
/// replicated state), exported as Prometheus counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Acquire requests that were granted, and the amounts granted.
    pub grants: u64,
    pub granted: Amounts,
    /// Acquire requests refused for lack of budget.
    pub denials: u64,
    pub releases: u64,
    pub released: Amounts,
    /// Expired leases whose unused budget was taken back, and the amounts.
    pub reclaims: u64,
    pub reclaimed: Amounts,
}
