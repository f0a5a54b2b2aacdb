//! The coordinator's replicated state: quotas, nodes, allotments and leases, and the
//! deterministic `apply` that keeps the budget invariant.

pub mod amounts;
pub mod command;
pub mod machine;
pub mod model;
pub mod validate;

#[cfg(test)]
mod tests;

pub use amounts::{Amounts, Caps, Dim};
pub use command::{AllotmentView, ApplyError, Command, Proposal, Reply, Request, Response};
pub use machine::State;
pub use model::{
    Allotment, AuditRecord, Counters, LeasePolicy, Limits, NodeRecord, QuotaRecord, WrPolicy,
};
