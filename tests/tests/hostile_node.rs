//! Attacks on a node's enforcement point by an unprivileged local user, each performed for
//! real and each asserting that the cap, or the node's service, held (issue 14; the README's
//! attack table points here). Host tests where no RDMA is needed (the agent standalone or
//! against a loopback coordinator, without eBPF); lab tests where it is. Needs root (to act
//! as other users through setpriv, and for the lab).

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use rdmaq_lab::{
    Kernel, Lab, LabSpec, Node, bins,
    cluster_lab::{ClusterLab, created, created_in, run_as},
    coordinator::CoordinatorCluster,
    host_agent::{HostAgent, admit_qps, closed, connect, hello, hello_as},
    node_agent::{self, SOCKET},
    programs,
};
use rdmaq_proto::{intercept::Verdict, v1 as pb};

/// uid 65534 ("nobody"), the attacker in these tests.
const NOBODY: &str = "65534";

fn as_nobody(program: &str) -> Command {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests act as another user (setpriv) and need root"
    );
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        program,
    ]);
    c
}

/// Opens `n` connections to `sock` as uid 65534 and holds them for `secs`: a third say
/// nothing, a third send one byte of a header, a third promise a 64 KiB frame and send
/// nothing more. Prints how many connects succeeded, then waits.
const FLOODER: &str = r#"
import resource, socket, sys, time
path, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        if i % 3 == 1:
            s.send(b"\x01")
        elif i % 3 == 2:
            s.send((65536).to_bytes(4, "little"))
    except OSError:
        s.close()
        continue
    held.append(s)
print(len(held), flush=True)
time.sleep(secs)
"#;

#[test]
fn a_connection_flood_from_one_user_leaves_other_users_admitted() {
    let a = HostAgent::start(
        "default_tenant = \"t1\"\nmax_connections = 4000\nmax_connections_per_uid = 500\n\
         [tenants.t1]\nmax_qp = 10\n",
    );
    let mut flood = as_nobody("/usr/bin/python3")
        .args(["-c", FLOODER])
        .arg(a.sock())
        .args(["3000", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let connected: usize = line.trim().parse().unwrap_or(0);
    assert!(
        connected >= 2000,
        "the flood opened only {connected} connections"
    );

    // Another user's program is admitted normally, while the flood holds its connections.
    for _ in 0..3 {
        let mut s = connect(&a.sock());
        assert_eq!(hello(&mut s).tenant, "t1");
        let r = admit_qps(&mut s, 2, 1);
        assert_eq!(r.verdict, Verdict::Allow as i32, "{r:?}");
    }
    // The flood was refused beyond its uid's share, and said so in the metrics' counter
    // (the log line is rate-limited).
    let log = a.log();
    assert!(
        log.contains("connection limit reached") && log.contains("uid=65534"),
        "{log}"
    );

    // A frame begun and not finished is dropped after the frame timeout (5 s): the partial
    // headers and the promised 64 KiB frames of the flood, and this one.
    let mut partial = connect(&a.sock());
    partial
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    partial.write_all(&[1]).unwrap();
    assert!(closed(&mut partial), "a partial frame held its connection");
    let _ = flood.kill();
    let _ = flood.wait();
    assert!(a.log().contains("was not finished within"), "{}", a.log());
}

#[test]
fn a_launcher_may_name_only_the_tenants_its_rule_allows() {
    let a = HostAgent::start(
        "default_tenant = \"t0\"\n[[rules]]\nuid = 0\ntenant = \"root\"\n\
         launcher_tenants = [\"team-a-*\"]\n[tenants.team-a-1]\nmax_qp = 2\n",
    );
    // An allowed name.
    let mut ok = connect(&a.sock());
    assert_eq!(hello_as(&mut ok, "team-a-1").unwrap().tenant, "team-a-1");
    // Names outside the patterns, and names of any bytes: refused with the reason, and the
    // connection closed; nothing is charged anywhere.
    let long = "team-a-".to_string() + &"x".repeat(200);
    for bad in [
        "team-b",
        "root2",
        "team-a-1 ",
        "team-a-\n1",
        &long,
        "team-a-\u{0}",
    ] {
        let mut s = connect(&a.sock());
        let refused = hello_as(&mut s, bad).expect_err(bad);
        assert!(refused.contains("launcher tenant"), "{bad:?}: {refused}");
        assert!(closed(&mut s), "{bad:?}");
    }
    // The agent is still there and the allowed tenant still capped at 2.
    let r = admit_qps(&mut ok, 2, 4);
    assert_eq!(r.verdict, Verdict::Allow as i32);
    let r2 = admit_qps(&mut ok, 3, 4);
    assert_eq!(r2.verdict, Verdict::Allow as i32);
    assert_eq!(admit_qps(&mut ok, 4, 1).verdict, Verdict::DenyQuota as i32);
}

#[test]
fn one_bad_tenant_name_does_not_poison_a_nodes_heartbeat() {
    let c = CoordinatorCluster::start(1, &[]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "10"]);
    let agent = c.pki.agent("n1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut a = pb::agent_client::AgentClient::new(
            agent.channel(&c.addr(1).to_string(), Duration::from_secs(5)),
        );
        a.register(pb::RegisterRequest {
            node: "n1".into(),
            address: String::new(),
        })
        .await
        .unwrap();
        a.acquire(pb::AcquireRequest {
            node: "n1".into(),
            tenant: "t1".into(),
            want: Some(pb::Amounts {
                qp: 4,
                ..Default::default()
            }),
            min: None,
        })
        .await
        .unwrap();
        let report = |tenant: &str, qp| pb::TenantReport {
            tenant: tenant.into(),
            used: Some(pb::Amounts {
                qp,
                ..Default::default()
            }),
        };
        let r = a
            .heartbeat(pb::HeartbeatRequest {
                node: "n1".into(),
                reports: vec![
                    report("bad name\n", 1),
                    report("t1", 3),
                    report("no-quota", 2),
                ],
            })
            .await
            .expect("one bad report must not fail the heartbeat")
            .into_inner();
        let refused: Vec<&str> = r.refused.iter().map(|x| x.tenant.as_str()).collect();
        assert_eq!(refused, ["bad name\n", "no-quota"], "{:?}", r.refused);
        assert!(
            r.refused[0].reason.contains("reports.tenant"),
            "{:?}",
            r.refused
        );
        assert!(r.lease_expires_unix_ms > 0);
        assert!(r.allotments.iter().any(|x| x.tenant == "t1"));
    });
    // The good report was taken: the node's use of t1 is 3.
    let usage: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["usage", "t1", "-o", "json"])).unwrap();
    assert_eq!(usage["tenants"][0]["nodes"][0]["used"]["qp"], 3, "{usage}");
}

/// `verbs_check ARGS` under the library, with `env`; its output.
fn under_library(n: &Node, env: &str, args: &str) -> String {
    n.run_ok(&format!(
        "env LD_PRELOAD={} RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/lib.log {env} {} {args}",
        bins::bin("librdmaq_intercept.so").display(),
        programs::verbs_check().display()
    ))
    .unwrap_or_else(|e| panic!("{e}"))
    .stdout
}

/// `verbs_check rereg BYTES NEW EXTRA` under the library, with `env`; its output.
fn rereg(n: &Node, env: &str, bytes: &str) -> String {
    under_library(n, env, &format!("rereg {bytes}"))
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
        .trim()
}

/// `ibv_rereg_mr` used to grow an MR without admission (and a later deregistration left the
/// library holding byte tokens nobody granted). Now the growth is admitted first: over the
/// cap the call fails with EDQUOT and the MR is unchanged; within it, the bytes count until
/// the MR shrinks or goes, or come back at once if the kernel refuses the re-registration
/// (rxe refuses a changed translation with EINVAL, so the lab sees the second case).
#[test]
fn a_growing_mr_is_admitted_for_its_growth() {
    rdmaq_lab::require_lab!();
    let lab = Lab::start(&LabSpec::new(1, Kernel::from_env())).unwrap_or_else(|e| panic!("{e}"));
    let n = lab.node(1);
    let _agent = node_agent::start(
        n,
        "default_tenant = \"t1\"\n[tenants.t1]\nmax_mr_bytes = \"8MiB\"",
        "--no-ebpf",
    );
    let mib = |m: u64| (m << 20).to_string();
    for (mode, env) in [
        ("agent", format!("RDMAQ_AGENT_SOCKET={SOCKET}")),
        (
            "standalone",
            "RDMAQ_AGENT_SOCKET=/nonexistent RDMA_INTERCEPT_MAX_MEMORY_PER_PROCESS=8".into(),
        ),
    ] {
        // 1 MiB grown to 16: refused before the kernel sees it; the MR keeps its 1 MiB, and
        // 6 MiB more fit beside it.
        let out = rereg(n, &env, &format!("{} {} {}", mib(1), mib(16), mib(6)));
        assert!(
            line(&out, "rereg").starts_with("-1 errno 122 EDQUOT"),
            "{mode}: {out}"
        );
        assert!(
            line(&out, "rereg").ends_with(&format!("length {}", mib(1))),
            "{mode}: {out}"
        );
        assert!(
            line(&out, "extra").starts_with("registered"),
            "{mode}: {out}"
        );
        // 1 MiB grown to 4 (admitted): then 7 MiB more must not fit if the kernel took the
        // new length, and must if it refused it (the growth was given back).
        let out = rereg(n, &env, &format!("{} {} {}", mib(1), mib(4), mib(7)));
        let grown = line(&out, "rereg").starts_with("0 ");
        let extra = line(&out, "extra");
        if grown {
            assert!(
                extra.ends_with("EDQUOT"),
                "{mode}: grown to 4 MiB, yet 7 more fit: {out}"
            );
        } else {
            assert!(
                extra.starts_with("registered"),
                "{mode}: the refused growth was not given back: {out}"
            );
        }
    }
    // Everything went back: a fresh process gets the whole 8 MiB.
    let out = rereg(
        n,
        &format!("RDMAQ_AGENT_SOCKET={SOCKET}"),
        &format!("{} {} {}", mib(1), mib(1), mib(7)),
    );
    assert!(line(&out, "extra").starts_with("registered"), "{out}");
}

/// A tenant that a node first saw with no quota anywhere used to run uncapped there (and,
/// unreported, invisibly to the cluster) until the agent restarted. With a coordinator, a
/// tenant without a quota is now denied by default, and a quota set later applies on the
/// node at once, also where the operator let such tenants run uncapped
/// (`unknown_tenant = "allow"`).
#[test]
fn a_quota_set_later_caps_a_tenant_the_node_already_runs() {
    rdmaq_lab::require_lab!();
    let cl = ClusterLab::start_with(1, Kernel::from_env(), &[], "unknown_tenant = \"allow\"")
        .unwrap_or_else(|e| panic!("{e}"));
    let n = cl.lab.node(1);
    // Uncapped here (the operator's choice): a holder takes 3 QPs.
    let holder = n.spawn(&format!(
        "{} > /tmp/holder.out 2>&1",
        ClusterLab::exec("t-late", "hold 3 120")
    ));
    n.run_ok("for t in $(seq 100); do grep -q created /tmp/holder.out && break; sleep 0.1; done")
        .unwrap();
    assert_eq!(created(&created_in(n, "/tmp/holder.out")), 3);
    // The quota arrives: 4 QPs cluster-wide. At once (no agent restart), the node holds the
    // tenant to it: at most 1 more (none if the holder keeps a token it was given ahead of
    // demand, which is charged too), not 4.
    let set = cl.cli(&["quota", "set", "t-late", "--max-qp", "4"]);
    assert!(set.status.success(), "{set:?}");
    std::thread::sleep(Duration::from_secs(1));
    let out = run_as(n, "t-late", "qps 4");
    assert!(
        created(&out) <= 1,
        "{out}\n{}\n{}",
        cl.usage("t-late"),
        n.run("cat /tmp/agent.log").unwrap().stdout
    );
    // And its use is reported: the coordinator sees the holder's 3 (and any token it
    // holds), never more than the cap.
    let mut seen = 0;
    for _ in 0..20 {
        seen = cl.usage("t-late")["tenants"][0]["used"]["qp"]
            .as_u64()
            .unwrap_or(0);
        if seen >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!((3..=4).contains(&seen), "{}", cl.usage("t-late"));
    holder.kill();
}

/// A program whose first verb found the agent's socket missing (the agent restarting) used
/// to run standalone for life, with QP control off. The agent now marks the node
/// (`/run/rdmaq/agent-mode`, root's): a socket it lists that is missing means the agent is
/// down — the program waits for it (up to its agent timeout), then fails closed.
#[test]
fn a_program_started_while_the_agent_restarts_waits_for_it_or_fails_closed() {
    rdmaq_lab::require_lab!();
    let lab = Lab::start(&LabSpec::new(1, Kernel::from_env())).unwrap_or_else(|e| panic!("{e}"));
    let n = lab.node(1);
    let config = "default_tenant = \"t1\"\n[tenants.t1]\nmax_qp = 2";
    let agent = node_agent::start(n, config, "--no-ebpf");
    // The agent goes, and its socket with it (as after a clean stop).
    agent.kill();
    n.run_ok(&format!("sleep 0.5; rm -f {SOCKET}")).unwrap();
    let sock = format!("RDMAQ_AGENT_SOCKET={SOCKET}");
    let out = under_library(n, &format!("{sock} RDMAQ_AGENT_TIMEOUT_MS=500"), "qps 3");
    assert_eq!(created(&out), 0, "ran without its agent: {out}");
    assert!(line(&out, "first_errno").ends_with("EAGAIN"), "{out}");
    // The agent comes back while a program waits for it: that program is admitted by it,
    // within the tenant's cap.
    let _again = n.spawn(&format!(
        "sleep 2; exec {} --config /tmp/agent.toml --socket {SOCKET} --no-ebpf > /tmp/agent2.log 2>&1",
        bins::bin("rdmaq-agent").display()
    ));
    let out = under_library(n, &format!("{sock} RDMAQ_AGENT_TIMEOUT_MS=20000"), "qps 3");
    assert_eq!(created(&out), 2, "{out}");
    assert!(line(&out, "first_errno").ends_with("EDQUOT"), "{out}");
    // A socket the marker does not list is the original design's standalone mode.
    let out = under_library(
        n,
        "RDMAQ_AGENT_SOCKET=/tmp/none.sock RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 \
         RDMA_INTERCEPT_MAX_QP_PER_PROCESS=1",
        "qps 2",
    );
    assert_eq!(created(&out), 1, "{out}");
}

/// Work-request caps, the QP-type list and creation rates used to be applied by the library
/// alone in agent mode (the agent never saw a QP's shape): a program could ignore them. The
/// agent now decides each such creation itself — here a client speaking the protocol
/// directly, no library at all, is clamped, refused and rate-limited.
#[test]
fn the_agent_enforces_qp_shape_and_creation_rates_itself() {
    use rdmaq_lab::host_agent::{recv, send};
    use rdmaq_proto::intercept::{self as msg, Resource, request, response};
    let a = HostAgent::start(
        "default_tenant = \"t1\"\n[tenants.t1]\nmax_qp = 10\nmax_send_wr = 8\n\
         allowed_qp_types = [\"RC\"]\nqp_create_per_sec = 2\n",
    );
    let mut s = connect(&a.sock());
    let h = hello(&mut s);
    assert_eq!(h.allowed_qp_types, [2], "{h:?}");
    let mut seq = 1;
    let mut qp = |s: &mut std::os::unix::net::UnixStream, qp_type: u32, send_wr: u32| {
        seq += 1;
        send(
            s,
            seq,
            request::Body::Admit(msg::Admit {
                resource: Resource::Qp as i32,
                qp_type,
                max_send_wr: send_wr,
                max_recv_wr: 4,
                prefetch: 4,
                ..Default::default()
            }),
        );
        match recv(s).and_then(|r| r.body) {
            Some(response::Body::Admit(a)) => a,
            other => panic!("no admit reply: {other:?}"),
        }
    };
    // RC asking for 100 send WRs: lowered to 8, one token only (each QP is the agent's).
    let r = qp(&mut s, 2, 100);
    assert_eq!(r.verdict, Verdict::Clamped as i32, "{r:?}");
    assert_eq!(
        (r.granted, r.max_send_wr, r.max_recv_wr),
        (1, 8, 4),
        "{r:?}"
    );
    assert!(r.one_at_a_time, "{r:?}");
    // UD is not in the list: refused by policy (the library's EPERM).
    let r = qp(&mut s, 4, 1);
    assert_eq!(r.verdict, Verdict::DenyPolicy as i32, "{r:?}");
    // 2 per second: the second passes, the third is refused by rate (EAGAIN).
    assert_eq!(qp(&mut s, 2, 1).verdict, Verdict::Allow as i32);
    let r = qp(&mut s, 2, 1);
    assert_eq!(r.verdict, Verdict::DenyRate as i32, "{r:?}");
    // And the rate refills.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(qp(&mut s, 2, 1).verdict, Verdict::Allow as i32);
}

/// The same limits set with `rdmaq quota set`, through the coordinator and the node's agent
/// to an unmodified program under the library (lab).
#[test]
fn quota_shape_and_rate_limits_reach_programs_through_the_agent() {
    rdmaq_lab::require_lab!();
    let cl = ClusterLab::start(1, Kernel::from_env(), &[]).unwrap_or_else(|e| panic!("{e}"));
    let n = cl.lab.node(1);
    let set = |args: &[&str]| {
        let mut all = vec!["quota", "set", "t1"];
        all.extend(args);
        let out = cl.cli(&all);
        assert!(out.status.success(), "{all:?}: {out:?}");
        // Agents take a change in at once (the quota stream); give it a moment.
        std::thread::sleep(Duration::from_millis(1500));
    };
    let run = |args: &str| run_as(n, "t1", args);
    set(&["--max-qp", "10", "--max-send-wr", "8"]);
    // Clamped: the QP is created with at most 8 send WRs (rxe may round up, never to 64).
    let out = run("wr 64 4");
    assert!(line(&out, "wr_result").starts_with("created"), "{out}");
    let send_wr: u32 = line(&out, "qp_caps")
        .split(['=', ' '])
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX);
    assert!(send_wr < 64, "{out}");
    // Deny policy: refused with EDQUOT.
    set(&["--wr-policy", "deny"]);
    let out = run("wr 64 4");
    assert!(
        line(&out, "wr_result").starts_with("refused errno 122"),
        "{out}"
    );
    // RC is not in the list: EPERM.
    set(&["--wr-policy", "clamp", "--qp-types", "UD"]);
    let out = run("qps 1");
    assert_eq!(created(&out), 0, "{out}");
    assert!(line(&out, "first_errno").ends_with("EPERM"), "{out}");
    // 2 QP creations a second on the node: a burst of 10 gets 2 or 3 (the bucket refills
    // while the program runs), then EAGAIN.
    set(&["--qp-types", "any", "--qp-create-rate", "2/s"]);
    let out = run("qps 10");
    assert!((2..=4).contains(&created(&out)), "{out}");
    assert!(line(&out, "first_errno").ends_with("EAGAIN"), "{out}");
    // MR registrations too.
    set(&[
        "--qp-create-rate",
        "1000/s",
        "--mr-create-rate",
        "2/s",
        "--max-mr",
        "100",
    ]);
    let out = run("mrs 10 4096");
    let registered: u64 = line(&out, "registered").parse().unwrap();
    assert!((2..=4).contains(&registered), "{out}");
    assert!(line(&out, "first_errno").starts_with("11 "), "{out}");
}

/// Waits (up to `secs`) until the agent charges `tenant` with `qps` QPs nobody admitted;
/// the last value seen.
fn unadmitted_qps_reach(n: &Node, tenant: &str, qps: u64, secs: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = node_agent::tenant_status(n, tenant)["unadmitted"]["qp"]
            .as_u64()
            .unwrap_or(0);
        if seen == qps || std::time::Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts the agent with its eBPF monitor and waits until it is attached.
fn agent_with_monitor<'a>(n: &'a Node, config: &str) -> rdmaq_lab::Pending<'a> {
    let agent = node_agent::start(n, config, "");
    n.run_ok(
        "for t in $(seq 150); do grep -q 'kernel view seeded' /tmp/agent.log && break; sleep 0.1; done; \
         grep -q 'kernel view seeded' /tmp/agent.log || cat /tmp/agent.log",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    agent
}

/// The eBPF backstop used to drop a process's objects from its view when the process's
/// thread-group leader exited: a program that forks and exits its parent (the child keeps
/// the device file, and the QPs with it), or whose main thread calls `pthread_exit` while
/// other threads go on, held objects nobody was charged for. Objects now stay charged to
/// their creator's tenant until they are destroyed, whoever destroys them.
#[test]
fn objects_outliving_their_creator_stay_charged_and_capped() {
    rdmaq_lab::require_lab!();
    let lab = Lab::start(&LabSpec::new(1, Kernel::from_env())).unwrap_or_else(|e| panic!("{e}"));
    let n = lab.node(1);
    let _agent = agent_with_monitor(
        n,
        "default_tenant = \"t1\"\n[[rules]]\nuid = 0\ntenant = \"t1\"\n[tenants.t1]\nmax_qp = 10",
    );
    let check = programs::verbs_check().display().to_string();
    // Without the library: 3 QPs, then the parent exits and a child holds them.
    let out = n.run_ok(&format!("{check} orphan 3 120")).unwrap().stdout;
    assert_eq!(created(&out), 3, "{out}");
    n.run_ok("sleep 1").unwrap();
    // (The kernel lists them without a pid now: their creator is gone.)
    assert!(
        n.run_ok("rdma resource show qp | grep -c 'type RC'")
            .is_ok_and(|o| o.stdout.trim() == "3"),
        "the kernel should still hold the 3 QPs"
    );
    assert_eq!(
        unadmitted_qps_reach(n, "t1", 3, 5),
        3,
        "{}",
        node_agent::status(n)
    );
    // Main thread exits, another thread holds the process and 2 more QPs.
    let lonely = n.spawn(&format!("{check} lonely 2 120 > /tmp/lonely.out 2>&1"));
    n.run_ok("for t in $(seq 100); do grep -q created /tmp/lonely.out && break; sleep 0.1; done; sleep 1")
        .unwrap();
    assert_eq!(
        unadmitted_qps_reach(n, "t1", 5, 5),
        5,
        "{}",
        node_agent::status(n)
    );
    // Charged means capped: a program under the library gets what is left of 10.
    let out = under_library(n, &format!("RDMAQ_AGENT_SOCKET={SOCKET}"), "qps 10");
    assert_eq!(created(&out), 5, "{out}");
    lonely.kill();
    n.run_ok("pkill -f '[v]erbs_check orphan'; true").unwrap();
}

/// The agent's view of the kernel used to be corrected (and, at start-up, seeded) only
/// from a resource dump during which no object changed anywhere: one program registering
/// and deregistering MRs in a loop kept it from ever being corrected. It is now corrected
/// process by process: a program that bypassed the library before the agent (re)started is
/// charged at once, however busy the others are.
#[test]
fn a_busy_neighbour_does_not_keep_bypassers_uncharged() {
    rdmaq_lab::require_lab!();
    let lab = Lab::start(&LabSpec::new(1, Kernel::from_env())).unwrap_or_else(|e| panic!("{e}"));
    let n = lab.node(1);
    let config = "default_tenant = \"t1\"\n[[rules]]\nuid = 0\ntenant = \"t1\"\n[tenants.t1]\nmax_qp = 10\nmax_mr = 100";
    let first = agent_with_monitor(n, config);
    let check = programs::verbs_check().display().to_string();
    // A program under the library churning MRs, and one bypassing it holding 3 QPs.
    let churn = n.spawn(&format!(
        "env LD_PRELOAD={} RDMAQ_AGENT_SOCKET={SOCKET} {check} churn 120 4096 > /dev/null 2>&1",
        bins::bin("librdmaq_intercept.so").display()
    ));
    let bypass = n.spawn(&format!("{check} hold 3 120 > /tmp/bypass.out 2>&1"));
    n.run_ok("for t in $(seq 100); do grep -q created /tmp/bypass.out && break; sleep 0.1; done")
        .unwrap();
    assert_eq!(unadmitted_qps_reach(n, "t1", 3, 5), 3);
    // The agent restarts while both go on: the bypasser is charged again from the dump.
    first.kill();
    n.run_ok(&format!("sleep 0.5; rm -f {SOCKET}; : > /tmp/agent.log"))
        .unwrap();
    let started = std::time::Instant::now();
    let _second = agent_with_monitor(n, config);
    let seeded = started.elapsed();
    assert_eq!(
        unadmitted_qps_reach(n, "t1", 3, 2),
        3,
        "{}",
        node_agent::status(n)
    );
    assert!(
        n.run_ok("grep 'kernel view seeded' /tmp/agent.log").is_ok(),
        "seeded after {seeded:?}"
    );
    churn.kill();
    bypass.kill();
}

/// A user's attack on the standalone host tables, as uid 65534: truncate and rewrite its
/// own table with a slot naming pid 1 with a million QPs, try to take root's lock, and hold
/// a lock on root's table. Prints what it could do.
const TABLE_ATTACK: &str = r#"
import fcntl, os, struct, sys, time
d = sys.argv[1]
mine = os.path.join(d, "uid-%d" % os.getuid())
with open(mine, "r+b") as f:
    f.truncate(0)
    table = b"RDMAQHT4" + struct.pack("<I", 1) + b"\0" * 4
    table += struct.pack("<IIQQ", 1, 1000000, 1, 1)
    f.write(table + b"\0" * (16 + 4096 * 24 - len(table)))
try:
    open(os.path.join(d, "uid-0.lock"), "rb")
    print("root's lock: opened", flush=True)
except PermissionError:
    print("root's lock: refused", flush=True)
held = open(os.path.join(d, "uid-0"), "rb")
fcntl.flock(held, fcntl.LOCK_EX)
print("holding root's table", flush=True)
time.sleep(float(sys.argv[2]))
"#;

/// The standalone host table used to be one file in /dev/shm that every user could write:
/// one could hang every process at its first QP (holding its lock), crash them (truncating
/// it under their mapping: SIGBUS), or deny everyone (a slot of pid 1 with a huge count).
/// Each user now writes only its own table (0644, its lock 0600), reads the others with
/// pread, and counts another user's slots only for live processes of that user.
#[test]
fn the_standalone_host_cap_holds_across_users_who_do_not_trust_each_other() {
    let dir = std::env::temp_dir().join(format!("rdmaq-host-users-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let holder = bins::bin("host-qp-holder");
    let env = |c: &mut Command| {
        c.env("RDMAQ_HOST_STATE", &dir)
            .env("RDMA_INTERCEPT_ENABLE_QP_CONTROL", "1")
            .env("RDMA_INTERCEPT_MAX_GLOBAL_QP", "5")
            .env("RDMAQ_AGENT_SOCKET", "/nonexistent/rdmaq.sock")
            .env("RDMAQ_HOST_TABLE_FAILURE", "closed")
            .env("RDMA_INTERCEPT_LOG_FILE_PATH", "/dev/null");
    };
    let granted = |out: &std::process::Output| -> usize {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("granted ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out:?}"))
    };
    // root holds 3 of the host's 5 (and makes the shared, sticky directory).
    let mut c = Command::new(&holder);
    c.args(["3", "120"]).stdout(Stdio::piped());
    env(&mut c);
    let mut root_holder = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(root_holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "granted 3");
    // Another user gets what is left: the cap is the host's, across users.
    let mut c = as_nobody(&holder.display().to_string());
    c.args(["5", "0"]);
    env(&mut c);
    assert_eq!(granted(&c.output().unwrap()), 2);
    // That user attacks the tables.
    let mut attack = as_nobody("/usr/bin/python3");
    attack
        .args(["-c", TABLE_ATTACK])
        .arg(&dir)
        .arg("60")
        .stdout(Stdio::piped());
    let mut attack = attack.spawn().unwrap();
    let mut said = BufReader::new(attack.stdout.take().unwrap());
    let mut first = String::new();
    said.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "root's lock: refused");
    let mut second = String::new();
    said.read_line(&mut second).unwrap();
    assert_eq!(second.trim(), "holding root's table");
    // root's programs go on: no hang, no crash, and the fake slot (pid 1 is not that
    // user's) does not count. root had 3, frees them with its holder, and a new program
    // gets the host's 5 minus the other user's 0 live QPs.
    let mut c = Command::new(&holder);
    c.args(["5", "0"]);
    env(&mut c);
    let started = std::time::Instant::now();
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(granted(&out), 2, "root still holds 3 of 5");
    assert!(started.elapsed() < Duration::from_secs(10), "it hung");
    let _ = root_holder.kill();
    let _ = root_holder.wait();
    let mut c = Command::new(&holder);
    c.args(["5", "0"]);
    env(&mut c);
    assert_eq!(granted(&c.output().unwrap()), 5);
    let _ = attack.kill();
    let _ = attack.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
