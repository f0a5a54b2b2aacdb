//! rdmaq-agent: one RDMA node's enforcement point. Admits the intercept library's requests
//! from the node's allotment (leased from the coordinator, or standalone caps), and reports
//! use. Configuration: TOML (`--config`, every key in deploy/agent.toml), then `RDMAQ_*`
//! environment, then flags.

#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use rdmaq_agent::{Error, config, coordinator, leases, monitor, node, reconcile, server, status};
use rdmaq_common::logging::{self, LogFormat};

/// Node agent of rdmaq: admits RDMA resources from the node's allotment.
#[derive(Debug, Parser)]
#[command(name = "rdmaq-agent", version)]
struct Args {
    /// TOML configuration file (see deploy/agent.toml).
    #[arg(long, env = "RDMAQ_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long, env = "RDMAQ_NODE")]
    node: Option<String>,
    /// Coordinator members, comma separated. None: standalone mode.
    #[arg(long, env = "RDMAQ_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Unix socket the intercept library connects to.
    #[arg(long, env = "RDMAQ_AGENT_SOCKET")]
    socket: Option<PathBuf>,
    /// HTTP listener for /metrics and /status.
    #[arg(long, env = "RDMAQ_STATUS_LISTEN")]
    status_listen: Option<SocketAddr>,
    /// The node's agent-mode marker, read by the intercept library.
    #[arg(long, env = "RDMAQ_AGENT_MODE_FILE")]
    mode_file: Option<PathBuf>,
    /// This node's agent certificate and the CA (or --insecure).
    #[command(flatten)]
    tls: rdmaq_common::tls::TlsArgs,
    /// Do not load the eBPF monitor (no kernel view, no backstop).
    #[arg(long)]
    no_ebpf: bool,
    /// Log output format.
    #[arg(long, value_enum, default_value = "text", env = "RDMAQ_LOG_FORMAT")]
    log_format: LogFormat,
}

fn load(args: &Args) -> Result<config::Config, Error> {
    let text = match &args.config {
        Some(p) => std::fs::read_to_string(p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?,
        None => String::new(),
    };
    let mut cfg = config::Config::from_toml(&text)?;
    if let Some(n) = &args.node {
        cfg.node = Some(n.clone());
    }
    if !args.endpoints.is_empty() {
        cfg.endpoints = args.endpoints.clone();
    }
    if let Some(s) = &args.socket {
        cfg.socket = s.clone();
    }
    if let Some(s) = args.status_listen {
        cfg.status_listen = Some(s);
    }
    if let Some(m) = &args.mode_file {
        cfg.mode_file = m.clone();
    }
    if args.tls.insecure {
        cfg.insecure = true;
    }
    let files = args.tls.files().map_err(|e| Error::Config {
        key: "tls".into(),
        reason: e.to_string(),
    })?;
    if files.is_some() {
        cfg.tls = files;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Loads the agent's certificate, which must be for this node, and watches it for rotation.
fn load_tls(
    files: &rdmaq_common::tls::TlsFiles,
    node: &str,
) -> Result<Arc<rdmaq_common::tls::Tls>, Error> {
    use rdmaq_common::tls::{self, Role, Tls};
    let tls = Tls::load(files.clone()).map_err(|e| Error::Config {
        key: "tls".into(),
        reason: e.to_string(),
    })?;
    let me = tls.identity();
    if me.role != Role::Agent || me.name != node {
        return Err(Error::Config {
            key: "tls.cert".into(),
            reason: format!(
                "{} is a {me} certificate; this agent needs role agent for node {node:?}",
                files.cert.display()
            ),
        });
    }
    tls::watch(tls.clone());
    Ok(tls)
}

/// Each connected program holds a descriptor: raise the soft limit to the hard one so that
/// `max_connections`, not the default 1024 descriptors, is what bounds them.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format, "info");
    let cfg = load(&args)?;
    raise_fd_limit();
    let node = cfg.node.clone().unwrap_or_else(hostname);
    let coordinator = if cfg.standalone() {
        None
    } else {
        let address = cfg.address.clone().unwrap_or_default();
        let tls = match &cfg.tls {
            Some(files) => Some(load_tls(files, &node)?),
            None => {
                tracing::warn!("insecure: plain-text gRPC to the coordinator");
                None
            }
        };
        Some(coordinator::Coordinator::new(
            &cfg.endpoints,
            &node,
            &address,
            tls,
        )?)
    };
    // From now on a program that finds the socket missing knows the agent is down, not
    // absent. Marked before the socket exists, so that no program can see the socket and
    // then, the agent gone, find it missing without the marker (a lab test killed an agent
    // between the two and its program ran standalone).
    if let Err(e) = rdmaq_agent::mode_file::mark(&cfg.mode_file, &cfg.socket) {
        tracing::warn!(file = %cfg.mode_file.display(), error = %e, "cannot write the agent-mode marker: programs starting while this agent is down would run standalone");
    }
    // systemd's socket (its unit sets path, owner and mode), or our own.
    let activated = server::activated()?;
    let socket_activated = activated.is_some();
    let listener = match activated {
        Some(l) => l,
        None => server::bind(
            &cfg.socket,
            cfg.socket_mode_bits(),
            cfg.socket_uid,
            cfg.socket_gid,
        )?,
    };
    tracing::info!(
        node,
        socket = %cfg.socket.display(),
        socket_activated,
        mode = if coordinator.is_some() { "coordinator" } else { "standalone" },
        "rdmaq-agent serving"
    );
    let status_listen = cfg.status_listen;
    let agent = Arc::new(node::Agent::new(cfg, node, coordinator));
    if let Some(addr) = status_listen {
        let a = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = status::serve(addr, a).await {
                tracing::error!(error = %e, "status listener failed");
            }
        });
    }
    if args.no_ebpf {
        // No kernel view to wait for: a restart's floor would never be lifted.
        agent
            .kernel_seen
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if !args.no_ebpf {
        // What the node holds already is charged before the first admission.
        reconcile::view_from_dump(&agent).await;
        let mut reconciler = reconcile::Reconciler::default();
        reconciler.pass(&agent).await;
        tokio::spawn(monitor::supervise(agent.clone()));
        tokio::spawn(reconciler.run(agent.clone()));
    }
    tokio::spawn(leases::run(agent.clone()));
    tokio::spawn(leases::watch_quotas(agent.clone()));
    let socket = agent.cfg.socket.clone();
    tokio::select! {
        _ = server::serve(listener, agent) => {}
        _ = shutdown() => tracing::info!("shutting down"),
    }
    if !socket_activated {
        let _ = std::fs::remove_file(&socket);
    }
    Ok::<(), anyhow::Error>(()).context("rdmaq-agent")
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
