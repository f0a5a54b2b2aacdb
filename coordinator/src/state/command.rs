//! The log's payload: commands, stamped by the leader with its clock and lease policy, and
//! the replies the state machine computes for them.

use serde::{Deserialize, Serialize};

use super::{
    Amounts, Credential, Dim, Limits, Revoked,
    model::{Allotment, LeasePolicy, QuotaRecord},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    SetQuota {
        tenant: String,
        limits: Limits,
    },
    DeleteQuota {
        tenant: String,
    },
    RegisterNode {
        node: String,
        address: String,
    },
    RemoveNode {
        node: String,
    },
    Acquire {
        node: String,
        tenant: String,
        want: Amounts,
        min: Amounts,
    },
    Release {
        node: String,
        tenant: String,
        amounts: Amounts,
    },
    Heartbeat {
        node: String,
        /// Full report: tenants not listed have no use on the node.
        used: Vec<(String, Amounts)>,
    },
    /// Records a membership change in the audit trail (the change itself is Raft's).
    AuditMembership {
        action: String,
    },
    /// Revokes a certificate, or every certificate of an identity.
    Revoke {
        what: Revoked,
    },
    /// Lifts a revocation.
    Unrevoke {
        what: Revoked,
    },
}

/// A command and who asked for it (certificate subject, or "dev"/"local" without TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub actor: String,
    pub command: Command,
    /// The verified certificate of the caller, checked against the revocations again when
    /// the command applies (none for the members' own records and without TLS).
    #[serde(default)]
    pub caller: Option<Credential>,
}

impl Request {
    /// 1: lease clock, report bounds, address checks, revocations.
    /// 2: budget ahead of demand is granted from half the room left (`ahead_of_demand`).
    /// 3: a report of use beyond the node's allotment that takes the tenant over its cap
    ///    makes it contended (every node gives back its spare); a grant clears what its
    ///    node was asked to give back in the dimensions granted.
    pub const FORMAT: u32 = 3;

    /// An entry of this version stamped `now_ms` by term 1's leader, with no wall clock, of
    /// `commands` proposed by `actor` without a certificate: for tests and benchmarks that
    /// apply commands to a `State` directly.
    pub fn at(
        now_ms: u64,
        policy: LeasePolicy,
        actor: &str,
        commands: impl IntoIterator<Item = Command>,
    ) -> Request {
        Request {
            now_ms,
            term: 1,
            format: Request::FORMAT,
            wall_ms: 0,
            policy,
            proposals: commands
                .into_iter()
                .map(|command| Proposal {
                    actor: actor.to_string(),
                    command,
                    caller: None,
                })
                .collect(),
        }
    }
}

/// Bounds on the encoded (JSON) size of what a proposal holds, for sizing batches.
const AMOUNTS_BYTES: usize = 96;
const LIMITS_BYTES: usize = 1_024;
const FIELD_BYTES: usize = 32;

/// A string's encoded size at most (free text may need escapes of up to six bytes a char).
fn text_bytes(s: &str) -> usize {
    FIELD_BYTES + 6 * s.len()
}

impl Proposal {
    /// At least its encoded size in the log, so that batches can be bounded by bytes.
    pub fn size_bound(&self) -> usize {
        text_bytes(&self.actor)
            + self
                .caller
                .as_ref()
                .map_or(0, |c| text_bytes(&c.serial) + text_bytes(&c.identity))
            + match &self.command {
                Command::SetQuota { tenant, .. } => text_bytes(tenant) + LIMITS_BYTES,
                Command::DeleteQuota { tenant } => text_bytes(tenant),
                Command::RegisterNode { node, address } => text_bytes(node) + text_bytes(address),
                Command::RemoveNode { node } => text_bytes(node),
                Command::Acquire { node, tenant, .. } => {
                    text_bytes(node) + text_bytes(tenant) + 2 * AMOUNTS_BYTES
                }
                Command::Release { node, tenant, .. } => {
                    text_bytes(node) + text_bytes(tenant) + AMOUNTS_BYTES
                }
                Command::Heartbeat { node, used } => {
                    text_bytes(node)
                        + used
                            .iter()
                            .map(|(t, _)| text_bytes(t) + AMOUNTS_BYTES)
                            .sum::<usize>()
                }
                Command::AuditMembership { action } => text_bytes(action),
                Command::Revoke {
                    what: Revoked::Serial(x) | Revoked::Identity(x),
                }
                | Command::Unrevoke {
                    what: Revoked::Serial(x) | Revoked::Identity(x),
                } => text_bytes(x),
            }
    }
}

/// One log entry's payload: commands applied in order, at one instant. Concurrent requests
/// may share an entry (one replication round and one fsync for all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The cluster's lease clock when the leader proposed the entry (see lease_clock.rs):
    /// milliseconds of leaders' elapsed time, never a wall clock. Taken only from an entry
    /// written in the term it was stamped for.
    pub now_ms: u64,
    /// The term whose leader stamped `now_ms`.
    #[serde(default)]
    pub term: u64,
    /// Which rules apply to the entry: `Request::FORMAT` for entries written by this
    /// version, 0 for older ones (replayed as they were applied then).
    #[serde(default)]
    pub format: u32,
    /// The leader's wall clock (Unix ms), for display and the audit only.
    #[serde(default)]
    pub wall_ms: u64,
    pub policy: LeasePolicy,
    pub proposals: Vec<Proposal>,
}

/// An allotment as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllotmentView {
    pub tenant: String,
    pub allotment: Allotment,
    /// In people's time (Unix ms, `State::wall_of`), for display: agents time their leases
    /// on their own clocks.
    pub lease_expires_ms: u64,
    pub quota_version: u64,
    /// Where in the log this view was taken (`State::as_of`): a larger one is newer.
    #[serde(default)]
    pub as_of: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("no quota is set for tenant {0:?}")]
    UnknownTenant(String),
    #[error("node {0:?} is not registered")]
    UnknownNode(String),
    #[error(
        "tenant {tenant:?}: only {available} of {} can be granted, {min} needed",
        dim.name()
    )]
    Insufficient {
        tenant: String,
        dim: Dim,
        available: u64,
        min: u64,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    Revoked(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Quota {
        tenant: String,
        quota: QuotaRecord,
    },
    Done,
    Registered {
        /// Unix ms, for display (as in `AllotmentView`).
        lease_expires_ms: u64,
        allotments: Vec<AllotmentView>,
    },
    Granted {
        granted: Amounts,
        allotment: AllotmentView,
        quota: QuotaRecord,
    },
    Released {
        allotment: AllotmentView,
    },
    HeartbeatAck {
        /// Unix ms, for display (as in `AllotmentView`).
        lease_expires_ms: u64,
        allotments: Vec<AllotmentView>,
        /// Reported tenants without a quota: their use is not recorded.
        #[serde(default)]
        unknown: Vec<String>,
    },
    Error(ApplyError),
}

/// Replies to one entry, one per command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub replies: Vec<Reply>,
}
