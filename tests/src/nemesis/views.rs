//! rdmaq's own view of the cluster (`rdmaq usage`), recorded beside the kernel samples.
//! The checker never judges by it; it is printed next to a failure to show what the
//! coordinator believed at the time (caps, what each node held and reported using).

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::record::Journal;
use crate::bins::bin;

/// How to run the CLI as the admin from the bridge's host side.
#[derive(Clone)]
pub struct Cli {
    pub netns: String,
    pub endpoints: String,
    pub admin: Vec<String>,
}

impl Cli {
    /// Runs `rdmaq ARGS` (10 s timeout); its output if it succeeded.
    pub fn run(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(bin("rdmaq"))
            .arg("--endpoints")
            .arg(&self.endpoints)
            .args(&self.admin)
            .args(["--timeout", "10"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub fn record_until(cli: &Cli, journal: &Journal, start: Instant, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let at = start.elapsed();
        if let Some(v) = cli
            .run(&["usage", "-o", "json"])
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
        {
            journal.views.lock().unwrap().push((at, summary(&v)));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// One line per tenant: `t1 cap 10/8: node1 3/1 used 2/1, node2 ...` (QPs/MRs).
fn summary(v: &serde_json::Value) -> String {
    let pair = |a: &serde_json::Value| {
        format!(
            "{}/{}",
            a["qp"].as_u64().unwrap_or(0),
            a["mr"].as_u64().unwrap_or(0)
        )
    };
    let mut lines = Vec::new();
    for t in v["tenants"].as_array().into_iter().flatten() {
        let nodes: Vec<String> = t["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                format!(
                    "{} allotted {} used {} reclaim {}{}",
                    n["node"].as_str().unwrap_or("?"),
                    pair(&n["allotted"]),
                    pair(&n["used"]),
                    pair(&n["reclaim"]),
                    if n["lease_expired"].as_bool() == Some(true) {
                        " (lease expired)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        lines.push(format!(
            "{} cap {}/{}: {}",
            t["tenant"].as_str().unwrap_or("?"),
            t["limits"]["max_qp"].as_u64().unwrap_or(0),
            t["limits"]["max_mr"].as_u64().unwrap_or(0),
            nodes.join(", ")
        ));
    }
    lines.join("; ")
}
