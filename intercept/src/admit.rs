//! Admission decisions and the process's ledger of admitted objects. In agent mode the
//! agent decides, through a process-local batch of pre-admitted tokens so that most calls
//! need no round trip; in standalone mode (no agent socket, or the agent unreachable with
//! the fail-open policy) the original design's per-process and host-wide limits apply.

use std::{
    collections::{HashMap, HashSet},
    ffi::c_int,
    hash::{BuildHasherDefault, Hasher},
    time::{Duration, Instant},
};

use rdmaq_proto::intercept::{self as msg, Resource, Verdict, request, response};

use crate::{
    agent::AgentConn,
    config::{AgentFailure, Config, WrPolicy},
    ffi::IbvQpCap,
    host::{HostTable, Reserve},
    log::log_at,
    rate::Bucket,
};

/// Unused agent tokens kept for later creations before the surplus goes back to the agent:
/// at most this many, and no more than the process has objects of that kind alive (at least
/// one, so that create/destroy cycles need no round trip). Tokens held are charged to the
/// tenant, so a process that tears its objects down keeps almost none.
const KEEP_TOKENS: u32 = 8;

fn keep(live: usize) -> u32 {
    KEEP_TOKENS
        .min(u32::try_from(live).unwrap_or(u32::MAX))
        .max(1)
}
/// Tokens asked for ahead of demand on each round trip.
const PREFETCH: u32 = 4;
/// How long to wait before trying an unreachable agent again.
const AGENT_RETRY: Duration = Duration::from_secs(1);

/// Why a creation was refused; each maps to the errno the verb returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Quota {
        resource: &'static str,
        scope: &'static str,
        used: u64,
        limit: u64,
    },
    Rate {
        resource: &'static str,
    },
    Policy {
        reason: String,
    },
    AgentUnavailable,
}

impl Denial {
    pub fn errno(&self) -> c_int {
        match self {
            Denial::Quota { .. } => libc::EDQUOT,
            Denial::Rate { .. } | Denial::AgentUnavailable => libc::EAGAIN,
            Denial::Policy { .. } => libc::EPERM,
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Quota {
                resource,
                scope,
                used,
                limit,
            } => write!(
                f,
                "{resource} denied: {scope} use {used} has reached its limit {limit} (EDQUOT)"
            ),
            Denial::Rate { resource } => {
                write!(f, "{resource} denied: creation rate limit (EAGAIN)")
            }
            Denial::Policy { reason } => write!(f, "denied: {reason} (EPERM)"),
            Denial::AgentUnavailable => {
                write!(
                    f,
                    "denied: the rdmaq agent is unreachable and the policy is fail-closed (EAGAIN)"
                )
            }
        }
    }
}

/// Who admitted an object, so its release goes back to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Standalone; `host` if it holds a slot in the host-wide QP table.
    Standalone {
        host: bool,
    },
    Agent,
}

/// Objects are keyed by their address: already unique and well spread, so a multiplicative
/// mix is all the hashing they need (SipHash would cost more than the rest of an admission).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, v: usize) {
        self.0 = (v as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_right(17);
    }
}

type AddrMap<V> = HashMap<usize, V, BuildHasherDefault<AddrHasher>>;
type AddrSet = HashSet<usize, BuildHasherDefault<AddrHasher>>;

#[derive(Debug, Default, Clone, Copy)]
struct Tokens {
    qp: u32,
    mr: u32,
    bytes: u64,
}

enum AgentLink {
    NotTried,
    Connected(Box<AgentConn>),
    Down { retry_at: Instant },
    Absent,
}

/// Counts of what the process holds, for tests and reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub qps: u64,
    pub mrs: u64,
    pub mr_bytes: u64,
    pub cqs: u64,
    pub pds: u64,
}

pub struct Process {
    pub cfg: Config,
    qps: AddrMap<Source>,
    mrs: AddrMap<(Source, u64)>,
    /// Admitted, creation in progress (counted against the limits until it resolves).
    qp_pending: u64,
    mr_pending: u64,
    bytes_pending: u64,
    bytes_held: u64,
    cqs: AddrSet,
    pds: AddrSet,
    host: Option<HostTable>,
    qp_rate: Option<Bucket>,
    mr_rate: Option<Bucket>,
    agent: AgentLink,
    tokens: Tokens,
}

impl Process {
    pub fn new(cfg: Config) -> Process {
        Process {
            qp_rate: cfg.qp_create_rate.map(Bucket::new),
            mr_rate: cfg.mr_create_rate.map(Bucket::new),
            cfg,
            qps: AddrMap::default(),
            mrs: AddrMap::default(),
            qp_pending: 0,
            mr_pending: 0,
            bytes_pending: 0,
            bytes_held: 0,
            cqs: AddrSet::default(),
            pds: AddrSet::default(),
            host: None,
            agent: AgentLink::NotTried,
            tokens: Tokens::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            qps: self.qps.len() as u64,
            mrs: self.mrs.len() as u64,
            mr_bytes: self.bytes_held,
            cqs: self.cqs.len() as u64,
            pds: self.pds.len() as u64,
        }
    }

    // ------------------------------------------------------------------ agent link

    /// The agent connection, if agent mode is on and the agent answers. `Err` means agent
    /// mode is on but the agent cannot be reached.
    fn agent(&mut self) -> Result<Option<&mut AgentConn>, ()> {
        if let AgentLink::NotTried = self.agent {
            self.agent = if self.cfg.agent_socket.exists() {
                AgentLink::Down {
                    retry_at: Instant::now(),
                }
            } else {
                AgentLink::Absent
            };
        }
        if let AgentLink::Down { retry_at } = self.agent
            && Instant::now() >= retry_at
        {
            match AgentConn::connect(&self.cfg, self.counts()) {
                Ok(conn) => {
                    // Tokens from an earlier connection (an agent that restarted) are not
                    // the new agent's; what the process holds was just claimed instead.
                    self.tokens = Tokens::default();
                    log_at!(
                        &self.cfg,
                        Info,
                        "agent mode: tenant {:?} via {}",
                        conn.hello.tenant,
                        self.cfg.agent_socket.display()
                    );
                    self.agent = AgentLink::Connected(Box::new(conn));
                }
                Err(e) => {
                    log_at!(
                        &self.cfg,
                        Warn,
                        "agent at {} unreachable: {e}",
                        self.cfg.agent_socket.display()
                    );
                    self.agent = AgentLink::Down {
                        retry_at: Instant::now() + AGENT_RETRY,
                    };
                }
            }
        }
        match &mut self.agent {
            AgentLink::Connected(c) => Ok(Some(c)),
            AgentLink::Absent => Ok(None),
            _ => Err(()),
        }
    }

    /// One request to the agent; a failed round trip drops the connection.
    fn agent_call(&mut self, body: request::Body) -> Result<response::Body, Denial> {
        let result = match &mut self.agent {
            AgentLink::Connected(c) => c.call(body),
            _ => return Err(Denial::AgentUnavailable),
        };
        result.map_err(|e| {
            log_at!(&self.cfg, Warn, "agent round trip failed: {e}");
            self.agent = AgentLink::Down {
                retry_at: Instant::now() + AGENT_RETRY,
            };
            Denial::AgentUnavailable
        })
    }

    fn hello(&self) -> Option<&msg::HelloReply> {
        match &self.agent {
            AgentLink::Connected(c) => Some(&c.hello),
            _ => None,
        }
    }

    /// Agent mode is on but unreachable: the configured policy decides.
    fn agent_down(&self) -> Result<(), Denial> {
        match self.cfg.agent_failure {
            AgentFailure::Open => Ok(()),
            AgentFailure::Closed => Err(Denial::AgentUnavailable),
        }
    }

    // ------------------------------------------------------------------ QPs

    /// Decides a QP creation. May lower `cap`'s work-request depths (clamp policy).
    pub fn admit_qp(&mut self, cap: &mut IbvQpCap, qp_type: u32) -> Result<Source, Denial> {
        let agent = match self.agent() {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(()) => {
                self.agent_down()?;
                false
            }
        };
        self.check_qp_shape(cap, qp_type)?;
        let rate_ok = match self.hello().and_then(|h| h.qp_create_per_sec) {
            Some(r) => self.qp_rate.get_or_insert_with(|| Bucket::new(r)).take(),
            None => self.qp_rate.as_mut().is_none_or(Bucket::take),
        };
        if !rate_ok {
            return Err(Denial::Rate { resource: "qp" });
        }
        let source = if agent {
            self.agent_qp()?
        } else {
            self.standalone_qp()?
        };
        self.qp_pending += 1;
        Ok(source)
    }

    fn check_qp_shape(&self, cap: &mut IbvQpCap, qp_type: u32) -> Result<(), Denial> {
        let hello = self.hello();
        let allowed: Option<&[u32]> = match hello {
            Some(h) if !h.allowed_qp_types.is_empty() => Some(&h.allowed_qp_types),
            _ => self.cfg.allowed_qp_types.as_deref(),
        };
        if let Some(types) = allowed
            && !types.contains(&qp_type)
        {
            return Err(Denial::Policy {
                reason: format!("QP type {qp_type} is not in the allowed list {types:?}"),
            });
        }
        let (send, recv, deny) = match hello {
            Some(h) => (h.max_send_wr, h.max_recv_wr, h.deny_wr_over_cap),
            None => (
                self.cfg.max_send_wr,
                self.cfg.max_recv_wr,
                self.cfg.wr_policy == WrPolicy::Deny,
            ),
        };
        for (name, asked, limit) in [
            ("max_send_wr", &mut cap.max_send_wr, send),
            ("max_recv_wr", &mut cap.max_recv_wr, recv),
        ] {
            if let Some(limit) = limit
                && *asked > limit
            {
                if deny {
                    return Err(Denial::Quota {
                        resource: "qp",
                        scope: name,
                        used: u64::from(*asked),
                        limit: u64::from(limit),
                    });
                }
                log_at!(&self.cfg, Info, "qp {name} {} clamped to {limit}", *asked);
                *asked = limit;
            }
        }
        Ok(())
    }

    fn standalone_qp(&mut self) -> Result<Source, Denial> {
        if !self.cfg.qp_control {
            return Ok(Source::Standalone { host: false });
        }
        let used = self.qps.len() as u64 + self.qp_pending;
        if used >= self.cfg.max_qp_per_process {
            return Err(Denial::Quota {
                resource: "qp",
                scope: "process",
                used,
                limit: self.cfg.max_qp_per_process,
            });
        }
        if self.host.is_none() {
            match HostTable::open(&self.cfg.host_state) {
                Ok(t) => self.host = Some(t),
                Err(e) => {
                    log_at!(
                        &self.cfg,
                        Warn,
                        "host QP table {} unavailable ({e}); host-wide cap not enforced",
                        self.cfg.host_state.display()
                    );
                    return Ok(Source::Standalone { host: false });
                }
            }
        }
        let table = self.host.as_ref().expect("opened above");
        match table.add(1, self.cfg.max_global_qp) {
            Ok(Reserve::Granted) => Ok(Source::Standalone { host: true }),
            Ok(Reserve::Full { used, limit }) => Err(Denial::Quota {
                resource: "qp",
                scope: "host",
                used,
                limit,
            }),
            Err(e) => {
                log_at!(
                    &self.cfg,
                    Warn,
                    "host QP table: {e}; host-wide cap not enforced"
                );
                Ok(Source::Standalone { host: false })
            }
        }
    }

    fn agent_qp(&mut self) -> Result<Source, Denial> {
        if self.tokens.qp > 0 {
            self.tokens.qp -= 1;
            return Ok(Source::Agent);
        }
        let reply = self.agent_call(request::Body::Admit(msg::Admit {
            resource: Resource::Qp as i32,
            prefetch: PREFETCH,
            ..Default::default()
        }))?;
        let granted = self.verdict("qp", reply)?;
        self.tokens.qp += granted.0.saturating_sub(1);
        Ok(Source::Agent)
    }

    /// Interprets an Admit reply: (tokens, bytes) granted, or the denial.
    fn verdict(&self, resource: &'static str, reply: response::Body) -> Result<(u32, u64), Denial> {
        let response::Body::Admit(a) = reply else {
            return Err(Denial::AgentUnavailable);
        };
        match Verdict::try_from(a.verdict) {
            Ok(Verdict::Allow | Verdict::Clamped) if a.granted > 0 => {
                Ok((a.granted, a.granted_bytes))
            }
            Ok(Verdict::DenyRate) => Err(Denial::Rate { resource }),
            Ok(Verdict::DenyPolicy) => Err(Denial::Policy {
                reason: format!("the agent refused this {resource}"),
            }),
            _ => Err(Denial::Quota {
                resource,
                scope: "tenant",
                used: a.used,
                limit: a.limit,
            }),
        }
    }

    pub fn commit_qp(&mut self, qp: usize, source: Source) {
        self.qp_pending = self.qp_pending.saturating_sub(1);
        self.qps.insert(qp, source);
    }

    /// The creation failed after admission: give the budget back.
    pub fn abort_qp(&mut self, source: Source) {
        self.qp_pending = self.qp_pending.saturating_sub(1);
        self.give_back_qp(source);
    }

    /// A QP was destroyed. Unknown pointers (created before the library was active) are
    /// ignored.
    pub fn release_qp(&mut self, qp: usize) {
        if let Some(source) = self.qps.remove(&qp) {
            self.give_back_qp(source);
        }
    }

    fn give_back_qp(&mut self, source: Source) {
        match source {
            Source::Standalone { host: true } => {
                if let Some(t) = &self.host
                    && let Err(e) = t.add(-1, u64::MAX)
                {
                    log_at!(&self.cfg, Warn, "host QP table: {e}");
                }
            }
            Source::Standalone { host: false } => {}
            Source::Agent => {
                self.tokens.qp += 1;
                let keep = keep(self.qps.len());
                if self.tokens.qp > keep {
                    let surplus = self.tokens.qp - keep;
                    self.tokens.qp = keep;
                    self.return_tokens(Resource::Qp, surplus, 0);
                }
            }
        }
    }

    fn return_tokens(&mut self, resource: Resource, count: u32, bytes: u64) {
        if count == 0 && bytes == 0 {
            return;
        }
        let _ = self.agent_call(request::Body::Release(msg::Release {
            resource: resource as i32,
            count,
            bytes,
        }));
    }

    // ------------------------------------------------------------------ MRs

    pub fn admit_mr(&mut self, bytes: u64) -> Result<Source, Denial> {
        let agent = match self.agent() {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(()) => {
                self.agent_down()?;
                false
            }
        };
        let rate_ok = match self.hello().and_then(|h| h.mr_create_per_sec) {
            Some(r) => self.mr_rate.get_or_insert_with(|| Bucket::new(r)).take(),
            None => self.mr_rate.as_mut().is_none_or(Bucket::take),
        };
        if !rate_ok {
            return Err(Denial::Rate { resource: "mr" });
        }
        let source = if agent {
            self.agent_mr(bytes)?
        } else {
            let used = self.mrs.len() as u64 + self.mr_pending;
            if used >= self.cfg.max_mr_per_process {
                return Err(Denial::Quota {
                    resource: "mr",
                    scope: "process",
                    used,
                    limit: self.cfg.max_mr_per_process,
                });
            }
            let held = self.bytes_held + self.bytes_pending;
            if held.saturating_add(bytes) > self.cfg.max_bytes_per_process {
                return Err(Denial::Quota {
                    resource: "mr bytes",
                    scope: "process",
                    used: held,
                    limit: self.cfg.max_bytes_per_process,
                });
            }
            Source::Standalone { host: false }
        };
        self.mr_pending += 1;
        self.bytes_pending += bytes;
        Ok(source)
    }

    fn agent_mr(&mut self, bytes: u64) -> Result<Source, Denial> {
        if self.tokens.mr > 0 && self.tokens.bytes >= bytes {
            self.tokens.mr -= 1;
            self.tokens.bytes -= bytes;
            return Ok(Source::Agent);
        }
        let reply = self.agent_call(request::Body::Admit(msg::Admit {
            resource: Resource::Mr as i32,
            bytes,
            prefetch: PREFETCH,
            ..Default::default()
        }))?;
        let (count, granted_bytes) = self.verdict("mr", reply)?;
        self.tokens.mr += count.saturating_sub(1);
        self.tokens.bytes += granted_bytes.saturating_sub(bytes);
        Ok(Source::Agent)
    }

    pub fn commit_mr(&mut self, mr: usize, source: Source, bytes: u64) {
        self.mr_pending = self.mr_pending.saturating_sub(1);
        self.bytes_pending = self.bytes_pending.saturating_sub(bytes);
        self.bytes_held += bytes;
        self.mrs.insert(mr, (source, bytes));
    }

    pub fn abort_mr(&mut self, source: Source, bytes: u64) {
        self.mr_pending = self.mr_pending.saturating_sub(1);
        self.bytes_pending = self.bytes_pending.saturating_sub(bytes);
        self.give_back_mr(source, bytes);
    }

    pub fn release_mr(&mut self, mr: usize) {
        if let Some((source, bytes)) = self.mrs.remove(&mr) {
            self.bytes_held = self.bytes_held.saturating_sub(bytes);
            self.give_back_mr(source, bytes);
        }
    }

    /// `ibv_rereg_mr` changed the length of a registered MR.
    pub fn resize_mr(&mut self, mr: usize, bytes: u64) {
        if let Some((_, old)) = self.mrs.get_mut(&mr) {
            self.bytes_held = self.bytes_held - *old + bytes;
            *old = bytes;
        }
    }

    fn give_back_mr(&mut self, source: Source, bytes: u64) {
        if source == Source::Agent {
            self.tokens.mr += 1;
            self.tokens.bytes += bytes;
            let keep = keep(self.mrs.len());
            if self.tokens.mr > keep {
                // Kept tokens keep the bytes of the MR just released each, so that an MR of
                // the same size can be registered again without a round trip.
                let surplus = self.tokens.mr - keep;
                self.tokens.mr = keep;
                let kept_bytes = bytes.saturating_mul(u64::from(keep)).min(self.tokens.bytes);
                let spare_bytes = self.tokens.bytes - kept_bytes;
                self.tokens.bytes = kept_bytes;
                self.return_tokens(Resource::Mr, surplus, spare_bytes);
            }
        }
    }

    // ------------------------------------------------------------------ CQs, PDs

    pub fn note_cq(&mut self, cq: usize, created: bool) {
        let changed = if created {
            self.cqs.insert(cq)
        } else {
            self.cqs.remove(&cq)
        };
        if changed {
            self.report(Resource::Cq, created);
        }
    }

    pub fn note_pd(&mut self, pd: usize, created: bool) {
        let changed = if created {
            self.pds.insert(pd)
        } else {
            self.pds.remove(&pd)
        };
        if changed {
            self.report(Resource::Pd, created);
        }
    }

    /// CQs and PDs are not capped; the agent is told so that it reports them with the rest.
    fn report(&mut self, resource: Resource, created: bool) {
        if !matches!(self.agent, AgentLink::Connected(_)) {
            return;
        }
        let body = if created {
            request::Body::Admit(msg::Admit {
                resource: resource as i32,
                ..Default::default()
            })
        } else {
            request::Body::Release(msg::Release {
                resource: resource as i32,
                count: 1,
                bytes: 0,
            })
        };
        let _ = self.agent_call(body);
    }

    /// At exit: unused tokens go back to the agent.
    pub fn return_all_tokens(&mut self) {
        let t = std::mem::take(&mut self.tokens);
        self.return_tokens(Resource::Qp, t.qp, 0);
        self.return_tokens(Resource::Mr, t.mr, t.bytes);
    }
}
