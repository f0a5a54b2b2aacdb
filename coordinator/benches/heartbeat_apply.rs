//! The state machine's cost per heartbeat at scale-sim's size: 10,000 nodes, 1,000
//! tenants, 5 tenants per node each with an allotment, heartbeats applied in entries of
//! 170 (the batch size the leader formed in scale-sim's runs). Every member applies every
//! heartbeat, so this is CPU per heartbeat paid three times over.
//!
//! ```sh
//! cargo bench -p rdmaq-coordinator --bench heartbeat_apply
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdmaq_coordinator::state::{Amounts, Caps, Command, LeasePolicy, Limits, Request, State};

const NODES: usize = 10_000;
const TENANTS: usize = 1_000;
const TENANTS_PER_NODE: usize = 5;
const PER_ENTRY: usize = 170;
const POLICY: LeasePolicy = LeasePolicy {
    lease_ttl_ms: 10_000,
    node_dead_ms: 86_400_000,
};

fn entry(now_ms: u64, commands: Vec<Command>) -> Request {
    Request::at(now_ms, POLICY, "bench", commands)
}

/// Node `n`'s tenants (spread like scale-sim's, deterministically).
fn tenants_of(n: usize) -> Vec<String> {
    (0..TENANTS_PER_NODE)
        .map(|k| format!("t{}", (n * 7919 + k * 104_729) % TENANTS))
        .collect()
}

fn qps(n: u64) -> Amounts {
    Amounts {
        qp: n,
        ..Amounts::ZERO
    }
}

fn populated() -> State {
    let mut s = State::default();
    let mut index = 0;
    let mut apply = |s: &mut State, commands: Vec<Command>| {
        index += 1;
        s.apply(&entry(1, commands), index, 1);
    };
    let quotas = (0..TENANTS)
        .map(|t| Command::SetQuota {
            tenant: format!("t{t}"),
            limits: Limits {
                cluster: Caps {
                    qp: Some(400),
                    ..Caps::default()
                },
                ..Limits::default()
            },
        })
        .collect();
    apply(&mut s, quotas);
    for chunk in (0..NODES).collect::<Vec<_>>().chunks(PER_ENTRY) {
        let mut commands = Vec::new();
        for &n in chunk {
            commands.push(Command::RegisterNode {
                node: format!("sim-{n}"),
                address: String::new(),
            });
            for tenant in tenants_of(n) {
                commands.push(Command::Acquire {
                    node: format!("sim-{n}"),
                    tenant,
                    want: qps(2),
                    min: qps(1),
                });
            }
        }
        apply(&mut s, commands);
    }
    s
}

fn heartbeat_apply(c: &mut Criterion) {
    let mut state = populated();
    let beats: Vec<Vec<Command>> = (0..NODES)
        .collect::<Vec<_>>()
        .chunks(PER_ENTRY)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&n| Command::Heartbeat {
                    node: format!("sim-{n}"),
                    used: tenants_of(n).into_iter().map(|t| (t, qps(1))).collect(),
                })
                .collect()
        })
        .collect();
    let mut g = c.benchmark_group("state machine, 10,000 nodes x 1,000 tenants");
    g.throughput(Throughput::Elements(PER_ENTRY as u64));
    let (mut next, mut index, mut now) = (0, 1_000_000, 2);
    g.bench_function("an entry of 170 heartbeats (5 tenants each)", |b| {
        b.iter_batched(
            || {
                next = (next + 1) % beats.len();
                index += 1;
                now += 1;
                (entry(now, beats[next].clone()), index)
            },
            |(req, index)| state.apply(&req, index, 1),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, heartbeat_apply);
criterion_main!(benches);
