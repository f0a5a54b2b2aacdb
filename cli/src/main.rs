//! `rdmaq`: the admin command line of rdmaq (quotas, usage, nodes, cluster membership).
#![forbid(unsafe_code)]

mod client;
mod cmd;
mod output;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::{client::Endpoints, output::Format};

/// Admin command line of rdmaq, the cluster-wide RDMA resource quota system.
#[derive(Debug, Parser)]
#[command(name = "rdmaq", version)]
struct Cli {
    /// Coordinator members (host:port), comma separated; the next is tried on failure.
    #[arg(
        long,
        env = "RDMAQ_ENDPOINTS",
        value_delimiter = ',',
        global = true,
        default_value = "127.0.0.1:7100"
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Format,
    /// Give up on a member after this many seconds.
    #[arg(long, default_value = "10", global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set, get, list or delete tenant quotas.
    #[command(subcommand)]
    Quota(cmd::quota::QuotaCmd),
    /// Use against caps, per tenant and per node.
    Usage {
        /// One tenant (default: all).
        tenant: Option<String>,
    },
    /// List or remove agent nodes.
    #[command(subcommand)]
    Nodes(cmd::nodes::NodesCmd),
    /// Coordinator cluster status and membership.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// The local agent: `rdmaq node status`.
    #[command(subcommand)]
    Node(cmd::node::NodeCmd),
    /// Run a program under the intercept library as a tenant.
    Exec(cmd::exec::ExecArgs),
}

pub struct Ctx {
    pub endpoints: Endpoints,
    pub format: Format,
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Exec(args) => return cmd::exec::run(args),
        Command::Node(c) => return cmd::node::run(cli.output, c),
        _ => {}
    }
    let ctx = Ctx {
        endpoints: Endpoints::new(cli.endpoints, Duration::from_secs(cli.timeout))?,
        format: cli.output,
    };
    match cli.command {
        Command::Quota(c) => cmd::quota::run(&ctx, c).await,
        Command::Usage { tenant } => cmd::usage::run(&ctx, tenant).await,
        Command::Nodes(c) => cmd::nodes::run(&ctx, c).await,
        Command::Cluster(c) => cmd::cluster::run(&ctx, c).await,
        Command::Exec(_) | Command::Node(_) => unreachable!("handled above"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rdmaq: {e}");
            ExitCode::FAILURE
        }
    }
}
