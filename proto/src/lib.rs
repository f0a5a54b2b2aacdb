//! rdmaq's wire types, all of them: the coordinator's gRPC services (`v1`, `raft`) and the
//! messages the intercept library exchanges with the node agent (`intercept`).
#![forbid(unsafe_code)]

pub mod frame;
#[cfg(feature = "grpc")]
mod serde_enum;
#[cfg(feature = "grpc")]
pub mod status;

/// Agent <-> intercept library messages (Unix socket, length-prefixed frames).
pub mod intercept {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/rdmaq.intercept.v1.rs"));

    /// Bumped when a message changes incompatibly.
    pub const PROTOCOL_VERSION: u32 = 1;
}

/// Admin and agent gRPC services of the coordinator.
#[cfg(feature = "grpc")]
pub mod v1 {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/rdmaq.v1.rs"));

    /// Response metadata a member adds to an agent's write it served without being the
    /// leader (it forwarded the write): the agent tries another member next time, so that
    /// it soon talks to the leader directly and saves the forwarding hop.
    pub const FORWARDED_HEADER: &str = "rdmaq-forwarded";
}

/// Member-to-member Raft transport.
#[cfg(feature = "grpc")]
pub mod raft {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/rdmaq.raft.v1.rs"));
}
