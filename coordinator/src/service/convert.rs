//! Conversions between the wire types of `rdmaq-proto` and the state machine's types.

use rdmaq_proto::v1 as pb;

use crate::state::{self, AllotmentView, Amounts, Caps, Limits, QuotaRecord, WrPolicy};

pub fn amounts_to_pb(a: Amounts) -> pb::Amounts {
    pb::Amounts {
        qp: a.qp,
        mr: a.mr,
        mr_bytes: a.mr_bytes,
    }
}

pub fn amounts_from_pb(a: Option<pb::Amounts>) -> Amounts {
    let a = a.unwrap_or_default();
    Amounts {
        qp: a.qp,
        mr: a.mr,
        mr_bytes: a.mr_bytes,
    }
}

pub fn limits_from_pb(l: &pb::Limits) -> Limits {
    Limits {
        global: Caps {
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
        wr_policy: match pb::WrPolicy::try_from(l.wr_policy) {
            Ok(pb::WrPolicy::Deny) => WrPolicy::Deny,
            _ => WrPolicy::Clamp,
        },
        qp_create_per_sec: l.qp_create_per_sec,
        mr_create_per_sec: l.mr_create_per_sec,
    }
}

pub fn limits_to_pb(l: &Limits) -> pb::Limits {
    pb::Limits {
        max_qp: l.global.qp,
        max_mr: l.global.mr,
        max_mr_bytes: l.global.mr_bytes,
        max_qp_per_node: l.per_node.qp,
        max_mr_per_node: l.per_node.mr,
        max_mr_bytes_per_node: l.per_node.mr_bytes,
        max_qp_per_process: l.per_process.qp,
        max_mr_per_process: l.per_process.mr,
        max_mr_bytes_per_process: l.per_process.mr_bytes,
        max_send_wr: l.max_send_wr,
        max_recv_wr: l.max_recv_wr,
        wr_policy: match l.wr_policy {
            WrPolicy::Clamp => pb::WrPolicy::Clamp,
            WrPolicy::Deny => pb::WrPolicy::Deny,
        } as i32,
        qp_create_per_sec: l.qp_create_per_sec,
        mr_create_per_sec: l.mr_create_per_sec,
    }
}

pub fn quota_to_pb(tenant: &str, q: &QuotaRecord) -> pb::Quota {
    pb::Quota {
        tenant: tenant.to_string(),
        limits: Some(limits_to_pb(&q.limits)),
        version: q.version,
    }
}

pub fn allotment_to_pb(v: &AllotmentView) -> pb::Allotment {
    pb::Allotment {
        tenant: v.tenant.clone(),
        allotted: Some(amounts_to_pb(v.allotment.allotted)),
        used: Some(amounts_to_pb(v.allotment.used)),
        reclaim: Some(amounts_to_pb(v.allotment.reclaim)),
        lease_expires_unix_ms: v.lease_expires_ms,
        quota_version: v.quota_version,
    }
}

/// Usage of one tenant, with its per-node breakdown.
pub fn tenant_usage(s: &state::State, tenant: &str) -> pb::TenantUsage {
    let per_node = s.allotments.get(tenant);
    let nodes = per_node
        .into_iter()
        .flat_map(|m| m.iter())
        .map(|(node, a)| {
            let rec = s.nodes.get(node);
            pb::NodeUsage {
                node: node.clone(),
                allotted: Some(amounts_to_pb(a.allotted)),
                used: Some(amounts_to_pb(a.used)),
                reclaim: Some(amounts_to_pb(a.reclaim)),
                lease_expires_unix_ms: rec.map_or(0, |r| r.lease_expires_ms),
                lease_expired: rec
                    .is_none_or(|r| r.lease_expired || r.lease_expires_ms <= s.now_ms),
            }
        })
        .collect();
    pb::TenantUsage {
        tenant: tenant.to_string(),
        limits: s.quotas.get(tenant).map(|q| limits_to_pb(&q.limits)),
        allotted: Some(amounts_to_pb(
            s.totals.get(tenant).copied().unwrap_or_default(),
        )),
        used: Some(amounts_to_pb(s.used_total(tenant))),
        over_quota: s.over_quota(tenant),
        nodes,
    }
}
