//! What the replicated state holds: quotas, nodes, allotments, the audit trail.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize, Serializer, ser::SerializeStruct};

use rdmaq_model::{Amounts, Limits};

use super::Name;

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
    pub tenants: BTreeSet<Name>,
    /// Tenants whose use this node last reported beyond what it may hold (clamped, and
    /// audited once when it started). Node records go into JSON snapshots only: a binary
    /// format (`codec`) could not read a record with this field left out.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub overreported: BTreeSet<Name>,
}

/// One node's share of one tenant's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Allotment {
    pub allotted: Amounts,
    /// Use the node last reported; it may exceed `allotted` when the node found objects
    /// created around the library (they are real, so they show in usage).
    pub used: Amounts,
    /// Part of `allotted` the node is asked to give back (a cap was lowered below the
    /// allotments). It stays counted until the node releases it: the node may have admitted
    /// from it already, and only the node knows when it has stopped doing so. Left out of
    /// snapshots when zero (almost always): node allotments are most of a snapshot.
    #[serde(default)]
    pub reclaim: Amounts,
}

/// As derived, except that JSON (snapshots) leaves out a zero `reclaim`. The binary
/// encoding members send and log (`codec`) has no optional fields and always carries it
/// (serde's `skip_serializing_if` cannot tell the two apart).
impl Serialize for Allotment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let skip_reclaim = s.is_human_readable() && self.reclaim.is_zero();
        let mut st = s.serialize_struct("Allotment", if skip_reclaim { 2 } else { 3 })?;
        st.serialize_field("allotted", &self.allotted)?;
        st.serialize_field("used", &self.used)?;
        if skip_reclaim {
            st.skip_field("reclaim")?;
        } else {
            st.serialize_field("reclaim", &self.reclaim)?;
        }
        st.end()
    }
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
