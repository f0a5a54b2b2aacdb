//! The soft-RoCE lab: N real RDMA nodes (qemu VMs running a Debian kernel with `rdma_rxe`)
//! on one bridge inside a network namespace of the lab's own.
//!
//! Every lab holds an exclusive lock while it lives (VMs under software emulation share two
//! cores; running two labs at once only makes both time out), and everything it creates —
//! namespace, taps, qemu processes, its directory — is removed when it is dropped, also when
//! a test panics. A lab left behind by a killed test process is swept by the next one.

mod kernel;
mod net;
mod node;
mod sweep;

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

pub mod available;
pub use kernel::Kernel;
pub use node::{CmdOutput, Node, Pending};

/// The host's side of the bridge, reachable from every node (coordinators run there).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Node `i` (1-based) has address 10.77.0.(10 + i).
pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + i as u8)
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the soft-RoCE lab needs root (network namespaces, taps, qemu); run the tests as root")]
    NotRoot,
    #[error("lab setup step `{step}` failed: {detail}")]
    Setup { step: String, detail: String },
    #[error("node {node} did not boot within {secs} s; its console ended with:\n{console}")]
    BootTimeout {
        node: String,
        secs: u64,
        console: String,
    },
    #[error("node {node} stopped before it was ready; its console ended with:\n{console}")]
    BootFailed { node: String, console: String },
    #[error("node {node} is gone (killed or crashed) while running `{cmd}`")]
    NodeGone { node: String, cmd: String },
    #[error("node {node} could not run `{cmd}`: {error}")]
    Spawn {
        node: String,
        cmd: String,
        error: String,
    },
    #[error("{0}")]
    CommandFailed(Box<CmdOutput>),
    #[error("lab I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What lab to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub nodes: usize,
    pub kernel: Kernel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot_timeout: Duration,
}

impl LabSpec {
    pub fn new(nodes: usize, kernel: Kernel) -> Self {
        LabSpec {
            nodes,
            kernel,
            memory_mib: 1024,
            cpus: 1,
            boot_timeout: Duration::from_secs(180),
        }
    }
}

/// A running lab. Dropping it tears everything down.
pub struct Lab {
    name: String,
    dir: PathBuf,
    nodes: Vec<Node>,
    kernel_release: String,
    _lock: sweep::LabLock,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Prepares the kernel if needed and boots `spec.nodes` nodes, each with `rxe0` up.
    pub fn start(spec: &LabSpec) -> Result<Lab, LabError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let images = kernel::prepare(spec.kernel)?;
        let lock = sweep::LabLock::acquire()?;
        sweep::sweep_stale();

        let name = format!(
            "rdmaq-lab-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = sweep::labs_dir().join(&name);
        fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut lab = Lab {
            name,
            dir,
            nodes: Vec::new(),
            kernel_release: images.release.clone(),
            _lock: lock,
        };
        net::create(&lab.name, spec.nodes)?;
        let guest = guest_binary()?;
        for i in 1..=spec.nodes {
            let node = node::boot(&node::BootSpec {
                lab: &lab.name,
                dir: &lab.dir,
                index: i,
                images: &images,
                guest: &guest,
                memory_mib: spec.memory_mib,
                cpus: spec.cpus,
            })?;
            lab.nodes.push(node);
        }
        for node in &lab.nodes {
            node.wait_ready(spec.boot_timeout)?;
        }
        Ok(lab)
    }

    /// Node `i`, 1-based like the names (`node1`, ...).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The network namespace holding the bridge, the taps and the qemu processes.
    pub fn netns(&self) -> &str {
        &self.name
    }

    /// The guest kernel's release (`uname -r` in the nodes).
    pub fn kernel_release(&self) -> &str {
        &self.kernel_release
    }

    /// The lab's scratch directory on the host (console logs, control sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command that runs on the host inside the lab's namespace, where the bridge address
    /// (`HOST_ADDR`) is local and every node is reachable.
    pub fn host_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Cuts node `i` off the bridge (its tap goes down); it keeps running.
    pub fn cut(&self, i: usize) -> Result<(), LabError> {
        net::set_tap(&self.name, i, false)
    }

    /// Puts node `i` back on the bridge.
    pub fn restore(&self, i: usize) -> Result<(), LabError> {
        net::set_tap(&self.name, i, true)
    }

    /// A network namespace of its own for coordinator member `id`, on the bridge at
    /// 10.77.0.(1 + id); returns its name and address. It goes when the lab does.
    pub fn add_member_host(&self, id: u64) -> Result<(String, Ipv4Addr), LabError> {
        net::create_member_host(&self.name, id)
    }

    /// Cuts member `id` (placed with `add_member_host`) off the network; it keeps running.
    pub fn isolate_member(&self, id: u64) -> Result<(), LabError> {
        net::set_member_link(&self.name, id, false)
    }

    /// Puts member `id` back on the network.
    pub fn rejoin_member(&self, id: u64) -> Result<(), LabError> {
        net::set_member_link(&self.name, id, true)
    }

    /// Kills node `i`'s VM at once, as a power failure would.
    pub fn kill(&self, i: usize) {
        self.node(i).kill();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill();
        }
        net::destroy_members(&self.name);
        net::destroy(&self.name);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The guest agent binary, found beside the test executable (cargo puts every binary of
/// the package in the same `target/<profile>/` directory), or at `RDMAQ_LAB_GUEST`.
fn guest_binary() -> Result<PathBuf, LabError> {
    if let Some(p) = std::env::var_os("RDMAQ_LAB_GUEST") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|source| LabError::Io {
        path: "/proc/self/exe".into(),
        source,
    })?;
    // target/<profile>/deps/<test> -> target/<profile>/rdmaq-lab-guest
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("rdmaq-lab-guest");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(LabError::Setup {
        step: "find rdmaq-lab-guest".into(),
        detail: format!(
            "not found near {}; build it with `cargo build -p rdmaq-tests` or set RDMAQ_LAB_GUEST",
            exe.display()
        ),
    })
}

/// Runs a host command, turning a failure into a `LabError::Setup` naming the step.
fn run_host(step: &str, cmd: &mut Command) -> Result<String, LabError> {
    let out = cmd.output().map_err(|e| LabError::Setup {
        step: step.into(),
        detail: format!("{cmd:?}: {e}"),
    })?;
    if !out.status.success() {
        return Err(LabError::Setup {
            step: step.into(),
            detail: format!(
                "{cmd:?} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
