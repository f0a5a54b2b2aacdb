//! The process's admissions and its ledger of admitted objects. In agent mode the agent
//! decides, through the tokens its connection pre-admitted (`agent_conn.rs`, `tokens.rs`)
//! so that most calls need no round trip; in standalone mode (no agent socket, or the agent unreachable with the
//! fail-open policy) the original design's per-process and host-wide caps apply
//! (`standalone.rs`). Work-request caps, allowed QP types and creation rates apply in both,
//! from the agent's hello or from the environment.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    time::Instant,
};

use rdmaq_model::{Amounts, QpShape, RateBucket, Resource, ShapeDenial};
use rdmaq_proto::intercept::{self as msg, request};

use crate::{
    agent_conn::{AgentLink, Mode},
    config::{Config, Failure},
    denial::Denial,
    ffi::IbvQpCap,
    log::log_at,
    standalone::{self, HostCap},
};

/// Who admitted an object, so that its release goes back to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmittedBy {
    /// The standalone caps; `host` if it holds a slot in the host-wide QP table.
    Standalone { host: bool },
    /// The agent (a token).
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
    qps: AddrMap<AdmittedBy>,
    mrs: AddrMap<(AdmittedBy, u64)>,
    /// Admitted, creation in progress (counted against the limits until it resolves).
    pending: Amounts,
    bytes_held: u64,
    cqs: AddrSet,
    pds: AddrSet,
    host: HostCap,
    qp_rate: Option<RateBucket>,
    mr_rate: Option<RateBucket>,
    agent: AgentLink,
}

impl Process {
    pub fn new(cfg: Config) -> Process {
        Process {
            qp_rate: None,
            mr_rate: None,
            cfg,
            qps: AddrMap::default(),
            mrs: AddrMap::default(),
            pending: Amounts::ZERO,
            bytes_held: 0,
            cqs: AddrSet::default(),
            pds: AddrSet::default(),
            host: HostCap::default(),
            agent: AgentLink::NotTried,
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

    /// What the process holds, creations in progress included.
    fn held(&self) -> Amounts {
        Amounts {
            qp: self.qps.len() as u64,
            mr: self.mrs.len() as u64,
            mr_bytes: self.bytes_held,
        }
        .saturating_add(self.pending)
    }

    /// Whether the agent decides (`true`), or the standalone caps; `Err` when agent mode is
    /// on, the agent cannot be reached and the policy is fail-closed.
    fn agent_decides(&mut self) -> Result<bool, Denial> {
        let held = Amounts {
            qp: self.qps.len() as u64,
            mr: self.mrs.len() as u64,
            mr_bytes: self.bytes_held,
        };
        match self.agent.mode(&self.cfg, held) {
            Mode::Agent => Ok(true),
            Mode::Standalone => Ok(false),
            Mode::Refused(reason) => Err(Denial::Policy { reason }),
            Mode::AgentDown => match self.cfg.agent_failure {
                Failure::Open => Ok(false),
                Failure::Closed => Err(Denial::AgentUnavailable),
            },
        }
    }

    /// Takes a creation token from the standalone rate bucket of `resource`, if the
    /// environment sets a rate (in agent mode the agent keeps the node's rates).
    fn standalone_rate_ok(&mut self, resource: Resource) -> bool {
        let (per_sec, bucket) = match resource {
            Resource::Qp => (self.cfg.limits.qp_create_per_sec, &mut self.qp_rate),
            Resource::Mr => (self.cfg.limits.mr_create_per_sec, &mut self.mr_rate),
        };
        let Some(per_sec) = per_sec else { return true };
        let now = Instant::now();
        bucket
            .get_or_insert_with(|| RateBucket::new(per_sec, now))
            .take_at(now)
    }

    // ------------------------------------------------------------------ admission

    /// Decides a QP creation. May lower `cap`'s work-request depths (clamp policy). In agent
    /// mode the agent decides it all (type, work requests, rate, budget); standalone, the
    /// environment's limits do.
    pub fn admit_qp(&mut self, cap: &mut IbvQpCap, qp_type: u32) -> Result<AdmittedBy, Denial> {
        let shape = QpShape {
            qp_type,
            max_send_wr: cap.max_send_wr,
            max_recv_wr: cap.max_recv_wr,
        };
        let (by, clamp) = if self.agent_decides()? {
            let clamp = self.agent.admit(&self.cfg, Resource::Qp, 0, shape)?;
            (AdmittedBy::Agent, clamp)
        } else {
            let clamp = self
                .cfg
                .limits
                .check_qp_shape(shape)
                .map_err(shape_denial)?;
            if !self.standalone_rate_ok(Resource::Qp) {
                return Err(Denial::Rate { resource: "qp" });
            }
            standalone::check_process(&self.cfg.limits, Resource::Qp, 0, self.held())?;
            let host = self.host.reserve(&self.cfg)?;
            (AdmittedBy::Standalone { host }, clamp)
        };
        if let Some((send, recv)) = clamp {
            log_at!(
                &self.cfg,
                Info,
                "qp work requests {}/{} clamped to {send}/{recv}",
                cap.max_send_wr,
                cap.max_recv_wr
            );
            cap.max_send_wr = send;
            cap.max_recv_wr = recv;
        }
        self.pending.qp += 1;
        Ok(by)
    }

    pub fn admit_mr(&mut self, bytes: u64) -> Result<AdmittedBy, Denial> {
        let by = if self.agent_decides()? {
            self.agent
                .admit(&self.cfg, Resource::Mr, bytes, QpShape::default())?;
            AdmittedBy::Agent
        } else {
            if !self.standalone_rate_ok(Resource::Mr) {
                return Err(Denial::Rate { resource: "mr" });
            }
            standalone::check_process(&self.cfg.limits, Resource::Mr, bytes, self.held())?;
            AdmittedBy::Standalone { host: false }
        };
        self.pending = self
            .pending
            .saturating_add(Amounts::of(Resource::Mr, 1, bytes));
        Ok(by)
    }

    // ------------------------------------------------------------------ outcomes

    pub fn commit_qp(&mut self, qp: usize, by: AdmittedBy) {
        self.pending.qp = self.pending.qp.saturating_sub(1);
        self.qps.insert(qp, by);
    }

    /// The creation failed after admission: give the budget back.
    pub fn abort_qp(&mut self, by: AdmittedBy) {
        self.pending.qp = self.pending.qp.saturating_sub(1);
        self.give_back(Resource::Qp, by, 0);
    }

    /// A QP was destroyed. Unknown pointers (created before the library was active) are
    /// ignored.
    pub fn release_qp(&mut self, qp: usize) {
        if let Some(by) = self.qps.remove(&qp) {
            self.give_back(Resource::Qp, by, 0);
        }
    }

    pub fn commit_mr(&mut self, mr: usize, by: AdmittedBy, bytes: u64) {
        self.pending = self
            .pending
            .saturating_sub(Amounts::of(Resource::Mr, 1, bytes));
        self.bytes_held += bytes;
        self.mrs.insert(mr, (by, bytes));
    }

    pub fn abort_mr(&mut self, by: AdmittedBy, bytes: u64) {
        self.pending = self
            .pending
            .saturating_sub(Amounts::of(Resource::Mr, 1, bytes));
        self.give_back(Resource::Mr, by, bytes);
    }

    pub fn release_mr(&mut self, mr: usize) {
        if let Some((by, bytes)) = self.mrs.remove(&mr) {
            self.bytes_held = self.bytes_held.saturating_sub(bytes);
            self.give_back(Resource::Mr, by, bytes);
        }
    }

    /// `ibv_rereg_mr` is about to give `mr` the length `bytes`: the growth, if any, is
    /// admitted before the kernel pins it (by the agent, or by the standalone bytes cap).
    /// Returns the growth admitted (0 if the MR does not grow, or is not one of ours).
    pub fn admit_resize(&mut self, mr: usize, bytes: u64) -> Result<u64, Denial> {
        let Some(&(_, old)) = self.mrs.get(&mr) else {
            return Ok(0);
        };
        let growth = bytes.saturating_sub(old);
        if growth == 0 {
            return Ok(0);
        }
        if self.agent_decides()? {
            self.agent.grow(&self.cfg, growth)?;
        } else {
            standalone::check_bytes(&self.cfg.limits, self.held().mr_bytes, growth)?;
        }
        self.pending.mr_bytes += growth;
        Ok(growth)
    }

    /// The rereg of `mr` to `bytes` ended (`ok` or not), `growth` having been admitted for
    /// it: the MR takes its new length, and what it no longer pins goes back; or, if it
    /// failed, the growth goes back.
    pub fn finish_resize(&mut self, mr: usize, growth: u64, ok: bool, bytes: u64) {
        self.pending.mr_bytes = self.pending.mr_bytes.saturating_sub(growth);
        let agent_owned = self.agent.connected();
        if !ok {
            if growth > 0 && agent_owned {
                self.agent.release_bytes(&self.cfg, growth);
            }
            return;
        }
        let Some((by, old)) = self.mrs.get_mut(&mr) else {
            return;
        };
        let (by, shrink) = (*by, old.saturating_sub(bytes));
        self.bytes_held = self.bytes_held - *old + bytes;
        *old = bytes;
        if shrink > 0 && by == AdmittedBy::Agent {
            self.agent.release_bytes(&self.cfg, shrink);
        }
    }
    fn give_back(&mut self, resource: Resource, by: AdmittedBy, bytes: u64) {
        match by {
            AdmittedBy::Standalone { host: true } => self.host.release(&self.cfg),
            AdmittedBy::Standalone { host: false } => {}
            AdmittedBy::Agent => {
                let live = match resource {
                    Resource::Qp => self.qps.len(),
                    Resource::Mr => self.mrs.len(),
                };
                self.agent.returned(&self.cfg, resource, bytes, live);
            }
        }
    }

    /// At exit: unused tokens go back to the agent.
    pub fn return_all_tokens(&mut self) {
        self.agent.return_all(&self.cfg);
    }

    // ------------------------------------------------------------------ CQs, PDs

    pub fn note_cq(&mut self, cq: usize, created: bool) {
        let changed = if created {
            self.cqs.insert(cq)
        } else {
            self.cqs.remove(&cq)
        };
        if changed {
            self.report(msg::Resource::Cq, created);
        }
    }

    pub fn note_pd(&mut self, pd: usize, created: bool) {
        let changed = if created {
            self.pds.insert(pd)
        } else {
            self.pds.remove(&pd)
        };
        if changed {
            self.report(msg::Resource::Pd, created);
        }
    }

    /// CQs and PDs are not capped; the agent is told so that it reports them with the rest.
    fn report(&mut self, resource: msg::Resource, created: bool) {
        if !self.agent.connected() {
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
        let _ = self.agent.call(&self.cfg, body);
    }
}

/// A refused QP shape as the verb's denial: a type not allowed is EPERM, work requests over
/// the cap (deny policy) EDQUOT.
fn shape_denial(why: ShapeDenial) -> Denial {
    match why {
        ShapeDenial::Type { .. } => Denial::Policy {
            reason: why.to_string(),
        },
        ShapeDenial::WorkRequests { field, asked, cap } => Denial::Quota {
            resource: "qp",
            scope: field,
            used: u64::from(asked),
            limit: u64::from(cap),
        },
    }
}
