//! The admission socket the intercept library talks to. Each connection is one process:
//! identified by SO_PEERCRED, mapped to a tenant by the rules, served by its own task (a
//! slow or hostile client only ever blocks itself). Connections are bounded per uid and in
//! all from the moment they are accepted (`conn_limits.rs`); a frame's buffer grows as its
//! bytes arrive, and a frame once begun must be finished within FRAME_TIMEOUT. A malformed,
//! oversized or out-of-order message gets an error reply and a closed connection.

use std::{
    os::unix::fs::{PermissionsExt, chown},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, Verdict, request, response},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

use rdmaq_model::{Amounts, QpShape, Resource, ShapeDenial, WrPolicy};

use crate::{
    Error,
    conn_limits::{ConnLimits, Full},
    kernel,
    ledger::Decision,
    node::Agent,
    tenant,
};

/// A client must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Once a frame's first byte has arrived, the rest must follow within this.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A refused connection is logged at most this often (a flood is counted, not logged).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Binds the socket: removes a stale one (nobody listening), sets mode and group.
pub fn bind(
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<UnixListener, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Config {
                key: "socket".into(),
                reason: format!("{} is in use by another agent", path.display()),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    if uid.is_some() || gid.is_some() {
        chown(path, uid, gid).map_err(io)?;
    }
    Ok(listener)
}

/// The listening socket systemd passed (socket activation: `LISTEN_FDS`, `LISTEN_PID`), if
/// any. With it the socket outlives agent restarts: programs that connect while the agent
/// restarts wait in its backlog instead of failing.
pub fn activated() -> Result<Option<UnixListener>, Error> {
    let bad = |reason: String| Error::Config {
        key: "socket".into(),
        reason,
    };
    match listenfd::ListenFd::from_env().take_unix_listener(0) {
        Ok(Some(listener)) => {
            listener
                .set_nonblocking(true)
                .map_err(|e| bad(format!("the socket systemd passed: {e}")))?;
            UnixListener::from_std(listener)
                .map(Some)
                .map_err(|e| bad(format!("the socket systemd passed: {e}")))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(bad(format!(
            "the socket systemd passed (LISTEN_FDS) is not a Unix stream listener: {e}"
        ))),
    }
}

pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    let limits = ConnLimits::new(agent.cfg.max_connections_per_uid, agent.cfg.max_connections);
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, most likely: let connections close before more.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(uid) = stream.peer_cred().map(|c| c.uid()) else {
            continue;
        };
        let slot = match limits.take(uid) {
            Ok(slot) => slot,
            Err(full) => {
                let reason = match full {
                    Full::Uid => "uid",
                    Full::Total => "total",
                };
                agent.metrics.connection_refused(reason);
                if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                    last_refusal_log = Some(Instant::now());
                    let (total, mine) = limits.held(uid);
                    tracing::warn!(
                        uid,
                        held_by_uid = mine,
                        held = total,
                        limit = reason,
                        "connection limit reached; refusing clients (counted in rdmaq_agent_connections_refused_total)"
                    );
                }
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let id = agent.next_conn_id();
            if let Err(reason) = handle(stream, id, &agent).await {
                agent.metrics.protocol_error();
                tracing::info!(conn = id, %reason, "client dropped");
            }
            if let Some(conn) = agent.ledger().disconnect(id) {
                tracing::debug!(conn = id, pid = conn.pid, tenant = %conn.tenant, held = ?conn.held, "process gone; its tokens are free");
            }
        });
    }
}

/// Reads one request. Waiting for its first byte is bounded by `first_byte_timeout` (the
/// hello's), or not at all (an idle program between verbs); the rest of the frame must
/// arrive within FRAME_TIMEOUT, into a buffer that grows only as bytes do. `None` at a clean
/// end of stream.
async fn read_frame(
    stream: &mut UnixStream,
    first_byte_timeout: Option<Duration>,
) -> Result<Option<msg::Request>, String> {
    let mut header = [0u8; frame::HEADER_LEN];
    let first = async { stream.read(&mut header[..1]).await };
    let n = match first_byte_timeout {
        Some(t) => tokio::time::timeout(t, first)
            .await
            .map_err(|_| "no hello in time".to_string())?,
        None => first.await,
    }
    .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    let rest = async {
        stream.read_exact(&mut header[1..]).await?;
        let len = frame::body_len(header).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut body = Vec::new();
        (&mut *stream)
            .take(len as u64)
            .read_to_end(&mut body)
            .await?;
        if body.len() < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(FRAME_TIMEOUT, rest)
        .await
        .map_err(|_| format!("a frame was not finished within {FRAME_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    frame::decode(&body).map(Some).map_err(|e| e.to_string())
}

async fn reply(stream: &mut UnixStream, seq: u64, body: response::Body) -> Result<(), String> {
    let bytes = frame::encode(&msg::Response {
        seq,
        body: Some(body),
    })
    .map_err(|e| e.to_string())?;
    stream.write_all(&bytes).await.map_err(|e| e.to_string())
}

async fn refuse(stream: &mut UnixStream, seq: u64, why: String) -> Result<(), String> {
    let _ = reply(
        stream,
        seq,
        response::Body::Error(msg::ErrorReply {
            message: why.clone(),
        }),
    )
    .await;
    Err(why)
}

async fn handle(mut stream: UnixStream, id: u64, agent: &Agent) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("no peer credentials: {e}"))?;
    let pid = cred
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or("peer has no pid")?;
    let Some(hello) = read_frame(&mut stream, Some(HELLO_TIMEOUT)).await? else {
        return Ok(());
    };
    let Some(request::Body::Hello(h)) = hello.body else {
        return refuse(
            &mut stream,
            hello.seq,
            "the first message must be a hello".into(),
        )
        .await;
    };
    if h.protocol_version != PROTOCOL_VERSION {
        return refuse(
            &mut stream,
            hello.seq,
            format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                h.protocol_version
            ),
        )
        .await;
    }
    let cgroup = tenant::cgroup_of(pid);
    let peer = tenant::Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        cgroup: cgroup.as_deref(),
        launcher: &h.launcher_tenant,
        pods: Some(&agent.pods),
    };
    let resolved = tenant::resolve(&agent.cfg.rules, &agent.cfg.default_tenant, &peer);
    if let Some(why) = resolved.launcher_refused {
        // The program asked for a tenant it may not have: say so, never charge another.
        agent.metrics.protocol_error();
        return refuse(&mut stream, hello.seq, format!("refused: {why}")).await;
    }
    let tenant = resolved.tenant;
    agent.ensure_tenant(&tenant).await;
    // What the process says it holds (after an agent restart), never more than the kernel
    // shows for it when the monitor runs.
    let claim = Amounts {
        qp: h.held_qps,
        mr: h.held_mrs,
        mr_bytes: h.held_mr_bytes,
    };
    let claim = if *agent.monitor_up.lock().expect("flag") {
        let k = agent
            .kernel
            .lock()
            .expect("kernel view")
            .get(&pid)
            .copied()
            .unwrap_or_default();
        claim.min(kernel::held(&k))
    } else {
        claim
    };
    let limits = {
        let mut ledger = agent.ledger();
        ledger.connect(id, pid, &tenant);
        ledger.adopt(id, claim);
        ledger.tenants[&tenant].limits
    };
    tracing::debug!(
        conn = id,
        pid,
        uid = cred.uid(),
        tenant,
        program = h.program,
        "process connected"
    );
    reply(
        &mut stream,
        hello.seq,
        response::Body::Hello(msg::HelloReply {
            tenant: tenant.clone(),
            max_send_wr: limits.max_send_wr,
            max_recv_wr: limits.max_recv_wr,
            deny_wr_over_cap: limits.wr_policy == WrPolicy::Deny,
            qp_create_per_sec: limits.qp_create_per_sec,
            mr_create_per_sec: limits.mr_create_per_sec,
            allowed_qp_types: limits.qp_types.map(|t| t.values()).unwrap_or_default(),
            admission_wait_ms: u32::try_from(agent.cfg.acquire_wait_ms).unwrap_or(u32::MAX),
        }),
    )
    .await?;

    while let Some(req) = read_frame(&mut stream, None).await? {
        let body = match req.body {
            Some(request::Body::Admit(a)) => admit(agent, id, &tenant, &a).await,
            Some(request::Body::Release(r)) => {
                if let Some(resource) = Resource::from_wire(r.resource) {
                    agent.ledger().release(id, resource, r.count, r.bytes);
                }
                response::Body::Release(msg::ReleaseReply {})
            }
            Some(request::Body::Hello(_)) => {
                return refuse(&mut stream, req.seq, "hello sent twice".into()).await;
            }
            None => return refuse(&mut stream, req.seq, "empty request".into()).await,
        };
        reply(&mut stream, req.seq, body).await?;
    }
    Ok(())
}

/// Answers an Admit: the node's decision (`Agent::admit`, `admit_qp` or `grow`) as the
/// wire's verdict, counted and, when refused, logged.
async fn admit(agent: &Agent, id: u64, tenant: &str, a: &msg::Admit) -> response::Body {
    let Some(resource) = Resource::from_wire(a.resource) else {
        // CQs and PDs are reported, not capped.
        return response::Body::Admit(msg::AdmitReply {
            verdict: Verdict::Allow as i32,
            granted: 1,
            ..Default::default()
        });
    };
    let decision = match resource {
        Resource::Mr if a.grow => agent.grow(id, a.bytes).await,
        Resource::Mr => agent.admit(id, resource, a.prefetch.max(1), a.bytes).await,
        Resource::Qp => {
            let shape = QpShape {
                qp_type: a.qp_type,
                max_send_wr: a.max_send_wr,
                max_recv_wr: a.max_recv_wr,
            };
            agent.admit_qp(id, shape, a.prefetch.max(1)).await
        }
    };
    let one_at_a_time = agent.one_at_a_time(id, resource);
    let (verdict, scope, used, limit) = match decision {
        Decision::Granted {
            count,
            bytes,
            clamp,
        } => {
            agent.metrics.admitted(tenant, resource);
            let (send, recv) = clamp.unwrap_or((a.max_send_wr, a.max_recv_wr));
            return response::Body::Admit(msg::AdmitReply {
                verdict: if clamp.is_some() {
                    Verdict::Clamped
                } else {
                    Verdict::Allow
                } as i32,
                granted: count,
                granted_bytes: bytes,
                max_send_wr: send,
                max_recv_wr: recv,
                one_at_a_time,
                ..Default::default()
            });
        }
        Decision::Shape(ShapeDenial::Type { qp_type, .. }) => {
            (Verdict::DenyPolicy, "qp_type", u64::from(qp_type), 0)
        }
        Decision::Shape(ShapeDenial::WorkRequests { field, asked, cap }) => {
            (Verdict::DenyQuota, field, u64::from(asked), u64::from(cap))
        }
        Decision::RateLimited { per_sec } => (Verdict::DenyRate, "rate", 0, u64::from(per_sec)),
        Decision::Denied { scope, used, limit } => (Verdict::DenyQuota, scope, used, limit),
        // (`Agent::admit` has already acquired and decided again: a shortfall left is a
        // denial by the tenant's budget.)
        Decision::NeedMore { .. } => (Verdict::DenyQuota, "tenant", 0, 0),
    };
    agent.metrics.denied(tenant, resource, scope);
    tracing::info!(
        conn = id,
        tenant,
        %resource,
        scope,
        used,
        limit,
        "admission denied"
    );
    response::Body::Admit(msg::AdmitReply {
        verdict: verdict as i32,
        used,
        limit,
        one_at_a_time,
        scope: scope.to_string(),
        ..Default::default()
    })
}
