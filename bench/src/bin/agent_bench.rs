//! Admission round trip over the agent's socket, and the agent's cost: p50/p99 of an
//! Admit (one QP, no prefetch) with 1 and 32 concurrent clients, each next to the floor
//! (the same frames against a blocking echo thread), then again with the client, the echo
//! thread and the agent all pinned to one CPU (no cross-CPU wake-ups: the difference to the
//! floor is the agent's own work), then the agent's CPU and RSS idle and under a paced
//! 10,000 admissions/s. Standalone agent on the host, no eBPF.
//!
//!     cargo build --release --workspace
//!     target/release/agent-bench
#![forbid(unsafe_code)]

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use rdmaq_lab::bins;
use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, Resource, request},
};

fn call(s: &mut UnixStream, seq: u64, body: request::Body) {
    s.write_all(
        &frame::encode(&msg::Request {
            seq,
            body: Some(body),
        })
        .expect("encode"),
    )
    .expect("write");
    let mut h = [0u8; 4];
    s.read_exact(&mut h).expect("read");
    let mut b = vec![0u8; frame::body_len(h).expect("len")];
    s.read_exact(&mut b).expect("read");
}

fn client(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).expect("connect");
    call(
        &mut s,
        0,
        request::Body::Hello(msg::Hello {
            protocol_version: PROTOCOL_VERSION,
            ..Default::default()
        }),
    );
    s
}

fn admit() -> request::Body {
    request::Body::Admit(msg::Admit {
        resource: Resource::Qp as i32,
        prefetch: 1,
        ..Default::default()
    })
}

fn release() -> request::Body {
    request::Body::Release(msg::Release {
        resource: Resource::Qp as i32,
        count: 1,
        bytes: 0,
    })
}

/// (utime + stime in clock ticks, RSS in KiB) of a process.
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = rest
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + rest
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn cpu_percent(pid: u32, over: Duration, during: impl FnOnce()) -> (f64, u64) {
    let (t0, _) = usage(pid);
    let start = Instant::now();
    during();
    std::thread::sleep(over.saturating_sub(start.elapsed()));
    let (t1, rss) = usage(pid);
    let hz = 100.0; // USER_HZ on Linux
    (
        (t1 - t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0,
        rss,
    )
}

/// p50, p99 and max of `lat`, in µs.
fn quantiles(mut lat: Vec<Duration>) -> (f64, f64, f64) {
    lat.sort();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.99), q(1.0))
}

/// Pins the calling thread (and the threads it starts from now on) to `cpus`.
fn pin_self(cpus: &[usize]) {
    let mut set = CpuSet::new();
    for c in cpus {
        set.set(*c).expect("a CPU number");
    }
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// Pins every thread of process `pid` to `cpus` (a taskset list, "0" or "0-1").
fn pin_process(pid: u32, cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux)")
        .success();
    assert!(ok, "taskset -a -p -c {cpus} {pid} failed");
}

/// The floor: the same request/reply pattern against a plain blocking echo thread, which
/// costs only the socket and the thread wake-ups.
fn baseline(dir: &Path) -> (f64, f64, f64) {
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        loop {
            let mut h = [0u8; 4];
            if s.read_exact(&mut h).is_err() {
                return;
            }
            let len = u32::from_le_bytes(h) as usize;
            if s.read_exact(&mut buf[..len]).is_err() {
                return;
            }
            let _ = s.write_all(&h).and_then(|_| s.write_all(&buf[..len]));
        }
    });
    let mut s = UnixStream::connect(&path).expect("connect");
    let mut lat = Vec::new();
    for i in 0..20_000u64 {
        let t = Instant::now();
        call(&mut s, i, admit());
        lat.push(t.elapsed());
    }
    quantiles(lat)
}

/// Admissions (each followed by a release) of `clients` concurrent clients.
fn admissions(sock: &Path, clients: usize, per_client: usize) -> (usize, (f64, f64, f64)) {
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || {
                let mut s = client(&sock);
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client as u64 {
                    let t = Instant::now();
                    call(&mut s, 2 * i + 1, admit());
                    lat.push(t.elapsed());
                    call(&mut s, 2 * i + 2, release());
                }
                lat
            })
        })
        .collect();
    let all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect();
    (all.len(), quantiles(all))
}

/// One measured case, as printed and as written to `--out`.
#[derive(serde::Serialize)]
struct Case {
    case: String,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Everything agent-bench measured (`--out`).
#[derive(Default, serde::Serialize)]
struct Results {
    cases: Vec<Case>,
    own_work_us: f64,
    idle_cpu_percent: f64,
    idle_rss_kib: u64,
    busy_cpu_percent: f64,
    busy_rss_kib: u64,
}

impl Results {
    fn row(&mut self, what: &str, (p50, p99, max): (f64, f64, f64)) {
        println!("{what:<44} p50 {p50:>7.1} us   p99 {p99:>7.1} us   max {max:>8.1} us");
        self.cases.push(Case {
            case: what.to_string(),
            p50_us: p50,
            p99_us: p99,
            max_us: max,
        });
    }
}

/// The admission round trip a program sees, against the real rdmaq-agent on this host
/// (standalone, no eBPF), next to the floor of the same frames against a blocking echo
/// thread, with 1 and 32 clients; and the agent's CPU and memory.
#[derive(Debug, Parser)]
#[command(name = "agent-bench")]
struct Args {
    /// Where the JSON results go (for scripts/plot-bench.py).
    #[arg(long, default_value = "docs/bench/agent-bench.json")]
    out: String,
}

fn main() {
    let args = Args::parse();
    let mut results = Results::default();
    let dir = std::env::temp_dir().join(format!("rdmaq-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("agent.sock");
    let mut agent = Command::new(bins::bin("rdmaq-agent"))
        .args(["--no-ebpf", "--socket"])
        .arg(&sock)
        .arg("--mode-file")
        .arg(dir.join("agent-mode"))
        .stderr(Stdio::null())
        .spawn()
        .expect("rdmaq-agent");
    while UnixStream::connect(&sock).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = agent.id();
    let all_cpus: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    results.row("floor: blocking echo thread, same frames", baseline(&dir));
    for clients in [1usize, 32] {
        let per_client = if clients == 1 { 20_000 } else { 2_000 };
        let (n, q) = admissions(&sock, clients, per_client);
        results.row(&format!("agent, {clients} client(s), {n} admissions"), q);
    }
    // Everything on CPU 0: each round trip is two switches on one CPU, no wake-up of
    // another; what the agent adds to the floor now is its own work.
    pin_self(&[0]);
    pin_process(pid, "0");
    let floor = baseline(&dir);
    results.row("floor, client and echo thread on CPU 0", floor);
    let (n, pinned) = admissions(&sock, 1, 20_000);
    results.row(
        &format!("agent, 1 client, all on CPU 0, {n} admissions"),
        pinned,
    );
    results.own_work_us = pinned.0 - floor.0;
    println!(
        "agent's own work per admission (CPU 0, p50 over the floor): {:.1} us",
        results.own_work_us
    );
    pin_self(&all_cpus);
    pin_process(pid, &format!("0-{}", all_cpus.len() - 1));
    let (idle, rss_idle) = cpu_percent(pid, Duration::from_secs(5), || {});
    println!("idle: CPU {idle:.2} %, RSS {rss_idle} KiB");
    let (busy, rss_busy) = cpu_percent(pid, Duration::from_secs(5), || {
        // 10 clients x 1000 admissions/s, paced.
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let sock = sock.clone();
                std::thread::spawn(move || {
                    let mut s = client(&sock);
                    let start = Instant::now();
                    for i in 0..5000u64 {
                        let due = start + Duration::from_micros(i * 1000);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        call(&mut s, 2 * i + 1, admit());
                        call(&mut s, 2 * i + 2, release());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client");
        }
    });
    println!("10,000 admissions/s (+ as many releases): CPU {busy:.1} %, RSS {rss_busy} KiB");
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (results.idle_cpu_percent, results.idle_rss_kib) = (idle, rss_idle);
    (results.busy_cpu_percent, results.busy_rss_kib) = (busy, rss_busy);
    rdmaq_bench::write_results(&args.out, &results);
}
