//! rdmaq-coordinator: the Raft-replicated source of truth for tenant quotas and node
//! allotments. Configuration: TOML file (`--config`), then `RDMAQ_*` environment, then flags.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use rdmaq_common::logging::{self, LogFormat};
use rdmaq_coordinator::{Error, config::Config};

/// At 10,000 agents a fifth of a member's CPU was glibc's malloc and free (perf,
/// docs/benchmarks.md): every call allocates names, replies and payloads on many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Raft-replicated quota and allotment service of rdmaq.
#[derive(Debug, Parser)]
#[command(name = "rdmaq-coordinator", version)]
struct Args {
    /// TOML configuration file (see deploy/coordinator.toml).
    #[arg(long, env = "RDMAQ_COORDINATOR_CONFIG")]
    config: Option<PathBuf>,
    /// A one-member cluster on 127.0.0.1:7100 with its data in ./rdmaq-dev, ready at once.
    #[arg(long)]
    dev: bool,
    /// This member's Raft id (≥ 1).
    #[arg(long, env = "RDMAQ_MEMBER_ID")]
    id: Option<u64>,
    /// Address the gRPC services listen on.
    #[arg(long, env = "RDMAQ_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address peers and clients use for this member (default: --listen).
    #[arg(long, env = "RDMAQ_ADVERTISE")]
    advertise: Option<String>,
    /// Directory of the durable log, vote and snapshots.
    #[arg(long, env = "RDMAQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Initial members of a new cluster, `ID=HOST:PORT,...`.
    #[arg(long, env = "RDMAQ_INITIAL_MEMBERS", value_delimiter = ',')]
    initial_members: Vec<String>,
    /// How long an agent's allotments stay valid without a heartbeat.
    #[arg(long, env = "RDMAQ_LEASE_TTL_MS")]
    lease_ttl_ms: Option<u64>,
    /// How often agents heartbeat (at most half the lease).
    #[arg(long, env = "RDMAQ_AGENT_HEARTBEAT_INTERVAL_MS")]
    agent_heartbeat_interval_ms: Option<u64>,
    /// How long a node may stay silent before even its used budget is released.
    #[arg(long, env = "RDMAQ_NODE_DEAD_MS")]
    node_dead_ms: Option<u64>,
    /// Followers send agents to the leader only while fewer nodes than this are registered.
    #[arg(long, env = "RDMAQ_LEADER_HINT_MAX_NODES")]
    leader_hint_max_nodes: Option<u64>,
    /// How long a follower waits without a leader's heartbeat before it calls an election.
    #[arg(long, env = "RDMAQ_ELECTION_TIMEOUT_MS")]
    election_timeout_ms: Option<u64>,
    /// A snapshot every this many log entries.
    #[arg(long, env = "RDMAQ_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// gRPC connections open at once (agents, admins, members); more are closed at accept.
    #[arg(long, env = "RDMAQ_MAX_CONNECTIONS")]
    max_connections: Option<u64>,
    /// Prometheus /metrics listener.
    #[arg(long, env = "RDMAQ_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve /metrics over TLS to admin and viewer certificates only.
    #[arg(long, env = "RDMAQ_METRICS_TLS")]
    metrics_tls: bool,
    /// This member's certificate and the CA (or --insecure).
    #[command(flatten)]
    tls: rdmaq_common::tls::TlsArgs,
    /// Log output format.
    #[arg(long, value_enum, default_value = "text", env = "RDMAQ_LOG_FORMAT")]
    log_format: LogFormat,
    /// Test only: shift this member's wall clock by this many ms (leases never read it).
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    test_clock_offset_ms: i64,
}

fn config(args: &Args) -> Result<Config, Error> {
    let mut text = match &args.config {
        Some(path) => std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?,
        None => String::new(),
    };
    if args.dev {
        text.push_str(
            "\nid = 1\nlisten = \"127.0.0.1:7100\"\ndata_dir = \"rdmaq-dev\"\n\
             insecure = true\n[initial_members]\n1 = \"127.0.0.1:7100\"\n",
        );
    }
    // Keys the file lacks entirely get placeholders here so that flags can fill them; the
    // missing ones are reported by name below.
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
        key: "<file>".into(),
        reason: e.to_string(),
    })?;
    let mut set = |key: &str, v: toml::Value| {
        table.insert(key.to_string(), v);
    };
    if let Some(id) = args.id {
        set("id", toml::Value::Integer(id as i64));
    }
    if let Some(l) = args.listen {
        set("listen", toml::Value::String(l.to_string()));
    }
    if let Some(a) = &args.advertise {
        set("advertise", toml::Value::String(a.clone()));
    }
    if let Some(d) = &args.data_dir {
        set("data_dir", toml::Value::String(d.display().to_string()));
    }
    if let Some(m) = args.metrics_listen {
        set("metrics_listen", toml::Value::String(m.to_string()));
    }
    if args.metrics_tls {
        set("metrics_tls", toml::Value::Boolean(true));
    }
    if let Some(v) = args.lease_ttl_ms {
        set("lease_ttl_ms", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.agent_heartbeat_interval_ms {
        set(
            "agent_heartbeat_interval_ms",
            toml::Value::Integer(v as i64),
        );
    }
    if let Some(v) = args.node_dead_ms {
        set("node_dead_ms", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.max_connections {
        set("max_connections", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.leader_hint_max_nodes {
        set("leader_hint_max_nodes", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.election_timeout_ms {
        set("election_timeout_ms", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.snapshot_every {
        set("snapshot_every", toml::Value::Integer(v as i64));
    }
    if args.tls.insecure && !args.dev {
        set("insecure", toml::Value::Boolean(true));
    }
    if !args.initial_members.is_empty() {
        let mut members = BTreeMap::new();
        for m in &args.initial_members {
            let (id, addr) = m.split_once('=').ok_or_else(|| Error::Config {
                key: "initial_members".into(),
                reason: format!("{m:?} is not ID=HOST:PORT"),
            })?;
            members.insert(id.to_string(), toml::Value::String(addr.to_string()));
        }
        set(
            "initial_members",
            toml::Value::Table(members.into_iter().collect()),
        );
    }
    let tls_flags = [
        ("ca", &args.tls.tls_ca),
        ("cert", &args.tls.tls_cert),
        ("key", &args.tls.tls_key),
    ];
    if tls_flags.iter().any(|(_, v)| v.is_some()) {
        let mut tls = match table.remove("tls") {
            Some(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        for (key, value) in tls_flags {
            if let Some(path) = value {
                tls.insert(key.into(), toml::Value::String(path.display().to_string()));
            }
        }
        table.insert("tls".into(), toml::Value::Table(tls));
    }
    for key in ["id", "listen", "data_dir"] {
        if !table.contains_key(key) {
            return Err(Error::Config {
                key: key.into(),
                reason:
                    "missing: set it in the config file, the environment or a flag (or use --dev)"
                        .into(),
            });
        }
    }
    Config::from_toml(&toml::to_string(&table).expect("a table serializes"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format, "info,openraft=warn");
    let mut cfg = config(&args)?;
    cfg.test_clock_offset_ms = args.test_clock_offset_ms;
    if args.dev {
        tracing::warn!(
            "dev mode: one member, plain text, data in {}",
            cfg.data_dir.display()
        );
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    rdmaq_coordinator::server::run(cfg, shutdown)
        .await
        .context("rdmaq-coordinator")
}
