//! Property test of leases against broken clocks: members whose wall clocks are hours apart
//! and step both ways, leaders that change (with election gaps) — and still no lease is
//! reclaimed while its agent may admit from it. Time here is simulated real time; every
//! entry is stamped by the current leader's `LeaseClock` as in `batch.rs`.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{
    tests::{POLICY, cap_qp, granted, qps},
    *,
};
use crate::lease_clock::LeaseClock;

const MEMBERS: usize = 3;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const HOUR: i64 = 3_600_000;

#[derive(Debug, Clone)]
enum Op {
    /// Real time passes (no entry is written: a quiet spell, or an election's gap).
    Advance(u64),
    /// Member `m` becomes the leader of a new term.
    Elect(usize),
    /// Member `m`'s wall clock steps by this much (either way).
    StepWall(usize, i64),
    /// A node's agent asks for budget (sent now, stamped by the leader).
    Acquire(usize, u64),
    /// A node's agent renews its lease, reporting half its allotment as used.
    Heartbeat(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..1_500u64).prop_map(Op::Advance),
        1 => (0..MEMBERS).prop_map(Op::Elect),
        1 => (0..MEMBERS, -48 * HOUR..48 * HOUR).prop_map(|(m, d)| Op::StepWall(m, d)),
        3 => (0..3usize, 1..6u64).prop_map(|(n, w)| Op::Acquire(n, w)),
        3 => (0..3usize).prop_map(Op::Heartbeat),
    ]
}

/// The simulated cluster: one replicated state, members' lease clocks and wall clocks.
struct Sim {
    state: State,
    t0: Instant,
    real_ms: u64,
    clocks: Vec<LeaseClock>,
    wall_offset_ms: Vec<i64>,
    leader: usize,
    term: u64,
    index: u64,
    /// Each node's agent's own lease deadline (real ms; no safety margin at all).
    deadline_ms: [u64; 3],
}

impl Sim {
    fn new(wall_offset_ms: Vec<i64>) -> Sim {
        Sim {
            state: State::default(),
            t0: Instant::now(),
            real_ms: 0,
            clocks: (0..MEMBERS).map(|_| LeaseClock::new(0)).collect(),
            wall_offset_ms,
            leader: 0,
            term: 1,
            index: 0,
            deadline_ms: [0; 3],
        }
    }

    /// Writes `command` as the leader does: one entry, stamped by its lease clock.
    fn write(&mut self, command: Command) -> Reply {
        let wall = (1_800_000_000_000i64 + self.real_ms as i64 + self.wall_offset_ms[self.leader])
            .max(0) as u64;
        let stamp = self.clocks[self.leader].stamp_at(
            self.term,
            self.state.now_ms,
            self.t0 + Duration::from_millis(self.real_ms),
            wall,
        );
        self.index += 1;
        let request = Request {
            now_ms: stamp.now_ms,
            term: self.term,
            format: Request::FORMAT,
            wall_ms: stamp.wall_ms,
            policy: POLICY,
            proposals: vec![Proposal {
                actor: "test".into(),
                command,
                caller: None,
            }],
        };
        self.state
            .apply(&request, self.index, self.term)
            .replies
            .remove(0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_lease_is_reclaimed_while_its_agent_may_admit_whatever_the_clocks_do(
        offsets in prop::collection::vec(-24 * HOUR..24 * HOUR, MEMBERS),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut sim = Sim::new(offsets);
        sim.write(Command::SetQuota { tenant: "t1".into(), limits: cap_qp(30) });
        for n in NODES {
            sim.write(Command::RegisterNode { node: n.into(), address: String::new() });
            sim.deadline_ms[NODES.iter().position(|x| *x == n).unwrap()] =
                sim.real_ms + POLICY.lease_ttl_ms;
        }
        for op in ops {
            let before = sim.state.clone();
            let lease_before = sim.state.now_ms;
            // What the agents may admit until as this entry is written (a renewal in it
            // extends its own node's deadline only once it is answered).
            let deadlines = sim.deadline_ms;
            match &op {
                Op::Advance(ms) => sim.real_ms += ms,
                Op::Elect(m) => {
                    sim.term += 1;
                    sim.leader = *m;
                }
                Op::StepWall(m, d) => sim.wall_offset_ms[*m] += d,
                Op::Acquire(n, want) => {
                    let sent = sim.real_ms;
                    let reply = sim.write(Command::Acquire {
                        node: NODES[*n].into(),
                        tenant: "t1".into(),
                        want: qps(*want),
                        min: qps(0),
                    });
                    if granted(&reply) > 0 {
                        sim.deadline_ms[*n] = sim.deadline_ms[*n].max(sent + POLICY.lease_ttl_ms);
                    }
                }
                Op::Heartbeat(n) => {
                    let sent = sim.real_ms;
                    let used = qps(sim.state.allotment("t1", NODES[*n]).allotted.qp / 2);
                    let reply = sim.write(Command::Heartbeat {
                        node: NODES[*n].into(),
                        used: vec![("t1".into(), used)],
                    });
                    if matches!(reply, Reply::HeartbeatAck { .. }) {
                        sim.deadline_ms[*n] = sim.deadline_ms[*n].max(sent + POLICY.lease_ttl_ms);
                    }
                }
            }
            // The lease clock never runs ahead of real time (both start at 0).
            prop_assert!(
                sim.state.now_ms >= lease_before && sim.state.now_ms <= sim.real_ms,
                "lease clock at {} (from {lease_before}), real time {}", sim.state.now_ms, sim.real_ms
            );
            for (i, n) in NODES.iter().enumerate() {
                let (b, a) = (before.allotment("t1", n), sim.state.allotment("t1", n));
                let expired = sim.state.nodes[*n].lease_expired && !before.nodes[*n].lease_expired;
                if expired || a.allotted.qp < b.allotted.qp {
                    prop_assert!(
                        sim.real_ms >= deadlines[i],
                        "{n}'s lease reclaimed at real {} ms, but its agent may admit until {} ms ({op:?})",
                        sim.real_ms, deadlines[i]
                    );
                }
            }
        }
    }
}
