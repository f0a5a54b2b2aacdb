//! `rdmaq audit`: who changed quotas, nodes and membership, and when.

use rdmaq_proto::v1 as pb;

use crate::{
    Ctx,
    output::{Format, Table, clock, json},
};

pub async fn run(ctx: &Ctx, limit: u32) -> anyhow::Result<String> {
    let r = ctx
        .endpoints
        .admin(|mut c| async move { c.list_audit(pb::ListAuditRequest { limit }).await })
        .await?;
    if ctx.format == Format::Json {
        return Ok(json(&r.records));
    }
    let mut t = Table::new(&["TIME", "WHO", "WHAT"]);
    for rec in &r.records {
        t.row(vec![
            clock(rec.unix_ms),
            rec.actor.clone(),
            rec.action.clone(),
        ]);
    }
    Ok(t.render())
}
