//! One module per top-level subcommand.

pub mod audit;
pub mod certs;
pub mod cluster;
pub mod exec;
pub mod node;
pub mod nodes;
pub mod quota;
pub mod revoke;
pub mod usage;
