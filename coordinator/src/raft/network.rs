//! Raft traffic between members over gRPC: openraft's requests and responses travel inside
//! `RaftPayload` in the members' encoding (`codec`: binary once the peer has said it reads
//! it), on tonic channels that connect lazily and are reused.

use std::{sync::Arc, time::Duration};

use openraft::{
    BasicNode,
    error::{
        InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
        Unreachable,
    },
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use rdmaq_common::tls::{self, Tls, TlsError};
use rdmaq_proto::raft::{RaftPayload, raft_client::RaftClient};
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::Channel;

use super::{NodeId, TypeConfig};
use crate::codec::{self, Encoding};

/// Largest Raft message (a snapshot chunk or a batch of entries).
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;
/// Most bytes of entries sent in one AppendEntries: openraft counts entries, not bytes,
/// and must see each call answered within a heartbeat interval, so a follower far behind
/// gets the log in pieces it can take in that time (an entry larger than this goes alone).
pub const MAX_APPEND_BYTES: usize = 512 * 1024;

/// A lazily connecting client to the member at `addr` (host:port), over mTLS with this
/// member's certificate unless the cluster runs insecure.
pub fn raft_client(addr: &str, tls: Option<Arc<Tls>>) -> Result<RaftClient<Channel>, TlsError> {
    let channel = tls::connect_lazy(tls::endpoint(addr, Duration::from_millis(500))?, tls);
    Ok(RaftClient::new(channel)
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE))
}

#[derive(Clone, Default)]
pub struct Network {
    pub tls: Option<Arc<Tls>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            client: raft_client(&node.addr, self.tls.clone()).map_err(|e| e.to_string()),
            encoding: Encoding::Json,
        }
    }
}

pub struct Connection {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    /// What requests go out in: JSON (which every version reads) until the peer's first
    /// answer says it reads binary.
    encoding: Encoding,
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = self
            .encoding
            .encode(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(method, data, option).await
    }

    async fn send<Resp, E>(
        &mut self,
        method: Method,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )));
            }
        };
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        self.encoding = self.encoding.after(&reply);
        let payload = match reply {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Err(status) => return Err(RPCError::Network(NetworkError::new(&status))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let data = self
            .encoding
            .encode(&req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let Some(fewer) = fewer_entries(req.entries.len(), data.len()) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        self.send(Method::Append, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Method::Snapshot, &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Method::Vote, &req, &option).await
    }
}

/// How many entries to send instead, if `entries` entries encoded as `bytes` are too many.
fn fewer_entries(entries: usize, bytes: usize) -> Option<u64> {
    (entries > 1 && bytes > MAX_APPEND_BYTES)
        .then(|| (entries * MAX_APPEND_BYTES / bytes).clamp(1, entries - 1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_cut_down_by_bytes_to_at_least_one_entry() {
        assert_eq!(fewer_entries(300, MAX_APPEND_BYTES), None);
        assert_eq!(
            fewer_entries(1, 10 * MAX_APPEND_BYTES),
            None,
            "one entry goes alone"
        );
        assert_eq!(fewer_entries(300, 3 * MAX_APPEND_BYTES), Some(100));
        assert_eq!(fewer_entries(2, 100 * MAX_APPEND_BYTES), Some(1));
        assert_eq!(fewer_entries(10, MAX_APPEND_BYTES + 1), Some(9));
    }
}
