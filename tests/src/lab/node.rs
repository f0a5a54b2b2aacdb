//! One lab node: its qemu process, its console log, and the control connection to its guest
//! agent over a virtio-serial port (a Unix socket on the host side).

use std::{
    collections::HashMap,
    fmt,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::{Duration, Instant},
};

use super::{LabError, kernel::Images, net, node_addr};
use crate::wire::{GuestMsg, HostMsg, PORT_NAME};

/// Default time a command may run in a node.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a command in a node did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub node: String,
    pub cmd: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (self.code, self.signal, self.timed_out) {
            (_, _, true) => "timed out and was killed".to_string(),
            (Some(c), _, _) => format!("exited with {c}"),
            (None, Some(s), _) => format!("was killed by signal {s}"),
            (None, None, _) => "ended without status".to_string(),
        };
        writeln!(f, "on {}: `{}` {}", self.node, self.cmd, how)?;
        writeln!(f, "--- stdout ({})\n{}", self.node, self.stdout.trim_end())?;
        write!(f, "--- stderr ({})\n{}", self.node, self.stderr.trim_end())
    }
}

type Waiters = Arc<Mutex<HashMap<u64, Sender<GuestMsg>>>>;

struct Control {
    stream: Mutex<UnixStream>,
    waiters: Waiters,
    ready: Mutex<Receiver<GuestMsg>>,
}

/// A running node.
pub struct Node {
    name: String,
    addr: Ipv4Addr,
    console: PathBuf,
    qemu: Mutex<Child>,
    control: Control,
    next_id: AtomicU64,
}

pub struct BootSpec<'a> {
    pub lab: &'a str,
    pub dir: &'a Path,
    pub index: usize,
    pub images: &'a Images,
    pub guest: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
}

/// Starts node `spec.index`'s VM and connects to its control port; `wait_ready` then
/// waits for the guest agent.
pub fn boot(spec: &BootSpec<'_>) -> Result<Node, LabError> {
    let name = format!("node{}", spec.index);
    let addr = node_addr(spec.index);
    let console = spec.dir.join(format!("{name}.console"));
    let socket = spec.dir.join(format!("{name}.ctl"));
    let pidfile = spec.dir.join(format!("{name}.pid"));
    let append = format!(
        "console=ttyS0 panic=-1 loglevel=4 rdmaq.name={name} rdmaq.ip={addr}/24 rdmaq.guest={}",
        spec.guest.display()
    );
    let mac = format!("52:54:00:77:00:{:02x}", 10 + spec.index);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", spec.lab, "qemu-system-x86_64"])
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-no-reboot"])
        .args([
            "-smp",
            &spec.cpus.to_string(),
            "-m",
            &spec.memory_mib.to_string(),
        ])
        .args(["-display", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-pidfile")
        .arg(&pidfile)
        .arg("-kernel")
        .arg(&spec.images.vmlinuz)
        .arg("-initrd")
        .arg(&spec.images.initrd)
        .args(["-append", &append])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .args([
            "-netdev",
            &format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                net::tap_name(spec.index)
            ),
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac}"),
        ])
        .arg("-chardev")
        .arg(format!(
            "socket,id=ctl,path={},server=on,wait=off",
            socket.display()
        ))
        .args(["-device", "virtio-serial-pci"])
        .args([
            "-device",
            &format!("virtserialport,chardev=ctl,name={PORT_NAME}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(spec.dir.join(format!("{name}.qemu.log"))).map_err(|source| {
                LabError::Io {
                    path: spec.dir.join(format!("{name}.qemu.log")),
                    source,
                }
            })?,
        ));
    let mut qemu = cmd.spawn().map_err(|e| LabError::Setup {
        step: format!("start qemu for {name}"),
        detail: e.to_string(),
    })?;

    // qemu creates the socket once it has parsed its arguments.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break s,
            Err(e) => {
                if let Ok(Some(status)) = qemu.try_wait() {
                    let log = std::fs::read_to_string(spec.dir.join(format!("{name}.qemu.log")))
                        .unwrap_or_default();
                    return Err(LabError::Setup {
                        step: format!("start qemu for {name}"),
                        detail: format!("qemu exited with {status}: {}", log.trim()),
                    });
                }
                if Instant::now() > deadline {
                    let _ = qemu.kill();
                    return Err(LabError::Setup {
                        step: format!("connect to {name}'s control port"),
                        detail: format!("{}: {e}", socket.display()),
                    });
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let waiters: Waiters = Arc::default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = stream.try_clone().map_err(|source| LabError::Io {
        path: socket.clone(),
        source,
    })?;
    let w = waiters.clone();
    thread::spawn(move || read_guest(reader, w, ready_tx));
    Ok(Node {
        name,
        addr,
        console,
        qemu: Mutex::new(qemu),
        control: Control {
            stream: Mutex::new(stream),
            waiters,
            ready: Mutex::new(ready_rx),
        },
        next_id: AtomicU64::new(1),
    })
}

/// Dispatches the guest's messages to whoever waits for them. When the connection ends (the
/// VM died), every waiter's channel is dropped, which they see as `NodeGone`.
fn read_guest(stream: UnixStream, waiters: Waiters, ready: Sender<GuestMsg>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<GuestMsg>(&line) else {
            continue;
        };
        match &msg {
            GuestMsg::Ready { .. } => {
                let _ = ready.send(msg);
            }
            GuestMsg::Done { id, .. } | GuestMsg::Failed { id, .. } => {
                if let Some(tx) = waiters.lock().unwrap().remove(id) {
                    let _ = tx.send(msg);
                }
            }
        }
    }
    waiters.lock().unwrap().clear();
}

/// A command started with `Node::spawn`, still running in the node.
pub struct Pending<'a> {
    node: &'a Node,
    id: u64,
    cmd: String,
    rx: Receiver<GuestMsg>,
}

impl Pending<'_> {
    /// Waits for the command to end.
    pub fn wait(self) -> Result<CmdOutput, LabError> {
        let msg = self.rx.recv().map_err(|_| LabError::NodeGone {
            node: self.node.name.clone(),
            cmd: self.cmd.clone(),
        })?;
        self.node.output(&self.cmd, msg)
    }

    /// Waits, and fails (showing the node's output) unless the command exited 0.
    pub fn wait_ok(self) -> Result<CmdOutput, LabError> {
        let out = self.wait()?;
        if out.success() {
            Ok(out)
        } else {
            Err(LabError::CommandFailed(Box::new(out)))
        }
    }

    /// Kills the command's process group in the node.
    pub fn kill(&self) {
        self.node.send(&HostMsg::Kill { id: self.id });
    }
}

impl Node {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address on the lab bridge.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The last `lines` lines the node's kernel and init wrote to its serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        tail(&self.console, lines)
    }

    pub(super) fn wait_ready(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let ready = self.control.ready.lock().unwrap();
        loop {
            match ready.recv_timeout(Duration::from_millis(200)) {
                Ok(_) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(_)) = self.qemu.lock().unwrap().try_wait() {
                        return Err(LabError::BootFailed {
                            node: self.name.clone(),
                            console: self.console_tail(40),
                        });
                    }
                    if Instant::now() > deadline {
                        return Err(LabError::BootTimeout {
                            node: self.name.clone(),
                            secs: timeout.as_secs(),
                            console: self.console_tail(40),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(LabError::BootFailed {
                        node: self.name.clone(),
                        console: self.console_tail(40),
                    });
                }
            }
        }
    }

    fn send(&self, msg: &HostMsg) {
        let mut line = serde_json::to_string(msg).expect("host messages serialize");
        line.push('\n');
        let _ = self
            .control
            .stream
            .lock()
            .unwrap()
            .write_all(line.as_bytes());
    }

    /// Starts `cmd` (a `/bin/sh -c` string) in the node; it runs until it ends, `timeout`
    /// passes, or `Pending::kill`.
    pub fn spawn_with_timeout(&self, cmd: &str, timeout: Duration) -> Pending<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.control.waiters.lock().unwrap().insert(id, tx);
        self.send(&HostMsg::Run {
            id,
            cmd: cmd.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        });
        Pending {
            node: self,
            id,
            cmd: cmd.to_string(),
            rx,
        }
    }

    pub fn spawn(&self, cmd: &str) -> Pending<'_> {
        self.spawn_with_timeout(cmd, DEFAULT_TIMEOUT)
    }

    /// Runs `cmd` to its end, whatever its exit status.
    pub fn run(&self, cmd: &str) -> Result<CmdOutput, LabError> {
        self.spawn(cmd).wait()
    }

    /// Runs `cmd` and fails, with the node's output in the error, unless it exits 0.
    pub fn run_ok(&self, cmd: &str) -> Result<CmdOutput, LabError> {
        self.spawn(cmd).wait_ok()
    }

    fn output(&self, cmd: &str, msg: GuestMsg) -> Result<CmdOutput, LabError> {
        match msg {
            GuestMsg::Done {
                code,
                signal,
                timed_out,
                stdout,
                stderr,
                ..
            } => Ok(CmdOutput {
                node: self.name.clone(),
                cmd: cmd.to_string(),
                code,
                signal,
                timed_out,
                stdout,
                stderr,
            }),
            GuestMsg::Failed { error, .. } => Err(LabError::Spawn {
                node: self.name.clone(),
                cmd: cmd.to_string(),
                error,
            }),
            GuestMsg::Ready { .. } => unreachable!("ready is routed to the boot waiter"),
        }
    }

    /// Kills the VM (idempotent).
    pub fn kill(&self) {
        let mut qemu = self.qemu.lock().unwrap();
        let _ = qemu.kill();
        let _ = qemu.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
