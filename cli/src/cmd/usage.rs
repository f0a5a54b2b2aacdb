//! `rdmaq usage [TENANT] [--watch]`: use against caps, per tenant and per node, once or
//! refreshed until interrupted.

use std::{io::IsTerminal, time::Duration};

use rdmaq_model::{Amounts, Limits};
use rdmaq_proto::v1 as pb;

use crate::{
    Ctx,
    output::{Format, Table, bytes, cap, cap_bytes, clock, json},
};

/// How `--watch` refreshes.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub interval: Duration,
    /// Stop after this many refreshes (default: until interrupted).
    pub count: Option<u64>,
}

async fn fetch(ctx: &Ctx, tenant: &str) -> anyhow::Result<pb::UsageResponse> {
    Ok(ctx
        .endpoints
        .admin(|mut c| {
            let tenant = tenant.to_string();
            async move { c.usage(pb::UsageRequest { tenant }).await }
        })
        .await?)
}

pub async fn run(
    ctx: &Ctx,
    tenant: Option<String>,
    watch: Option<Watch>,
) -> anyhow::Result<String> {
    let tenant = tenant.unwrap_or_default();
    let Some(watch) = watch else {
        return Ok(render(ctx, &fetch(ctx, &tenant).await?));
    };
    // A terminal gets the table redrawn in place; a pipe gets one block per refresh.
    let tty = std::io::stdout().is_terminal() && ctx.format == Format::Table;
    let mut shown = 0u64;
    loop {
        let now = clock(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
        // A failed refresh (an election, a member restarting) is shown and the watch goes on.
        let body = match fetch(ctx, &tenant).await {
            Ok(r) if ctx.format == Format::Json => {
                serde_json::json!({ "time": now, "usage": r }).to_string()
            }
            Ok(r) => format!("{now}\n{}", render(ctx, &r)),
            Err(e) => format!("{now}\nunavailable: {e}"),
        };
        if tty {
            print!("\x1b[H\x1b[2J");
        }
        println!("{body}");
        shown += 1;
        if watch.count.is_some_and(|c| shown >= c) {
            return Ok(String::new());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(String::new()),
            _ = tokio::time::sleep(watch.interval) => {}
        }
    }
}

/// A node's lease, and what it is asked to give back (above a lowered cap).
fn node_state(n: &pb::NodeUsage) -> String {
    let lease = if n.lease_expired {
        "lease expired"
    } else {
        "live"
    };
    let r = n.reclaim.unwrap_or_default();
    let asked: Vec<String> = [
        (r.qp, format!("{} qp", r.qp)),
        (r.mr, format!("{} mr", r.mr)),
        (r.mr_bytes, bytes(r.mr_bytes)),
    ]
    .into_iter()
    .filter(|(v, _)| *v > 0)
    .map(|(_, s)| s)
    .collect();
    if asked.is_empty() {
        lease.to_string()
    } else {
        format!("{lease}, giving back {}", asked.join(" "))
    }
}

fn render(ctx: &Ctx, r: &pb::UsageResponse) -> String {
    if ctx.format == Format::Json {
        return json(r);
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
        let l = u.limits.as_ref().map(Limits::from).unwrap_or_default();
        let (used, allot) = (Amounts::from_pb(u.used), Amounts::from_pb(u.allotted));
        t.row(vec![
            u.tenant.clone(),
            "(all)".into(),
            used.qp.to_string(),
            allot.qp.to_string(),
            cap(l.cluster.qp),
            used.mr.to_string(),
            cap(l.cluster.mr),
            bytes(used.mr_bytes),
            cap_bytes(l.cluster.mr_bytes),
            String::new(),
            if u.over_quota { "OVER QUOTA" } else { "ok" }.into(),
        ]);
        for n in &u.nodes {
            let (used, allot) = (Amounts::from_pb(n.used), Amounts::from_pb(n.allotted));
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
                node_state(n),
            ]);
        }
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_giving_back_budget_says_how_much() {
        let mut n = pb::NodeUsage::default();
        assert_eq!(node_state(&n), "live");
        n.reclaim = Some(pb::Amounts {
            qp: 2,
            mr: 0,
            mr_bytes: 0,
        });
        n.lease_expired = true;
        assert_eq!(node_state(&n), "lease expired, giving back 2 qp");
    }
}
