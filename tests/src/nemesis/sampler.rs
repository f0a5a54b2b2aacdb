//! The checker's eyes: every node's RDMA objects as the kernel lists them (`rdma -j resource
//! show`), attributed by pid to the run that launched the process (the node's launch file),
//! and whether the node's agent process is alive — sampled on all nodes at once, over and
//! over.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    record::{Dim, Journal, NodeSample, Sample},
    workload::LAUNCH_FILE,
};
use crate::Lab;

const SEP: &str = "@@nemesis@@";

/// Prints `up` if the agent process the lab started (`/tmp/agent.pid`) is alive and not a
/// zombie, with shell built-ins only (`pgrep` takes most of a second under emulation).
const AGENT_UP: &str = "st=; read -r _ _ st _ < /proc/$(cat /tmp/agent.pid)/stat 2>/dev/null; \
                        case $st in ''|Z|X) echo down;; *) echo up;; esac";

/// What the sampler knows of one node between rounds.
#[derive(Default)]
struct NodeView {
    launch_lines: usize,
    /// The run whose process has this pid (the newest launch wins: a pid is only reused
    /// after its process died, and its launch line is written before it creates anything).
    runs: HashMap<u32, u64>,
}

pub fn sample_until(lab: &Lab, journal: &Journal, start: Instant, stop: Arc<AtomicBool>) {
    let mut views: Vec<NodeView> = lab.nodes().iter().map(|_| NodeView::default()).collect();
    while !stop.load(Ordering::Relaxed) {
        let before = start.elapsed();
        // Objects first, launch lines after: every object's process then has its line.
        let pending: Vec<_> = lab
            .nodes()
            .iter()
            .zip(&views)
            .map(|(n, v)| {
                n.spawn_with_timeout(
                    &format!(
                        "printf 'resource show qp\\nresource show mr\\n' | rdma -j -b -; echo {SEP}; \
                         tail -n +{} {LAUNCH_FILE} 2>/dev/null; echo {SEP}; {AGENT_UP}",
                        v.launch_lines + 1
                    ),
                    Duration::from_secs(30),
                )
            })
            .collect();
        let outs: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
        let at = (before + start.elapsed()) / 2;
        let mut nodes = Vec::new();
        let mut complete = true;
        for (out, view) in outs.into_iter().zip(views.iter_mut()) {
            match out.ok().and_then(|o| parse(&o.stdout, view)) {
                Some(s) => nodes.push(s),
                None => complete = false,
            }
        }
        if complete {
            journal.samples.lock().unwrap().push(Sample { at, nodes });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parse(out: &str, view: &mut NodeView) -> Option<NodeSample> {
    let parts: Vec<&str> = out.split(SEP).collect();
    let [objects, launches, agent] = parts[..] else {
        return None;
    };
    // `rdma -b` prints one JSON array per command: QPs, then MRs.
    let mut arrays = objects.lines().filter(|l| l.trim_start().starts_with('['));
    let (qps, mrs) = (arrays.next()?, arrays.next()?);
    for line in launches.lines().filter(|l| !l.trim().is_empty()) {
        view.launch_lines += 1;
        let mut f = line.split_whitespace();
        if let (Some(pid), Some(run)) = (
            f.next().and_then(|p| p.parse().ok()),
            f.next().and_then(|r| r.parse().ok()),
        ) {
            view.runs.insert(pid, run);
        }
    }
    let mut objects = Vec::new();
    for (dim, text) in [(Dim::Qp, qps), (Dim::Mr, mrs)] {
        for pid in user_pids(text)? {
            objects.push((dim, view.runs.get(&pid).copied()));
        }
    }
    Some(NodeSample {
        objects,
        agent_up: agent.trim() == "up",
    })
}

/// The owning pid of every user-space object in one `rdma -j resource show` array (kernel
/// objects have no pid); `None` if it is not what `rdma` prints.
fn user_pids(array: &str) -> Option<Vec<u32>> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(array.trim()).ok()?;
    Some(
        rows.iter()
            .filter_map(|r| r["pid"].as_u64())
            .map(|p| p as u32)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_attributed_to_the_newest_launch_of_their_pid() {
        let mut view = NodeView::default();
        let out = format!(
            "[{{\"ifname\":\"rxe0\",\"lqpn\":1,\"type\":\"GSI\",\"comm\":\"[ib_core]\"}},\
             {{\"ifname\":\"rxe0\",\"lqpn\":17,\"pid\":40,\"comm\":\"verbs_check\"}},\
             {{\"ifname\":\"rxe0\",\"lqpn\":18,\"pid\":41,\"comm\":\"other\"}}]\n\
             [{{\"ifname\":\"rxe0\",\"mrn\":3,\"mrlen\":65536,\"pid\":40,\"comm\":\"verbs_check\"}}]\n{SEP}\n\
             40 7\n40 9\n{SEP}\nup\n"
        );
        let s = parse(&out, &mut view).unwrap();
        assert_eq!(
            s.objects,
            vec![(Dim::Qp, Some(9)), (Dim::Qp, None), (Dim::Mr, Some(9))]
        );
        assert!(s.agent_up);
        assert_eq!(view.launch_lines, 2);
        assert!(parse("garbage", &mut view).is_none());
    }
}
