//! The nemesis proper: picks a fault at random, injects it, holds it a while and heals it,
//! one at a time (so at most one coordinator member is ever out, except in a full restart).

use std::time::{Duration, Instant};

use rand::{Rng, rngs::StdRng, seq::SliceRandom};

use super::{
    record::{FaultEvent, Journal, QuotaWrite},
    views::Cli,
};
use crate::{Lab, cluster_lab::ClusterLab, coordinator::CoordinatorCluster};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KillLeader,
    KillFollower,
    PartitionMember,
    CutNode,
    KillAgent,
    KillProgram,
    Quota,
    NodeClock,
    MemberClock,
    FullRestart,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::KillLeader,
        Kind::KillFollower,
        Kind::PartitionMember,
        Kind::CutNode,
        Kind::KillAgent,
        Kind::KillProgram,
        Kind::Quota,
        Kind::NodeClock,
        Kind::MemberClock,
        Kind::FullRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillLeader => "kill-leader",
            Kind::KillFollower => "kill-follower",
            Kind::PartitionMember => "partition-member",
            Kind::CutNode => "cut-node",
            Kind::KillAgent => "kill-agent",
            Kind::KillProgram => "kill-program",
            Kind::Quota => "quota-set",
            Kind::NodeClock => "node-clock-step",
            Kind::MemberClock => "member-clock-step",
            Kind::FullRestart => "full-restart",
        }
    }
}

/// Deals fault kinds like cards: every kind once per round of ten, in a random order, so
/// that even a short run meets every kind.
#[derive(Default)]
pub struct Deck(Vec<Kind>);

impl Deck {
    pub fn deal(&mut self, rng: &mut StdRng) -> Kind {
        if self.0.is_empty() {
            self.0 = Kind::ALL.to_vec();
            self.0.shuffle(rng);
        }
        self.0.pop().expect("a full deck")
    }
}

/// The caps a quota fault picks from, per tenant: [QPs, MRs].
pub const CAP_RANGE: [(u64, u64); 2] = [(2, 12), (1, 8)];

pub struct Nemesis<'a> {
    pub lab: &'a Lab,
    pub coord: &'a mut CoordinatorCluster,
    pub agent_config: String,
    pub journal: &'a Journal,
    pub cli: Cli,
    pub start: Instant,
    pub rng: StdRng,
    pub tenants: Vec<String>,
    /// When each node's agent was last (re)started by the nemesis.
    pub agent_started: Vec<Duration>,
}

impl Nemesis<'_> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn hold(&mut self, secs: std::ops::RangeInclusive<f64>) {
        std::thread::sleep(Duration::from_secs_f64(self.rng.gen_range(secs)));
    }

    /// Injects one fault of `kind`, holds it and heals it.
    pub fn inject(&mut self, kind: Kind) {
        let injected = self.now();
        let (target, node_out) = match kind {
            Kind::KillLeader | Kind::KillFollower => {
                let leader = self.leader();
                let id = if kind == Kind::KillLeader {
                    leader.unwrap_or(1)
                } else {
                    self.other_member(leader)
                };
                self.coord.kill(id);
                self.hold(0.5..=5.0);
                self.coord.start_member(id);
                (format!("member {id}"), None)
            }
            Kind::PartitionMember => {
                let id = match self.leader() {
                    Some(l) if self.rng.gen_bool(0.5) => l,
                    l => self.other_member(l),
                };
                self.lab.isolate_member(id).expect("isolating a member");
                self.hold(1.0..=8.0);
                self.lab.rejoin_member(id).expect("rejoining a member");
                (format!("member {id}"), None)
            }
            Kind::CutNode => {
                let i = self.node();
                self.lab.cut(i).expect("cutting a node off");
                // Sometimes past the lease (10 s): the node's unused budget is reclaimed.
                self.hold(2.0..=15.0);
                self.lab.restore(i).expect("restoring a node");
                (format!("node{i}"), Some(i))
            }
            Kind::KillAgent => {
                let i = self.node();
                let _ = self.lab.node(i).run("pkill -9 -x rdmaq-agent; sleep 0.2");
                self.hold(0.5..=5.0);
                self.restart_agent(i);
                (format!("node{i}"), Some(i))
            }
            Kind::KillProgram => {
                let i = self.node();
                let out = self
                    .lab
                    .node(i)
                    .run("p=$(pgrep -n -x verbs_check) && kill -9 $p && echo $p")
                    .map(|o| o.stdout.trim().to_string())
                    .unwrap_or_default();
                (format!("node{i} pid {out}"), None)
            }
            Kind::Quota => {
                let tenant = self.tenants.choose(&mut self.rng).expect("tenants").clone();
                let caps = CAP_RANGE.map(|(lo, hi)| self.rng.gen_range(lo..=hi));
                self.set_quota(&tenant, caps);
                (format!("{tenant} {caps:?}"), None)
            }
            Kind::NodeClock => {
                let i = self.node();
                let step =
                    self.rng.gen_range(60..=3600) * if self.rng.gen_bool(0.5) { 1 } else { -1 };
                let _ = self
                    .lab
                    .node(i)
                    .run(&format!("date -s @$(( $(date +%s) + {step} )) >/dev/null"));
                (format!("node{i} {step:+}s"), None)
            }
            Kind::MemberClock => {
                let id = self.rng.gen_range(1..=3);
                let hours =
                    self.rng.gen_range(1..=25) * if self.rng.gen_bool(0.5) { 1 } else { -1 };
                let offset = (hours * 3_600_000i64).to_string();
                self.coord
                    .set_flags(id, &["--test-clock-offset-ms", offset.as_str()]);
                self.coord.kill(id);
                self.coord.start_member(id);
                (format!("member {id} {hours:+}h"), None)
            }
            Kind::FullRestart => {
                for id in 1..=3 {
                    self.coord.kill(id);
                }
                self.hold(1.0..=4.0);
                for id in 1..=3 {
                    self.coord.start_member(id);
                }
                ("all members".to_string(), None)
            }
        };
        let healed = self.now();
        eprintln!(
            "nemesis {:>6.1}s: {} {target} healed after {:.1}s",
            healed.as_secs_f64(),
            kind.name(),
            (healed - injected).as_secs_f64()
        );
        self.journal.faults.lock().unwrap().push(FaultEvent {
            kind: kind.name(),
            target,
            injected,
            healed,
            node_out,
        });
    }

    fn node(&mut self) -> usize {
        self.rng.gen_range(1..=self.lab.nodes().len())
    }

    fn other_member(&mut self, not: Option<u64>) -> u64 {
        let others: Vec<u64> = (1..=3).filter(|id| Some(*id) != not).collect();
        *others.choose(&mut self.rng).expect("members")
    }

    /// The member that says it leads, asked with a short timeout (none during an election).
    pub fn leader(&self) -> Option<u64> {
        (1..=3).find(|id| {
            self.coord.pid(*id).is_some()
                && self.coord.status(*id).and_then(|s| s["leader_id"].as_u64()) == Some(*id)
        })
    }

    pub fn restart_agent(&mut self, i: usize) {
        if let Err(e) = ClusterLab::start_agent_of(self.coord, &self.agent_config, self.lab.node(i))
        {
            eprintln!("nemesis: restarting node{i}'s agent failed: {e}");
        }
        self.agent_started[i - 1] = self.now();
    }

    /// `rdmaq quota set TENANT --max-qp Q --max-mr M`, recorded with its outcome.
    pub fn set_quota(&self, tenant: &str, caps: [u64; 2]) -> bool {
        let sent = self.now();
        let acked = self
            .cli
            .run(&[
                "quota",
                "set",
                tenant,
                "--max-qp",
                &caps[0].to_string(),
                "--max-mr",
                &caps[1].to_string(),
            ])
            .is_some();
        self.journal.writes.lock().unwrap().push(QuotaWrite {
            tenant: tenant.to_string(),
            caps,
            sent,
            done: self.now(),
            acked,
        });
        acked
    }
}
