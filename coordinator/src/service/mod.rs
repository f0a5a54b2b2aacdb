//! The gRPC services every member serves: admin, agent, and member-to-member Raft.

pub mod admin;
pub mod agent_api;
pub mod authz;
pub mod raft;

use rdmaq_proto::v1 as pb;

use crate::{
    Error,
    state::{QuotaRecord, Reply},
};

/// Turns a state-machine reply that is an error into one.
pub fn ok_reply(reply: Reply) -> Result<Reply, Error> {
    match reply {
        Reply::Error(e) => Err(Error::Rejected(e)),
        other => Ok(other),
    }
}

/// A tenant's quota through a linearizable read (admin and agent services alike).
pub async fn get_quota(
    cluster: &crate::cluster::Cluster,
    tenant: String,
) -> Result<tonic::Response<rdmaq_proto::v1::Quota>, tonic::Status> {
    crate::state::validate::name("tenant", &tenant).map_err(Error::Rejected)?;
    let quota = cluster
        .read(|s| s.quotas.get(tenant.as_str()).cloned())
        .await?;
    let quota = quota.ok_or_else(|| {
        tonic::Status::not_found(format!("no quota is set for tenant {tenant:?}"))
    })?;
    Ok(tonic::Response::new(quota_to_pb(&tenant, &quota)))
}

pub fn unexpected(reply: Reply) -> tonic::Status {
    tonic::Status::internal(format!("unexpected state machine reply {reply:?}"))
}

/// A stored quota as the wire message.
pub fn quota_to_pb(tenant: &str, q: &QuotaRecord) -> pb::Quota {
    pb::Quota {
        tenant: tenant.to_string(),
        limits: Some((&q.limits).into()),
        version: q.version,
    }
}
