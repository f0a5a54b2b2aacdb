//! Test support for rdmaq: the soft-RoCE lab (real RDMA nodes in qemu VMs on a bridge inside
//! a network namespace) and its guest agent's protocol, and clusters of real coordinator
//! processes on loopback.
#![forbid(unsafe_code)]

pub mod bins;
pub mod cluster_lab;
pub mod coordinator;
pub mod host_agent;
pub mod http;
pub mod lab;
pub mod nemesis;
pub mod node_agent;
pub mod pki;
pub mod programs;
pub mod wire;

pub use lab::{CmdOutput, Kernel, Lab, LabError, LabSpec, Node, Pending};
