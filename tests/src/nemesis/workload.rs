//! The workload: on every node, for every tenant, programs that keep creating QPs and MRs,
//! holding them a while and exiting (under the library, through `rdmaq exec`), and on one
//! node a program without the library. Each run writes its pid and run number to the node's
//! launch file before it execs, so the sampler can attribute kernel objects to the tenant
//! the test itself launched them as — never to what rdmaq thinks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::record::{Attempt, Journal, Launch};
use crate::{Lab, bins::bin, programs};

/// Where each node's launch records go (the node's own /tmp).
pub const LAUNCH_FILE: &str = "/tmp/nemesis-launch";

/// Bytes per MR the workload registers.
const MR_BYTES: u64 = 65536;

pub struct Workload<'a> {
    pub lab: &'a Lab,
    pub journal: &'a Journal,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
    pub runs: AtomicU64,
}

impl Workload<'_> {
    /// Keeps launching runs on node `node` until stopped, each as one of `tenants` picked
    /// at random.
    pub fn drive(&self, node: usize, tenants: &[&str], seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        while !self.stop.load(Ordering::Relaxed) {
            let tenant = tenants[rng.gen_range(0..tenants.len())];
            let want = [rng.gen_range(1..=3), rng.gen_range(0..=2)];
            self.once(node, tenant, false, want, rng.gen_range(2..=6));
            std::thread::sleep(Duration::from_millis(rng.gen_range(300..2000)));
        }
    }

    /// Keeps a program without the library holding QPs on node `node`, as `tenant` (the
    /// tenant the agent's rules charge it to).
    pub fn bypass(&self, node: usize, tenant: &str, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        while !self.stop.load(Ordering::Relaxed) {
            self.once(node, tenant, true, [2, 0], rng.gen_range(10..=20));
            std::thread::sleep(Duration::from_millis(rng.gen_range(1000..3000)));
        }
    }

    fn once(&self, node: usize, tenant: &str, bypass: bool, want: [u64; 2], hold: u64) {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let program = format!(
            "{} holdmix {} {} {MR_BYTES} {hold}",
            programs::verbs_check().display(),
            want[0],
            want[1]
        );
        let exec = if bypass {
            program
        } else {
            // What `rdmaq exec --tenant` sets, without its start-up (over 9p, under
            // emulation, a debug `rdmaq` takes over a second to start).
            format!(
                "env LD_PRELOAD={} RDMAQ_TENANT={tenant} RDMAQ_AGENT_SOCKET=/tmp/rdmaq.sock \
                 RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/lib.log {program}",
                bin("librdmaq_intercept.so").display(),
            )
        };
        let sent = self.start.elapsed();
        self.journal.launches.lock().unwrap().insert(
            run,
            Launch {
                run,
                node,
                tenant: tenant.to_string(),
                bypass,
                sent,
            },
        );
        let cmd = format!("echo $$ {run} >> {LAUNCH_FILE}; exec {exec} 2>/dev/null");
        let out = self
            .lab
            .node(node)
            .spawn_with_timeout(&cmd, Duration::from_secs(hold + 60))
            .wait();
        let end = self.start.elapsed();
        let Ok(out) = out else { return };
        // A run killed before it printed (by the nemesis) tells nothing about admission.
        let (Some(qps), Some(mrs)) = (
            value(&out.stdout, "created "),
            value(&out.stdout, "registered "),
        ) else {
            return;
        };
        self.journal.attempts.lock().unwrap().push(Attempt {
            run,
            node,
            tenant: tenant.to_string(),
            bypass,
            start: sent,
            end,
            want,
            got: [qps, mrs],
            refusal: out
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("first_errno "))
                .unwrap_or_default()
                .to_string(),
        });
    }
}

fn value(out: &str, key: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}
