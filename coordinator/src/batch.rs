//! The proposal path, all of it: concurrent proposals (agents' acquires, releases and
//! heartbeats, admin writes) are gathered into one Raft log entry (group commit), so that a
//! burst of N requests costs one append, one fsync and one replication round instead of N;
//! the entry is written on the leader, or forwarded to it from a follower. A few batches may
//! be in flight at once, so that the log stays busy while earlier batches commit.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use openraft::error::{ClientWriteError, RaftError};
use rdmaq_common::tls::Identity;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    Error,
    forward::{ForwardReply, Forwarded, Forwarder, unexpected},
    lease_clock::LeaseClock,
    raft::{Raft, store::SharedState, with_quorum},
    stages::{self, Stages},
    state::{Command, Credential, LeasePolicy, Proposal, Reply, Request},
};

/// Writes proposals to the log as one entry.
pub struct Writer {
    pub raft: Raft,
    /// What this member has applied (the lease clock's reading when a term begins).
    pub applied: SharedState,
    pub clock: std::sync::Mutex<LeaseClock>,
    pub policy: LeasePolicy,
    /// How long a write may wait for a quorum before it fails as unavailable.
    pub quorum_timeout: Duration,
    pub forwarder: Arc<Forwarder>,
    pub stages: Stages,
}

impl Writer {
    /// An entry of `proposals`, stamped by this member's lease clock (see lease_clock.rs).
    fn entry(&self, proposals: Vec<Proposal>) -> Request {
        let term = self.raft.metrics().borrow().current_term;
        let state_ms = self.applied.read().expect("state lock").state.now_ms;
        let stamp = self
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stamp(term, state_ms);
        Request {
            now_ms: stamp.now_ms,
            term,
            format: Request::FORMAT,
            wall_ms: stamp.wall_ms,
            policy: self.policy,
            proposals,
        }
    }

    /// Writes `proposals` as one log entry stamped with this member's lease clock; on a
    /// follower, the leader does it (and stamps its own).
    pub async fn write(&self, proposals: Vec<Proposal>) -> Result<Vec<Reply>, Error> {
        let start = Instant::now();
        let written = self.write_or_forward(proposals).await;
        stages::since(&self.stages.write, start);
        written
    }

    async fn write_or_forward(&self, proposals: Vec<Proposal>) -> Result<Vec<Reply>, Error> {
        let request = self.entry(proposals);
        match with_quorum(
            self.quorum_timeout,
            "write",
            self.raft.client_write(request.clone()),
        )
        .await?
        {
            Ok(resp) => Ok(resp.data.replies),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let start = Instant::now();
                let forwarded = self
                    .forwarder
                    .forward(&f, Forwarded::Propose(request.proposals))
                    .await;
                stages::since(&self.stages.forward, start);
                match forwarded? {
                    ForwardReply::Replies(r) => Ok(r),
                    other => Err(unexpected(other)),
                }
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Writes a follower's forwarded proposals here, stamped with this member's lease clock
    /// (the leader's: lease time comes from the leader only); `Error::NoLeader` if this
    /// member is not the leader (any more).
    pub async fn write_here(&self, proposals: Vec<Proposal>) -> Result<Vec<Reply>, Error> {
        let request = self.entry(proposals);
        match self.raft.client_write(request).await {
            Ok(resp) => Ok(resp.data.replies),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Error::NoLeader),
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }
}

/// Most proposals in one log entry (a few hundred bytes each)...
const MAX_BATCH: usize = 512;
/// ...and most bytes (`Proposal::size_bound`), so that an entry of large heartbeats stays
/// far below what one Raft message may carry (a proposal larger than this goes alone).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Batches proposed and not yet committed, at most.
const MAX_IN_FLIGHT: usize = 4;
/// Times the batcher yields before closing a batch.
const LINGER_YIELDS: usize = 4;
/// Proposals waiting for a batch, at most; more wait in their callers.
const QUEUE: usize = 8192;

/// A proposal, when it was submitted, and where its reply goes.
type Waiting = (Proposal, Instant, oneshot::Sender<Result<Reply, Error>>);

/// The proposing side: `Cluster::propose` sends here.
pub struct Batcher {
    tx: mpsc::Sender<Waiting>,
    writer: Arc<Writer>,
}

impl Batcher {
    /// Starts the batching task, which writes through `writer` (it stops when the batcher
    /// is dropped).
    pub fn start(writer: Writer) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Arc::new(writer);
        tokio::spawn(run(writer.clone(), rx));
        Batcher { tx, writer }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Proposes several (a follower's forwarded batch): they join the next batch here, so
    /// that the whole cluster's concurrent proposals share one entry.
    pub async fn propose_many(&self, proposals: Vec<Proposal>) -> Result<Vec<Reply>, Error> {
        let mut waiting = Vec::with_capacity(proposals.len());
        for p in proposals {
            let (tx, rx) = oneshot::channel();
            self.tx
                .send((p, Instant::now(), tx))
                .await
                .map_err(|_| Error::Raft("the proposal batcher has stopped".into()))?;
            waiting.push(rx);
        }
        let mut replies = Vec::with_capacity(waiting.len());
        for rx in waiting {
            replies.push(
                rx.await
                    .map_err(|_| Error::Raft("the proposal batcher dropped a request".into()))??,
            );
        }
        Ok(replies)
    }

    /// Proposes `command` recorded as by `actor` (the members' own records) and returns the
    /// state machine's reply to it, once committed and applied.
    pub async fn propose(&self, actor: &str, command: Command) -> Result<Reply, Error> {
        self.submit(Proposal {
            actor: actor.to_string(),
            command,
            caller: None,
        })
        .await
    }

    /// Proposes `command` for the verified caller `who`: audited under its certificate's
    /// subject, and refused when it applies if that certificate has been revoked by then.
    pub async fn propose_as(&self, who: &Identity, command: Command) -> Result<Reply, Error> {
        self.submit(Proposal {
            actor: who.subject.clone(),
            command,
            caller: Credential::of(who),
        })
        .await
    }

    async fn submit(&self, proposal: Proposal) -> Result<Reply, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((proposal, Instant::now(), tx))
            .await
            .map_err(|_| Error::Raft("the proposal batcher has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Raft("the proposal batcher dropped a request".into()))?
    }
}

async fn run(writer: Arc<Writer>, mut rx: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A proposal that did not fit the last batch: it starts the next.
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        // Wait for a slot first: whatever arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Let requests that are already being decoded on other tasks join: a few yields
        // cost microseconds, while every extra entry costs an fsync on each member.
        for _ in 0..LINGER_YIELDS {
            tokio::task::yield_now().await;
        }
        let mut bytes = first.0.size_bound();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(w) = rx.try_recv() else { break };
            let size = w.0.size_bound();
            if bytes + size > MAX_BATCH_BYTES {
                carried = Some(w);
                break;
            }
            bytes += size;
            batch.push(w);
        }
        let writer = writer.clone();
        tokio::spawn(async move {
            let mut proposals = Vec::with_capacity(batch.len());
            let mut waiting = Vec::with_capacity(batch.len());
            for (p, submitted, tx) in batch {
                stages::since(&writer.stages.queue, submitted);
                proposals.push(p);
                waiting.push(tx);
            }
            match writer.write(proposals).await {
                Ok(replies) if replies.len() == waiting.len() => {
                    for (tx, reply) in waiting.into_iter().zip(replies) {
                        let _ = tx.send(Ok(reply));
                    }
                }
                Ok(replies) => {
                    let e = format!("{} replies for {} proposals", replies.len(), waiting.len());
                    for tx in waiting {
                        let _ = tx.send(Err(Error::Raft(e.clone())));
                    }
                }
                Err(e) => {
                    for tx in waiting {
                        let _ = tx.send(Err(e.duplicate()));
                    }
                }
            }
            drop(slot);
        });
    }
}
