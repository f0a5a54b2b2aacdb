//! One member's view of the cluster: proposes writes (forwarding them to the leader when
//! this member is a follower), serves linearizable reads (through the leader's read index
//! on followers), and changes membership.

use std::{
    collections::HashMap,
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use openraft::{
    BasicNode, ChangeMembers,
    error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError},
};
use rdmaq_common::tls::Tls;
use rdmaq_proto::raft::{RaftPayload, raft_client::RaftClient};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::{
    Error,
    batch::Batcher,
    raft::{NodeId, Raft, network::raft_client, store::SharedState},
    service::authz::Denials,
    state::{Command, LeasePolicy, Proposal, Reply, Request, State},
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

pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    pub applied: SharedState,
    pub policy: LeasePolicy,
    /// How long a write or a read may wait for a quorum before it fails as unavailable
    /// (so a member cut off from the others refuses instead of hanging).
    pub quorum_timeout: Duration,
    /// Plain text, every caller trusted (`--insecure`, dev mode).
    pub insecure: bool,
    /// This member's TLS material (None when insecure), also used to dial the others.
    pub tls: Option<Arc<Tls>>,
    /// Calls refused by the role checks.
    pub denials: Denials,
    /// Gathers concurrent proposals into one log entry (set right after construction).
    pub batcher: OnceLock<Batcher>,
    /// Clients to the other members, by address, for forwarding (one connection each).
    pub peers: Mutex<HashMap<String, RaftClient<Channel>>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cluster {
    /// Proposes one command and returns the state machine's reply to it. Concurrent
    /// proposals share a log entry (see `batch.rs`).
    pub async fn propose(&self, actor: &str, command: Command) -> Result<Reply, Error> {
        let proposal = Proposal {
            actor: actor.to_string(),
            command,
        };
        match self.batcher.get() {
            Some(b) => b.propose(proposal).await,
            None => Ok(self
                .propose_all(vec![proposal])
                .await?
                .pop()
                .unwrap_or(Reply::Done)),
        }
    }

    /// Proposes commands as one log entry; on a follower, the leader does it.
    pub async fn propose_all(&self, proposals: Vec<Proposal>) -> Result<Vec<Reply>, Error> {
        let request = Request {
            now_ms: now_ms(),
            policy: self.policy,
            proposals,
        };
        match self
            .with_quorum("write", self.raft.client_write(request.clone()))
            .await?
        {
            Ok(resp) => Ok(resp.data.replies),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match self
                    .forward(&f, Forwarded::Propose(request.proposals))
                    .await?
                {
                    ForwardReply::Replies(r) => Ok(r),
                    other => Err(unexpected(other)),
                }
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Runs `f` on state that reflects every write committed before this call.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, Error> {
        match self
            .with_quorum("read", self.raft.ensure_linearizable())
            .await?
        {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => {
                let index = match self.forward(&fwd, Forwarded::ReadIndex).await? {
                    ForwardReply::ReadIndex(i) => i,
                    other => return Err(unexpected(other)),
                };
                self.raft
                    .wait(Some(self.quorum_timeout))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map_err(|e| Error::Raft(format!("catching up to the leader: {e}")))?;
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
        let applied = self.applied.read().expect("state lock");
        Ok(f(&applied.state))
    }

    /// The leader's side of a follower's read: its applied index once leadership is
    /// confirmed.
    pub async fn read_index(&self) -> Result<u64, Error> {
        match self
            .with_quorum("read index", self.raft.ensure_linearizable())
            .await?
        {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                return Err(Error::NoLeader);
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
        let applied = self.applied.read().expect("state lock");
        Ok(applied.last_applied.map_or(0, |l| l.index))
    }

    pub fn members(&self) -> Vec<MemberView> {
        let applied = self.applied.read().expect("state lock");
        let membership = applied.membership.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| MemberView {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    pub async fn add_member(
        &self,
        id: NodeId,
        addr: &str,
        voter: bool,
        actor: &str,
    ) -> Result<Vec<MemberView>, Error> {
        if id == 0 {
            return Err(Error::invalid("id", "member ids start at 1"));
        }
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::invalid(
                "address",
                format!("{addr:?} is not host:port"),
            ));
        }
        let result = self
            .raft
            .add_learner(
                id,
                BasicNode {
                    addr: addr.to_string(),
                },
                true,
            )
            .await;
        match result {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let fwd = Forwarded::AddMember {
                    id,
                    addr: addr.to_string(),
                    voter,
                    actor: actor.to_string(),
                };
                return match self.forward(&f, fwd).await? {
                    ForwardReply::Members(m) => Ok(m),
                    other => Err(unexpected(other)),
                };
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
        if voter {
            let ids: BTreeSet<NodeId> = [id].into();
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(ids), false)
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        }
        self.propose(
            actor,
            Command::AuditMembership {
                action: format!("member add {id} {addr} voter={voter}"),
            },
        )
        .await?;
        Ok(self.members())
    }

    pub async fn remove_member(&self, id: NodeId, actor: &str) -> Result<Vec<MemberView>, Error> {
        if !self.members().iter().any(|m| m.id == id) {
            return Err(Error::invalid("id", format!("{id} is not a member")));
        }
        let ids: BTreeSet<NodeId> = [id].into();
        let result = self
            .raft
            .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
            .await;
        match result {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                return match self
                    .forward(
                        &f,
                        Forwarded::RemoveMember {
                            id,
                            actor: actor.to_string(),
                        },
                    )
                    .await?
                {
                    ForwardReply::Members(m) => Ok(m),
                    other => Err(unexpected(other)),
                };
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
        // A removed voter is still a learner; drop it from the cluster altogether.
        let _ = self
            .raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await;
        self.propose(
            actor,
            Command::AuditMembership {
                action: format!("member remove {id}"),
            },
        )
        .await?;
        Ok(self.members())
    }

    async fn forward(
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
        let mut client = self.peer(&node.addr).map_err(|e| failed(e.to_string()))?;
        let data = serde_json::to_vec(&what).map_err(|e| failed(e.to_string()))?;
        let mut req = tonic::Request::new(RaftPayload { data });
        req.set_timeout(Duration::from_secs(10));
        let reply = client
            .forward(req)
            .await
            .map_err(|s| failed(s.message().to_string()))?;
        let reply: ForwardReply =
            serde_json::from_slice(&reply.into_inner().data).map_err(|e| failed(e.to_string()))?;
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
    fn peer(&self, addr: &str) -> Result<RaftClient<Channel>, rdmaq_common::tls::TlsError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let c = raft_client(addr, self.tls.clone())?;
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Serves a follower's forwarded request (on the leader).
    pub async fn serve_forwarded(&self, what: Forwarded) -> ForwardReply {
        let result = match what {
            Forwarded::Propose(proposals) if self.raft.current_leader().await == Some(self.id) => {
                // Joins this leader's next batch (which stamps the leader's own clock).
                match self.batcher.get() {
                    Some(b) => b.propose_many(proposals).await.map(ForwardReply::Replies),
                    None => self.propose_all(proposals).await.map(ForwardReply::Replies),
                }
            }
            Forwarded::Propose(proposals) => {
                // The leader stamps its own clock: expiry time comes from the leader only.
                let request = Request {
                    now_ms: now_ms(),
                    policy: self.policy,
                    proposals,
                };
                match self.raft.client_write(request).await {
                    Ok(resp) => Ok(ForwardReply::Replies(resp.data.replies)),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                        return ForwardReply::Failed {
                            message: "not the leader".into(),
                            not_leader: true,
                        };
                    }
                    Err(e) => Err(Error::Raft(e.to_string())),
                }
            }
            Forwarded::AddMember {
                id,
                addr,
                voter,
                actor,
            } => self
                .add_member(id, &addr, voter, &actor)
                .await
                .map(ForwardReply::Members),
            Forwarded::RemoveMember { id, actor } => self
                .remove_member(id, &actor)
                .await
                .map(ForwardReply::Members),
            Forwarded::ReadIndex => self.read_index().await.map(ForwardReply::ReadIndex),
        };
        result.unwrap_or_else(|e| ForwardReply::Failed {
            not_leader: matches!(e, Error::NoLeader),
            message: e.to_string(),
        })
    }

    /// Initializes a new cluster with `members` if this member's storage is fresh.
    pub async fn bootstrap(&self, members: &BTreeMap<NodeId, String>) -> Result<(), Error> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?
        {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| Error::Raft(e.to_string()))
    }
}

impl Cluster {
    async fn with_quorum<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.quorum_timeout, fut)
            .await
            .map_err(|_| Error::Timeout {
                what: what.to_string(),
                ms: self.quorum_timeout.as_millis() as u64,
            })
    }
}

fn unexpected(reply: ForwardReply) -> Error {
    Error::Raft(format!("unexpected reply from the leader: {reply:?}"))
}
