//! `rdmaq cluster status|add-member|remove-member`.

use clap::Subcommand;
use rdmaq_proto::v1 as pb;

use crate::{
    Ctx,
    output::{Format, Table, json},
};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, log index and members, as seen by the first member that answers.
    Status,
    /// Add a member (as a learner, then a voter unless --learner).
    AddMember {
        id: u64,
        /// The new member's gRPC address, host:port.
        address: String,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    RemoveMember { id: u64 },
}

fn members_table(members: &[pb::Member]) -> String {
    let mut t = Table::new(&["ID", "ADDRESS", "ROLE"]);
    for m in members {
        t.row(vec![
            m.id.to_string(),
            m.address.clone(),
            if m.voter { "voter" } else { "learner" }.into(),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, cmd: ClusterCmd) -> anyhow::Result<String> {
    match cmd {
        ClusterCmd::Status => {
            let s = ctx
                .endpoints
                .admin(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await })
                .await?;
            if ctx.format == Format::Json {
                return Ok(json(&s));
            }
            let leader = s
                .leader_id
                .map_or_else(|| "none".to_string(), |l| l.to_string());
            Ok(format!(
                "member {} sees leader {leader}, term {}, last log index {}, applied {}\n{}",
                s.id,
                s.term,
                s.last_log_index,
                s.commit_index,
                members_table(&s.members)
            ))
        }
        ClusterCmd::AddMember {
            id,
            address,
            learner,
        } => {
            let req = pb::AddMemberRequest {
                id,
                address,
                voter: !learner,
            };
            let r = ctx
                .endpoints
                .admin(|mut c| {
                    let req = req.clone();
                    async move { c.add_member(req).await }
                })
                .await?;
            Ok(if ctx.format == Format::Json {
                json(&r.members)
            } else {
                members_table(&r.members)
            })
        }
        ClusterCmd::RemoveMember { id } => {
            let r = ctx
                .endpoints
                .admin(|mut c| async move { c.remove_member(pb::RemoveMemberRequest { id }).await })
                .await?;
            Ok(if ctx.format == Format::Json {
                json(&r.members)
            } else {
                members_table(&r.members)
            })
        }
    }
}
