//! The agent service: node registration, acquire/release of allotments, heartbeats.

use std::{pin::Pin, sync::Arc};

use rdmaq_proto::v1::{self as pb, agent_server::Agent};
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use super::{authz, ok_reply, quota_to_pb, unexpected};
use crate::{
    Error,
    cluster::Cluster,
    stages,
    state::{AllotmentView, Amounts, Command, Reply, validate},
};

pub struct AgentService {
    pub cluster: Arc<Cluster>,
    pub heartbeat_interval_ms: u64,
    /// Agents are sent to the leader only while fewer nodes are registered (`Config`).
    pub leader_hint_max_nodes: usize,
}

impl AgentService {
    /// A write's response, marked as forwarded when this member is not the leader and the
    /// cluster is small enough that its agents should rather talk to the leader.
    fn answer<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        let leader = self.cluster.raft.metrics().borrow().current_leader;
        if leader != Some(self.cluster.id)
            && self.cluster.registered_nodes() < self.leader_hint_max_nodes
        {
            response.metadata_mut().insert(
                pb::FORWARDED_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        response
    }

    /// An Acquire, past its timing (`Stages::serve`).
    async fn acquire_here(
        &self,
        req: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let who = authz::agent_for(&self.cluster, &req, "Agent/Acquire", &req.get_ref().node)?;
        let req = req.into_inner();
        names(&req.node, Some(&req.tenant))?;
        let command = Command::Acquire {
            node: req.node,
            tenant: req.tenant,
            want: Amounts::from_pb(req.want),
            min: Amounts::from_pb(req.min),
        };
        match ok_reply(self.cluster.batcher.propose_as(&who, command).await?)? {
            Reply::Granted {
                granted,
                allotment,
                quota,
            } => Ok(self.answer(pb::AcquireResponse {
                granted: granted.to_pb(),
                quota: Some(quota_to_pb(&allotment.tenant, &quota)),
                allotment: Some(allotment_to_pb(&allotment)),
            })),
            other => Err(unexpected(other)),
        }
    }
}

fn names(node: &str, tenant: Option<&str>) -> Result<(), Status> {
    validate::name("node", node).map_err(Error::Rejected)?;
    if let Some(t) = tenant {
        validate::name("tenant", t).map_err(Error::Rejected)?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let who = authz::agent_for(&self.cluster, &req, "Agent/Register", &req.get_ref().node)?;
        let req = req.into_inner();
        names(&req.node, None)?;
        validate::address(&req.address).map_err(Error::Rejected)?;
        let reply = self
            .cluster
            .batcher
            .propose_as(
                &who,
                Command::RegisterNode {
                    node: req.node.clone(),
                    address: req.address,
                },
            )
            .await?;
        match ok_reply(reply)? {
            Reply::Registered { allotments, .. } => Ok(self.answer(pb::RegisterResponse {
                node: req.node,
                lease_ttl_ms: self.cluster.policy.lease_ttl_ms,
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                allotments: allotments.iter().map(allotment_to_pb).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn acquire(
        &self,
        req: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let start = std::time::Instant::now();
        let served = self.acquire_here(req).await;
        stages::since(&self.cluster.stages.serve, start);
        served
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let who = authz::agent_for(&self.cluster, &req, "Agent/Release", &req.get_ref().node)?;
        let req = req.into_inner();
        names(&req.node, Some(&req.tenant))?;
        let command = Command::Release {
            node: req.node,
            tenant: req.tenant,
            amounts: Amounts::from_pb(req.amounts),
        };
        match ok_reply(self.cluster.batcher.propose_as(&who, command).await?)? {
            Reply::Released { allotment } => Ok(self.answer(pb::ReleaseResponse {
                allotment: Some(allotment_to_pb(&allotment)),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let who = authz::agent_for(&self.cluster, &req, "Agent/Heartbeat", &req.get_ref().node)?;
        let req = req.into_inner();
        names(&req.node, None)?;
        // Each report on its own: an invalid one is refused by name, the others are taken.
        let mut used = Vec::with_capacity(req.reports.len().min(validate::MAX_REPORTS));
        let mut refused = Vec::new();
        for (i, r) in req.reports.into_iter().enumerate() {
            if i >= validate::MAX_REPORTS {
                refused.push(pb::TenantRefusal {
                    tenant: r.tenant.chars().take(rdmaq_model::MAX_NAME_LEN).collect(),
                    reason: format!(
                        "more than {} reports in one heartbeat",
                        validate::MAX_REPORTS
                    ),
                });
                continue;
            }
            match rdmaq_model::check_name(&r.tenant) {
                Ok(()) => used.push((r.tenant, Amounts::from_pb(r.used))),
                Err(reason) => refused.push(pb::TenantRefusal {
                    tenant: r.tenant.chars().take(rdmaq_model::MAX_NAME_LEN).collect(),
                    reason: format!("reports.tenant: {reason}"),
                }),
            }
        }
        let command = Command::Heartbeat {
            node: req.node,
            used,
        };
        match ok_reply(self.cluster.batcher.propose_as(&who, command).await?)? {
            Reply::HeartbeatAck {
                lease_expires_ms,
                allotments,
                unknown,
            } => {
                refused.extend(unknown.into_iter().map(|tenant| pb::TenantRefusal {
                    reason: format!(
                        "no quota is set for tenant {tenant:?}: its use is not counted until one is"
                    ),
                    tenant,
                }));
                if !refused.is_empty() {
                    tracing::info!(node = %who.name, refused = refused.len(), "heartbeat reports refused");
                }
                let quota_versions = allotments
                    .iter()
                    .map(|a| pb::QuotaVersion {
                        tenant: a.tenant.clone(),
                        version: a.quota_version,
                    })
                    .collect();
                Ok(self.answer(pb::HeartbeatResponse {
                    lease_expires_unix_ms: lease_expires_ms,
                    quota_versions,
                    allotments: allotments.iter().map(allotment_to_pb).collect(),
                    refused,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn get_quota(
        &self,
        req: Request<pb::TenantRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        authz::quota_reader(&self.cluster, &req, "Agent/GetQuota")?;
        super::get_quota(&self.cluster, req.into_inner().tenant).await
    }

    type WatchQuotasStream = Pin<Box<dyn Stream<Item = Result<pb::QuotaChange, Status>> + Send>>;

    async fn watch_quotas(
        &self,
        req: Request<pb::WatchQuotasRequest>,
    ) -> Result<Response<Self::WatchQuotasStream>, Status> {
        authz::agent_for(
            &self.cluster,
            &req,
            "Agent/WatchQuotas",
            &req.get_ref().node,
        )?;
        let changes = self
            .cluster
            .applied
            .read()
            .expect("state lock")
            .quota_changes
            .subscribe();
        // This member's applied state: a follower announces a change once it has applied
        // it, a few milliseconds after the leader. Quota versions come from the same
        // sequence, so the tenants changed since the last message are those above it.
        let cluster = self.cluster.clone();
        let mut last = 0;
        let stream = WatchStream::new(changes).map(move |seq| {
            let tenants = cluster
                .applied
                .read()
                .expect("state lock")
                .state
                .quotas
                .iter()
                .filter(|(_, q)| q.version > last)
                .map(|(t, _)| t.to_string())
                .collect();
            last = seq;
            Ok(pb::QuotaChange { seq, tenants })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn allotment_to_pb(v: &AllotmentView) -> pb::Allotment {
    pb::Allotment {
        tenant: v.tenant.clone(),
        allotted: v.allotment.allotted.to_pb(),
        used: v.allotment.used.to_pb(),
        reclaim: v.allotment.reclaim.to_pb(),
        lease_expires_unix_ms: v.lease_expires_ms,
        as_of: v.as_of,
        quota_version: v.quota_version,
    }
}
