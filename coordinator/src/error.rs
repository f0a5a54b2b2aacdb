//! The coordinator library's errors, and how they reach gRPC clients.

use std::path::PathBuf;

use crate::state::ApplyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error("no leader is known yet (election in progress or this member is cut off)")]
    NoLeader,
    #[error("leader {leader} at {addr} could not be reached: {detail}")]
    ForwardFailed {
        leader: u64,
        addr: String,
        detail: String,
    },
    #[error("{what} did not complete within {ms} ms (no quorum reachable?)")]
    Timeout { what: String, ms: u64 },
    #[error("raft: {0}")]
    Raft(String),
    #[error("storage at {path}: {detail}")]
    Storage { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config key `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// A member's payload (an RPC or a log entry) that does not decode, or a value that does
    /// not encode.
    #[error("malformed {format} payload: {detail}")]
    Malformed {
        format: &'static str,
        detail: String,
    },
}

impl Error {
    /// The same error for another waiter of a failed batch (I/O errors become their text).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                field: field.clone(),
                reason: reason.clone(),
            },
            Error::Rejected(e) => Error::Rejected(e.clone()),
            Error::NoLeader => Error::NoLeader,
            Error::ForwardFailed {
                leader,
                addr,
                detail,
            } => Error::ForwardFailed {
                leader: *leader,
                addr: addr.clone(),
                detail: detail.clone(),
            },
            Error::Timeout { what, ms } => Error::Timeout {
                what: what.clone(),
                ms: *ms,
            },
            Error::Config { key, reason } => Error::Config {
                key: key.clone(),
                reason: reason.clone(),
            },
            other => Error::Raft(other.to_string()),
        }
    }

    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(msg),
            Error::Rejected(ApplyError::Invalid { .. }) => tonic::Status::invalid_argument(msg),
            Error::Rejected(ApplyError::Revoked(_)) => tonic::Status::permission_denied(msg),
            Error::Rejected(ApplyError::UnknownTenant(_) | ApplyError::UnknownNode(_)) => {
                tonic::Status::not_found(msg)
            }
            Error::Rejected(ApplyError::Insufficient { .. }) => {
                tonic::Status::resource_exhausted(msg)
            }
            Error::NoLeader | Error::ForwardFailed { .. } | Error::Timeout { .. } => {
                tonic::Status::unavailable(msg)
            }
            Error::Malformed { .. } => tonic::Status::invalid_argument(msg),
            Error::Raft(_) | Error::Storage { .. } | Error::Io { .. } | Error::Config { .. } => {
                tonic::Status::internal(msg)
            }
        }
    }
}
