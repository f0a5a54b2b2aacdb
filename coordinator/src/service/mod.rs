//! The gRPC services every member serves: admin, agent, and member-to-member Raft.

pub mod admin;
pub mod agent;
pub mod convert;
pub mod raft;

use crate::{Error, state::Reply};

/// The actor recorded in the audit trail until certificates name callers.
pub const LOCAL_ACTOR: &str = "local";

/// Turns a state-machine reply that is an error into one.
pub fn ok_reply(reply: Reply) -> Result<Reply, Error> {
    match reply {
        Reply::Error(e) => Err(Error::Rejected(e)),
        other => Ok(other),
    }
}

pub fn unexpected(reply: Reply) -> tonic::Status {
    tonic::Status::internal(format!("unexpected state machine reply {reply:?}"))
}
