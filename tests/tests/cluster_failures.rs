//! The cluster under failures, in the soft-RoCE lab (3 coordinator members on the bridge, 3
//! nodes with agents): the leader killed mid-run, and a program run without the library. A checker samples every node's
//! kernel QPs throughout and fails at any instant over the cap. Needs root and qemu.

use std::time::{Duration, Instant};

use rdmaq_lab::{
    Kernel,
    cluster_lab::{Checker, ClusterLab},
    programs,
};

fn created(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("created "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'created' line in:\n{out}"))
}

fn set_quota(cl: &ClusterLab, tenant: &str, qps: u64) {
    let out = cl.cli(&["quota", "set", tenant, "--max-qp", &qps.to_string()]);
    assert!(out.status.success(), "{out:?}");
}

fn usage_qp(cl: &ClusterLab, tenant: &str) -> serde_json::Value {
    let out = cl.cli(&["usage", tenant, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn leader_killed_mid_run_admissions_continue_and_grants_resume() {
    let mut cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    set_quota(&cl, "t1", 12);
    // node1 acquires an allotment (4 QPs) and gives the tokens back: spare, live allotment.
    let out = cl
        .lab
        .node(1)
        .run_ok(&ClusterLab::exec("t1", "qps 4"))
        .unwrap()
        .stdout;
    assert_eq!(created(&out), 4, "{out}");
    let leader = cl.coord.wait_leader(Duration::from_secs(10));
    cl.coord.kill(leader);
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check");
        // Admissions from the existing allotment continue at once, without the coordinator.
        let out = cl
            .lab
            .node(1)
            .run_ok(&ClusterLab::exec("t1", "qps 4"))
            .unwrap()
            .stdout;
        assert_eq!(created(&out), 4, "node1 from its live allotment: {out}");
        // New grants resume after the election.
        let start = Instant::now();
        loop {
            let out = cl
                .lab
                .node(2)
                .run_ok(&ClusterLab::exec("t1", "qps 4"))
                .unwrap()
                .stdout;
            if created(&out) == 4 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no grant after the election: {out}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!(
            "first new grant {:?} after the leader was killed",
            start.elapsed()
        );
        if let Err(t) = checker.finish(12) {
            panic!("{t}");
        }
    });
    // The old leader rejoins.
    cl.coord.start_member(leader);
    let u = usage_qp(&cl, "t1");
    assert!(
        u["tenants"][0]["allotted"]["qp"].as_u64().unwrap_or(99) <= 12,
        "{u}"
    );
}

#[test]
fn a_program_without_the_library_is_charged_cluster_wide() {
    let cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    set_quota(&cl, "root", 10);
    // No LD_PRELOAD: the agent's eBPF view sees it and charges the rule's tenant ("root").
    let check = programs::verbs_check().display().to_string();
    let bypass = cl
        .lab
        .node(2)
        .spawn(&format!("{check} hold 3 60 > /tmp/bypass.out 2>&1"));
    let start = Instant::now();
    loop {
        let u = usage_qp(&cl, "root");
        let on_node2 = u["tenants"][0]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["node"] == "node2")
            .and_then(|n| n["used"]["qp"].as_u64())
            .unwrap_or(0);
        if on_node2 == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "unadmitted QPs never reached the coordinator: {u}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // They count against the tenant's cap everywhere: 10 - 3 left for node1.
    let out = cl
        .lab
        .node(1)
        .run_ok(&ClusterLab::exec("root", "qps 10"))
        .unwrap()
        .stdout;
    assert_eq!(created(&out), 7, "{out}");
    bypass.kill();
}
