//! One module per top-level subcommand.

pub mod cluster;
pub mod nodes;
pub mod quota;
pub mod usage;
