//! How members encode what they send each other (openraft's RPCs, forwarded proposals and
//! their replies) and what they keep in their log: postcard, a compact binary serde format,
//! behind a one-byte tag. Bytes without the tag are JSON, what earlier versions wrote and
//! sent: those are still read, so a log written by an earlier version replays and a member
//! of an earlier version can be talked to during a rolling upgrade (see `Encoding`).
//!
//! Why not JSON any more: at 10,000 agents every heartbeat crosses this encoding several
//! times on every member (forwarded, its reply returned, replicated twice, stored); JSON was
//! 13% of the members' CPU in session 12's profile (docs/benchmarks.md). Postcard writes no
//! field names and decodes without parsing text: an entry of 170 heartbeats is 2.5 times
//! smaller and decodes 3 times faster. Snapshots stay JSON (built off the write path, read
//! by members of every version, their format pinned by a test).

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// First byte of a binary payload: 0xC1 is no valid first byte of JSON text (nor of
/// MessagePack), so the tag cannot be mistaken for an earlier version's payload.
const BINARY_TAG: u8 = 0xC1;

/// Response header with which a member says it reads binary payloads (the value names the
/// format and its version), so that its peers switch to them.
pub const ACCEPTS_HEADER: &str = "rdmaq-codec";
pub const ACCEPTS_VALUE: &str = "postcard-1";

/// How a payload is (to be) encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Earlier versions' format: sent only to a peer that has not said it reads binary
    /// (`ACCEPTS_HEADER`), and answered in to a peer that sent it.
    Json,
    Binary,
}

impl Encoding {
    /// The encoding `bytes` were written in.
    pub fn of(bytes: &[u8]) -> Encoding {
        if bytes.first() == Some(&BINARY_TAG) {
            Encoding::Binary
        } else {
            Encoding::Json
        }
    }

    /// The encoding for the next request to a peer, after its answer to the last one:
    /// binary once it has said it reads it (`ACCEPTS_HEADER`), JSON again once it refused a
    /// payload as malformed (it was replaced by an earlier version).
    pub fn after<T>(self, reply: &Result<tonic::Response<T>, tonic::Status>) -> Encoding {
        match reply {
            Ok(r)
                if r.metadata()
                    .get(ACCEPTS_HEADER)
                    .is_some_and(|v| v == ACCEPTS_VALUE) =>
            {
                Encoding::Binary
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => Encoding::Json,
            _ => self,
        }
    }

    /// A reply to a peer's request: in the encoding the request came in (an earlier version
    /// reads only JSON), saying that this member reads binary.
    pub fn reply<T: Serialize>(
        self,
        v: &T,
    ) -> Result<tonic::Response<rdmaq_proto::raft::RaftPayload>, tonic::Status> {
        let data = self
            .encode(v)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut reply = tonic::Response::new(rdmaq_proto::raft::RaftPayload { data });
        reply.metadata_mut().insert(
            ACCEPTS_HEADER,
            tonic::metadata::MetadataValue::from_static(ACCEPTS_VALUE),
        );
        Ok(reply)
    }

    pub fn encode<T: Serialize>(self, v: &T) -> Result<Vec<u8>, Error> {
        match self {
            Encoding::Json => serde_json::to_vec(v).map_err(|e| malformed("JSON", e)),
            Encoding::Binary => {
                let out = vec![BINARY_TAG];
                postcard::to_extend(v, out).map_err(|e| malformed("binary", e))
            }
        }
    }
}

/// `v` in the binary encoding (what members write to their log and send to peers that read
/// it). Encoding rdmaq's and openraft's types does not fail: a failure is a bug.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    Encoding::Binary.encode(v)
}

/// Decodes either encoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match Encoding::of(bytes) {
        Encoding::Binary => postcard::from_bytes(&bytes[1..]).map_err(|e| malformed("binary", e)),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| malformed("JSON", e)),
    }
}

fn malformed(format: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        format,
        detail: e.to_string(),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
