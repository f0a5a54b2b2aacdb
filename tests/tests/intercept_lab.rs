//! librdmaq_intercept.so in the soft-RoCE lab, with real libibverbs calls: caps, errno,
//! counting through every entry point, host-wide caps across processes, SIGKILL, threads
//! and fork. Needs root and qemu (the lab), like every lab test.

use std::collections::HashMap;

use rdmaq_lab::{Kernel, Lab, LabSpec, Node, bins, programs};

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

/// EDQUOT on Linux.
fn libc_edquot() -> i32 {
    122
}

#[test]
fn host_wide_cap_holds_across_processes_and_sigkill_returns_budget() {
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
