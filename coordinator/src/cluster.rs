//! One member's view of the cluster: proposes writes (forwarding them to the leader when
//! this member is a follower), serves linearizable reads (through the leader's read index
//! on followers), and changes membership.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use openraft::{
    BasicNode, ChangeMembers,
    error::{CheckIsLeaderError, ClientWriteError, RaftError},
};
use rdmaq_common::tls::Tls;

pub use crate::forward::{ForwardReply, Forwarded, MemberView};
use crate::{
    Error,
    batch::{Batcher, Writer},
    forward::{Forwarder, unexpected},
    lease_clock::LeaseClock,
    metrics::Denials,
    raft::{NodeId, Raft, store::SharedState, with_quorum},
    stages::Stages,
    state::{Command, LeasePolicy, State},
};

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
    /// Calls refused by the role checks.
    pub denials: Arc<Denials>,
    /// The proposal path (every write): gathers concurrent proposals into one log entry.
    pub batcher: Batcher,
    /// Where writes spend their time on this member.
    pub stages: Stages,
    forwarder: Arc<Forwarder>,
}

/// A member's timing: the lease policy it stamps into entries, how long a write or read
/// waits for a quorum, and its wall clock's offset (test-only).
pub struct Timing {
    pub policy: LeasePolicy,
    pub quorum_timeout: Duration,
    pub wall_offset_ms: i64,
}

impl Cluster {
    pub fn new(
        id: NodeId,
        raft: Raft,
        applied: SharedState,
        timing: Timing,
        tls: Option<Arc<Tls>>,
        stages: Stages,
    ) -> Cluster {
        let Timing {
            policy,
            quorum_timeout,
            wall_offset_ms,
        } = timing;
        let forwarder = Arc::new(Forwarder::new(tls.clone()));
        let batcher = Batcher::start(Writer {
            raft: raft.clone(),
            applied: applied.clone(),
            clock: std::sync::Mutex::new(LeaseClock::new(wall_offset_ms)),
            policy,
            quorum_timeout,
            forwarder: forwarder.clone(),
            stages: stages.clone(),
        });
        Cluster {
            id,
            raft,
            applied,
            policy,
            quorum_timeout,
            insecure: tls.is_none(),
            denials: Arc::default(),
            batcher,
            stages,
            forwarder,
        }
    }

    /// The connections to the other members this member forwards requests over.
    pub fn forwarder(&self) -> Arc<Forwarder> {
        self.forwarder.clone()
    }

    /// Runs `f` on state that reflects every write committed before this call.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, Error> {
        match with_quorum(self.quorum_timeout, "read", self.raft.ensure_linearizable()).await? {
            Ok(_) => {
                self.apply_own_log().await?;
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => {
                let index = match self.forwarder.forward(&fwd, Forwarded::ReadIndex).await? {
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

    /// On the leader, once its leadership is confirmed: waits until it has applied every
    /// entry its log holds now. Every acknowledged write is in the leader's log, so a read
    /// after this sees it. openraft's own read index is the larger of the leader's blank
    /// entry and the committed index, which is not enough: a leader restored after a
    /// restart keeps its term without a new blank entry, and the committed index it read
    /// back may be older than what it acknowledged (it is stored without an fsync of its
    /// own, `LogStore::save_committed`).
    async fn apply_own_log(&self) -> Result<(), Error> {
        let last = self.raft.metrics().borrow().last_log_index;
        self.raft
            .wait(Some(self.quorum_timeout))
            .applied_index_at_least(last, "linearizable read")
            .await
            .map_err(|e| Error::Raft(format!("applying the leader's log: {e}")))?;
        Ok(())
    }

    /// The leader's side of a follower's read: its applied index once leadership is
    /// confirmed.
    pub async fn read_index(&self) -> Result<u64, Error> {
        match with_quorum(
            self.quorum_timeout,
            "read index",
            self.raft.ensure_linearizable(),
        )
        .await?
        {
            Ok(_) => {
                self.apply_own_log().await?;
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                return Err(Error::NoLeader);
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
        let applied = self.applied.read().expect("state lock");
        Ok(applied.last_applied.map_or(0, |l| l.index))
    }

    /// Nodes registered in the state this member has applied.
    pub fn registered_nodes(&self) -> usize {
        self.applied.read().expect("state lock").state.nodes.len()
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
                return match self.forwarder.forward(&f, fwd).await? {
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
        self.batcher
            .propose(
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
                    .forwarder
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
        self.batcher
            .propose(
                actor,
                Command::AuditMembership {
                    action: format!("member remove {id}"),
                },
            )
            .await?;
        Ok(self.members())
    }

    /// Serves a follower's forwarded request (on the leader).
    pub async fn serve_forwarded(&self, what: Forwarded, via: &str) -> ForwardReply {
        // Who the forwarding member says asked is its word only: the audit trail says which
        // verified member relayed it.
        let relayed = |actor: &str| format!("{actor} (relayed by {via})");
        let result = match what {
            Forwarded::Propose(mut proposals) => {
                for p in &mut proposals {
                    p.actor = relayed(&p.actor);
                }
                if self.raft.current_leader().await == Some(self.id) {
                    // Joins this leader's next batch (which stamps the leader's own clock).
                    self.batcher
                        .propose_many(proposals)
                        .await
                        .map(ForwardReply::Replies)
                } else {
                    // Not the leader as far as this member knew: write here if it has
                    // become one.
                    self.batcher
                        .writer()
                        .write_here(proposals)
                        .await
                        .map(ForwardReply::Replies)
                }
            }
            Forwarded::AddMember {
                id,
                addr,
                voter,
                actor,
            } => self
                .add_member(id, &addr, voter, &relayed(&actor))
                .await
                .map(ForwardReply::Members),
            Forwarded::RemoveMember { id, actor } => self
                .remove_member(id, &relayed(&actor))
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
