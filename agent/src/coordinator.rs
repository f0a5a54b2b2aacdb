//! The agent's side of the coordinator: register, acquire ahead of demand, release surplus,
//! heartbeat with usage. Tries the endpoints in turn, like the CLI.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rdmaq_common::tls::{self, Tls};
use rdmaq_proto::v1::{self as pb, agent_client::AgentClient};
use tonic::{Code, Status, transport::Channel};

use rdmaq_model::Amounts;

pub struct Coordinator {
    endpoints: Vec<Channel>,
    /// The endpoint tried first: the last one that answered without forwarding (the
    /// leader, as far as this agent knows).
    preferred: AtomicUsize,
    /// Whether the links are TLS (else plain text, `insecure`).
    tls: bool,
    pub node: String,
    pub address: String,
}

impl Coordinator {
    pub fn new(
        endpoints: &[String],
        node: &str,
        address: &str,
        tls: Option<Arc<Tls>>,
    ) -> Result<Coordinator, crate::Error> {
        let endpoints: Vec<Channel> = endpoints
            .iter()
            .map(|e| {
                tls::endpoint(e, Duration::from_millis(500))
                    .map(|ep| tls::connect_lazy(ep.timeout(Duration::from_secs(3)), tls.clone()))
                    .map_err(|e2| crate::Error::Config {
                        key: "endpoints".into(),
                        reason: e2.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Coordinator {
            preferred: AtomicUsize::new(first_member(node, endpoints.len())),
            tls: tls.is_some(),
            endpoints,
            node: node.to_string(),
            address: address.to_string(),
        })
    }

    /// Runs `call` against each member, the preferred one first, until one answers
    /// (unavailable ones are skipped). A member that says it forwarded the call to the
    /// leader answered, but the next call goes to the member after it: within a few calls
    /// of a leader change the agent talks to the new leader directly.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(AgentClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = Status::unavailable("no coordinator endpoint");
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        for i in (first..n).chain(0..first) {
            match call(AgentClient::new(self.endpoints[i].clone())).await {
                Ok(r) => {
                    let forwarded = r.metadata().contains_key(pb::FORWARDED_HEADER);
                    let next = if forwarded { (i + 1) % n } else { i };
                    self.preferred.store(next, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                // The two ends disagree about TLS: say so (no other member will differ).
                Err(s) if tls::mismatch(self.tls, &tls::status_text(&s)).is_some() => {
                    let detail = tls::status_text(&s);
                    let hint = tls::mismatch(self.tls, &detail).unwrap_or_default();
                    return Err(Status::failed_precondition(format!("{hint} ({detail})")));
                }
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable
                            | Code::DeadlineExceeded
                            | Code::Unknown
                            | Code::Cancelled
                    ) =>
                {
                    last = s
                }
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }

    pub async fn register(&self) -> Result<pb::RegisterResponse, Status> {
        let req = pb::RegisterRequest {
            node: self.node.clone(),
            address: self.address.clone(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.register(req).await }
        })
        .await
    }

    pub async fn acquire(
        &self,
        tenant: &str,
        want: Amounts,
        min: Amounts,
    ) -> Result<pb::AcquireResponse, Status> {
        let req = pb::AcquireRequest {
            node: self.node.clone(),
            tenant: tenant.to_string(),
            want: want.to_pb(),
            min: min.to_pb(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.acquire(req).await }
        })
        .await
    }

    pub async fn release(
        &self,
        tenant: &str,
        amounts: Amounts,
    ) -> Result<pb::ReleaseResponse, Status> {
        let req = pb::ReleaseRequest {
            node: self.node.clone(),
            tenant: tenant.to_string(),
            amounts: amounts.to_pb(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.release(req).await }
        })
        .await
    }

    pub async fn heartbeat(
        &self,
        used: Vec<(String, Amounts)>,
    ) -> Result<pb::HeartbeatResponse, Status> {
        let req = pb::HeartbeatRequest {
            node: self.node.clone(),
            reports: used
                .into_iter()
                .map(|(tenant, a)| pb::TenantReport {
                    tenant,
                    used: a.to_pb(),
                })
                .collect(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.heartbeat(req).await }
        })
        .await
    }

    /// Opens the quota-change stream on the first member that answers.
    pub async fn watch_quotas(&self) -> Result<tonic::Streaming<pb::QuotaChange>, Status> {
        let node = self.node.clone();
        self.call(|mut c| {
            let node = node.clone();
            async move {
                // No deadline: the stream lives as long as the connection.
                let mut req = tonic::Request::new(pb::WatchQuotasRequest { node });
                req.set_timeout(std::time::Duration::from_secs(24 * 3600));
                c.watch_quotas(req).await
            }
        })
        .await
    }

    /// The tenant's quota, `None` if the coordinator has none.
    pub async fn quota(&self, tenant: &str) -> Result<Option<pb::Quota>, Status> {
        let req = pb::TenantRequest {
            tenant: tenant.to_string(),
        };
        match self
            .call(|mut c| {
                let req = req.clone();
                async move { c.get_quota(req).await }
            })
            .await
        {
            Ok(q) => Ok(Some(q)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}

/// The member a node calls first: spread over the members by the node's name (FNV-1a), so
/// that in a cluster too big for every agent to move to the leader
/// (`leader_hint_max_nodes`) the agents' connections are shared by all members, not piled
/// on the first endpoint listed.
pub fn first_member(node: &str, members: usize) -> usize {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % members.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::first_member;

    #[test]
    fn nodes_spread_over_the_members_and_always_pick_the_same_one() {
        let mut per_member = [0usize; 3];
        for i in 0..3000 {
            let node = format!("node-{i}");
            let m = first_member(&node, 3);
            assert_eq!(
                m,
                first_member(&node, 3),
                "{node}: the same member every time"
            );
            per_member[m] += 1;
        }
        assert!(
            per_member.iter().all(|&n| n > 800),
            "3000 nodes over 3 members: {per_member:?}"
        );
        assert_eq!(first_member("node-1", 1), 0);
        assert_eq!(
            first_member("node-1", 0),
            0,
            "no endpoint: no division by zero"
        );
    }
}
