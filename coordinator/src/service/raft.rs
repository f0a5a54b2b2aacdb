//! The member-to-member service: openraft's RPCs and what followers forward to the leader.

use std::sync::Arc;

use rdmaq_proto::raft::{RaftPayload, raft_server::Raft as RaftRpc};
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::authz;
use crate::{
    cluster::{Cluster, Forwarded},
    codec::{self, Encoding},
};

pub struct RaftService {
    pub cluster: Arc<Cluster>,
}

/// The request's payload, and the encoding to answer in (the one it came in).
fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<(T, Encoding), Status> {
    let data = req.into_inner().data;
    Ok((codec::decode(&data)?, Encoding::of(&data)))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        authz::member(&self.cluster, &req, "Raft/AppendEntries")?;
        let (req, encoding) = decode(req)?;
        encoding.reply(&self.cluster.raft.append_entries(req).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        authz::member(&self.cluster, &req, "Raft/Vote")?;
        let (req, encoding) = decode(req)?;
        encoding.reply(&self.cluster.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        authz::member(&self.cluster, &req, "Raft/InstallSnapshot")?;
        let (req, encoding) = decode(req)?;
        encoding.reply(&self.cluster.raft.install_snapshot(req).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let via = authz::member(&self.cluster, &req, "Raft/Forward")?;
        let (what, encoding): (Forwarded, _) = decode(req)?;
        encoding.reply(&self.cluster.serve_forwarded(what, &via.subject).await)
    }
}
