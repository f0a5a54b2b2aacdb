//! The agent's HTTP status listener: Prometheus `/metrics` and a JSON `/status` (what
//! `rdmaq node status` shows).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{Json, Router, http::header, response::IntoResponse, routing::get};
use serde::Serialize;

use crate::{Error, agent::Agent, budget::Tenant};

#[derive(Serialize)]
struct TenantStatus<'a> {
    name: &'a str,
    #[serde(flatten)]
    tenant: &'a Tenant,
    lease_alive: bool,
    lease_remaining_ms: Option<u64>,
}

#[derive(Serialize)]
struct Status<'a> {
    node: &'a str,
    mode: &'static str,
    connections: usize,
    tenants: Vec<TenantStatus<'a>>,
    /// The node's RDMA objects and pinned memory as the eBPF monitor sees them.
    kernel: KernelTotals,
}

#[derive(Serialize)]
struct KernelTotals {
    processes: usize,
    qps: u64,
    mrs: u64,
    mr_bytes: u64,
    pinned_bytes: u64,
}

/// The kernel view summed over processes, and how many processes it holds.
pub fn kernel_totals(agent: &Agent) -> (usize, rdmaq_ebpf_common::Counts) {
    let view = agent.kernel.lock().expect("kernel view");
    let sum = view
        .values()
        .fold(rdmaq_ebpf_common::Counts::default(), |a, c| {
            rdmaq_ebpf_common::Counts {
                qps: a.qps + c.qps,
                mrs: a.mrs + c.mrs,
                mr_bytes: a.mr_bytes + c.mr_bytes,
                pinned: a.pinned + c.pinned,
            }
        });
    (view.len(), sum)
}

fn status(agent: &Agent) -> serde_json::Value {
    let (processes, k) = kernel_totals(agent);
    let kernel = KernelTotals {
        processes,
        qps: k.qps,
        mrs: k.mrs,
        mr_bytes: k.mr_bytes,
        pinned_bytes: k.pinned,
    };
    let ledger = agent.ledger.lock().expect("ledger");
    let now = Instant::now();
    let mut tenants: Vec<TenantStatus<'_>> = ledger
        .tenants
        .iter()
        .map(|(name, t)| TenantStatus {
            name,
            tenant: t,
            lease_alive: t.lease_alive(now),
            lease_remaining_ms: t
                .lease_valid_until
                .map(|d| d.saturating_duration_since(now).as_millis() as u64),
        })
        .collect();
    tenants.sort_by_key(|t| t.name);
    serde_json::to_value(Status {
        node: &agent.node,
        mode: if agent.coordinator.is_some() {
            "coordinator"
        } else {
            "standalone"
        },
        connections: ledger.conns.len(),
        tenants,
        kernel,
    })
    .unwrap_or_default()
}

pub async fn serve(addr: SocketAddr, agent: Arc<Agent>) -> Result<(), Error> {
    let (a1, a2) = (agent.clone(), agent);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let agent = a1.clone();
                async move {
                    let (_, kernel) = kernel_totals(&agent);
                    let body = agent.metrics.render(
                        &agent.ledger.lock().expect("ledger"),
                        &kernel,
                        Instant::now(),
                    );
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
                async move { Json(status(&agent)) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            path: addr.to_string().into(),
            source,
        })?;
    tracing::info!(%addr, "status and metrics serving");
    axum::serve(listener, app)
        .await
        .map_err(|source| Error::Io {
            path: addr.to_string().into(),
            source,
        })
}
