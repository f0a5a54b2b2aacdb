//! librdmaq_intercept.so: admission of RDMA resources inside unmodified programs, loaded
//! with LD_PRELOAD (DESIGN.md, "Interception").
//!
//! Hygiene: nothing runs at load time (no constructor: the first interposed call sets
//! things up); no panic crosses the C boundary; fork-safe (the child starts with a fresh
//! ledger); thread-safe; never unloaded (an LD_PRELOAD library lives as long as the
//! process, and the fork/exit hooks it registers point into it).

mod admit;
mod agent;
pub mod config;
mod exports;
pub mod ffi;
mod global;
mod host;
mod log;
mod ops;
mod rate;
mod real;

/// The protocol version this library speaks to the agent.
pub const PROTOCOL_VERSION: u32 = rdmaq_proto::intercept::PROTOCOL_VERSION;
