//! `rdmaq`: the admin command line (quotas, usage, nodes, cluster membership, exec).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Admin command line of rdmaq, the cluster-wide RDMA resource quota system.
#[derive(Debug, Parser)]
#[command(name = "rdmaq", version)]
struct Cli {
    /// Coordinator members to talk to, comma separated; the next is tried on failure.
    #[arg(long, env = "RDMAQ_ENDPOINTS", value_delimiter = ',', global = true)]
    endpoints: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set, get, list or delete tenant quotas.
    Quota,
    /// Show use against caps, per tenant and per node.
    Usage,
    /// List or remove agent nodes.
    Nodes,
    /// Coordinator cluster status and membership.
    Cluster,
    /// Run a program under the intercept library as a tenant.
    Exec,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!("`rdmaq {:?}` is not implemented yet", cli.command)
}
