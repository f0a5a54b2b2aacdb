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

use rdmaq_model::{Amounts, Limits, Resource, WrPolicy};
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

    /// One object of `resource` pinning `bytes`: a cached token, or a round trip that
    /// brings a few more.
    pub fn admit(&mut self, cfg: &Config, resource: Resource, bytes: u64) -> Result<(), Denial> {
        if let AgentLink::Connected(c) = self
            && c.tokens.take(resource, bytes)
        {
            return Ok(());
        }
        let reply = self
            .call(
                cfg,
                request::Body::Admit(msg::Admit {
                    resource: resource.to_wire() as i32,
                    bytes,
                    prefetch: PREFETCH,
                    ..Default::default()
                }),
            )
            .ok_or(Denial::AgentUnavailable)?;
        let (count, granted_bytes) = verdict(resource, reply)?;
        if let AgentLink::Connected(c) = self {
            c.tokens.granted(resource, count, granted_bytes, bytes);
        }
        Ok(())
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
            other => verdict(Resource::Mr, other).map(drop),
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
        if let Some(surplus) = c.tokens.returned(resource, bytes, live) {
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

    /// The in-process limits the agent gave (work requests, rates), when connected.
    pub fn limits(&self) -> Option<&AgentLimits> {
        match self {
            AgentLink::Connected(c) => Some(&c.limits),
            _ => None,
        }
    }

    pub fn connected(&self) -> bool {
        matches!(self, AgentLink::Connected(_))
    }
}

/// What the agent's hello reply says the library applies in-process.
pub struct AgentLimits {
    pub limits: Limits,
    /// Empty: every type.
    pub allowed_qp_types: Vec<u32>,
}

impl From<&msg::HelloReply> for AgentLimits {
    fn from(h: &msg::HelloReply) -> AgentLimits {
        AgentLimits {
            limits: Limits {
                max_send_wr: h.max_send_wr,
                max_recv_wr: h.max_recv_wr,
                wr_policy: if h.deny_wr_over_cap {
                    WrPolicy::Deny
                } else {
                    WrPolicy::Clamp
                },
                qp_create_per_sec: h.qp_create_per_sec,
                mr_create_per_sec: h.mr_create_per_sec,
                ..Limits::NONE
            },
            allowed_qp_types: h.allowed_qp_types.clone(),
        }
    }
}

pub struct AgentConn {
    stream: UnixStream,
    seq: u64,
    /// The tenant the agent decided this process belongs to.
    pub tenant: String,
    pub limits: AgentLimits,
    /// Tokens pre-admitted on this connection and not used yet.
    tokens: TokenCache,
}

fn proto_err(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl AgentConn {
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
            limits: AgentLimits::from(&msg::HelloReply::default()),
            tokens: TokenCache::default(),
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
                conn.limits = AgentLimits::from(&h);
                conn.tenant = h.tenant;
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
fn verdict(resource: Resource, reply: response::Body) -> Result<(u32, u64), Denial> {
    let response::Body::Admit(a) = reply else {
        return Err(Denial::AgentUnavailable);
    };
    let name = resource.name();
    match Verdict::try_from(a.verdict) {
        Ok(Verdict::Allow | Verdict::Clamped) if a.granted > 0 => Ok((a.granted, a.granted_bytes)),
        Ok(Verdict::DenyRate) => Err(Denial::Rate { resource: name }),
        Ok(Verdict::DenyPolicy) => Err(Denial::Policy {
            reason: format!("the agent refused this {name}"),
        }),
        _ => Err(Denial::Quota {
            resource: name,
            scope: "tenant",
            used: a.used,
            limit: a.limit,
        }),
    }
}
