//! Leader failover benchmark: a 3-member coordinator cluster on loopback; kill the leader
//! (SIGKILL) and time until the first successful grant through any surviving member;
//! restart it and repeat. Prints each time, the median and the maximum.
//!
//!     cargo run --release -p rdmaq-bench --bin failover-bench -- [KILLS]
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use clap::Parser;
use rdmaq_lab::{coordinator::CoordinatorCluster, pki::Cert};
use rdmaq_proto::v1::{self as pb, agent_client::AgentClient};
use tonic::transport::Channel;

fn client(who: &Cert, addr: std::net::SocketAddr) -> AgentClient<Channel> {
    AgentClient::new(who.channel(&addr.to_string(), Duration::from_millis(500)))
}

fn one_qp() -> Option<pb::Amounts> {
    Some(pb::Amounts {
        qp: 1,
        ..Default::default()
    })
}

/// Leader failover: SIGKILL the leader of a 3-member cluster, time until the first grant
/// through a survivor, restart it, repeat.
#[derive(Debug, Parser)]
#[command(name = "failover-bench")]
struct Args {
    /// Leader kills.
    #[arg(default_value_t = 10)]
    kills: usize,
}

fn main() {
    let Args { kills } = Args::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let mut c = CoordinatorCluster::start(3, &[]);
    c.cli_ok(&["quota", "set", "bench", "--max-qp", "1000000"]);
    let cert = c.pki.agent("bench-node");
    rt.block_on(async {
        let mut a = client(&cert, c.addr(1));
        a.register(pb::RegisterRequest {
            node: "bench-node".into(),
            address: String::new(),
        })
        .await
        .expect("register");
    });
    let mut times = Vec::new();
    for round in 1..=kills {
        let leader = c.wait_leader(Duration::from_secs(30));
        let survivors: Vec<_> = c
            .members
            .iter()
            .filter(|m| m.id != leader)
            .map(|m| m.addr)
            .collect();
        c.kill(leader);
        let killed = Instant::now();
        let elapsed = rt.block_on(async {
            loop {
                for addr in &survivors {
                    let req = pb::AcquireRequest {
                        node: "bench-node".into(),
                        tenant: "bench".into(),
                        want: one_qp(),
                        min: one_qp(),
                    };
                    if client(&cert, *addr).acquire(req).await.is_ok() {
                        return killed.elapsed();
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        println!(
            "kill {round}: leader {leader} -> first grant after {} ms",
            elapsed.as_millis()
        );
        times.push(elapsed);
        c.start_member(leader);
        std::thread::sleep(Duration::from_secs(2));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover to first grant over {} kills: p50 {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(*times.last().expect("at least one kill"))
    );
}
