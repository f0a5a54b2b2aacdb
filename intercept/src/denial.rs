//! Why a creation was refused, and the errno the verb returns for it.

use std::ffi::c_int;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Quota {
        resource: &'static str,
        scope: &'static str,
        used: u64,
        limit: u64,
    },
    Rate {
        resource: &'static str,
    },
    Policy {
        reason: String,
    },
    AgentUnavailable,
    /// The host QP tables cannot be used and the policy is closed.
    HostTableUnavailable,
}

impl Denial {
    pub fn errno(&self) -> c_int {
        match self {
            Denial::Quota { .. } => libc::EDQUOT,
            Denial::Rate { .. } | Denial::AgentUnavailable | Denial::HostTableUnavailable => {
                libc::EAGAIN
            }
            Denial::Policy { .. } => libc::EPERM,
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Quota {
                resource,
                scope,
                used,
                limit,
            } => write!(
                f,
                "{resource} denied: {scope} use {used} has reached its limit {limit} (EDQUOT)"
            ),
            Denial::Rate { resource } => {
                write!(f, "{resource} denied: creation rate limit (EAGAIN)")
            }
            Denial::Policy { reason } => write!(f, "denied: {reason} (EPERM)"),
            Denial::AgentUnavailable => {
                write!(
                    f,
                    "denied: the rdmaq agent is unreachable and the policy is fail-closed (EAGAIN)"
                )
            }
            Denial::HostTableUnavailable => write!(
                f,
                "qp denied: the host QP table is unavailable and RDMAQ_HOST_TABLE_FAILURE=closed (EAGAIN)"
            ),
        }
    }
}
