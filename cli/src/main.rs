//! `rdmaq`: the admin command line of rdmaq (quotas, usage, nodes, cluster membership).
#![forbid(unsafe_code)]

mod client;
mod cmd;
mod output;

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::bail;
use clap::{Parser, Subcommand};
use rdmaq_common::tls::{Tls, TlsArgs};

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
    /// Your certificate (admin or viewer) and the CA (or --insecure).
    #[command(flatten)]
    tls: TlsArgs,
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
        /// Refresh the view until interrupted (Ctrl-C).
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value = "1", requires = "watch")]
        interval: f64,
        /// Stop after this many refreshes with --watch.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
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
    /// Who changed quotas, nodes and membership, and when.
    Audit {
        /// Only the newest N records (0: all kept).
        #[arg(long, default_value = "0")]
        limit: u32,
    },
    /// Create a CA and issue role certificates for mutual TLS; revoke them.
    #[command(subcommand)]
    Certs(cmd::certs::CertsCmd),
}

pub struct Ctx {
    pub endpoints: Endpoints,
    pub format: Format,
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Exec(args) => return cmd::exec::run(args),
        Command::Node(c) => return cmd::node::run(cli.output, c),
        Command::Certs(c) if c.is_local() => return cmd::certs::run(c),
        _ => {}
    }
    let tls = client_tls(&cli)?;
    let ctx = Ctx {
        endpoints: Endpoints::new(cli.endpoints, Duration::from_secs(cli.timeout), tls)?,
        format: cli.output,
    };
    match cli.command {
        Command::Quota(c) => cmd::quota::run(&ctx, c).await,
        Command::Usage {
            tenant,
            watch,
            interval,
            count,
        } => {
            let watch = watch.then(|| cmd::usage::Watch {
                interval: Duration::from_secs_f64(interval.max(0.1)),
                count,
            });
            cmd::usage::run(&ctx, tenant, watch).await
        }
        Command::Nodes(c) => cmd::nodes::run(&ctx, c).await,
        Command::Cluster(c) => cmd::cluster::run(&ctx, c).await,
        Command::Audit { limit } => cmd::audit::run(&ctx, limit).await,
        Command::Certs(c) => cmd::revoke::run(&ctx, c).await,
        Command::Exec(_) | Command::Node(_) => unreachable!("handled above"),
    }
}

/// The TLS material to dial the coordinator with: all three files, or an explicit
/// `--insecure`.
fn client_tls(cli: &Cli) -> anyhow::Result<Option<Arc<Tls>>> {
    match (cli.tls.files()?, cli.tls.insecure) {
        (None, true) => Ok(None),
        (Some(files), false) => Ok(Some(Tls::load(files)?)),
        (Some(_), true) => bail!("--insecure and --tls-* contradict each other; choose one"),
        (None, false) => bail!(
            "no client certificate: pass --tls-ca, --tls-cert and --tls-key (or RDMAQ_TLS_CA, \
             RDMAQ_TLS_CERT, RDMAQ_TLS_KEY), or --insecure for a plain-text coordinator"
        ),
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
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rdmaq: {e}");
            ExitCode::FAILURE
        }
    }
}
