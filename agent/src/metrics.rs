//! Prometheus metrics of the agent: counters kept as things happen, ledger gauges read at
//! scrape time.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use rdmaq_model::{Amounts, Dim, Resource};

use crate::ledger::Ledger;

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct Metrics {
    admissions: Family<Labels, Counter>,
    denials: Family<Labels, Counter>,
    acquired: Family<Labels, Counter>,
    acquire_failures: Family<Labels, Counter>,
    pub kernel_events: Family<Labels, Counter>,
    pub unadmitted_found: Family<Labels, Counter>,
    protocol_errors: Counter,
    connections_refused: Family<Labels, Counter>,
}

impl Metrics {
    pub fn admitted(&self, tenant: &str, resource: Resource) {
        self.admissions
            .get_or_create(&vec![
                ("tenant", tenant.to_string()),
                ("resource", resource.to_string()),
            ])
            .inc();
    }

    pub fn denied(&self, tenant: &str, resource: Resource, reason: &'static str) {
        self.denials
            .get_or_create(&vec![
                ("tenant", tenant.to_string()),
                ("resource", resource.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    pub fn acquired(&self, tenant: &str, a: Amounts) {
        for d in Dim::ALL {
            self.acquired
                .get_or_create(&vec![
                    ("tenant", tenant.to_string()),
                    ("dim", d.name().to_string()),
                ])
                .inc_by(a.get(d));
        }
    }

    pub fn acquire_failed(&self, tenant: &str) {
        self.acquire_failures
            .get_or_create(&vec![("tenant", tenant.to_string())])
            .inc();
    }

    pub fn protocol_error(&self) {
        self.protocol_errors.inc();
    }

    /// A connection refused at accept: `limit` is "uid" or "total".
    pub fn connection_refused(&self, limit: &'static str) {
        self.connections_refused
            .get_or_create(&vec![("limit", limit.to_string())])
            .inc();
    }

    /// The text exposition, with the ledger's gauges as of now.
    pub fn render(
        &self,
        ledger: &Ledger,
        kernel: &rdmaq_ebpf_common::Counts,
        now: std::time::Instant,
    ) -> String {
        let mut r = Registry::default();
        r.register(
            "rdmaq_agent_admissions",
            "Admissions granted, by tenant and resource",
            self.admissions.clone(),
        );
        r.register(
            "rdmaq_agent_denials",
            "Admissions refused, by tenant, resource and reason",
            self.denials.clone(),
        );
        r.register(
            "rdmaq_agent_acquired",
            "Budget acquired from the coordinator",
            self.acquired.clone(),
        );
        r.register(
            "rdmaq_agent_acquire_failures",
            "Acquisitions the coordinator refused or missed",
            self.acquire_failures.clone(),
        );
        r.register(
            "rdmaq_agent_kernel_events",
            "RDMA object events seen by the eBPF monitor",
            self.kernel_events.clone(),
        );
        r.register(
            "rdmaq_agent_unadmitted_objects",
            "Objects found in the kernel that the library never admitted",
            self.unadmitted_found.clone(),
        );
        r.register(
            "rdmaq_agent_protocol_errors",
            "Malformed or out-of-order client messages",
            self.protocol_errors.clone(),
        );
        r.register(
            "rdmaq_agent_connections_refused",
            "Connections refused at accept by the per-uid or total limit",
            self.connections_refused.clone(),
        );
        let gauges: [(&str, &str, Family<Labels, Gauge>); 4] = [
            (
                "rdmaq_agent_used",
                "Held by processes through the library",
                Family::default(),
            ),
            (
                "rdmaq_agent_allotment",
                "What this node may use (allotment or node caps)",
                Family::default(),
            ),
            (
                "rdmaq_agent_unadmitted",
                "Objects nobody admitted, charged to the tenant",
                Family::default(),
            ),
            (
                "rdmaq_agent_lease_alive",
                "1 while the tenant's lease is alive",
                Family::default(),
            ),
        ];
        for (name, t) in &ledger.tenants {
            for d in Dim::ALL {
                let l = vec![("tenant", name.clone()), ("dim", d.name().to_string())];
                let gauge = |v: u64| v.min(i64::MAX as u64) as i64;
                gauges[0].2.get_or_create(&l).set(gauge(t.used.get(d)));
                gauges[1].2.get_or_create(&l).set(gauge(t.allotment.get(d)));
                gauges[2]
                    .2
                    .get_or_create(&l)
                    .set(gauge(t.unadmitted.get(d)));
            }
            gauges[3]
                .2
                .get_or_create(&vec![("tenant", name.clone())])
                .set(i64::from(t.lease_alive(now)));
        }
        for (name, help, family) in gauges {
            r.register(name, help, family);
        }
        let node: Family<Labels, Gauge> = Family::default();
        for (dim, v) in [
            ("qp", kernel.qps),
            ("mr", kernel.mrs),
            ("mr_bytes", kernel.mr_bytes),
            ("pinned_bytes", kernel.pinned),
        ] {
            node.get_or_create(&vec![("dim", dim.to_string())])
                .set(v.min(i64::MAX as u64) as i64);
        }
        r.register(
            "rdmaq_agent_kernel_objects",
            "RDMA objects and pinned user memory on this node, as the eBPF monitor sees them",
            node,
        );
        let conns: Gauge = Gauge::default();
        conns.set(ledger.conns.len() as i64);
        r.register(
            "rdmaq_agent_connections",
            "Processes connected through the library",
            conns,
        );
        let mut out = String::new();
        let _ = encode(&mut out, &r);
        out
    }
}
