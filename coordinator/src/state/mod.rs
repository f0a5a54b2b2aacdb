//! The coordinator's replicated state: quotas, nodes, allotments and leases, and the
//! deterministic `apply` that keeps the budget invariant.

pub mod command;
pub mod machine;
pub mod model;
pub mod revocation;
pub mod validate;

#[cfg(test)]
mod lease_clock_tests;
#[cfg(test)]
mod tests;

pub use command::{AllotmentView, ApplyError, Command, Proposal, Reply, Request, Response};
pub use machine::State;
pub use model::{Allotment, AuditRecord, Counters, LeasePolicy, NodeRecord, QuotaRecord};
pub use rdmaq_model::{Amounts, Caps, Dim, Limits, WrPolicy};
pub use revocation::{Credential, Revocations, Revoked};

/// A tenant's or node's name as the state's maps key it: up to 24 bytes are kept inline,
/// so that comparing keys in a lookup reads the map's own nodes instead of following a
/// pointer per comparison (key comparisons were the heartbeat apply's main cost at 10,000
/// nodes, docs/benchmarks.md). Serialized as a string, like the `String` it replaces.
pub type Name = compact_str::CompactString;
