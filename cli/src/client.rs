//! Talking to the coordinator: tries each endpoint in turn, moving on when a member cannot
//! be reached or has no leader, and stops at the first real answer (success or error).

use std::{future::Future, sync::Arc, time::Duration};

use rdmaq_common::tls::{self, Tls};
use rdmaq_proto::v1::admin_client::AdminClient;
use tonic::{Code, Status, transport::Channel};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no coordinator endpoint given: use --endpoints or RDMAQ_ENDPOINTS")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {detail}")]
    BadEndpoint { endpoint: String, detail: String },
    #[error("no coordinator answered ({}); {hint}", .tried.join("; "))]
    Unreachable {
        tried: Vec<String>,
        hint: &'static str,
    },
    #[error("{}", describe(.0))]
    Status(Status),
    #[error("{endpoint}: {hint} ({detail})")]
    TlsMismatch {
        endpoint: String,
        detail: String,
        hint: &'static str,
    },
}

fn describe(s: &Status) -> String {
    tls::status_text(s)
}

/// Pause between rounds over the endpoints.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub struct Endpoints {
    list: Vec<String>,
    timeout: Duration,
    tls: Option<Arc<Tls>>,
}

impl Endpoints {
    pub fn new(
        list: Vec<String>,
        timeout: Duration,
        tls: Option<Arc<Tls>>,
    ) -> Result<Self, ClientError> {
        if list.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        Ok(Endpoints { list, timeout, tls })
    }

    async fn channel(&self, endpoint: &str) -> Result<Channel, ClientError> {
        let ep = tls::endpoint(endpoint, Duration::from_secs(2)).map_err(|e| {
            ClientError::BadEndpoint {
                endpoint: endpoint.to_string(),
                detail: e.to_string(),
            }
        })?;
        Ok(tls::connect_lazy(
            ep.timeout(self.timeout),
            self.tls.clone(),
        ))
    }

    /// Runs `call` against each endpoint until one answers. When none can (an election in
    /// progress, members restarting) it goes round again until the timeout has passed.
    async fn with<C, T, F, Fut>(
        &self,
        make: impl Fn(Channel) -> C,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let mut tried = Vec::new();
            for endpoint in &self.list {
                let channel = self.channel(endpoint).await?;
                match call(make(channel)).await {
                    Ok(r) => return Ok(r.into_inner()),
                    // Retrying cannot help when the two ends disagree about TLS.
                    Err(s) if tls::mismatch(self.tls.is_some(), &describe(&s)).is_some() => {
                        let detail = describe(&s);
                        return Err(ClientError::TlsMismatch {
                            endpoint: endpoint.clone(),
                            hint: tls::mismatch(self.tls.is_some(), &detail).unwrap_or_default(),
                            detail,
                        });
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
                        tried.push(format!("{endpoint}: {}", describe(&s)));
                    }
                    Err(s) => return Err(ClientError::Status(s)),
                }
            }
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                let hint = if self.tls.is_some() {
                    "if the connections were closed right after the TLS handshake, the members \
                     refused your certificate: check that it is issued by the cluster's CA and \
                     not expired"
                } else {
                    "plain text (--insecure): if the members run with TLS, pass --tls-ca, \
                     --tls-cert and --tls-key"
                };
                return Err(ClientError::Unreachable { tried, hint });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    pub async fn admin<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.with(AdminClient::new, call).await
    }
}
