//! The connection to the node's rdmaq-agent over its Unix socket: length-prefixed
//! `rdmaq-proto` intercept messages, one request at a time, with a timeout on every round
//! trip so that a stuck agent can never hang the program; and the link's state (agent mode
//! or not, connected, or down and retried later).

use std::{
    io::{self, Read, Write},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use rdmaq_model::{Amounts, Limits, WrPolicy};
use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, request, response},
};

use crate::{config::Config, log::log_at};

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
    /// No agent socket at first use: standalone mode.
    Absent,
}

/// The agent link's answer to "who decides?".
pub enum Mode {
    Agent,
    Standalone,
    /// Agent mode, but the agent cannot be reached now.
    AgentDown,
}

impl AgentLink {
    /// Connects if it is time to (agent mode on, not connected, retry due); `held` is what
    /// the process holds, claimed again from a new agent. A new connection means the
    /// tokens of an earlier one are void: `on_connect` is told.
    pub fn mode(&mut self, cfg: &Config, held: Amounts, on_connect: impl FnOnce()) -> Mode {
        if let AgentLink::NotTried = self {
            *self = if cfg.agent_socket.exists() {
                AgentLink::Down {
                    retry_at: Instant::now(),
                }
            } else {
                AgentLink::Absent
            };
        }
        if let AgentLink::Down { retry_at } = *self
            && Instant::now() >= retry_at
        {
            match AgentConn::connect(cfg, held) {
                Ok(conn) => {
                    on_connect();
                    log_at!(
                        cfg,
                        Info,
                        "agent mode: tenant {:?} via {}",
                        conn.tenant,
                        cfg.agent_socket.display()
                    );
                    *self = AgentLink::Connected(Box::new(conn));
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
            Some(response::Body::Error(e)) => Err(io::Error::other(e.message)),
            Some(b) => Ok(b),
            None => Err(proto_err("empty reply")),
        }
    }
}
