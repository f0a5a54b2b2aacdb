//! Starts a member: opens storage, starts Raft, serves the gRPC services, bootstraps a new
//! cluster when it is the lowest initial member.

use std::{sync::Arc, time::Duration};

use rdmaq_common::tls::{self, Role, Tls};
use rdmaq_proto::{
    raft::raft_server::RaftServer,
    v1::{admin_server::AdminServer, agent_server::AgentServer},
};
use tokio::net::TcpListener;

use crate::{
    Error,
    cluster::Cluster,
    config::Config,
    raft::{
        Raft,
        network::{MAX_RAFT_MESSAGE, Network},
        store::{self, LogStore, StateMachineStore},
    },
    service::{admin::AdminService, agent_api::AgentService, raft::RaftService},
};

/// Largest admin/agent request; real ones are a few hundred bytes.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024 * 1024;

/// Requests in flight on one connection (Raft pipelines a few; agents and the CLI one).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

pub struct Member {
    pub cluster: Arc<Cluster>,
}

/// Starts the member and serves until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tls = match &cfg.tls {
        Some(files) => {
            let tls = Tls::load(files.clone()).map_err(|e| Error::Config {
                key: "tls".into(),
                reason: e.to_string(),
            })?;
            let me = tls.identity();
            if me.role != Role::Member {
                return Err(Error::Config {
                    key: "tls.cert".into(),
                    reason: format!(
                        "{} is a {me} certificate; a member needs role member",
                        files.cert.display()
                    ),
                });
            }
            tls::watch(tls.clone());
            Some(tls)
        }
        None => {
            tracing::warn!("insecure: plain-text gRPC, every caller is trusted as admin");
            None
        }
    };
    let db = store::open(&cfg.data_dir)?;
    let stages = crate::stages::Stages::default();
    let log = LogStore::new(db.clone(), stages.clone());
    let sm = StateMachineStore::new(db, stages.clone()).map_err(|e| Error::Raft(e.to_string()))?;
    let applied = sm.shared();
    let raft_config = openraft::Config {
        cluster_name: "rdmaq".into(),
        heartbeat_interval: cfg.raft_heartbeat_ms,
        election_timeout_min: cfg.election_timeout_ms,
        election_timeout_max: cfg.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
        max_in_snapshot_log_to_keep: cfg.snapshot_every / 10,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config {
        key: "raft".into(),
        reason: e.to_string(),
    })?;
    let raft = Raft::new(
        cfg.id,
        Arc::new(raft_config),
        Network { tls: tls.clone() },
        log,
        sm,
    )
    .await
    .map_err(|e| Error::Raft(e.to_string()))?;
    let timing = crate::cluster::Timing {
        policy: cfg.policy(),
        quorum_timeout: Duration::from_millis(cfg.quorum_timeout_ms),
        wall_offset_ms: cfg.test_clock_offset_ms,
    };
    let cluster = Arc::new(Cluster::new(
        cfg.id,
        raft,
        applied,
        timing,
        tls.clone(),
        stages,
    ));

    let listener = listen(cfg.listen).map_err(|source| Error::Io {
        path: cfg.listen.to_string().into(),
        source,
    })?;
    tracing::info!(id = cfg.id, listen = %cfg.listen, data_dir = %cfg.data_dir.display(), "member serving");

    if let Some(addr) = cfg.metrics_listen {
        let metrics_tls = if cfg.metrics_tls { tls.clone() } else { None };
        if metrics_tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "metrics in plain text on a non-loopback address: every tenant's caps and use are readable by anyone who can reach it (set metrics_tls = true)");
        }
        let sources = crate::metrics::Sources {
            id: cluster.id,
            raft: cluster.raft.clone(),
            applied: cluster.applied.clone(),
            denials: cluster.denials.clone(),
            forwarder: cluster.forwarder(),
            stages: cluster.stages.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(addr, sources, metrics_tls).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }

    let members = cfg.initial_members();
    if members.keys().next() == Some(&cfg.id) {
        let c = cluster.clone();
        tokio::spawn(async move {
            // Peers may still be starting; initialization needs them reachable only for
            // the first election, which openraft retries.
            if let Err(e) = c.bootstrap(&members).await {
                tracing::error!(error = %e, "bootstrap failed");
            }
        });
    }

    let admin = AdminServer::new(AdminService {
        cluster: cluster.clone(),
    })
    .max_decoding_message_size(MAX_CLIENT_MESSAGE);
    let agent = AgentServer::new(AgentService {
        cluster: cluster.clone(),
        heartbeat_interval_ms: cfg.agent_heartbeat_interval_ms,
        leader_hint_max_nodes: cfg.leader_hint_max_nodes,
    })
    .max_decoding_message_size(MAX_CLIENT_MESSAGE);
    let raft_svc = RaftServer::new(RaftService {
        cluster: cluster.clone(),
    })
    .max_decoding_message_size(MAX_RAFT_MESSAGE)
    .max_encoding_message_size(MAX_RAFT_MESSAGE);
    let limits = tls::Limits {
        max_connections: cfg.max_connections,
        max_handshakes: cfg.max_handshakes,
        max_handshakes_per_address: cfg.max_handshakes_per_address,
        handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
        // Peers' addresses: a flood from anywhere else never delays Raft.
        members: cfg
            .initial_members
            .values()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
            .collect(),
    };
    let incoming = tls::incoming(listener, tls, limits);
    let served = tonic::transport::Server::builder()
        // Per-connection bounds, so that one client cannot hog a member.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(admin)
        .add_service(agent)
        .add_service(raft_svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = cluster.raft.shutdown().await;
    served.map_err(|e| Error::Raft(format!("gRPC server: {e}")))
}

/// The members' listener, with a deeper accept queue than the usual 1,024 (the kernel caps
/// it at `net.core.somaxconn`, 4,096 by default): under a connection flood the members
/// refuse silent peers fast after accept, but a full queue drops every new connection —
/// agents', CLIs' and peers' too — before the listener sees it.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
