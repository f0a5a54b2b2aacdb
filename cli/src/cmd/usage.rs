//! `rdmaq usage [TENANT]`: use against caps, per tenant and per node.

use rdmaq_proto::v1 as pb;

use crate::{
    Ctx,
    output::{Format, Table, bytes, cap, cap_bytes, clock, json},
};

pub async fn run(ctx: &Ctx, tenant: Option<String>) -> anyhow::Result<String> {
    let tenant = tenant.unwrap_or_default();
    let r = ctx
        .endpoints
        .admin(|mut c| {
            let tenant = tenant.clone();
            async move { c.usage(pb::UsageRequest { tenant }).await }
        })
        .await?;
    if ctx.format == Format::Json {
        return Ok(json(&r));
    }
    let mut t = Table::new(&[
        "TENANT",
        "NODE",
        "QP-USED",
        "QP-ALLOT",
        "QP-CAP",
        "MR-USED",
        "MR-CAP",
        "BYTES-USED",
        "BYTES-CAP",
        "LEASE",
        "STATE",
    ]);
    for u in &r.tenants {
        let l = u.limits.unwrap_or_default();
        let (used, allot) = (u.used.unwrap_or_default(), u.allotted.unwrap_or_default());
        t.row(vec![
            u.tenant.clone(),
            "(all)".into(),
            used.qp.to_string(),
            allot.qp.to_string(),
            cap(l.max_qp),
            used.mr.to_string(),
            cap(l.max_mr),
            bytes(used.mr_bytes),
            cap_bytes(l.max_mr_bytes),
            String::new(),
            if u.over_quota { "OVER QUOTA" } else { "ok" }.into(),
        ]);
        for n in &u.nodes {
            let (used, allot) = (n.used.unwrap_or_default(), n.allotted.unwrap_or_default());
            t.row(vec![
                String::new(),
                n.node.clone(),
                used.qp.to_string(),
                allot.qp.to_string(),
                String::new(),
                used.mr.to_string(),
                String::new(),
                bytes(used.mr_bytes),
                String::new(),
                clock(n.lease_expires_unix_ms),
                if n.lease_expired {
                    "lease expired"
                } else {
                    "live"
                }
                .into(),
            ]);
        }
    }
    Ok(t.render())
}
