//! rdmaq-agent on the host (standalone, no eBPF) for the tests of its admission socket, and
//! a client speaking the intercept protocol to it frame by frame, as the library would (or
//! as a hostile program might not).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, Resource, request, response},
};

use crate::bins;

/// A running agent with its own directory (config, socket, log); killed and removed on
/// drop.
pub struct HostAgent {
    pub child: Child,
    pub dir: PathBuf,
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl HostAgent {
    /// Starts the agent with `config` (TOML) and waits for its socket.
    pub fn start(config: &str) -> HostAgent {
        Self::start_under(config, None)
    }

    /// Starts the agent, directly or through `launcher` (a command that execs it, such as
    /// systemd's socket activator).
    pub fn start_under(config: &str, launcher: Option<&dyn Fn(&Path) -> Command>) -> HostAgent {
        let dir = std::env::temp_dir().join(format!(
            "rdmaq-agent-sock-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("agent.toml"), config).unwrap();
        let agent = bins::bin("rdmaq-agent");
        let mut cmd = match launcher {
            Some(l) => {
                let mut c = l(&dir);
                c.arg(&agent);
                c
            }
            None => Command::new(&agent),
        };
        let child = cmd
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .arg("--no-ebpf")
            // The host's own /run is not the test's to mark.
            .arg("--mode-file")
            .arg(dir.join("agent-mode"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if UnixStream::connect(dir.join("agent.sock")).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        HostAgent { child, dir }
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

/// A connection with a 5 s read timeout.
pub fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub fn send(s: &mut UnixStream, seq: u64, body: request::Body) {
    s.write_all(
        &frame::encode(&msg::Request {
            seq,
            body: Some(body),
        })
        .unwrap(),
    )
    .unwrap();
}

/// The next response, `None` on a close, a timeout or garbage.
pub fn recv(s: &mut UnixStream) -> Option<msg::Response> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let mut b = vec![0u8; frame::body_len(h).ok()?];
    s.read_exact(&mut b).ok()?;
    frame::decode(&b).ok()
}

/// Says hello (with `launcher` as the launcher's tenant), returning the agent's answer: its
/// hello reply, or the error it refused with.
pub fn hello_as(s: &mut UnixStream, launcher: &str) -> Result<msg::HelloReply, String> {
    send(
        s,
        1,
        request::Body::Hello(msg::Hello {
            protocol_version: PROTOCOL_VERSION,
            launcher_tenant: launcher.to_string(),
            ..Default::default()
        }),
    );
    match recv(s).and_then(|r| r.body) {
        Some(response::Body::Hello(h)) => Ok(h),
        Some(response::Body::Error(e)) => Err(e.message),
        other => Err(format!("no hello reply: {other:?}")),
    }
}

pub fn hello(s: &mut UnixStream) -> msg::HelloReply {
    hello_as(s, "").unwrap_or_else(|e| panic!("{e}"))
}

pub fn admit_qps(s: &mut UnixStream, seq: u64, n: u32) -> msg::AdmitReply {
    send(
        s,
        seq,
        request::Body::Admit(msg::Admit {
            resource: Resource::Qp as i32,
            prefetch: n,
            ..Default::default()
        }),
    );
    match recv(s).and_then(|r| r.body) {
        Some(response::Body::Admit(a)) => a,
        other => panic!("no admit reply: {other:?}"),
    }
}

/// The connection was closed by the agent (EOF), possibly after an error reply; false on a
/// read timeout.
pub fn closed(s: &mut UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}
