//! Group commit: concurrent proposals (agents' acquires, releases and heartbeats, admin
//! writes) are gathered into one Raft log entry, so that a burst of N requests costs one
//! append, one fsync and one replication round instead of N. A few batches may be in flight
//! at once, so that the log stays busy while earlier batches commit.

use std::sync::{Arc, Weak};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    Error,
    cluster::Cluster,
    state::{Proposal, Reply},
};

/// Most proposals in one log entry (a few hundred bytes each).
const MAX_BATCH: usize = 512;
/// Batches proposed and not yet committed, at most.
const MAX_IN_FLIGHT: usize = 4;
/// Times the batcher yields before closing a batch.
const LINGER_YIELDS: usize = 4;
/// Proposals waiting for a batch, at most; more wait in their callers.
const QUEUE: usize = 8192;

type Waiting = (Proposal, oneshot::Sender<Result<Reply, Error>>);

/// The proposing side: `Cluster::propose` sends here.
pub struct Batcher {
    tx: mpsc::Sender<Waiting>,
}

impl Batcher {
    /// A batcher for the cluster that will be known through `cluster` (set once the
    /// cluster exists; the task stops when the cluster is dropped).
    pub fn start(cluster: Weak<Cluster>) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(cluster, rx));
        Batcher { tx }
    }

    /// Proposes several (a follower's forwarded batch): they join the next batch here, so
    /// that the whole cluster's concurrent proposals share one entry.
    pub async fn propose_many(&self, proposals: Vec<Proposal>) -> Result<Vec<Reply>, Error> {
        let mut waiting = Vec::with_capacity(proposals.len());
        for p in proposals {
            let (tx, rx) = oneshot::channel();
            self.tx
                .send((p, tx))
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

    pub async fn propose(&self, proposal: Proposal) -> Result<Reply, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((proposal, tx))
            .await
            .map_err(|_| Error::Raft("the proposal batcher has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Raft("the proposal batcher dropped a request".into()))?
    }
}

async fn run(cluster: Weak<Cluster>, mut rx: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a slot first: whatever arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Let requests that are already being decoded on other tasks join: a few yields
        // cost microseconds, while every extra entry costs an fsync on each member.
        for _ in 0..LINGER_YIELDS {
            tokio::task::yield_now().await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let (proposals, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match cluster.propose_all(proposals).await {
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
