//! The agent's HTTP status listener: Prometheus `/metrics` and the JSON `/status`
//! (`rdmaq_proto::status::NodeStatus`, what `rdmaq node status` shows).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{Json, Router, http::header, response::IntoResponse, routing::get};
use rdmaq_common::tls::{HttpListener, Limits, Role};
use rdmaq_proto::status::{self, KernelTotals, NodeStatus, TenantStatus};

use crate::{
    Error, kernel,
    ledger::{BudgetFrom, Tenant},
    node::Agent,
};

fn tenant_status(name: &str, t: &Tenant, now: Instant) -> TenantStatus {
    TenantStatus {
        name: name.to_string(),
        budget_from: match t.budget_from {
            BudgetFrom::LocalCaps => status::BudgetFrom::LocalCaps,
            BudgetFrom::Lease => status::BudgetFrom::Lease,
        },
        limits: (&t.limits).into(),
        quota_version: t.quota_version,
        allotment: t.allotment.into(),
        owed: t.owed.into(),
        used: t.used.into(),
        unadmitted: t.unadmitted.into(),
        floor: t.floor.into(),
        admissions: t.admissions,
        denials: t.denials,
        lease_alive: t.lease_alive(now),
        lease_remaining_ms: t
            .lease_valid_until
            .map(|d| d.saturating_duration_since(now).as_millis() as u64),
    }
}

pub fn node_status(agent: &Agent) -> NodeStatus {
    let (processes, k) = kernel::totals(&agent.kernel.lock().expect("kernel view"));
    let ledger = agent.ledger();
    let now = Instant::now();
    let mut tenants: Vec<TenantStatus> = ledger
        .tenants
        .iter()
        .map(|(name, t)| tenant_status(name, t, now))
        .collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    NodeStatus {
        node: agent.node.clone(),
        mode: if agent.coordinator.is_some() {
            status::Mode::Coordinator
        } else {
            status::Mode::Standalone
        },
        connections: ledger.conns.len() as u64,
        tenants,
        kernel: KernelTotals {
            processes: processes as u64,
            qps: k.qps,
            mrs: k.mrs,
            mr_bytes: k.mr_bytes,
            pinned_bytes: k.pinned,
        },
    }
}

pub async fn serve(addr: SocketAddr, agent: Arc<Agent>) -> Result<(), Error> {
    let (a1, a2) = (agent.clone(), agent);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let agent = a1.clone();
                async move {
                    let (_, kernel) = kernel::totals(&agent.kernel.lock().expect("kernel view"));
                    let body = agent
                        .metrics
                        .render(&agent.ledger(), &kernel, Instant::now());
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/status",
            get(move || {
                let agent = a2.clone();
                async move { Json(node_status(&agent)) }
            }),
        );
    let io = |source| Error::Io {
        path: addr.to_string().into(),
        source,
    };
    // Bounded connections and handshakes, as on the coordinator (plain text: bind it to
    // loopback; the roles only apply with TLS).
    let listener = HttpListener::new(
        tokio::net::TcpListener::bind(addr).await.map_err(io)?,
        None,
        Limits::scrapers(),
        &[Role::Admin, Role::Viewer],
    )
    .map_err(io)?;
    tracing::info!(%addr, "status and metrics serving");
    axum::serve(listener, app).await.map_err(io)
}
