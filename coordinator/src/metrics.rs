//! Prometheus `/metrics`: the replicated counters (grants, denials, releases, reclaims),
//! per-tenant cap / allotted / used, this member's Raft view (term, indexes, leader), and
//! the calls the role checks refused. Everything is read at scrape time, so nothing is
//! counted twice or goes stale.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::ConnectInfo, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use rdmaq_common::tls::{ConnInfo, HttpListener, Limits, Role, Tls};

use crate::{
    Error,
    raft::{NodeId, Raft, store::SharedState},
    state::{Amounts, Caps, Counters, Dim, State},
};

/// Refused calls by (caller role, method); the role is "unauthenticated" when the caller's
/// certificate names no rdmaq role.
#[derive(Debug, Default)]
pub struct Denials(Mutex<BTreeMap<(String, &'static str), u64>>);

impl Denials {
    pub fn count(&self, role: &str, method: &'static str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((role.to_string(), method)).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<((String, &'static str), u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// What a scrape reads: this member's Raft view, its applied state, its refusals.
pub struct Sources {
    pub id: NodeId,
    pub raft: Raft,
    pub applied: SharedState,
    pub denials: Arc<Denials>,
    pub forwarder: Arc<crate::forward::Forwarder>,
    pub stages: crate::stages::Stages,
}

struct CoordinatorCollector {
    cluster: Sources,
}

impl std::fmt::Debug for CoordinatorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoordinatorCollector")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter per held-resource dimension, labelled `dim`.
fn per_dim_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    a: Amounts,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for d in Dim::ALL {
        let labels = [("dim", d.name())];
        ConstCounter::new(a.get(d)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// What a scrape reports from the state.
struct Scraped {
    counters: Counters,
    nodes: usize,
    /// Tenant, cluster cap, allotted, used.
    tenants: Vec<(String, Caps, Amounts, Amounts)>,
}

impl Scraped {
    fn of(s: &State) -> Scraped {
        Scraped {
            counters: s.counters,
            nodes: s.nodes.len(),
            tenants: s
                .quotas
                .iter()
                .map(|(t, q)| {
                    let allotted = s.totals.get(t).copied().unwrap_or_default();
                    (t.to_string(), q.limits.cluster, allotted, s.used_total(t))
                })
                .collect(),
        }
    }
}

impl Collector for CoordinatorCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.cluster.raft.metrics().borrow().clone();
        gauge(
            &mut enc,
            "rdmaq_raft_term",
            "Current Raft term",
            m.current_term as i64,
        )?;
        gauge(
            &mut enc,
            "rdmaq_raft_last_log_index",
            "Last log index",
            m.last_log_index.unwrap_or(0) as i64,
        )?;
        gauge(
            &mut enc,
            "rdmaq_raft_applied_index",
            "Last applied (committed) log index",
            m.last_applied.map_or(0, |l| l.index) as i64,
        )?;
        gauge(
            &mut enc,
            "rdmaq_raft_leader_id",
            "Leader's member id (0: none known)",
            m.current_leader.unwrap_or(0) as i64,
        )?;
        gauge(
            &mut enc,
            "rdmaq_raft_is_leader",
            "1 if this member is the leader",
            i64::from(m.current_leader == Some(self.cluster.id)),
        )?;
        counter(
            &mut enc,
            "rdmaq_forwarded",
            "Requests this member forwarded to the leader (batches of writes, read indexes)",
            self.cluster
                .forwarder
                .forwarded
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;

        // Copied under the state lock, encoded after it is released: a slow scrape never
        // holds up apply.
        let s = Scraped::of(&self.cluster.applied.read().expect("state lock").state);
        let c = s.counters;
        counter(
            &mut enc,
            "rdmaq_grants",
            "Acquire requests granted",
            c.grants,
        )?;
        per_dim_counter(&mut enc, "rdmaq_granted", "Budget granted", c.granted)?;
        counter(
            &mut enc,
            "rdmaq_denials",
            "Acquire requests refused for lack of budget",
            c.denials,
        )?;
        counter(&mut enc, "rdmaq_releases", "Release requests", c.releases)?;
        per_dim_counter(
            &mut enc,
            "rdmaq_released",
            "Budget released by agents",
            c.released,
        )?;
        counter(
            &mut enc,
            "rdmaq_reclaims",
            "Unused budget taken back from expired leases",
            c.reclaims,
        )?;
        per_dim_counter(
            &mut enc,
            "rdmaq_reclaimed",
            "Budget reclaimed from expired leases",
            c.reclaimed,
        )?;
        gauge(
            &mut enc,
            "rdmaq_nodes",
            "Registered agent nodes",
            s.nodes as i64,
        )?;

        for (name, help) in [
            (
                "rdmaq_tenant_cap",
                "Tenant's cluster-wide cap (absent: no cap)",
            ),
            (
                "rdmaq_tenant_allotted",
                "Budget allotted to nodes, summed over nodes",
            ),
            (
                "rdmaq_tenant_used",
                "Use last reported by nodes, summed over nodes",
            ),
        ] {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (tenant, cap, allotted, used) in &s.tenants {
                let values = match name {
                    "rdmaq_tenant_cap" => None,
                    "rdmaq_tenant_allotted" => Some(*allotted),
                    _ => Some(*used),
                };
                for d in Dim::ALL {
                    let v = match values {
                        Some(a) => a.get(d),
                        None => match cap.get(d) {
                            Some(cap) => cap,
                            None => continue,
                        },
                    };
                    let labels = [("tenant", tenant.as_str()), ("dim", d.name())];
                    ConstGauge::new(v as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = enc.encode_descriptor(
            "rdmaq_rpc_denied",
            "Calls refused by the certificate role checks, by caller role and method",
            None,
            MetricType::Counter,
        )?;
        for ((role, method), n) in self.cluster.denials.snapshot() {
            let labels = [("role", role.as_str()), ("method", method)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Serves `/metrics` on `addr` until the process ends: with `tls`, only to callers with an
/// admin or viewer certificate.
pub async fn serve(addr: SocketAddr, cluster: Sources, tls: Option<Arc<Tls>>) -> Result<(), Error> {
    let applied = cluster.applied.clone();
    let mut registry = Registry::default();
    cluster.stages.register(&mut registry);
    registry.register_collector(Box::new(CoordinatorCollector { cluster }));
    let registry = Arc::new(registry);
    let secure = tls.is_some();
    let app = Router::new().route(
        "/metrics",
        get(move |ConnectInfo(conn): ConnectInfo<ConnInfo>| {
            let (registry, applied) = (registry.clone(), applied.clone());
            async move {
                // Checked per request: a keep-alive connection of a certificate revoked
                // since it connected reads no more.
                let revoked = match &conn.identity {
                    Ok(who) if secure => applied
                        .read()
                        .expect("state lock")
                        .state
                        .revocations
                        .refuses(who),
                    _ => None,
                };
                if let Some(why) = revoked {
                    return (axum::http::StatusCode::FORBIDDEN, why).into_response();
                }
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response(),
                }
            }
        }),
    );
    let io = |source| Error::Io {
        path: addr.to_string().into(),
        source,
    };
    let listener = HttpListener::new(
        tokio::net::TcpListener::bind(addr).await.map_err(io)?,
        tls,
        Limits::scrapers(),
        &[Role::Admin, Role::Viewer],
    )
    .map_err(io)?;
    tracing::info!(%addr, tls = secure, "metrics serving on /metrics");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ConnInfo>(),
    )
    .await
    .map_err(io)
}
