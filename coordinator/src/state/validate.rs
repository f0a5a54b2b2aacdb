//! Checks of names and limits, shared by the gRPC layer (before anything is proposed) and
//! `apply` (so a bad entry can never change state, whoever proposed it).

use super::{Amounts, Limits, command::ApplyError};

/// Counts beyond this are typos, not quotas (a large RDMA cluster holds millions of QPs).
pub const MAX_COUNT: u64 = 1 << 32;
/// 1 EiB of pinned memory.
pub const MAX_BYTES: u64 = 1 << 60;
/// Work requests per queue; devices support at most tens of thousands.
pub const MAX_WR: u32 = 1 << 24;
/// Creations per second per node.
pub const MAX_RATE: u32 = 10_000_000;
/// Tenants one heartbeat may report on (a node serving more is misconfigured or lying);
/// agents never hold more.
pub const MAX_REPORTS: usize = rdmaq_model::MAX_TENANTS_PER_NODE;
/// What a node may report using beyond its allotment (objects its agent found around the
/// library), where the tenant has no per-node cap: far more than a real node ever holds
/// outside its allotment, yet bounded, so a lying agent cannot fill a tenant's cluster cap.
pub const MAX_UNADMITTED: Amounts = Amounts {
    qp: 16_384,
    mr: 65_536,
    mr_bytes: 1 << 40,
};

fn invalid(field: &str, reason: impl Into<String>) -> ApplyError {
    ApplyError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Tenant and node names (`rdmaq_model::check_name`), as the field `field`.
pub fn name(field: &str, value: &str) -> Result<(), ApplyError> {
    rdmaq_model::check_name(value).map_err(|reason| invalid(field, reason))
}

/// Longest node address (host:port, or a DNS name and port).
pub const MAX_ADDRESS_LEN: usize = 256;

/// A node's advertised address: short, printable, no spaces (it is shown, never dialled).
pub fn address(value: &str) -> Result<(), ApplyError> {
    if value.len() > MAX_ADDRESS_LEN {
        return Err(invalid(
            "address",
            format!("{} bytes long, the limit is {MAX_ADDRESS_LEN}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(
            "address",
            format!("{value:?} holds {c:?}: only printable ASCII without spaces"),
        ));
    }
    Ok(())
}

fn count(field: &str, v: Option<u64>, max: u64) -> Result<(), ApplyError> {
    match v {
        Some(0) => Err(invalid(
            field,
            "must be at least 1 (leave it unset for no cap)",
        )),
        Some(n) if n > max => Err(invalid(field, format!("{n} is above the maximum {max}"))),
        _ => Ok(()),
    }
}

pub fn limits(l: &Limits) -> Result<(), ApplyError> {
    for (scope, caps) in [
        ("", &l.cluster),
        ("_per_node", &l.per_node),
        ("_per_process", &l.per_process),
    ] {
        count(&format!("max_qp{scope}"), caps.qp, MAX_COUNT)?;
        count(&format!("max_mr{scope}"), caps.mr, MAX_COUNT)?;
        count(&format!("max_mr_bytes{scope}"), caps.mr_bytes, MAX_BYTES)?;
    }
    count("max_send_wr", l.max_send_wr.map(u64::from), MAX_WR.into())?;
    count("max_recv_wr", l.max_recv_wr.map(u64::from), MAX_WR.into())?;
    count(
        "qp_create_per_sec",
        l.qp_create_per_sec.map(u64::from),
        MAX_RATE.into(),
    )?;
    count(
        "mr_create_per_sec",
        l.mr_create_per_sec.map(u64::from),
        MAX_RATE.into(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Caps;

    #[test]
    fn addresses_are_short_and_printable() {
        assert!(address("").is_ok());
        assert!(address("10.0.0.7:7000").is_ok());
        assert!(address(&"a".repeat(MAX_ADDRESS_LEN + 1)).is_err());
        let e = address("host\nname").unwrap_err().to_string();
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn names() {
        assert!(name("tenant", "team-a/job.1").is_ok());
        for bad in ["", "-x", "a b", "a\u{0}", &"x".repeat(129)] {
            let err = name("tenant", bad).unwrap_err().to_string();
            assert!(err.contains("tenant"), "{err}");
        }
    }

    #[test]
    fn zero_and_absurd_values_name_the_field() {
        let l = Limits {
            per_node: Caps {
                qp: Some(0),
                ..Caps::default()
            },
            ..Limits::default()
        };
        assert!(
            limits(&l)
                .unwrap_err()
                .to_string()
                .contains("max_qp_per_node")
        );
        let mut l = Limits::default();
        l.cluster.mr_bytes = Some(u64::MAX);
        assert!(limits(&l).unwrap_err().to_string().contains("max_mr_bytes"));
        let l = Limits {
            max_send_wr: Some(u32::MAX),
            ..Limits::default()
        };
        assert!(limits(&l).unwrap_err().to_string().contains("max_send_wr"));
    }
}
