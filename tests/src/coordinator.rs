//! A coordinator cluster of real `rdmaq-coordinator` processes on loopback, for
//! multi-process tests: start, kill, pause (SIGSTOP, as if cut off) and restart members,
//! and run the `rdmaq` CLI against them. Dropping it kills every member and removes their
//! data.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

use crate::{
    bins::bin,
    pki::{Cert, Pki},
};

pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The network namespace the member runs in, when it is not the cluster's (a member
    /// placed apart, so that it can be partitioned).
    netns: Option<String>,
    /// Flags for this member only, after the cluster's (`set_flags`).
    flags: Vec<String>,
    child: Option<Child>,
}

pub struct CoordinatorCluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    extra: Vec<String>,
    initial: String,
    /// Run members and the CLI inside this network namespace (the soft-RoCE lab's), where
    /// the lab nodes can reach them.
    netns: Option<String>,
    /// The cluster's CA; members, the CLI and agents all speak mutual TLS.
    pub pki: Pki,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
    l.local_addr().expect("its address")
}

impl CoordinatorCluster {
    /// Starts `n` members (ids 1..=n) forming one new cluster on loopback; `extra` flags go
    /// to each.
    pub fn start(n: u64, extra: &[&str]) -> CoordinatorCluster {
        Self::start_with(n, extra, None, |_| (free_port(), None))
    }

    /// Starts `n` members in network namespace `netns` on `host` ports 7101, 7102, ...
    pub fn start_in(
        netns: &str,
        host: std::net::Ipv4Addr,
        n: u64,
        extra: &[&str],
    ) -> CoordinatorCluster {
        Self::start_with(n, extra, Some(netns.to_string()), |id| {
            (SocketAddr::new(host.into(), 7100 + id as u16), None)
        })
    }

    /// Starts `n` members, each in a network namespace of its own on the lab's bridge
    /// (`Lab::add_member_host`), so that any of them can be partitioned from the rest
    /// (`Lab::isolate_member`); the CLI runs on the bridge's host side.
    pub fn start_apart(
        lab: &crate::Lab,
        n: u64,
        extra: &[&str],
    ) -> Result<CoordinatorCluster, crate::LabError> {
        let placed = (1..=n)
            .map(|id| lab.add_member_host(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::start_with(
            n,
            extra,
            Some(lab.netns().to_string()),
            |id| {
                let (ns, addr) = &placed[id as usize - 1];
                (SocketAddr::new((*addr).into(), 7100), Some(ns.clone()))
            },
        ))
    }

    fn start_with(
        n: u64,
        extra: &[&str],
        netns: Option<String>,
        place: impl Fn(u64) -> (SocketAddr, Option<String>),
    ) -> CoordinatorCluster {
        let dir = std::env::temp_dir().join(format!(
            "rdmaq-coord-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the cluster's directory");
        let members: Vec<Member> = (1..=n)
            .map(|id| (id, place(id)))
            .map(|(id, (addr, netns))| Member {
                id,
                addr,
                netns,
                data_dir: dir.join(format!("m{id}")),
                log: dir.join(format!("m{id}.log")),
                flags: Vec::new(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.id, m.addr))
            .collect::<Vec<_>>()
            .join(",");
        let pki = Pki::new(&dir.join("pki"));
        for m in &members {
            pki.member(m.id, &[m.addr.ip().to_string()]);
        }
        let mut cluster = CoordinatorCluster {
            dir,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            initial,
            netns,
            pki,
        };
        for id in 1..=n {
            cluster.start_member(id);
        }
        cluster.wait_leader(Duration::from_secs(20));
        cluster
    }

    fn member(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// A command for `program`, inside the cluster's namespace if it has one.
    pub fn command(&self, program: &std::path::Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Gives member `id` these flags (after the cluster's) from its next start.
    pub fn set_flags(&mut self, id: u64, flags: &[&str]) {
        self.member(id).flags = flags.iter().map(|s| s.to_string()).collect();
    }

    /// Restarts every member (with its data) with a metrics listener of its own on loopback,
    /// and returns their addresses, member 1's first; then waits for a leader.
    pub fn with_metrics(&mut self) -> Vec<SocketAddr> {
        let ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        let metrics: Vec<SocketAddr> = ids
            .iter()
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a free loopback port")
            })
            .collect();
        for (id, addr) in ids.iter().zip(&metrics) {
            self.kill(*id);
            self.set_flags(*id, &["--metrics-listen", &addr.to_string()]);
        }
        for id in &ids {
            self.start_member(*id);
        }
        self.wait_leader(Duration::from_secs(30));
        metrics
    }

    /// (Re)starts member `id` with its existing data.
    pub fn start_member(&mut self, id: u64) {
        let (extra, initial) = (self.extra.clone(), self.initial.clone());
        let addr = self.addr(id);
        let mut cmd = match &self.member(id).netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("rdmaq-coordinator"));
                c
            }
            None => self.command(&bin("rdmaq-coordinator")),
        };
        let tls = self.pki.member(id, &[addr.ip().to_string()]).flags();
        let m = self.member(id);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("member log");
        let child = cmd
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(m.addr.to_string())
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--initial-members")
            .arg(&initial)
            .args(&tls)
            .args(&extra)
            .args(&m.flags)
            // RDMAQ_TEST_LOG overrides the members' log filter when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("RDMAQ_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting rdmaq-coordinator");
        m.child = Some(child);
    }

    /// The process id of member `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.child.as_ref())
            .map(|c| c.id())
    }

    /// Kills member `id` with SIGKILL.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.member(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status of member `id`'s process if it ended without `kill` (a crash).
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        self.member(id)
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&mut self, id: u64, sig: signal::Signal) {
        if let Some(c) = &self.member(id).child {
            let _ = signal::kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Freezes member `id` (SIGSTOP): to the others it is as if cut off the network.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, signal::Signal::SIGSTOP);
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, signal::Signal::SIGCONT);
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        self.members
            .iter()
            .find(|m| m.id == id)
            .expect("member")
            .addr
    }

    /// Every member's address, comma separated (for `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `rdmaq --endpoints ENDPOINTS ARGS...` as the test admin.
    pub fn cli_at(&self, endpoints: &str, args: &[&str]) -> Output {
        self.cli_as(&self.pki.admin(), endpoints, args)
    }

    /// Runs `rdmaq --endpoints ENDPOINTS ARGS...` with certificate `who`.
    pub fn cli_as(&self, who: &Cert, endpoints: &str, args: &[&str]) -> Output {
        self.command(&bin("rdmaq"))
            .arg("--endpoints")
            .arg(endpoints)
            .args(who.flags())
            .args(args)
            .output()
            .expect("running rdmaq")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_at(&self.endpoints(), args)
    }

    /// Like `cli`, but fails the test, showing the output, unless it exits 0.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "rdmaq {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cluster status member `id` reports, parsed from `-o json`.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let out = self.cli_at(
            &self.addr(id).to_string(),
            &["cluster", "status", "-o", "json", "--timeout", "2"],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Waits until a live member reports itself the leader, and returns its id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                if self.status(m.id).and_then(|s| s["leader_id"].as_u64()) == Some(m.id) {
                    self.wait_followers_know(m.id);
                    return m.id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {timeout:?}; logs in {}",
                self.dir.display()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Followers learn of a new leader from its first append; until then they answer
    /// writes with "no leader". Waits (briefly) until every member that answers names
    /// `leader`, so that tests start from a settled cluster.
    fn wait_followers_know(&self, leader: u64) {
        let settle = Instant::now() + Duration::from_secs(5);
        for m in self
            .members
            .iter()
            .filter(|m| m.child.is_some() && m.id != leader)
        {
            while Instant::now() < settle {
                match self.status(m.id) {
                    Some(s) if s["leader_id"].as_u64() != Some(leader) => {
                        thread::sleep(Duration::from_millis(50))
                    }
                    _ => break,
                }
            }
        }
    }

    /// Member `id`'s log file.
    pub fn log_path(&self, id: u64) -> &std::path::Path {
        &self
            .members
            .iter()
            .find(|m| m.id == id)
            .expect("member")
            .log
    }

    /// The tail of member `id`'s log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for CoordinatorCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        for id in ids {
            self.resume(id);
            self.kill(id);
        }
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
