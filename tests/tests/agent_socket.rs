//! The agent's admission socket against bad and hostile clients, on the host (standalone
//! mode, no eBPF): garbage, oversized frames, out-of-order messages and a client that says
//! nothing get an error or a closed connection, never a crash, and never block others.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use rdmaq_lab::{
    bins,
    coordinator::CoordinatorCluster,
    host_agent::{HostAgent, admit_qps, closed, connect, hello, recv, send},
};
use rdmaq_proto::{
    frame,
    intercept::{self as msg, PROTOCOL_VERSION, Resource, Verdict, request, response},
};

fn start(config: &str) -> HostAgent {
    HostAgent::start(config)
}

#[test]
fn hostile_clients_get_closed_and_never_block_others() {
    let a = start("default_tenant = \"t1\"\n[tenants.t1]\nmax_qp = 5\nmax_qp_per_process = 5\n");
    let sock = a.dir.join("agent.sock");

    // A client that connects and says nothing does not block anyone.
    let _silent = connect(&sock);
    // Garbage bytes.
    let mut g = connect(&sock);
    g.write_all(b"\x05\x00\x00\x00\xff\xff\xff\xff\xff")
        .unwrap();
    assert!(closed(&mut g), "garbage not answered by a close");
    // An oversized frame header: refused before any allocation.
    let mut big = connect(&sock);
    big.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed(&mut big), "oversized frame not refused");
    // Admit before hello: an error, then the close.
    let mut early = connect(&sock);
    send(
        &mut early,
        1,
        request::Body::Admit(msg::Admit {
            resource: Resource::Qp as i32,
            ..Default::default()
        }),
    );
    let r = recv(&mut early).expect("an error reply");
    assert!(matches!(r.body, Some(response::Body::Error(_))), "{r:?}");
    assert!(closed(&mut early));
    // A second hello: error and close.
    let mut twice = connect(&sock);
    hello(&mut twice);
    send(
        &mut twice,
        2,
        request::Body::Hello(msg::Hello {
            protocol_version: PROTOCOL_VERSION,
            ..Default::default()
        }),
    );
    assert!(matches!(
        recv(&mut twice).and_then(|r| r.body),
        Some(response::Body::Error(_))
    ));
    assert!(closed(&mut twice));
    // A wrong protocol version.
    let mut old = connect(&sock);
    send(
        &mut old,
        1,
        request::Body::Hello(msg::Hello {
            protocol_version: 999,
            ..Default::default()
        }),
    );
    assert!(matches!(
        recv(&mut old).and_then(|r| r.body),
        Some(response::Body::Error(_))
    ));

    // Meanwhile a well-behaved client is served, and the cap holds.
    let mut good = connect(&sock);
    assert_eq!(hello(&mut good).tenant, "t1");
    // One token for the call; ahead of demand at most half as many as the client holds and
    // half of what is left: 1, 1, then 1+1, then 1 up to the cap of 5.
    for (seq, granted) in [(2, 1), (3, 1), (4, 2), (5, 1)] {
        let r = admit_qps(&mut good, seq, 4);
        assert_eq!((r.verdict, r.granted), (Verdict::Allow as i32, granted));
    }
    let r = admit_qps(&mut good, 6, 1);
    assert_eq!(r.verdict, Verdict::DenyQuota as i32);
    // A client cannot release what it does not hold: another client's budget stays held.
    let mut thief = connect(&sock);
    hello(&mut thief);
    send(
        &mut thief,
        2,
        request::Body::Release(msg::Release {
            resource: Resource::Qp as i32,
            count: 5,
            bytes: 0,
        }),
    );
    recv(&mut thief).unwrap();
    assert_eq!(
        admit_qps(&mut thief, 3, 1).verdict,
        Verdict::DenyQuota as i32,
        "a release of nothing freed budget"
    );
    // When the holder goes away, its budget is free (one token at a time for a client that
    // holds few yet, then with tokens ahead).
    drop(good);
    std::thread::sleep(Duration::from_millis(300));
    for (seq, granted) in [(4, 1), (5, 1), (6, 2)] {
        assert_eq!(admit_qps(&mut thief, seq, 5).granted, granted);
    }
}

#[test]
fn a_socket_passed_by_systemd_is_served_and_left_in_place() {
    // systemd's own activator creates the socket and passes it as fd 3 (LISTEN_FDS,
    // LISTEN_PID), exactly as a .socket unit does, then execs the agent.
    let activator = |dir: &Path| {
        let mut c = Command::new("systemd-socket-activate");
        c.arg("-l").arg(dir.join("agent.sock"));
        c
    };
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        panic!(
            "this test needs systemd-socket-activate (Debian package systemd; scripts/install-deps.sh installs it)"
        );
    }
    let mut a = HostAgent::start_under(
        "default_tenant = \"t1\"\n[tenants.t1]\nmax_qp = 3\n",
        Some(&activator),
    );
    let sock = a.dir.join("agent.sock");
    let mut s = connect(&sock);
    hello(&mut s);
    let reply = admit_qps(&mut s, 2, 8);
    assert_eq!(reply.verdict, Verdict::Allow as i32, "{reply:?}");
    assert!(reply.granted >= 1 && reply.granted <= 3, "{reply:?}");
    let log = std::fs::read_to_string(a.dir.join("agent.log")).unwrap();
    assert!(log.contains("socket_activated=true"), "{log}");
    // The socket belongs to systemd: a stopping agent leaves it for the next one.
    let stopped = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = a.child.wait().unwrap();
    assert!(status.success(), "agent exit: {status:?}");
    assert!(sock.exists(), "the agent removed systemd's socket");
}

#[test]
fn socket_is_created_with_the_configured_mode_and_a_stale_one_is_replaced() {
    let dir = std::env::temp_dir().join(format!("rdmaq-agent-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A stale socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(dir.join("agent.sock")).unwrap());
    assert!(dir.join("agent.sock").exists());
    // Owner and group as configured (numeric): any as root, else only one's own.
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (1, 2)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    std::fs::write(
        dir.join("agent.toml"),
        format!("socket_mode = \"0660\"\nsocket_uid = {uid}\nsocket_gid = {gid}\n"),
    )
    .unwrap();
    let mut child = Command::new(bins::bin("rdmaq-agent"))
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .arg("--socket")
        .arg(dir.join("agent.sock"))
        .arg("--no-ebpf")
        .arg("--mode-file")
        .arg(dir.join("agent-mode"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if UnixStream::connect(dir.join("agent.sock")).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = std::fs::metadata(dir.join("agent.sock")).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    let owner = {
        use std::os::unix::fs::MetadataExt;
        (meta.uid(), meta.gid())
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "the agent did not replace the stale socket");
    assert_eq!(mode, 0o660);
    assert_eq!(owner, (uid, gid), "socket owner");
}

/// One thing a fuzzed client does on its connection.
#[derive(Debug, Clone)]
enum Step {
    Hello {
        version: u32,
        held_qps: u64,
        launcher: String,
    },
    Admit {
        resource: i32,
        prefetch: u32,
        bytes: u64,
        send_wr: u32,
    },
    Release {
        resource: i32,
        count: u32,
        bytes: u64,
    },
    Raw(Vec<u8>),
    /// A hello whose launcher tenant is any bytes, valid UTF-8 or not (encoded by hand:
    /// prost would refuse to write invalid UTF-8 as a string).
    RawHello(Vec<u8>),
    /// A header announcing `len` bytes, then fewer.
    Truncated {
        len: u32,
        sent: Vec<u8>,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let resource = prop_oneof![0..5i32, any::<i32>()];
    prop_oneof![
        3 => (
            prop_oneof![Just(PROTOCOL_VERSION), 0..4u32],
            0..20u64,
            prop_oneof!["[a-z]{0,3}", "t[0-9a-z*.-]{0,4}", any::<String>()],
        )
            .prop_map(|(version, held_qps, launcher)| Step::Hello { version, held_qps, launcher }),
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Step::RawHello),
        6 => (resource.clone(), prop_oneof![0..10u32, any::<u32>()], any::<u64>(), any::<u32>())
            .prop_map(|(resource, prefetch, bytes, send_wr)| Step::Admit { resource, prefetch, bytes, send_wr }),
        3 => (resource, prop_oneof![0..10u32, any::<u32>()], any::<u64>())
            .prop_map(|(resource, count, bytes)| Step::Release { resource, count, bytes }),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Step::Raw),
        1 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(len, sent)| Step::Truncated { len, sent }),
    ]
}

fn bytes_of(seq: u64, s: &Step) -> Vec<u8> {
    let body = match s.clone() {
        Step::Hello {
            version,
            held_qps,
            launcher,
        } => request::Body::Hello(msg::Hello {
            protocol_version: version,
            held_qps,
            launcher_tenant: launcher,
            ..Default::default()
        }),
        Step::Admit {
            resource,
            prefetch,
            bytes,
            send_wr,
        } => request::Body::Admit(msg::Admit {
            resource,
            prefetch,
            bytes,
            max_send_wr: send_wr,
            ..Default::default()
        }),
        Step::Release {
            resource,
            count,
            bytes,
        } => request::Body::Release(msg::Release {
            resource,
            count,
            bytes,
        }),
        Step::Raw(b) => return b,
        Step::RawHello(launcher) => {
            // Request { seq (1): varint, hello (2): Hello { protocol_version (1): 1,
            // launcher_tenant (2): bytes } }, lengths as varints.
            fn varint(mut v: u64, out: &mut Vec<u8>) {
                while v >= 0x80 {
                    out.push((v as u8) | 0x80);
                    v >>= 7;
                }
                out.push(v as u8);
            }
            let mut hello = vec![0x08, PROTOCOL_VERSION as u8, 0x12];
            varint(launcher.len() as u64, &mut hello);
            hello.extend(&launcher);
            let mut req = vec![0x08];
            varint(seq, &mut req);
            req.push(0x12);
            varint(hello.len() as u64, &mut req);
            req.extend(hello);
            let mut framed = (req.len() as u32).to_le_bytes().to_vec();
            framed.extend(req);
            return framed;
        }
        Step::Truncated { len, sent } => {
            let mut b = len.to_le_bytes().to_vec();
            b.extend(sent.iter().take(len as usize));
            return b;
        }
    };
    frame::encode(&msg::Request {
        seq,
        body: Some(body),
    })
    .unwrap()
}

/// QPs a fresh, well-behaved client gets, one at a time, until denied (at most `limit + 1`).
fn fresh_client_qps(sock: &Path, limit: u32) -> u32 {
    let mut s = connect(sock);
    hello(&mut s);
    let mut got = 0;
    for seq in 2..limit as u64 + 3 {
        let r = admit_qps(&mut s, seq, 1);
        if r.verdict != Verdict::Allow as i32 {
            break;
        }
        got += r.granted.max(1);
    }
    got
}

/// Plays one fuzzed session on its own connection and checks the replies: every one is a
/// well-formed frame, and no admission grants more than the cap.
fn play(sock: &Path, steps: &[Step], cap: u32) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut s = connect(sock);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for (i, st) in steps.iter().enumerate() {
        // The agent may already have closed the connection: later writes just fail.
        let _ = s.write_all(&bytes_of(i as u64 + 1, st));
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let mut rest = &all[..];
    while rest.len() >= frame::HEADER_LEN {
        let len = frame::body_len(rest[..4].try_into().unwrap())
            .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
        proptest::prop_assert!(rest.len() >= 4 + len, "a truncated reply");
        let r: msg::Response = frame::decode(&rest[4..4 + len])
            .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
        if let Some(response::Body::Admit(ad)) = r.body {
            proptest::prop_assert!(
                ad.granted <= cap.max(4),
                "granted {} over the cap",
                ad.granted
            );
        }
        rest = &rest[4 + len..];
    }
    proptest::prop_assert!(rest.is_empty(), "trailing bytes in the replies");
    Ok(())
}

/// Fuzzes the agent at `sock` (its default tenant capped at `cap` QPs): random sessions of
/// valid, invalid, out-of-order, truncated and junk messages, launcher names of any bytes,
/// up to 8 at once on their own connections. Every reply is well-formed, no admission goes
/// beyond the cap, and once the sessions are gone all of their budget is back: a fresh
/// client gets exactly the cap.
fn fuzz_sessions(name: &str, sock: &Path, cap: u32) {
    let sessions = proptest::collection::vec(proptest::collection::vec(step(), 1..12), 1..8);
    rdmaq_common::fuzz::run_for(name, sessions, |sessions| {
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = sessions
                .iter()
                .map(|steps| scope.spawn(|| play(sock, steps, cap)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            r?;
        }
        // The sessions' budget comes back (their tasks end just after the closes).
        let mut got = 0;
        for _ in 0..300 {
            got = fresh_client_qps(sock, cap);
            if got == cap {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        proptest::prop_assert_eq!(got, cap, "budget leaked or cap broken after {:?}", sessions);
        Ok(())
    });
}

/// A standalone agent whose launchers may name `t1` or any `t2*` (a tenant without caps,
/// denied).
#[test]
fn fuzz_hostile_sessions_never_crash_the_agent_or_leak_budget() {
    const CAP: u32 = 6;
    let a = start(&format!(
        "default_tenant = \"t1\"\nunknown_tenant = \"deny\"\n\
         [[rules]]\nuid = 0\ntenant = \"t1\"\nlauncher_tenants = [\"t1\", \"t2*\"]\n\
         [tenants.t1]\nmax_qp = {CAP}\nmax_mr = 4\nmax_mr_bytes = \"1MiB\"\n"
    ));
    fuzz_sessions("agent socket sessions", &a.sock(), CAP);
    let mut a = a;
    assert!(a.child.try_wait().unwrap().is_none(), "the agent died");
}

/// The same against an agent leasing its budget from a coordinator (loopback, mutual TLS):
/// acquisitions, releases and heartbeats run under the fuzzed sessions.
#[test]
fn fuzz_hostile_sessions_against_an_agent_with_a_coordinator() {
    const CAP: u32 = 6;
    let c = CoordinatorCluster::start(1, &[]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", &CAP.to_string()]);
    let cert = c.pki.agent("n1");
    let a = start(&format!(
        "node = \"n1\"\nendpoints = [\"{}\"]\ndefault_tenant = \"t1\"\n\
         [[rules]]\nuid = 0\ntenant = \"t1\"\nlauncher_tenants = [\"t1\", \"t2*\"]\n{}",
        c.addr(1),
        cert.toml()
    ));
    fuzz_sessions("agent socket sessions, coordinator mode", &a.sock(), CAP);
    let mut a = a;
    assert!(a.child.try_wait().unwrap().is_none(), "the agent died");
}
