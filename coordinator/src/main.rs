//! rdmaq-coordinator: the Raft-replicated source of truth for tenant quotas and node
//! allotments.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Raft-replicated quota and allotment service of rdmaq.
#[derive(Debug, Parser)]
#[command(name = "rdmaq-coordinator", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "RDMAQ_COORDINATOR_CONFIG")]
    config: Option<PathBuf>,
    /// One-member cluster with its data in `--data-dir`, plain text, ready at once.
    #[arg(long)]
    dev: bool,
    /// This member's Raft id.
    #[arg(long, env = "RDMAQ_NODE_ID")]
    id: Option<u64>,
    /// Address the gRPC services listen on.
    #[arg(long, env = "RDMAQ_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the durable log, vote and snapshots.
    #[arg(long, env = "RDMAQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log output format.
    #[arg(long, value_enum, default_value = "text", env = "RDMAQ_LOG_FORMAT")]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let subscriber = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    match args.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    tracing::info!(?args, "rdmaq-coordinator starting");
    anyhow::bail!("the coordinator service is not implemented yet (issue 3)")
}
