//! Guest agent of the soft-RoCE lab. Started by the initramfs as the last step of boot, it
//! opens the virtio-serial control port, says it is ready, and runs the host's commands
//! concurrently, each in its own process group, sending back exit status and output.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use rdmaq_lab::wire::{GuestMsg, HostMsg, MAX_CAPTURE, PORT_NAME};

type Writer = Arc<Mutex<File>>;
type Running = Arc<Mutex<HashMap<u64, i32>>>;

fn main() {
    let name = std::env::args()
        .skip_while(|a| a != "--name")
        .nth(1)
        .unwrap_or_else(|| "node".into());
    let port = match find_port() {
        Some(p) => p,
        None => {
            eprintln!("lab-guest: no virtio port named {PORT_NAME}");
            std::process::exit(1);
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .unwrap_or_else(|e| panic!("opening {}: {e}", port.display()));
    let writer: Writer = Arc::new(Mutex::new(file.try_clone().expect("dup of the port")));
    let running: Running = Arc::default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    send(&writer, &GuestMsg::Ready { name, kernel });

    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<HostMsg>(&line) {
            Ok(HostMsg::Run {
                id,
                cmd,
                timeout_ms,
            }) => {
                let (w, r) = (writer.clone(), running.clone());
                thread::spawn(move || run(id, &cmd, timeout_ms, &w, &r));
            }
            Ok(HostMsg::Kill { id }) => {
                if let Some(&pgid) = running.lock().unwrap().get(&id) {
                    let _ = signal::killpg(Pid::from_raw(pgid), signal::SIGKILL);
                }
            }
            Err(e) => eprintln!("lab-guest: bad request {line:?}: {e}"),
        }
    }
}

/// The control port's device node, found by its name in sysfs (no udev in the guest).
fn find_port() -> Option<PathBuf> {
    for _ in 0..100 {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == PORT_NAME {
                    return Some(PathBuf::from("/dev").join(entry.file_name()));
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

fn send(writer: &Writer, msg: &GuestMsg) {
    let mut line = serde_json::to_string(msg).expect("guest messages serialize");
    line.push('\n');
    let mut w = writer.lock().unwrap();
    let _ = w.write_all(line.as_bytes());
    let _ = w.flush();
}

fn run(id: u64, cmd: &str, timeout_ms: u64, writer: &Writer, running: &Running) {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let error = format!("spawning /bin/sh: {e}");
            return send(writer, &GuestMsg::Failed { id, error });
        }
    };
    let pgid = child.id() as i32;
    running.lock().unwrap().insert(id, pgid);

    let out = capture(child.stdout.take().expect("piped"));
    let err = capture(child.stderr.take().expect("piped"));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        let expired = done_rx
            .recv_timeout(Duration::from_millis(timeout_ms))
            .is_err();
        if expired {
            let _ = signal::killpg(Pid::from_raw(pgid), signal::SIGKILL);
        }
        expired
    });
    let status = child.wait();
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    running.lock().unwrap().remove(&id);
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let msg = match status {
        Ok(s) => GuestMsg::Done {
            id,
            code: s.code(),
            signal: s.signal(),
            timed_out,
            stdout,
            stderr,
        },
        Err(e) => GuestMsg::Failed {
            id,
            error: format!("waiting for the command: {e}"),
        },
    };
    send(writer, &msg);
}

/// Reads a pipe to its end on a thread, keeping at most MAX_CAPTURE bytes.
fn capture(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_CAPTURE.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}
