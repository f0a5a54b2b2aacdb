//! rdmaq-agent, one RDMA node's enforcement point, as a library: the binary (`main.rs`)
//! wires these together, and tests drive the real ledger, server and allotment loop.
//!
//! The path of one admission: [`server`] reads the library's request and resolves the
//! process's tenant ([`tenant`], from the pod for Kubernetes: [`pod`]); [`node::Agent::admit`] asks the [`ledger`], which decides
//! from the node's budget; when the node's allotment is short, [`coordinator`] acquires
//! more first. [`leases`] keeps allotments renewed and gives surplus back; [`monitor`]
//! (eBPF) keeps the [`kernel`] view that [`reconcile`] checks the ledger against.

#![deny(unsafe_code)]

pub mod btf;
pub mod config;
pub mod conn_limits;
pub mod coordinator;
mod error;
pub mod kernel;
pub mod leases;
pub mod ledger;
pub mod metrics;
pub mod mode_file;
pub mod monitor;
pub mod node;
pub mod pod;
pub mod reconcile;
pub mod server;
pub mod status;
pub mod tenant;

pub use error::Error;
