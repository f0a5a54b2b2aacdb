//! The whole system in the soft-RoCE lab: a coordinator cluster on the lab bridge's host
//! side, and an rdmaq-agent on every RDMA node, for end-to-end tests and the demo. Plus a
//! checker that samples the kernel's real QPs on every node.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    bins::bin,
    coordinator::CoordinatorCluster,
    lab::{HOST_ADDR, Kernel, Lab, LabError, LabSpec, Node},
    programs,
};

/// The lab agents' `acquire_wait_ms`. A coordinator round trip from an emulated node takes
/// 0.1–0.3 s here (1–3 ms on real hardware), and seconds when the machine runs two labs: the
/// default 1 s let a CI run deny a program while its node's grant was on its way.
const ACQUIRE_WAIT_MS: u64 = 3000;

pub struct ClusterLab {
    pub lab: Lab,
    pub coord: CoordinatorCluster,
    /// Top-level keys added to every agent's configuration.
    agent_config: String,
}

impl ClusterLab {
    /// Boots `nodes` RDMA nodes, a 3-member coordinator on the bridge (with `extra` flags),
    /// and an agent on every node.
    pub fn start(nodes: usize, kernel: Kernel, extra: &[&str]) -> Result<ClusterLab, LabError> {
        Self::start_with(nodes, kernel, extra, "")
    }

    /// Like `start`, with `agent_config` (top-level TOML keys) added to every agent's
    /// configuration.
    pub fn start_with(
        nodes: usize,
        kernel: Kernel,
        extra: &[&str],
        agent_config: &str,
    ) -> Result<ClusterLab, LabError> {
        let lab = Lab::start(&LabSpec::new(nodes, kernel))?;
        let coord = CoordinatorCluster::start_in(lab.netns(), HOST_ADDR, 3, extra);
        Self::with_agents(lab, coord, agent_config)
    }

    /// Like `start_with`, but every coordinator member runs in a network namespace of its
    /// own on the bridge, so that it can be partitioned (`Lab::isolate_member`).
    pub fn start_apart(
        nodes: usize,
        kernel: Kernel,
        extra: &[&str],
        agent_config: &str,
    ) -> Result<ClusterLab, LabError> {
        let lab = Lab::start(&LabSpec::new(nodes, kernel))?;
        let coord = CoordinatorCluster::start_apart(&lab, 3, extra)?;
        Self::with_agents(lab, coord, agent_config)
    }

    fn with_agents(
        lab: Lab,
        coord: CoordinatorCluster,
        agent_config: &str,
    ) -> Result<ClusterLab, LabError> {
        let cl = ClusterLab {
            lab,
            coord,
            agent_config: agent_config.to_string(),
        };
        for node in cl.lab.nodes() {
            cl.start_agent(node)?;
        }
        Ok(cl)
    }

    /// The coordinator endpoints as the nodes reach them.
    pub fn endpoints(&self) -> String {
        self.coord.endpoints()
    }

    /// Starts (or restarts) the agent on `node`, detached, and waits for its socket.
    pub fn start_agent(&self, node: &Node) -> Result<(), LabError> {
        Self::start_agent_of(&self.coord, &self.agent_config, node)
    }

    /// The top-level keys added to every agent's configuration.
    pub fn agent_config(&self) -> &str {
        &self.agent_config
    }

    /// Starts (or restarts) an agent of `coord` on `node` with `agent_config` added to its
    /// configuration (for callers that hold the cluster's parts apart).
    pub fn start_agent_of(
        coord: &CoordinatorCluster,
        agent_config: &str,
        node: &Node,
    ) -> Result<(), LabError> {
        let endpoints: Vec<String> = coord
            .endpoints()
            .split(',')
            .map(|e| format!("\"{e}\""))
            .collect();
        // The node's own agent certificate, copied onto the node as a real deployment would.
        let cert = coord.pki.agent(node.name());
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("reading a certificate");
        let (ca, crt, key) = (read(&cert.ca), read(&cert.cert), read(&cert.key));
        let config = format!(
            "{}\nnode = \"{}\"\nendpoints = [{}]\nlease_margin_ms = 1000\nacquire_wait_ms = {ACQUIRE_WAIT_MS}\n[[rules]]\nuid = 0\nlauncher_tenants = [\"t*\", \"root\"]\ntenant = \"root\"\n\
             [tls]\nca = \"/tmp/tls/ca.pem\"\ncert = \"/tmp/tls/agent.pem\"\nkey = \"/tmp/tls/agent-key.pem\"\n",
            agent_config,
            node.name(),
            endpoints.join(", ")
        );
        node.run_ok(&format!(
            "mkdir -p /tmp/tls && cat > /tmp/tls/ca.pem <<'EOF'\n{ca}EOF\ncat > /tmp/tls/agent.pem <<'EOF'\n{crt}EOF\n\
             cat > /tmp/tls/agent-key.pem <<'EOF'\n{key}EOF\nchmod 600 /tmp/tls/agent-key.pem\n\
             cat > /tmp/agent.toml <<'EOF'\n{config}EOF\nrm -f /tmp/rdmaq.sock; {}setsid {} --config /tmp/agent.toml --socket /tmp/rdmaq.sock --status-listen 127.0.0.1:9465 >> /tmp/agent.log 2>&1 < /dev/null &\necho $! > /tmp/agent.pid\nfor t in $(seq 100); do [ -S /tmp/rdmaq.sock ] && break; sleep 0.1; done; [ -S /tmp/rdmaq.sock ]",
            agent_log_filter(),
            bin("rdmaq-agent").display()
        ))?;
        Ok(())
    }

    /// Runs `rdmaq ARGS` against the coordinator (from the bridge's host side).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.coord.cli(args)
    }

    /// `rdmaq usage TENANT -o json` (null if the CLI failed, e.g. during an election).
    pub fn usage(&self, tenant: &str) -> serde_json::Value {
        let out = self.cli(&["usage", tenant, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Starts shell command `cmd` on every node at once.
    pub fn spawn_everywhere(&self, cmd: &str) -> Vec<crate::Pending<'_>> {
        self.lab.nodes().iter().map(|n| n.spawn(cmd)).collect()
    }

    /// Runs `verbs_check ARGS` as `tenant` on node `i` until it creates `want` QPs, each run
    /// creating at most `most`, for at most `within`; returns how long it took.
    pub fn until_created(
        &self,
        i: usize,
        tenant: &str,
        args: &str,
        (want, most): (u64, u64),
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let out = self
                .lab
                .node(i)
                .run_ok(&Self::exec(tenant, args))
                .unwrap_or_else(|e| panic!("{e}"))
                .stdout;
            let got = created(&out);
            assert!(
                got <= most,
                "node{i} got {got} QPs, more than {most}: {out}"
            );
            if got == want {
                return start.elapsed();
            }
            if start.elapsed() >= within {
                let node_status = self
                    .lab
                    .node(i)
                    .run(&format!(
                        "{} node status --agent 127.0.0.1:9465 -o json; tail -20 /tmp/agent.log",
                        bin("rdmaq").display()
                    ))
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                // What the other agents did: a budget held elsewhere is the usual cause.
                let others: String = (1..=self.lab.nodes().len())
                    .filter(|j| *j != i)
                    .map(|j| {
                        let log = self
                            .lab
                            .node(j)
                            .run("tail -30 /tmp/agent.log")
                            .map(|o| o.stdout)
                            .unwrap_or_default();
                        format!("node{j}'s agent log, last lines:\n{log}\n")
                    })
                    .collect();
                panic!(
                    "node{i} never got {want} QPs for {tenant} within {within:?}:\n{out}\n{}\n\
                     node{i}'s agent:\n{node_status}\n{others}",
                    self.usage(tenant)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A shell command running `verbs_check ARGS` on a node as `tenant`, through the agent.
    pub fn exec(tenant: &str, args: &str) -> String {
        Self::exec_program(
            tenant,
            &format!("{} {args}", programs::verbs_check().display()),
        )
    }

    /// A shell command running `PROGRAM ARGS` on a node as `tenant` under the library,
    /// through the agent (`rdmaq exec`).
    pub fn exec_program(tenant: &str, program: &str) -> String {
        format!(
            "RDMAQ_AGENT_SOCKET=/tmp/rdmaq.sock RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/lib.log {} exec --tenant {tenant} --lib {} -- {program}",
            bin("rdmaq").display(),
            bin("librdmaq_intercept.so").display(),
        )
    }
}

/// Runs `verbs_check ARGS` on `node` as `tenant` under the library (`ClusterLab::exec`) and
/// returns what it printed.
pub fn run_as(node: &Node, tenant: &str, args: &str) -> String {
    node.run_ok(&ClusterLab::exec(tenant, args))
        .unwrap_or_else(|e| panic!("{e}"))
        .stdout
}

/// The QPs a `verbs_check` run reports it created (its `created N` line).
pub fn created(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("created "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'created' line in:\n{out}"))
}

/// The output `verbs_check` writes to `file` on `node`, once it has reported what it
/// created (waits up to 30 s).
pub fn created_in(node: &Node, file: &str) -> String {
    node.run_ok(&format!(
        "for t in $(seq 300); do grep -q created {file} && break; sleep 0.1; done; cat {file}"
    ))
    .unwrap_or_else(|e| panic!("{e}"))
    .stdout
}

/// QPs of processes whose name matches `comm` (an extended regex, e.g. `a|b`) on `node`, as
/// the kernel lists them (`rdma resource show`).
pub fn kernel_qps(node: &Node, comm: &str) -> Option<u64> {
    let out = node
        .run(&format!(
            "rdma resource show qp | grep -cE 'comm ({comm})( |$)'"
        ))
        .ok()?;
    out.stdout.trim().parse().ok()
}

/// When a sample was taken, and each node's count.
pub type Timeline = Vec<(Duration, Vec<u64>)>;

/// Samples every node's kernel QPs of `comm` until stopped; records the timeline and any
/// instant where the cluster-wide total exceeded `cap`.
pub struct Checker {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Timeline>>,
}

impl Checker {
    pub fn spawn<'scope>(
        s: &'scope std::thread::Scope<'scope, '_>,
        lab: &'scope Lab,
        comm: &'static str,
    ) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (st, sa) = (stop.clone(), samples.clone());
        s.spawn(move || {
            let start = Instant::now();
            while !st.load(Ordering::Relaxed) {
                let counts: Vec<u64> = lab
                    .nodes()
                    .iter()
                    .map(|n| kernel_qps(n, comm).unwrap_or(0))
                    .collect();
                sa.lock().unwrap().push((start.elapsed(), counts));
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Checker { stop, samples }
    }

    /// Stops sampling; `Err` with the timeline if the total ever exceeded `cap`.
    pub fn finish(self, cap: u64) -> Result<Timeline, String> {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(400));
        let samples = self.samples.lock().unwrap().clone();
        let over: Vec<_> = samples
            .iter()
            .filter(|(_, c)| c.iter().sum::<u64>() > cap)
            .collect();
        if over.is_empty() {
            return Ok(samples);
        }
        let timeline: Vec<String> = samples
            .iter()
            .map(|(t, c)| {
                format!(
                    "{:>6.1}s {:?} total {}",
                    t.as_secs_f64(),
                    c,
                    c.iter().sum::<u64>()
                )
            })
            .collect();
        Err(format!(
            "{} instants over the cap {cap}:\n{}",
            over.len(),
            timeline.join("\n")
        ))
    }
}

impl Drop for Checker {
    /// A test that panics before `finish` must not leave the sampling thread running (its
    /// scope would wait for it forever).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `RUST_LOG=<filter> ` for agents started in the lab when `RDMAQ_LAB_AGENT_LOG` holds a
/// filter (to diagnose a run at debug level), else nothing: the agent's default.
fn agent_log_filter() -> String {
    match std::env::var("RDMAQ_LAB_AGENT_LOG") {
        Ok(f)
            if !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_=,:.".contains(c)) =>
        {
            format!("RUST_LOG={f} ")
        }
        _ => String::new(),
    }
}
