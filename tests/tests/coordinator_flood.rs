//! A connection flood against a member: thousands of silent TCP connections from 64
//! loopback addresses that are not members' (127.0.0.2-65), reconnecting as soon as they are
//! closed. Each address gets a few handshake slots, every silent handshake is cut at the
//! deadline, and the members' own addresses (here 127.0.0.1, which is also where the test's
//! agent and CLI connect from) have a pool of their own: grants go on and a restarted
//! member rejoins through the flood.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rdmaq_lab::coordinator::CoordinatorCluster;
use rdmaq_proto::v1::{self as pb, agent_client::AgentClient};
use tokio::{io::AsyncReadExt, net::TcpSocket};

const FLOOD: usize = 4_500;
const SOURCES: u8 = 64;
/// The members' handshake deadline (the default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

fn qps(n: u64) -> Option<pb::Amounts> {
    Some(pb::Amounts {
        qp: n,
        ..Default::default()
    })
}

/// Enough descriptors for the flood here and in the members (they inherit the limit): raised
/// as far as root may (CAP_SYS_RESOURCE lifts the hard limit too).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const WANT: u64 = 65_536;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if setrlimit(Resource::RLIMIT_NOFILE, WANT, WANT.max(hard)).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising RLIMIT_NOFILE");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        soft >= 2 * FLOOD as u64 + 1_024,
        "this test needs {} open files and could raise the limit only to {soft} (it raises the hard limit as root)",
        2 * FLOOD + 1_024
    );
}

#[derive(Default)]
struct FloodStats {
    connected: AtomicU64,
    /// Closed by the member within a second: refused at accept.
    closed_at_once: AtomicU64,
    /// Not closed within the handshake deadline and then some: left in the kernel's
    /// accept queue when it overflowed (the member never saw them), reported only.
    held_too_long: AtomicU64,
}

/// One flooding connection, over and over: connect from `source`, send nothing, wait to
/// be closed, note how long that took.
async fn flood_one(
    source: IpAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(socket) = TcpSocket::new_v4() else {
            return;
        };
        if socket.bind(SocketAddr::new(source, 0)).is_err() {
            return;
        }
        let Ok(Ok(mut conn)) =
            tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        stats.connected.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let mut buf = [0u8; 16];
        let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(3);
        match tokio::time::timeout(limit, conn.read(&mut buf)).await {
            Ok(_) if opened.elapsed() < Duration::from_secs(1) => {
                stats.closed_at_once.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => {
                stats.held_too_long.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
}

#[test]
fn a_handshake_flood_from_many_addresses_leaves_grants_and_raft_alone() {
    raise_fd_limit();
    let mut c = CoordinatorCluster::start(3, &[]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "1000000"]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // The flooded member is the one the agent talks to and the one that restarts' peer.
    let target = c.addr(leader);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(FloodStats::default());
    for i in 0..FLOOD {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES as usize) as u8));
        rt.spawn(flood_one(source, target, stop.clone(), stats.clone()));
    }
    // Let the flood fill every slot it can.
    std::thread::sleep(Duration::from_secs(4));

    // A member restarts in the middle of it and must rejoin the leader.
    c.kill(follower);
    c.start_member(follower);

    // Grants, each on a new connection (a new handshake), for 15 s.
    let cert = c.pki.agent("n1");
    let addr = target.to_string();
    let (grants, slowest) = rt.block_on(async {
        let mut grants = 0u64;
        let mut slowest = Duration::ZERO;
        let until = Instant::now() + Duration::from_secs(15);
        let mut first = true;
        while Instant::now() < until {
            let mut a = AgentClient::new(cert.channel(&addr, Duration::from_secs(10)));
            let t = Instant::now();
            if first {
                a.register(pb::RegisterRequest {
                    node: "n1".into(),
                    address: String::new(),
                })
                .await
                .expect("registering during the flood");
                first = false;
            }
            a.acquire(pb::AcquireRequest {
                node: "n1".into(),
                tenant: "t1".into(),
                want: qps(1),
                min: qps(1),
            })
            .await
            .expect("a grant during the flood");
            slowest = slowest.max(t.elapsed());
            grants += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (grants, slowest)
    });
    let leader_commit = c.status(leader).unwrap()["commit_index"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if c.status(follower)
            .is_some_and(|s| s["commit_index"].as_u64().unwrap_or(0) >= leader_commit)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member {follower} did not rejoin during the flood:\n{}",
            c.log_tail(follower)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    // Once the flood is over, one more silent connection: closed at the deadline.
    let probe = rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.99:0".parse().unwrap()).unwrap();
        let mut conn = socket.connect(target).await.unwrap();
        let opened = Instant::now();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
        (closed.is_ok(), opened.elapsed())
    });
    let (connected, at_once, too_long) = (
        stats.connected.load(Ordering::Relaxed),
        stats.closed_at_once.load(Ordering::Relaxed),
        stats.held_too_long.load(Ordering::Relaxed),
    );
    eprintln!(
        "{grants} grants (slowest {slowest:?}) during a flood of {connected} connections, {at_once} closed at accept, {too_long} left in the accept queue"
    );
    assert!(grants > 50, "only {grants} grants in 15 s");
    assert!(
        at_once > connected / 2,
        "the per-address limit closed only {at_once} of {connected} flooding connections at once"
    );
    assert!(
        probe.0 && probe.1 < HANDSHAKE_TIMEOUT + Duration::from_secs(1),
        "a silent connection was held {:?} (deadline {HANDSHAKE_TIMEOUT:?})",
        probe.1
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}
