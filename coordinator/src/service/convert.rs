//! The coordinator's records as wire messages (amounts and limits convert in
//! `rdmaq-model`).

use rdmaq_proto::v1 as pb;

use crate::state::{self, AllotmentView, QuotaRecord};

pub fn quota_to_pb(tenant: &str, q: &QuotaRecord) -> pb::Quota {
    pb::Quota {
        tenant: tenant.to_string(),
        limits: Some((&q.limits).into()),
        version: q.version,
    }
}

pub fn allotment_to_pb(v: &AllotmentView) -> pb::Allotment {
    pb::Allotment {
        tenant: v.tenant.clone(),
        allotted: v.allotment.allotted.to_pb(),
        used: v.allotment.used.to_pb(),
        reclaim: v.allotment.reclaim.to_pb(),
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
                allotted: a.allotted.to_pb(),
                used: a.used.to_pb(),
                reclaim: a.reclaim.to_pb(),
                lease_expires_unix_ms: rec.map_or(0, |r| r.lease_expires_ms),
                lease_expired: rec
                    .is_none_or(|r| r.lease_expired || r.lease_expires_ms <= s.now_ms),
            }
        })
        .collect();
    pb::TenantUsage {
        tenant: tenant.to_string(),
        limits: s.quotas.get(tenant).map(|q| (&q.limits).into()),
        allotted: s.totals.get(tenant).copied().unwrap_or_default().to_pb(),
        used: s.used_total(tenant).to_pb(),
        over_quota: s.over_quota(tenant),
        nodes,
    }
}
