//! The admin service: quotas, usage, nodes, cluster status and membership.

use std::sync::Arc;

use rdmaq_proto::v1::{self as pb, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::{authz, ok_reply, quota_to_pb, unexpected};
use crate::{
    Error,
    cluster::{Cluster, MemberView},
    state::{self, Command, Limits, Reply, validate},
};

pub struct AdminService {
    pub cluster: Arc<Cluster>,
}

fn tenant_arg(tenant: &str) -> Result<(), Status> {
    validate::name("tenant", tenant).map_err(|e| Error::Rejected(e).into())
}

fn members_to_pb(members: Vec<MemberView>) -> Vec<pb::Member> {
    members
        .into_iter()
        .map(|m| pb::Member {
            id: m.id,
            address: m.addr,
            voter: m.voter,
        })
        .collect()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        let who = authz::admin(&self.cluster, &req, "Admin/SetQuota")?;
        let req = req.into_inner();
        tenant_arg(&req.tenant)?;
        let limits = req
            .limits
            .as_ref()
            .ok_or_else(|| Error::invalid("limits", "missing"))?;
        rdmaq_model::qp_types_from_pb(&limits.qp_types)
            .map_err(|why| Error::invalid("limits.qp_types", why))?;
        let limits = Limits::from(limits);
        validate::limits(&limits).map_err(Error::Rejected)?;
        let reply = self
            .cluster
            .batcher
            .propose_as(
                &who,
                Command::SetQuota {
                    tenant: req.tenant,
                    limits,
                },
            )
            .await?;
        match ok_reply(reply)? {
            Reply::Quota { tenant, quota } => Ok(Response::new(quota_to_pb(&tenant, &quota))),
            other => Err(unexpected(other)),
        }
    }

    async fn get_quota(
        &self,
        req: Request<pb::TenantRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        authz::reader(&self.cluster, &req, "Admin/GetQuota")?;
        super::get_quota(&self.cluster, req.into_inner().tenant).await
    }

    async fn list_quotas(
        &self,
        req: Request<pb::ListQuotasRequest>,
    ) -> Result<Response<pb::ListQuotasResponse>, Status> {
        authz::reader(&self.cluster, &req, "Admin/ListQuotas")?;
        let quotas = self
            .cluster
            .read(|s| s.quotas.iter().map(|(t, q)| quota_to_pb(t, q)).collect())
            .await?;
        Ok(Response::new(pb::ListQuotasResponse { quotas }))
    }

    async fn delete_quota(
        &self,
        req: Request<pb::TenantRequest>,
    ) -> Result<Response<pb::DeleteQuotaResponse>, Status> {
        let who = authz::admin(&self.cluster, &req, "Admin/DeleteQuota")?;
        let tenant = req.into_inner().tenant;
        tenant_arg(&tenant)?;
        let reply = self
            .cluster
            .batcher
            .propose_as(&who, Command::DeleteQuota { tenant })
            .await?;
        ok_reply(reply)?;
        Ok(Response::new(pb::DeleteQuotaResponse {}))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        authz::reader(&self.cluster, &req, "Admin/Usage")?;
        let tenant = req.into_inner().tenant;
        if !tenant.is_empty() {
            tenant_arg(&tenant)?;
        }
        let tenants = self
            .cluster
            .read(|s| {
                if tenant.is_empty() {
                    let names: std::collections::BTreeSet<&crate::state::Name> =
                        s.quotas.keys().chain(s.allotments.keys()).collect();
                    Ok(names.into_iter().map(|t| tenant_usage(s, t)).collect())
                } else if s.quotas.contains_key(tenant.as_str())
                    || s.allotments.contains_key(tenant.as_str())
                {
                    Ok(vec![tenant_usage(s, &tenant)])
                } else {
                    Err(Status::not_found(format!(
                        "no quota is set for tenant {tenant:?}"
                    )))
                }
            })
            .await??;
        Ok(Response::new(pb::UsageResponse { tenants }))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        authz::reader(&self.cluster, &req, "Admin/ListNodes")?;
        let nodes = self
            .cluster
            .read(|s| {
                s.nodes
                    .iter()
                    .map(|(name, r)| pb::NodeInfo {
                        node: name.to_string(),
                        address: r.address.clone(),
                        registered_unix_ms: s.wall_of(r.registered_ms),
                        last_heartbeat_unix_ms: s.wall_of(r.last_seen_ms),
                        lease_expired: r.lease_expired || r.lease_expires_ms <= s.now_ms,
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let who = authz::admin(&self.cluster, &req, "Admin/RemoveNode")?;
        let node = req.into_inner().node;
        validate::name("node", &node).map_err(Error::Rejected)?;
        let reply = self
            .cluster
            .batcher
            .propose_as(&who, Command::RemoveNode { node })
            .await?;
        ok_reply(reply)?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        authz::reader(&self.cluster, &req, "Admin/ClusterStatus")?;
        let m = self.cluster.raft.metrics().borrow().clone();
        Ok(Response::new(pb::ClusterStatusResponse {
            id: self.cluster.id,
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.last_applied.map_or(0, |l| l.index),
            members: members_to_pb(self.cluster.members()),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
        }))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = authz::admin(&self.cluster, &req, "Admin/AddMember")?;
        let req = req.into_inner();
        let members = self
            .cluster
            .add_member(req.id, &req.address, req.voter, &who.subject)
            .await?;
        Ok(Response::new(pb::MembershipResponse {
            members: members_to_pb(members),
        }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = authz::admin(&self.cluster, &req, "Admin/RemoveMember")?;
        let id = req.into_inner().id;
        let members = self.cluster.remove_member(id, &who.subject).await?;
        Ok(Response::new(pb::MembershipResponse {
            members: members_to_pb(members),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        authz::reader(&self.cluster, &req, "Admin/ListAudit")?;
        let limit = req.into_inner().limit as usize;
        let records = self
            .cluster
            .read(|s| {
                let skip = match limit {
                    0 => 0,
                    n => s.audit.len().saturating_sub(n),
                };
                s.audit
                    .iter()
                    .skip(skip)
                    .map(|r| pb::AuditRecord {
                        unix_ms: r.at_ms,
                        actor: r.actor.clone(),
                        action: r.action.clone(),
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(pb::ListAuditResponse { records }))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::ListRevokedResponse>, Status> {
        let who = authz::admin(&self.cluster, &req, "Admin/Revoke")?;
        let req = req.into_inner();
        let what = match (req.serial.is_empty(), req.identity.is_empty()) {
            (false, true) => state::Revoked::Serial(req.serial),
            (true, false) => state::Revoked::Identity(req.identity),
            _ => {
                return Err(Status::invalid_argument(
                    "name exactly one of serial and identity",
                ));
            }
        };
        let what = what.checked().map_err(Error::Rejected)?;
        // Revoking one's own certificate would leave the caller locked out mid-command.
        let mut own = state::Revocations::default();
        own.add(&what, 0);
        if !req.lift && own.refuses(&who).is_some() {
            return Err(Status::failed_precondition(format!(
                "{what:?} covers your own certificate ({}); revoke it with another admin's",
                who.key()
            )));
        }
        let reply = self
            .cluster
            .batcher
            .propose_as(
                &who,
                if req.lift {
                    Command::Unrevoke { what }
                } else {
                    Command::Revoke { what }
                },
            )
            .await?;
        ok_reply(reply)?;
        let revocations = self.cluster.read(revocations_to_pb).await?;
        Ok(Response::new(pb::ListRevokedResponse { revocations }))
    }

    async fn list_revoked(
        &self,
        req: Request<pb::ListRevokedRequest>,
    ) -> Result<Response<pb::ListRevokedResponse>, Status> {
        authz::reader(&self.cluster, &req, "Admin/ListRevoked")?;
        let revocations = self.cluster.read(revocations_to_pb).await?;
        Ok(Response::new(pb::ListRevokedResponse { revocations }))
    }
}

fn revocations_to_pb(s: &state::State) -> Vec<pb::Revocation> {
    let r = &s.revocations;
    let serials = r.serials.iter().map(|(serial, at)| pb::Revocation {
        serial: serial.clone(),
        identity: String::new(),
        revoked_unix_ms: *at,
    });
    let identities = r.identities.iter().map(|(identity, at)| pb::Revocation {
        serial: String::new(),
        identity: identity.clone(),
        revoked_unix_ms: *at,
    });
    serials.chain(identities).collect()
}

/// Usage of one tenant, with its per-node breakdown.
fn tenant_usage(s: &state::State, tenant: &str) -> pb::TenantUsage {
    let per_node = s.allotments.get(tenant);
    let nodes = per_node
        .into_iter()
        .flat_map(|m| m.iter())
        .map(|(node, a)| {
            let rec = s.nodes.get(node);
            pb::NodeUsage {
                node: node.to_string(),
                allotted: a.allotted.to_pb(),
                used: a.used.to_pb(),
                reclaim: a.reclaim.to_pb(),
                lease_expires_unix_ms: rec.map_or(0, |r| s.wall_of(r.lease_expires_ms)),
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
