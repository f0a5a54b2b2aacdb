//! Agent mode: the connection to the node's rdmaq-agent over its Unix socket
//! (length-prefixed `rdmaq-proto` intercept messages, one request at a time, with a timeout
//! on every round trip so that a stuck agent can never hang the program), the link's state
//! (agent mode or not, connected, or down and retried later), and the tokens the connection
//! holds: a creation takes a cached token or makes a round trip that brings a few ahead.
//! Tokens belong to their connection: the agent frees them when it closes, and a new
//! connection starts with none.

use std::{
    io::{self, Read, Write},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use rdmaq_model::{Amounts, Limits, QpShape, QpTypes, Resource, WrPolicy};
use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, Verdict, request, response},
};

use crate::{
    config::Config,
    denial::Denial,
    log::log_at,
    tokens::{PREFETCH, Surplus, TokenCache},
};

/// How long to wait before trying an unreachable agent again.
const RETRY: Duration = Duration::from_secs(1);

/// The process's link to the agent.
pub enum AgentLink {
    /// No verb has needed it yet.
    NotTried,
    Connected(Box<AgentConn>),
    /// Agent mode, but the agent did not answer: tried again at `retry_at`.
    Down {
        retry_at: Instant,
    },
    /// The agent refused this process at hello (e.g. a launcher tenant its rules do not
    /// allow), saying why: asked again at `retry_at`.
    Refused {
        reason: String,
        retry_at: Instant,
    },
    /// No agent socket at first use, and the node's agent-mode marker does not list it:
    /// standalone mode.
    Absent,
}

/// Whether the node's agent-mode marker lists this process's agent socket: then a missing
/// socket means the agent is down (restarting), not absent.
fn agent_mode_node(cfg: &Config) -> bool {
    let socket = cfg.agent_socket.display().to_string();
    std::fs::read_to_string(&cfg.agent_mode_file)
        .is_ok_and(|listed| listed.lines().any(|l| l.trim() == socket))
}

/// Waits until the agent socket accepts a connection, for at most the agent timeout.
fn wait_for_socket(cfg: &Config) {
    let deadline = Instant::now() + Duration::from_millis(cfg.agent_timeout_ms);
    while Instant::now() < deadline {
        if UnixStream::connect(&cfg.agent_socket).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent link's answer to "who decides?".
pub enum Mode {
    Agent,
    Standalone,
    /// Agent mode, but the agent cannot be reached now.
    AgentDown,
    /// The agent refused this process.
    Refused(String),
}

impl AgentLink {
    /// Connects if it is time to (agent mode on, not connected, retry due); `held` is what
    /// the process holds, claimed again from a new agent.
    pub fn mode(&mut self, cfg: &Config, held: Amounts) -> Mode {
        if let AgentLink::NotTried = self {
            *self = if cfg.agent_socket.exists() || agent_mode_node(cfg) {
                AgentLink::Down {
                    retry_at: Instant::now(),
                }
            } else {
                AgentLink::Absent
            };
            // A program starting while its node's agent restarts waits for it, once.
            if let AgentLink::Down { .. } = self
                && !cfg.agent_socket.exists()
            {
                log_at!(
                    cfg,
                    Warn,
                    "agent mode, but {} is missing: waiting up to {} ms for the agent",
                    cfg.agent_socket.display(),
                    cfg.agent_timeout_ms
                );
                wait_for_socket(cfg);
            }
        }
        let retry_due = match self {
            AgentLink::Down { retry_at } | AgentLink::Refused { retry_at, .. } => {
                Instant::now() >= *retry_at
            }
            _ => false,
        };
        if retry_due {
            match AgentConn::connect(cfg, held) {
                Ok(conn) => {
                    log_at!(
                        cfg,
                        Info,
                        "agent mode: tenant {:?} via {}",
                        conn.tenant,
                        cfg.agent_socket.display()
                    );
                    *self = AgentLink::Connected(Box::new(conn));
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    log_at!(cfg, Error, "the rdmaq agent refused this process: {e}");
                    *self = AgentLink::Refused {
                        reason: e.to_string(),
                        retry_at: Instant::now() + RETRY,
                    };
                }
                Err(e) => {
                    log_at!(
                        cfg,
                        Warn,
                        "agent at {} unreachable: {e}",
                        cfg.agent_socket.display()
                    );
                    *self = AgentLink::Down {
                        retry_at: Instant::now() + RETRY,
                    };
                }
            }
        }
        match self {
            AgentLink::Connected(_) => Mode::Agent,
            AgentLink::Absent => Mode::Standalone,
            AgentLink::Refused { reason, .. } => Mode::Refused(reason.clone()),
            _ => Mode::AgentDown,
        }
    }

    /// One request to a connected agent; a failed round trip drops the connection (retried
    /// after RETRY). `None` when not connected or the round trip failed.
    pub fn call(&mut self, cfg: &Config, body: request::Body) -> Option<response::Body> {
        let AgentLink::Connected(c) = self else {
            return None;
        };
        match c.call(body) {
            Ok(b) => Some(b),
            Err(e) => {
                log_at!(cfg, Warn, "agent round trip failed: {e}");
                *self = AgentLink::Down {
                    retry_at: Instant::now() + RETRY,
                };
                None
            }
        }
    }

    /// One object of `resource` pinning `bytes` (for a QP, of `shape`): a cached token, or a
    /// round trip that brings a few more. Where the tenant's limits need each creation
    /// decided by the agent (QP types, work requests, creation rates), always the round
    /// trip, carrying the QP's shape; the agent may lower its work requests: `Some((send,
    /// recv))` is what the QP may have.
    pub fn admit(
        &mut self,
        cfg: &Config,
        resource: Resource,
        bytes: u64,
        shape: QpShape,
    ) -> Result<Option<(u32, u32)>, Denial> {
        if let AgentLink::Connected(c) = self
            && !c.one_at_a_time(resource)
            && c.tokens.take(resource, bytes)
        {
            return Ok(None);
        }
        let reply = self
            .call(
                cfg,
                request::Body::Admit(msg::Admit {
                    resource: resource.to_wire() as i32,
                    bytes,
                    qp_type: shape.qp_type,
                    max_send_wr: shape.max_send_wr,
                    max_recv_wr: shape.max_recv_wr,
                    prefetch: PREFETCH,
                    ..Default::default()
                }),
            )
            .ok_or(Denial::AgentUnavailable)?;
        let response::Body::Admit(a) = reply else {
            return Err(Denial::AgentUnavailable);
        };
        // The tenant's limits may have changed since hello: the agent says how to go on.
        let stale = match self {
            AgentLink::Connected(c) => c.set_one_at_a_time(resource, a.one_at_a_time),
            _ => None,
        };
        if let Some(stale) = stale {
            self.release(cfg, resource, stale);
        }
        let (count, granted_bytes) = verdict(resource, &a)?;
        if let AgentLink::Connected(c) = self {
            c.tokens.granted(resource, count, granted_bytes, bytes);
        }
        let clamp =
            (a.verdict == Verdict::Clamped as i32).then_some((a.max_send_wr, a.max_recv_wr));
        Ok(clamp)
    }

    /// `bytes` more for an MR the process holds (`ibv_rereg_mr` growing it): always a round
    /// trip (rare, and never from cached tokens, which are for new MRs).
    pub fn grow(&mut self, cfg: &Config, bytes: u64) -> Result<(), Denial> {
        let reply = self
            .call(
                cfg,
                request::Body::Admit(msg::Admit {
                    resource: Resource::Mr.to_wire() as i32,
                    bytes,
                    grow: true,
                    ..Default::default()
                }),
            )
            .ok_or(Denial::AgentUnavailable)?;
        match reply {
            response::Body::Admit(a) if a.verdict == Verdict::Allow as i32 => Ok(()),
            response::Body::Admit(a) => verdict(Resource::Mr, &a).map(drop),
            _ => Err(Denial::AgentUnavailable),
        }
    }

    /// Gives `bytes` of MR budget back (an MR that shrank, or a growth that failed).
    pub fn release_bytes(&mut self, cfg: &Config, bytes: u64) {
        self.release(cfg, Resource::Mr, Surplus { count: 0, bytes });
    }

    /// An object the agent admitted is gone (destroyed, or its creation failed) and `live`
    /// of its kind remain: its token returns to the cache, and the surplus to the agent.
    pub fn returned(&mut self, cfg: &Config, resource: Resource, bytes: u64, live: usize) {
        let AgentLink::Connected(c) = self else {
            // Its connection is gone, and the agent freed its tokens with it.
            return;
        };
        let surplus = if c.one_at_a_time(resource) {
            // Each creation is the agent's to decide: no token is kept.
            c.tokens.returned(resource, bytes, live);
            c.tokens.drain_one(resource)
        } else {
            c.tokens.returned(resource, bytes, live)
        };
        if let Some(surplus) = surplus {
            self.release(cfg, resource, surplus);
        }
    }

    /// Gives every cached token back (at exit).
    pub fn return_all(&mut self, cfg: &Config) {
        let AgentLink::Connected(c) = self else {
            return;
        };
        for (resource, surplus) in c.tokens.drain() {
            self.release(cfg, resource, surplus);
        }
    }

    fn release(&mut self, cfg: &Config, resource: Resource, s: Surplus) {
        if s == Surplus::default() {
            return;
        }
        let _ = self.call(
            cfg,
            request::Body::Release(msg::Release {
                resource: resource.to_wire() as i32,
                count: s.count,
                bytes: s.bytes,
            }),
        );
    }

    pub fn connected(&self) -> bool {
        matches!(self, AgentLink::Connected(_))
    }
}

/// How long to wait for the agent's answers: the configured timeout, or the agent's
/// coordinator wait and a second more, whichever is longer.
/// (An agent that does not say, 0, leaves the configured timeout.)
fn answer_timeout(configured_ms: u64, admission_wait_ms: u32) -> Duration {
    let agent_ms = match admission_wait_ms {
        0 => 0,
        w => u64::from(w).saturating_add(AGENT_WAIT_MARGIN_MS),
    };
    Duration::from_millis(configured_ms.max(agent_ms).max(1))
}

/// What the library adds to the agent's coordinator wait: its own decision and the trip.
const AGENT_WAIT_MARGIN_MS: u64 = 1_000;

/// The tenant's limits as the agent's hello reply gives them.
fn hello_limits(h: &msg::HelloReply) -> Limits {
    Limits {
        max_send_wr: h.max_send_wr,
        max_recv_wr: h.max_recv_wr,
        wr_policy: if h.deny_wr_over_cap {
            WrPolicy::Deny
        } else {
            WrPolicy::Clamp
        },
        qp_create_per_sec: h.qp_create_per_sec,
        mr_create_per_sec: h.mr_create_per_sec,
        qp_types: (!h.allowed_qp_types.is_empty())
            .then(|| QpTypes::from_values(&h.allowed_qp_types)),
        ..Limits::NONE
    }
}

pub struct AgentConn {
    stream: UnixStream,
    seq: u64,
    /// The tenant the agent decided this process belongs to.
    pub tenant: String,
    /// Tokens pre-admitted on this connection and not used yet.
    tokens: TokenCache,
    /// Per resource (QP, MR): each creation goes to the agent, no tokens are kept.
    one_at_a_time: [bool; 2],
}

fn proto_err(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl AgentConn {
    fn one_at_a_time(&self, resource: Resource) -> bool {
        self.one_at_a_time[resource as usize]
    }

    /// Follows the agent's word on whether `resource` goes one at a time; when it starts to,
    /// the tokens cached for it are returned (what to release).
    fn set_one_at_a_time(&mut self, resource: Resource, on: bool) -> Option<Surplus> {
        let was = std::mem::replace(&mut self.one_at_a_time[resource as usize], on);
        (on && !was)
            .then(|| self.tokens.drain_one(resource))
            .flatten()
    }

    /// Connects and introduces the process; the agent answers with its tenant's in-process
    /// limits (work-request caps, rates, allowed QP types).
    pub fn connect(cfg: &Config, held: Amounts) -> io::Result<AgentConn> {
        let stream = UnixStream::connect(&cfg.agent_socket)?;
        let timeout = Some(Duration::from_millis(cfg.agent_timeout_ms.max(1)));
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let mut conn = AgentConn {
            stream,
            seq: 0,
            tenant: String::new(),
            tokens: TokenCache::default(),
            one_at_a_time: [false; 2],
        };
        let program = std::env::args().next().unwrap_or_default();
        let reply = conn.call(request::Body::Hello(msg::Hello {
            protocol_version: PROTOCOL_VERSION,
            launcher_tenant: cfg.launcher_tenant.clone(),
            program,
            held_qps: held.qp,
            held_mrs: held.mr,
            held_mr_bytes: held.mr_bytes,
        }))?;
        match reply {
            response::Body::Hello(h) => {
                let limits = hello_limits(&h);
                conn.one_at_a_time = [limits.shapes_qps(), limits.shapes_mrs()];
                conn.tenant = h.tenant;
                // An admission may take the agent its coordinator wait: a shorter timeout
                // here would fail a verb the agent was about to grant.
                let wait = answer_timeout(cfg.agent_timeout_ms, h.admission_wait_ms);
                conn.stream.set_read_timeout(Some(wait))?;
            }
            other => return Err(proto_err(format!("expected a hello reply, got {other:?}"))),
        }
        Ok(conn)
    }

    /// One request, one response.
    pub fn call(&mut self, body: request::Body) -> io::Result<response::Body> {
        self.seq += 1;
        let req = msg::Request {
            seq: self.seq,
            body: Some(body),
        };
        let bytes = frame::encode(&req).map_err(proto_err)?;
        self.stream.write_all(&bytes)?;
        let mut header = [0u8; frame::HEADER_LEN];
        self.stream.read_exact(&mut header)?;
        let len = frame::body_len(header).map_err(proto_err)?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        let resp: msg::Response = frame::decode(&body).map_err(proto_err)?;
        if resp.seq != self.seq {
            return Err(proto_err(format!(
                "reply to request {} while waiting for {}",
                resp.seq, self.seq
            )));
        }
        match resp.body {
            // The agent refused the request (at hello: this process), saying why.
            Some(response::Body::Error(e)) => {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, e.message))
            }
            Some(b) => Ok(b),
            None => Err(proto_err("empty reply")),
        }
    }
}

/// Interprets an Admit reply: (tokens, bytes) granted, or the denial.
fn verdict(resource: Resource, a: &msg::AdmitReply) -> Result<(u32, u64), Denial> {
    let name = resource.name();
    match Verdict::try_from(a.verdict) {
        Ok(Verdict::Allow | Verdict::Clamped) if a.granted > 0 => Ok((a.granted, a.granted_bytes)),
        Ok(Verdict::DenyRate) => Err(Denial::Rate { resource: name }),
        Ok(Verdict::DenyPolicy) => Err(Denial::Policy {
            reason: format!("the agent refused this {name}'s type ({})", a.used),
        }),
        _ => Err(Denial::Quota {
            resource: name,
            scope: known_scope(&a.scope),
            used: a.used,
            limit: a.limit,
        }),
    }
}

/// The agent's name for the limit that refused, as the denial's log line says it.
fn known_scope(scope: &str) -> &'static str {
    [
        "process",
        "node",
        "tenant",
        "max_send_wr",
        "max_recv_wr",
        "connection",
    ]
    .into_iter()
    .find(|s| *s == scope)
    .unwrap_or("tenant")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_timeout_covers_the_agents_coordinator_wait() {
        let ms = |c, w| answer_timeout(c, w).as_millis();
        assert_eq!(ms(2000, 1000), 2000, "the default already covers it");
        assert_eq!(
            ms(2000, 3000),
            4000,
            "a longer wait, and a second for the trip"
        );
        assert_eq!(ms(500, 0), 500, "an agent that does not say");
        assert_eq!(
            ms(20_000, 3000),
            20_000,
            "a longer configured timeout stays"
        );
    }
}
