//! The agent's `/status` document (JSON over its HTTP status listener), read by
//! `rdmaq node status` and by operators' scripts.

use serde::{Deserialize, Serialize};

use crate::v1::{Amounts, Limits};

/// One node's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub mode: Mode,
    /// Processes connected through the library.
    pub connections: u64,
    pub tenants: Vec<TenantStatus>,
    /// The node's RDMA objects and pinned memory as the eBPF monitor sees them.
    pub kernel: KernelTotals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Budgets are allotments leased from the coordinator.
    Coordinator,
    /// Budgets are the agent's own `[tenants.*]` caps.
    Standalone,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Coordinator => "coordinator",
            Mode::Standalone => "standalone",
        }
    }
}

/// Where a tenant's budget on the node comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetFrom {
    /// The agent's own caps.
    LocalCaps,
    /// An allotment leased from the coordinator.
    Lease,
}

impl BudgetFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetFrom::LocalCaps => "local-caps",
            BudgetFrom::Lease => "lease",
        }
    }
}

/// One tenant on the node. Amounts of `u64::MAX` mean "no cap".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantStatus {
    pub name: String,
    pub budget_from: BudgetFrom,
    pub limits: Limits,
    pub quota_version: u64,
    /// What the node may use: the allotment (lease) or the node caps (local).
    pub allotment: Amounts,
    /// Part of the allotment the coordinator asked back.
    pub owed: Amounts,
    /// Held by processes through the library.
    pub used: Amounts,
    /// Objects the kernel shows that nobody admitted, charged to the tenant.
    pub unadmitted: Amounts,
    /// Usable while the lease cannot be proven alive (fail-static).
    pub floor: Amounts,
    pub admissions: u64,
    pub denials: u64,
    pub lease_alive: bool,
    /// Time left on the lease by the agent's clock; absent for local caps.
    pub lease_remaining_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTotals {
    pub processes: u64,
    pub qps: u64,
    pub mrs: u64,
    pub mr_bytes: u64,
    pub pinned_bytes: u64,
}
