//! Conversions between the model and the coordinator's gRPC messages (`rdmaq.v1`).

use rdmaq_proto::v1 as pb;

use crate::{Amounts, Caps, Limits, QpTypes, WrPolicy};

impl From<pb::Amounts> for Amounts {
    fn from(a: pb::Amounts) -> Amounts {
        Amounts {
            qp: a.qp,
            mr: a.mr,
            mr_bytes: a.mr_bytes,
        }
    }
}

impl From<Amounts> for pb::Amounts {
    fn from(a: Amounts) -> pb::Amounts {
        pb::Amounts {
            qp: a.qp,
            mr: a.mr,
            mr_bytes: a.mr_bytes,
        }
    }
}

impl Amounts {
    /// An optional message field: absent is zero.
    pub fn from_pb(a: Option<pb::Amounts>) -> Amounts {
        a.map(Amounts::from).unwrap_or_default()
    }

    /// As an optional message field.
    pub fn to_pb(self) -> Option<pb::Amounts> {
        Some(self.into())
    }
}

impl From<i32> for WrPolicy {
    /// An unknown or unset value is the default, clamp.
    fn from(v: i32) -> WrPolicy {
        match pb::WrPolicy::try_from(v) {
            Ok(pb::WrPolicy::Deny) => WrPolicy::Deny,
            _ => WrPolicy::Clamp,
        }
    }
}

impl From<WrPolicy> for pb::WrPolicy {
    fn from(p: WrPolicy) -> pb::WrPolicy {
        match p {
            WrPolicy::Clamp => pb::WrPolicy::Clamp,
            WrPolicy::Deny => pb::WrPolicy::Deny,
        }
    }
}

impl From<&pb::Limits> for Limits {
    fn from(l: &pb::Limits) -> Limits {
        Limits {
            cluster: Caps {
                qp: l.max_qp,
                mr: l.max_mr,
                mr_bytes: l.max_mr_bytes,
            },
            per_node: Caps {
                qp: l.max_qp_per_node,
                mr: l.max_mr_per_node,
                mr_bytes: l.max_mr_bytes_per_node,
            },
            per_process: Caps {
                qp: l.max_qp_per_process,
                mr: l.max_mr_per_process,
                mr_bytes: l.max_mr_bytes_per_process,
            },
            max_send_wr: l.max_send_wr,
            max_recv_wr: l.max_recv_wr,
            wr_policy: l.wr_policy.into(),
            qp_create_per_sec: l.qp_create_per_sec,
            mr_create_per_sec: l.mr_create_per_sec,
            // Names this side does not know are dropped (the coordinator refuses them when
            // a quota is set: `qp_types_from_pb`).
            qp_types: qp_types_from_pb(&l.qp_types).ok().flatten(),
        }
    }
}

/// The QP types of a wire `Limits`: `None` for an empty list (any type), or the name that is
/// not a QP type.
pub fn qp_types_from_pb(names: &[String]) -> Result<Option<QpTypes>, String> {
    if names.is_empty() {
        return Ok(None);
    }
    QpTypes::parse(&names.join(",")).map(Some)
}

impl From<&Limits> for pb::Limits {
    fn from(l: &Limits) -> pb::Limits {
        pb::Limits {
            max_qp: l.cluster.qp,
            max_mr: l.cluster.mr,
            max_mr_bytes: l.cluster.mr_bytes,
            max_qp_per_node: l.per_node.qp,
            max_mr_per_node: l.per_node.mr,
            max_mr_bytes_per_node: l.per_node.mr_bytes,
            max_qp_per_process: l.per_process.qp,
            max_mr_per_process: l.per_process.mr,
            max_mr_bytes_per_process: l.per_process.mr_bytes,
            max_send_wr: l.max_send_wr,
            max_recv_wr: l.max_recv_wr,
            wr_policy: pb::WrPolicy::from(l.wr_policy) as i32,
            qp_create_per_sec: l.qp_create_per_sec,
            mr_create_per_sec: l.mr_create_per_sec,
            qp_types: l
                .qp_types
                .map(|t| t.names().into_iter().map(String::from).collect())
                .unwrap_or_default(),
        }
    }
}

impl Limits {
    /// A quota's limits; a quota without them has no caps.
    pub fn of_quota(q: &pb::Quota) -> Limits {
        q.limits.as_ref().map(Limits::from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_the_wire() {
        let mut l = Limits::NONE;
        l.cluster.qp = Some(12);
        l.per_node.mr_bytes = Some(1 << 30);
        l.per_process.mr = Some(3);
        l.max_send_wr = Some(64);
        l.wr_policy = WrPolicy::Deny;
        l.mr_create_per_sec = Some(500);
        l.qp_types = Some(QpTypes::parse("RC,XRC").unwrap());
        assert_eq!(Limits::from(&pb::Limits::from(&l)), l);
        assert!(qp_types_from_pb(&["RC".into(), "TCP".into()]).is_err());
        assert_eq!(Limits::from(&pb::Limits::default()), Limits::NONE);
    }

    #[test]
    fn an_unknown_wr_policy_is_clamp() {
        assert_eq!(WrPolicy::from(7), WrPolicy::Clamp);
        assert_eq!(WrPolicy::from(pb::WrPolicy::Deny as i32), WrPolicy::Deny);
    }
}
