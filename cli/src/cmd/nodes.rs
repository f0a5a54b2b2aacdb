//! `rdmaq nodes list|remove`.

use clap::Subcommand;
use rdmaq_proto::v1 as pb;

use crate::{
    Ctx,
    output::{Format, Table, clock, json},
};

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// List registered agent nodes.
    List,
    /// Remove a node: its allotments, used or not, return to their tenants.
    Remove { node: String },
}

pub async fn run(ctx: &Ctx, cmd: NodesCmd) -> anyhow::Result<String> {
    match cmd {
        NodesCmd::List => {
            let r = ctx
                .endpoints
                .admin(|mut c| async move { c.list_nodes(pb::ListNodesRequest {}).await })
                .await?;
            if ctx.format == Format::Json {
                return Ok(json(&r.nodes));
            }
            let mut t = Table::new(&["NODE", "ADDRESS", "LAST-SEEN", "LEASE"]);
            for n in &r.nodes {
                t.row(vec![
                    n.node.clone(),
                    n.address.clone(),
                    clock(n.last_heartbeat_unix_ms),
                    if n.lease_expired { "expired" } else { "live" }.into(),
                ]);
            }
            Ok(t.render())
        }
        NodesCmd::Remove { node } => {
            ctx.endpoints
                .admin(|mut c| {
                    let node = node.clone();
                    async move { c.remove_node(pb::RemoveNodeRequest { node }).await }
                })
                .await?;
            Ok(match ctx.format {
                Format::Json => json(&serde_json::json!({ "removed": node })),
                Format::Table => format!("node {node} removed"),
            })
        }
    }
}
