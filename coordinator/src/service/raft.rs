//! The member-to-member service: openraft's RPCs and what followers forward to the leader.

use std::sync::Arc;

use rdmaq_proto::raft::{RaftPayload, raft_server::Raft as RaftRpc};
use serde::{Serialize, de::DeserializeOwned};
use tonic::{Request, Response, Status};

use super::authz;
use crate::cluster::{Cluster, Forwarded};

pub struct RaftService {
    pub cluster: Arc<Cluster>,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed raft payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let data = serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        authz::member(&self.cluster, &req, "Raft/AppendEntries")?;
        let r = self.cluster.raft.append_entries(decode(req)?).await;
        encode(&r)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        authz::member(&self.cluster, &req, "Raft/Vote")?;
        let r = self.cluster.raft.vote(decode(req)?).await;
        encode(&r)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        authz::member(&self.cluster, &req, "Raft/InstallSnapshot")?;
        let r = self.cluster.raft.install_snapshot(decode(req)?).await;
        encode(&r)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let via = authz::member(&self.cluster, &req, "Raft/Forward")?;
        let what: Forwarded = decode(req)?;
        encode(&self.cluster.serve_forwarded(what, &via.subject).await)
    }
}
