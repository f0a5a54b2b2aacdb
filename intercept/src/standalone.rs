//! Standalone mode's caps (no agent: the original design's environment variables): QPs,
//! MRs and MR bytes per process, checked against what the process holds, and QPs per host,
//! through the host-wide table in shared memory.

use rdmaq_model::{Amounts, Limits, Resource};

use crate::{
    config::{Config, Failure},
    denial::Denial,
    host::{HostTable, Reserve},
    log::log_at,
};

/// Checks the per-process caps for one more object of `resource` pinning `bytes`, given
/// what the process holds (`held`, creations in progress included).
pub fn check_process(
    limits: &Limits,
    resource: Resource,
    bytes: u64,
    held: Amounts,
) -> Result<(), Denial> {
    let caps = limits.per_process.bound();
    let name = resource.name();
    let count = held.count(resource);
    if count >= caps.count(resource) {
        return Err(Denial::Quota {
            resource: name,
            scope: "process",
            used: count,
            limit: caps.count(resource),
        });
    }
    if resource == Resource::Mr && held.mr_bytes.saturating_add(bytes) > caps.mr_bytes {
        return Err(Denial::Quota {
            resource: "mr bytes",
            scope: "process",
            used: held.mr_bytes,
            limit: caps.mr_bytes,
        });
    }
    Ok(())
}

/// Checks the per-process bytes cap for `growth` more bytes of an MR already held (an
/// `ibv_rereg_mr` that grows it), given the bytes the process holds.
pub fn check_bytes(limits: &Limits, held_bytes: u64, growth: u64) -> Result<(), Denial> {
    let cap = limits.per_process.bound().mr_bytes;
    if held_bytes.saturating_add(growth) > cap {
        return Err(Denial::Quota {
            resource: "mr bytes",
            scope: "process",
            used: held_bytes,
            limit: cap,
        });
    }
    Ok(())
}

/// The host-wide QP cap, through the tables shared by every process on the host (host.rs).
/// The tables are opened once per process; if they cannot be used, the program is told once
/// in the log and `RDMAQ_HOST_TABLE_FAILURE` decides: without the host cap, or EAGAIN.
#[derive(Default)]
pub struct HostCap {
    table: Option<HostTable>,
    /// The tables could not be opened: not tried again by this process.
    unavailable: bool,
    /// The program was told the host cap is not applied (or refuses).
    told: bool,
}

impl HostCap {
    /// Reserves a QP on the host; `Ok(true)` if the process now holds a slot for it (to be
    /// given back with `release`), `Ok(false)` if there is no host cap, or it could not be
    /// applied and the policy is open.
    pub fn reserve(&mut self, cfg: &Config) -> Result<bool, Denial> {
        let Some(limit) = cfg.limits.per_node.qp else {
            return Ok(false);
        };
        if self.table.is_none() && !self.unavailable {
            match HostTable::open(&cfg.host_state) {
                Ok(t) => self.table = Some(t),
                Err(e) => {
                    self.unavailable = true;
                    return self.without_table(cfg, &e);
                }
            }
        }
        let Some(table) = &self.table else {
            return self.without_table(cfg, &"unavailable");
        };
        match table.add(1, limit) {
            Ok(Reserve::Granted) => Ok(true),
            Ok(Reserve::Full { used, limit }) => Err(Denial::Quota {
                resource: "qp",
                scope: "host",
                used,
                limit,
            }),
            Err(e) => self.without_table(cfg, &e),
        }
    }

    /// The policy when the host tables cannot be used (said once).
    fn without_table(&mut self, cfg: &Config, why: &dyn std::fmt::Display) -> Result<bool, Denial> {
        let closed = cfg.host_table_failure == Failure::Closed;
        if !std::mem::replace(&mut self.told, true) {
            log_at!(
                cfg,
                Warn,
                "host QP tables in {} unusable ({why}): {} (RDMAQ_HOST_TABLE_FAILURE={})",
                cfg.host_state.display(),
                if closed {
                    "QPs are refused"
                } else {
                    "the host-wide QP cap is not applied"
                },
                if closed { "closed" } else { "open" }
            );
        }
        if closed {
            Err(Denial::HostTableUnavailable)
        } else {
            Ok(false)
        }
    }

    /// Gives back a QP reserved with `reserve`.
    pub fn release(&self, cfg: &Config) {
        if let Some(t) = &self.table
            && let Err(e) = t.add(-1, u64::MAX)
        {
            log_at!(cfg, Warn, "host QP table: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use rdmaq_model::Caps;

    use super::*;

    fn limits() -> Limits {
        Limits {
            per_process: Caps {
                qp: Some(2),
                mr: Some(3),
                mr_bytes: Some(10 << 20),
            },
            ..Limits::NONE
        }
    }

    #[test]
    fn the_process_caps_count_what_it_holds() {
        let l = limits();
        assert!(check_process(&l, Resource::Qp, 0, Amounts::qps(1)).is_ok());
        assert_eq!(
            check_process(&l, Resource::Qp, 0, Amounts::qps(2)),
            Err(Denial::Quota {
                resource: "qp",
                scope: "process",
                used: 2,
                limit: 2
            })
        );
        // MRs: by count, then by bytes (the new MR's bytes included).
        let held = Amounts {
            qp: 0,
            mr: 3,
            mr_bytes: 0,
        };
        assert!(matches!(
            check_process(&l, Resource::Mr, 1, held),
            Err(Denial::Quota { resource: "mr", .. })
        ));
        let held = Amounts {
            qp: 0,
            mr: 1,
            mr_bytes: 6 << 20,
        };
        assert!(check_process(&l, Resource::Mr, 4 << 20, held).is_ok());
        assert_eq!(
            check_process(&l, Resource::Mr, (4 << 20) + 1, held),
            Err(Denial::Quota {
                resource: "mr bytes",
                scope: "process",
                used: 6 << 20,
                limit: 10 << 20
            })
        );
    }

    #[test]
    fn a_growing_mr_is_checked_by_bytes_alone() {
        let l = limits();
        // At the MR count cap, growth still counts only in bytes.
        assert!(check_bytes(&l, 6 << 20, 4 << 20).is_ok());
        assert!(matches!(
            check_bytes(&l, 6 << 20, (4 << 20) + 1),
            Err(Denial::Quota {
                resource: "mr bytes",
                ..
            })
        ));
        assert!(check_bytes(&Limits::NONE, u64::MAX - 1, 1).is_ok());
    }

    #[test]
    fn no_caps_no_denials() {
        let held = Amounts {
            qp: 1 << 40,
            mr: 1 << 40,
            mr_bytes: 1 << 60,
        };
        for r in [Resource::Qp, Resource::Mr] {
            assert!(check_process(&Limits::NONE, r, 1 << 30, held).is_ok());
        }
    }
}
