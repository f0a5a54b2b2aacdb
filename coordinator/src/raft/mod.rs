//! openraft wiring: the type configuration, durable storage in redb, and the gRPC network
//! between members.

pub mod network;
pub mod store;
#[cfg(test)]
mod store_suite;

use std::{io::Cursor, time::Duration};

use crate::state::{Request, Response};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// rdmaq's Raft types: log entries carry `Request`s, the state machine answers with
    /// `Response`s, members are addressed by their gRPC address.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Runs a Raft call that needs a quorum, failing as unavailable after `timeout` (so that a
/// member cut off from the others refuses instead of hanging).
pub async fn with_quorum<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, crate::Error> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| crate::Error::Timeout {
            what: what.to_string(),
            ms: timeout.as_millis() as u64,
        })
}
