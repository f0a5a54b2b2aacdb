//! The connection to the node's rdmaq-agent over its Unix socket: length-prefixed
//! `rdmaq-proto` intercept messages, one request at a time, with a timeout on every round
//! trip so that a stuck agent can never hang the program.

use std::{
    io::{self, Read, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, request, response},
};

use crate::config::Config;

pub struct AgentConn {
    stream: UnixStream,
    seq: u64,
    pub hello: msg::HelloReply,
}

fn proto_err(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl AgentConn {
    /// Connects and introduces the process; the agent answers with its tenant's in-process
    /// limits (work-request caps, rates, allowed QP types).
    pub fn connect(cfg: &Config, held: crate::admit::Counts) -> io::Result<AgentConn> {
        let stream = UnixStream::connect(&cfg.agent_socket)?;
        let timeout = Some(Duration::from_millis(cfg.agent_timeout_ms.max(1)));
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let mut conn = AgentConn {
            stream,
            seq: 0,
            hello: msg::HelloReply::default(),
        };
        let program = std::env::args().next().unwrap_or_default();
        let reply = conn.call(request::Body::Hello(msg::Hello {
            protocol_version: PROTOCOL_VERSION,
            launcher_tenant: cfg.launcher_tenant.clone(),
            program,
            held_qps: held.qps,
            held_mrs: held.mrs,
            held_mr_bytes: held.mr_bytes,
        }))?;
        match reply {
            response::Body::Hello(h) => conn.hello = h,
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
