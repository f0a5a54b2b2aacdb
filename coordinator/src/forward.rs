//! Asking the leader: what a follower hands over (client writes, membership changes, the
//! read index for a linearizable read), sent over the members' Raft service on one reused
//! connection per member.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use openraft::{BasicNode, error::ForwardToLeader};
use rdmaq_common::tls::Tls;
use rdmaq_proto::raft::{RaftPayload, raft_client::RaftClient};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::transport::Channel;

use crate::{
    Error,
    codec::{self, Encoding},
    raft::{NodeId, network::raft_client},
    state::{Proposal, Reply},
};

/// What a follower asks the leader to do for it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Propose(Vec<Proposal>),
    AddMember {
        id: NodeId,
        addr: String,
        voter: bool,
        actor: String,
    },
    RemoveMember {
        id: NodeId,
        actor: String,
    },
    ReadIndex,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Replies(Vec<Reply>),
    Members(Vec<MemberView>),
    ReadIndex(u64),
    /// The leader failed the request; `not_leader` asks the follower to retry elsewhere.
    Failed {
        message: String,
        not_leader: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// The connections to the other members, for forwarding.
pub struct Forwarder {
    /// This member's TLS material (None when insecure), also used to dial the others.
    tls: Option<Arc<Tls>>,
    /// Clients to the other members, by address (one connection each).
    peers: Mutex<HashMap<String, Peer>>,
    /// Requests forwarded so far (a metric: agents that find the leader keep it still).
    pub forwarded: AtomicU64,
}

/// One member to forward to.
#[derive(Clone)]
struct Peer {
    client: RaftClient<Channel>,
    /// Whether it has said it reads binary payloads (`codec`); until then it gets JSON.
    binary: Arc<AtomicBool>,
}

impl Peer {
    fn encoding(&self) -> Encoding {
        if self.binary.load(Ordering::Relaxed) {
            Encoding::Binary
        } else {
            Encoding::Json
        }
    }
}

impl Forwarder {
    pub fn new(tls: Option<Arc<Tls>>) -> Forwarder {
        Forwarder {
            tls,
            peers: Mutex::default(),
            forwarded: AtomicU64::new(0),
        }
    }

    pub async fn forward(
        &self,
        to: &ForwardToLeader<NodeId, BasicNode>,
        what: Forwarded,
    ) -> Result<ForwardReply, Error> {
        let (Some(leader), Some(node)) = (to.leader_id, to.leader_node.as_ref()) else {
            return Err(Error::NoLeader);
        };
        let failed = |detail: String| Error::ForwardFailed {
            leader,
            addr: node.addr.clone(),
            detail,
        };
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut peer = self.peer(&node.addr).map_err(|e| failed(e.to_string()))?;
        let sent = peer.encoding();
        let data = sent.encode(&what).map_err(|e| failed(e.to_string()))?;
        let mut req = tonic::Request::new(RaftPayload { data });
        req.set_timeout(Duration::from_secs(10));
        let reply = peer.client.forward(req).await;
        let next = sent.after(&reply);
        if next != sent {
            peer.binary
                .store(next == Encoding::Binary, Ordering::Relaxed);
        }
        let reply = reply.map_err(|s| failed(s.message().to_string()))?;
        let reply: ForwardReply =
            codec::decode(&reply.into_inner().data).map_err(|e| failed(e.to_string()))?;
        match reply {
            ForwardReply::Failed {
                not_leader: true, ..
            } => Err(Error::NoLeader),
            ForwardReply::Failed { message, .. } => Err(failed(message)),
            ok => Ok(ok),
        }
    }

    /// The client to the member at `addr`, connected once and reused (a new TLS
    /// connection per forwarded request would cost a handshake each).
    fn peer(&self, addr: &str) -> Result<Peer, rdmaq_common::tls::TlsError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get(addr) {
            return Ok(p.clone());
        }
        let p = Peer {
            client: raft_client(addr, self.tls.clone())?,
            binary: Arc::default(),
        };
        peers.insert(addr.to_string(), p.clone());
        Ok(p)
    }
}

pub fn unexpected(reply: ForwardReply) -> Error {
    Error::Raft(format!("unexpected reply from the leader: {reply:?}"))
}
