//! rdmaq-coordinator: the Raft-replicated source of truth for tenant quotas, registered
//! nodes and per-node allotments (DESIGN.md, "Budget model").
#![forbid(unsafe_code)]

mod batch;
pub mod cluster;
pub mod codec;
pub mod config;
mod error;
mod forward;
pub mod lease_clock;
pub mod metrics;
pub mod raft;
pub mod server;
pub mod service;
pub mod stages;
pub mod state;

pub use error::Error;
