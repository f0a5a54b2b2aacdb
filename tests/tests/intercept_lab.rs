//! librdmaq_intercept.so in the soft-RoCE lab, with real libibverbs calls: caps, errno,
//! counting through every entry point, host-wide caps across processes, SIGKILL, threads
//! and fork. Needs root and qemu (the lab), like every lab test.

use std::collections::HashMap;

use rdmaq_lab::{
    Kernel, Lab, LabSpec, Node, bins,
    node_agent::{self, SOCKET},
    programs,
};

fn start() -> Lab {
    Lab::start(&LabSpec::new(1, Kernel::from_env()))
        .unwrap_or_else(|e| panic!("the soft-RoCE lab could not start: {e}"))
}

fn lib() -> String {
    bins::bin("librdmaq_intercept.so").display().to_string()
}

/// Runs verbs_check under the library with `env` (space-separated VAR=value).
fn check(node: &Node, env: &str, args: &str) -> String {
    let cmd = format!(
        "env LD_PRELOAD={} RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/intercept.log {env} {} {args}",
        lib(),
        programs::verbs_check().display()
    );
    node.run_ok(&cmd).unwrap_or_else(|e| panic!("{e}")).stdout
}

/// "key value..." lines as a map from key to the rest.
fn parse(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(out: &'a HashMap<String, String>, key: &str) -> &'a str {
    out.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{key} missing from {out:?}"))
}

#[test]
fn standalone_caps_errno_and_counting() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let qp4 = "RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_MAX_QP_PER_PROCESS=4";

    for how in ["", "ex"] {
        let out = parse(&check(n, qp4, &format!("qps 8 {how}")));
        assert_eq!(field(&out, "created"), "4", "ibv_create_qp{how}: {out:?}");
        assert!(field(&out, "first_errno").ends_with("EDQUOT"), "{out:?}");
        assert!(
            field(&out, "held_lib_counts").starts_with("qps=4 "),
            "{out:?}"
        );
        assert!(
            field(&out, "after_lib_counts").starts_with("qps=0 "),
            "{out:?}"
        );
    }
    let log = n.run_ok("cat /tmp/intercept.log").unwrap().stdout;
    assert!(
        log.contains("pid=") && log.contains("qp denied: process use 4 has reached its limit 4"),
        "no denial line naming pid, resource, use and limit:\n{log}"
    );

    let mr3 = "RDMA_INTERCEPT_MAX_MR_PER_PROCESS=3";
    for how in ["", "runtime"] {
        let out = parse(&check(n, mr3, &format!("mrs 5 4096 {how}")));
        assert_eq!(field(&out, "registered"), "3", "reg_mr {how}: {out:?}");
        assert!(field(&out, "first_errno").ends_with("EDQUOT"), "{out:?}");
        // Counted once, although ibv_reg_mr calls ibv_reg_mr_iova2 inside libibverbs.
        assert!(
            field(&out, "held_lib_counts").contains("mrs=3 bytes=12288 "),
            "{out:?}"
        );
        assert!(
            field(&out, "after_lib_counts").contains("mrs=0 bytes=0 "),
            "{out:?}"
        );
    }
    let out = parse(&check(
        n,
        "RDMA_INTERCEPT_MAX_MEMORY_PER_PROCESS=2",
        "mrs 5 1048576",
    ));
    assert_eq!(field(&out, "registered"), "2", "2 MiB cap: {out:?}");

    // Pass-through: no caps, no counting.
    let out = parse(&check(
        n,
        &format!("RDMA_INTERCEPT_ENABLE=0 {qp4}"),
        "qps 8",
    ));
    assert_eq!(field(&out, "created"), "8", "{out:?}");
    assert!(
        field(&out, "held_lib_counts").starts_with("qps=0 "),
        "{out:?}"
    );

    // Work-request caps: clamped by default, refused with the deny policy.
    let out = parse(&check(
        n,
        "RDMAQ_MAX_SEND_WR=8 RDMAQ_MAX_RECV_WR=8",
        "wr 64 64",
    ));
    assert!(field(&out, "wr_result").starts_with("created"), "{out:?}");
    let send: u32 = field(&out, "qp_caps")
        .split(['=', ' '])
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(send < 64, "max_send_wr not clamped: {out:?}");
    let out = parse(&check(
        n,
        "RDMAQ_MAX_SEND_WR=8 RDMAQ_WR_POLICY=deny",
        "wr 64 4",
    ));
    assert_eq!(
        field(&out, "wr_result"),
        format!("refused errno {}", libc_edquot()),
        "{out:?}"
    );

    // QP type allow-list.
    let out = parse(&check(n, "RDMAQ_ALLOWED_QP_TYPES=UD", "qps 1"));
    assert_eq!(field(&out, "created"), "0", "{out:?}");
    assert!(field(&out, "first_errno").ends_with("EPERM"), "{out:?}");

    // CQs and PDs are counted.
    let out = parse(&check(n, "", "qps 1"));
    assert!(
        field(&out, "held_lib_counts").ends_with("cqs=1 pds=1"),
        "{out:?}"
    );
}

fn libc_edquot() -> i32 {
    nix::errno::Errno::EDQUOT as i32
}

#[test]
fn host_wide_cap_holds_across_processes_and_sigkill_returns_budget() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let env = "RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_MAX_GLOBAL_QP=6";
    let prog = programs::verbs_check().display().to_string();
    let holders: Vec<_> = (0..3)
        .map(|i| {
            n.spawn(&format!(
                "env LD_PRELOAD={} {env} {prog} hold 4 30 > /tmp/holder{i}.out 2>&1",
                lib()
            ))
        })
        .collect();
    // All three have created (or been refused) once each printed its count.
    let mut created = Vec::new();
    for i in 0..3 {
        let out = n
            .run_ok(&format!(
                "for t in $(seq 100); do grep -q created /tmp/holder{i}.out && break; sleep 0.1; done; cat /tmp/holder{i}.out"
            ))
            .unwrap()
            .stdout;
        created.push(field(&parse(&out), "created").parse::<u32>().unwrap());
    }
    assert_eq!(
        created.iter().sum::<u32>(),
        6,
        "host-wide cap 6 across 3 processes: {created:?}"
    );

    // SIGKILL the holder with the most QPs: they stop counting at once.
    let (victim, held) = created.iter().enumerate().max_by_key(|(_, c)| **c).unwrap();
    holders[victim].kill(); // SIGKILL to its process group
    n.run_ok("sleep 1").unwrap();
    let out = parse(&check(n, env, "qps 8"));
    assert_eq!(
        field(&out, "created").parse::<u32>().unwrap(),
        *held,
        "after SIGKILL of a holder of {held} QPs the others still hold {}: {out:?}",
        6 - held
    );
    for h in holders {
        h.kill();
    }
}

#[test]
fn threads_and_fork() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let cap3 = "RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_MAX_QP_PER_PROCESS=3";
    // 16 threads x 200 create/destroy cycles (alternating ibv_create_qp and _ex) under a cap.
    let out = parse(&check(n, cap3, "threads 16 200"));
    let max: u32 = field(&out, "max_live").parse().unwrap();
    assert!(
        (1..=3).contains(&max),
        "held {max} at once under a cap of 3: {out:?}"
    );
    assert!(
        field(&out, "after_lib_counts").starts_with("qps=0 "),
        "{out:?}"
    );
    let failures: u32 = field(&out, "failures").parse().unwrap();
    assert!(failures < 16 * 200, "every creation failed: {out:?}");

    // fork: the child starts with its own, empty ledger; the parent's is unchanged.
    let cap4 = "RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_MAX_QP_PER_PROCESS=4";
    let out = check(n, cap4, "fork");
    let lines: Vec<&str> = out.lines().collect();
    let get = |key: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
            .to_string()
    };
    assert!(get("parent_before_lib_counts").contains("qps=2 "), "{out}");
    assert!(get("child_start_lib_counts").contains("qps=0 "), "{out}");
    assert!(get("child_held_lib_counts").contains("qps=4 "), "{out}");
    assert!(get("parent_after_lib_counts").contains("qps=2 "), "{out}");
}

/// Runs `server` in the background and `client` against it, both through `prefix`; returns
/// (client exit code, server exit code, client output, server output).
fn pair(
    n: &Node,
    prefix: &str,
    server: &str,
    client: &str,
) -> (Option<i32>, Option<i32>, String, String) {
    let srv = n.spawn_with_timeout(
        &format!("{prefix} {server}"),
        std::time::Duration::from_secs(90),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let cli = n.run(&format!("{prefix} {client}")).unwrap();
    if !cli.success() {
        srv.kill();
    }
    let srv = srv.wait().unwrap();
    (
        cli.code,
        srv.code,
        cli.stdout + &cli.stderr,
        srv.stdout + &srv.stderr,
    )
}

/// Numbers in lines that report completed work ("iters", "bytes" rows, ping counts).
fn completed(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            l.contains(" iters in ")
                || l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && !l.contains("usec")
                || l.contains("ping data:")
        })
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn real_programs_behave_the_same_under_the_library() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let a = n.addr();
    let with = format!(
        "env LD_PRELOAD={} RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_LOG_LEVEL=DEBUG RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/transparency.log",
        lib()
    );
    let cases: Vec<(&str, String, String)> = vec![
        (
            "ibv_rc_pingpong",
            "ibv_rc_pingpong -d rxe0 -g 1 -n 50".into(),
            format!("ibv_rc_pingpong -d rxe0 -g 1 -n 50 {a}"),
        ),
        (
            "ibv_ud_pingpong",
            "ibv_ud_pingpong -d rxe0 -g 1 -n 50".into(),
            format!("ibv_ud_pingpong -d rxe0 -g 1 -n 50 {a}"),
        ),
        (
            "ibv_srq_pingpong",
            "ibv_srq_pingpong -d rxe0 -g 1 -n 50".into(),
            format!("ibv_srq_pingpong -d rxe0 -g 1 -n 50 {a}"),
        ),
        (
            "ibv_xsrq_pingpong",
            "ibv_xsrq_pingpong -d rxe0 -g 1 -n 50".into(),
            format!("ibv_xsrq_pingpong -d rxe0 -g 1 -n 50 {a}"),
        ),
        (
            "ib_write_bw",
            "ib_write_bw -d rxe0 -x 1 -F -n 200".into(),
            format!("ib_write_bw -d rxe0 -x 1 -F -n 200 {a}"),
        ),
        (
            "ib_send_lat",
            "ib_send_lat -d rxe0 -x 1 -F -n 200".into(),
            format!("ib_send_lat -d rxe0 -x 1 -F -n 200 {a}"),
        ),
        (
            "rping",
            format!("rping -s -a {a} -C 10 -v"),
            format!("rping -c -a {a} -C 10 -v"),
        ),
    ];
    for (name, server, client) in &cases {
        // Some of these programs have teardown races of their own (rping's cm thread can
        // exit 1 with "rdma_get_cm_event: Bad file descriptor" after all its pings): a
        // difference must show in 3 paired runs to count.
        let mut attempts = Vec::new();
        let same = (0..3).any(|_| {
            let plain = pair(n, "env", server, client);
            let under = pair(n, &with, server, client);
            let same = (plain.0, plain.1) == (under.0, under.1)
                && completed(&plain.2).len() == completed(&under.2).len();
            attempts.push((plain, under));
            same
        });
        let (plain, under) = attempts.last().expect("at least one attempt");
        assert!(
            same,
            "{name}: exit codes or completed work differ without/with the library in 3 runs\n--- without ({:?}/{:?})\n{}\n{}\n--- with ({:?}/{:?})\n{}\n{}",
            plain.0, plain.1, plain.2, plain.3, under.0, under.1, under.2, under.3
        );
        eprintln!(
            "{name}: exit {:?}/{:?} with and without the library",
            under.0, under.1
        );
    }
    // Python's pyverbs loads libibverbs privately through an extension module.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../intercept/tests/py/pyverbs_check.py");
    let py = |prefix: &str| {
        n.run_ok(&format!("{prefix} /usr/bin/python3 {} 3", script.display()))
            .unwrap_or_else(|e| panic!("{e}"))
            .stdout
    };
    assert_eq!(py("env"), py(&with));
    let capped = n
        .run_ok(&format!(
            "{with} RDMA_INTERCEPT_MAX_QP_PER_PROCESS=2 /usr/bin/python3 {} 3",
            script.display()
        ))
        .unwrap()
        .stdout;
    assert!(
        capped.contains("refused 122") && capped.contains("pyverbs qps 2"),
        "pyverbs not capped:\n{capped}"
    );

    // The library admitted what these programs created (not just passed them through).
    let log = n.run_ok("cat /tmp/transparency.log").unwrap().stdout;
    for what in ["qp admitted", "mr of"] {
        assert!(
            log.contains(what),
            "no {what:?} in the library's log:\n{log}"
        );
    }
}

/// The library in agent mode against the real rdmaq-agent (standalone, one tenant capped at
/// 5 QPs with a work-request cap): the agent's budget decides, tokens are batched, budget
/// comes back at exit; then the agent dies (fail-closed, fail-open) or hangs.
#[test]
fn agent_mode_against_the_real_agent() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let agent = node_agent::start(
        n,
        // Tenant t: a budget only (QPs from batched tokens). Tenant w (a launcher's): a
        // work-request cap (each QP decided by the agent, clamped).
        "default_tenant = \"t\"\n[[rules]]\nuid = 0\ntenant = \"t\"\nlauncher_tenants = [\"w\"]\n\
         [tenants.t]\nmax_qp = 5\nmax_mr = 100\n[tenants.w]\nmax_send_wr = 8",
        "--no-ebpf",
    );
    let sock = format!("RDMAQ_AGENT_SOCKET={SOCKET}");

    // The agent's budget (5), not the standalone defaults, decides; EDQUOT past it.
    let out = parse(&check(n, &sock, "qps 8"));
    assert_eq!(field(&out, "created"), "5", "{out:?}");
    assert!(field(&out, "first_errno").ends_with("EDQUOT"), "{out:?}");
    // Tokens are batched: fewer granting round trips than QPs.
    let admits = node_agent::metric(
        n,
        "rdmaq_agent_admissions_total{tenant=\"t\",resource=\"qp\"}",
    );
    assert!(
        (1..5).contains(&admits),
        "{admits} granting round trips for 5 QPs:\n{}",
        node_agent::metrics(n)
    );
    // At exit everything went back: the next process gets the whole budget again.
    let out = parse(&check(n, &sock, "qps 8"));
    assert_eq!(
        field(&out, "created"),
        "5",
        "budget not returned at exit: {out:?}"
    );
    // MRs through the agent too, and its work-request cap.
    let out = parse(&check(n, &sock, "mrs 3 4096"));
    assert_eq!(field(&out, "registered"), "3", "{out:?}");
    let out = parse(&check(n, &format!("{sock} RDMAQ_TENANT=w"), "wr 64 4"));
    let send: u32 = field(&out, "qp_caps")
        .split(['=', ' '])
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(send < 64, "agent's max_send_wr 8 not applied: {out:?}");

    // The agent is killed (its socket file stays): fail-closed refuses with EAGAIN,
    // fail-open falls back to the standalone limits.
    agent.kill();
    n.run_ok(&format!("sleep 0.5; [ -S {SOCKET} ]"))
        .unwrap_or_else(|e| panic!("the socket went with the agent: {e}"));
    let closed = parse(&check(
        n,
        &format!("{sock} RDMAQ_AGENT_FAILURE=closed"),
        "qps 2",
    ));
    assert_eq!(field(&closed, "created"), "0", "{closed:?}");
    assert!(
        field(&closed, "first_errno").ends_with("EAGAIN"),
        "{closed:?}"
    );
    let open = parse(&check(
        n,
        &format!(
            "{sock} RDMAQ_AGENT_FAILURE=open RDMA_INTERCEPT_ENABLE_QP_CONTROL=1 RDMA_INTERCEPT_MAX_QP_PER_PROCESS=2"
        ),
        "qps 4",
    ));
    assert_eq!(field(&open, "created"), "2", "{open:?}");

    // An agent that accepts but never answers (stopped: the kernel still queues
    // connections on its socket): each call gives up after the timeout.
    let hung = node_agent::start_named(n, "hung", "", "--no-ebpf");
    n.run_ok("pkill -STOP -f '[r]dmaq-agent .*hung.sock'")
        .unwrap();
    let started = std::time::Instant::now();
    let out = parse(&check(
        n,
        "RDMAQ_AGENT_SOCKET=/tmp/hung.sock RDMAQ_AGENT_TIMEOUT_MS=200 RDMAQ_AGENT_FAILURE=closed",
        "qps 2",
    ));
    assert_eq!(field(&out, "created"), "0", "{out:?}");
    assert!(field(&out, "first_errno").ends_with("EAGAIN"), "{out:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the program hung"
    );
    n.run_ok("pkill -CONT -f '[r]dmaq-agent .*hung.sock'")
        .unwrap();
    hung.kill();
}
