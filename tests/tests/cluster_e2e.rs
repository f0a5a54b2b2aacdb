//! The cluster end to end in the soft-RoCE lab: 3 coordinator members on the lab bridge, 3
//! RDMA nodes each running an agent, unmodified programs under the library on every node.
//! A checker samples every node's real kernel QPs throughout and fails the test at any
//! instant where the tenant's cluster-wide total exceeds its cap. Needs root and qemu.

use std::time::{Duration, Instant};

use rdmaq_lab::{
    Kernel,
    cluster_lab::{Checker, ClusterLab},
};

fn created(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("created "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'created' line in:\n{out}"))
}

fn usage(cl: &ClusterLab, tenant: &str) -> serde_json::Value {
    let out = cl.cli(&["usage", tenant, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_global_cap_holds_across_three_nodes() {
    let cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    let set = cl.cli(&["quota", "set", "t1", "--max-qp", "12"]);
    assert!(set.status.success(), "{set:?}");
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check");
        // Programs on all three nodes ask for 8 QPs each, at the same time.
        let holders: Vec<_> = cl
            .lab
            .nodes()
            .iter()
            .map(|n| {
                n.spawn(&format!(
                    "{} > /tmp/h.out 2>&1",
                    ClusterLab::exec("t1", "hold 8 40")
                ))
            })
            .collect();
        let per_node: Vec<u64> = cl
            .lab
            .nodes()
            .iter()
            .map(|n| {
                let out = n
                    .run_ok("for t in $(seq 300); do grep -q created /tmp/h.out && break; sleep 0.1; done; cat /tmp/h.out")
                    .unwrap()
                    .stdout;
                created(&out)
            })
            .collect();
        assert_eq!(
            per_node.iter().sum::<u64>(),
            12,
            "exactly the cap succeeds cluster-wide: {per_node:?}\nnode1's agent log:\n{}",
            cl.lab
                .node(1)
                .run(&format!(
                    "tail -20 /tmp/agent.log; tail -5 /tmp/lib.log; {} node status -o json",
                    rdmaq_lab::bins::bin("rdmaq").display()
                ))
                .map(|o| o.stdout + &o.stderr)
                .unwrap_or_default()
        );

        // `rdmaq usage` shows 12 in use, and on which nodes (after the agents' heartbeats).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let u = usage(&cl, "t1");
            let t = &u["tenants"][0];
            let used = t["used"]["qp"].as_u64().unwrap_or(0);
            let nodes: Vec<(String, u64)> = t["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    (
                        n["node"].as_str().unwrap_or("").to_string(),
                        n["used"]["qp"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            let expected: Vec<(String, u64)> = cl
                .lab
                .nodes()
                .iter()
                .zip(&per_node)
                .filter(|(_, c)| **c > 0)
                .map(|(n, c)| (n.name().to_string(), *c))
                .collect();
            let mut shown = nodes.clone();
            shown.retain(|(_, c)| *c > 0);
            shown.sort();
            if used == 12 && shown == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "usage never showed 12 on {expected:?}: {u}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        for h in holders {
            h.kill();
        }
        if let Err(timeline) = checker.finish(12) {
            panic!("{timeline}");
        }
    });
}

/// Runs `verbs_check ARGS` as `tenant` on node `i` until it creates `want` QPs or `within`
/// passes; returns how long it took.
fn until_created(
    cl: &ClusterLab,
    i: usize,
    tenant: &str,
    args: &str,
    want: u64,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let out = cl
            .lab
            .node(i)
            .run_ok(&ClusterLab::exec(tenant, args))
            .unwrap()
            .stdout;
        if created(&out) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "node{i} never got {want} QPs for {tenant} within {within:?}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn moving_demand_and_two_tenants() {
    let cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    for (tenant, cap) in [("t1", "8"), ("t2", "6")] {
        let set = cl.cli(&["quota", "set", tenant, "--max-qp", cap]);
        assert!(set.status.success(), "{set:?}");
    }
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check");
        // Two tenants on the same nodes do not affect each other's caps.
        let t2 = cl.lab.node(3).spawn(&format!(
            "{} > /tmp/t2.out 2>&1",
            ClusterLab::exec("t2", "hold 8 8")
        ));
        let out = cl
            .lab
            .node(1)
            .run_ok(&ClusterLab::exec("t1", "hold 8 3"))
            .unwrap()
            .stdout;
        assert_eq!(created(&out), 8, "t1 on node1: {out}");
        t2.wait_ok().unwrap();
        let t2_out = cl.lab.node(3).run_ok("cat /tmp/t2.out").unwrap().stdout;
        assert_eq!(created(&t2_out), 6, "t2 on node3: {t2_out}");

        // Moving demand: t1's programs on node1 have exited; node3 gets that budget once
        // node1's agent gives back what it no longer uses (idle 5 s + a heartbeat: < 10 s).
        let took = until_created(&cl, 3, "t1", "qps 8", 8, Duration::from_secs(20));
        eprintln!("t1's budget moved from node1 to node3 in {took:?}");
        // The tenants' kernel QPs never exceeded t1's cap plus t2's at any instant.
        if let Err(timeline) = checker.finish(8 + 6) {
            panic!("{timeline}");
        }
    });
}

#[test]
fn lowering_a_cap_holds_for_new_admissions_on_every_node_within_a_second() {
    let cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    let set = cl.cli(&["quota", "set", "t1", "--max-qp", "12"]);
    assert!(set.status.success(), "{set:?}");
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check");
        // Programs on every node open the device first (a program start takes seconds in
        // these VMs) and create one QP only when told to.
        let tries: Vec<_> = cl
            .lab
            .nodes()
            .iter()
            .map(|n| {
                n.spawn(&format!(
                    "rm -f /tmp/go; {} > /tmp/c.out 2>&1",
                    ClusterLab::exec("t1", "gated /tmp/go 1")
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(4));
        // Then two QPs held on every node; the agents acquire ahead, so each also holds
        // spare allotment it could admit from (for 5 s: idle tenants give it back).
        let holders: Vec<_> = cl
            .lab
            .nodes()
            .iter()
            .map(|n| {
                n.spawn(&format!(
                    "{} > /tmp/h.out 2>&1",
                    ClusterLab::exec("t1", "hold 2 40")
                ))
            })
            .collect();
        for n in cl.lab.nodes() {
            let out = n
                .run_ok("for t in $(seq 300); do grep -q created /tmp/h.out && break; sleep 0.1; done; cat /tmp/h.out")
                .unwrap()
                .stdout;
            assert_eq!(created(&out), 2, "{}: {out}", n.name());
        }
        let admitted = Instant::now();
        // The coordinator has heard every node's use.
        let deadline = Instant::now() + Duration::from_secs(15);
        while usage(&cl, "t1")["tenants"][0]["used"]["qp"].as_u64() != Some(6) {
            assert!(
                Instant::now() < deadline,
                "use never reached 6: {}",
                usage(&cl, "t1")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let allotted = usage(&cl, "t1")["tenants"][0]["allotted"]["qp"]
            .as_u64()
            .unwrap_or(0);
        eprintln!(
            "before lowering: 6 QPs in use, {allotted} allotted, {:?} after the admissions",
            admitted.elapsed()
        );
        // Lower the cap to what is in use; half a second later every node tries one more
        // QP (still within the 5 s in which the agents keep their spare allotment), and each
        // is refused although the agents' next periodic heartbeats (every 2 s) are mostly
        // still to come: the coordinator's quota-change stream makes each agent refresh
        // at once.
        let set = cl.cli(&["quota", "set", "t1", "--max-qp", "6"]);
        assert!(set.status.success(), "{set:?}");
        let lowered = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        for n in cl.lab.nodes() {
            n.run_ok("touch /tmp/go").unwrap();
        }
        for (i, n) in cl.lab.nodes().iter().enumerate() {
            let out = n
                .run_ok("for t in $(seq 300); do grep -q created /tmp/c.out && break; sleep 0.1; done; cat /tmp/c.out")
                .unwrap()
                .stdout;
            eprintln!(
                "{}: result read {:?} after lowering",
                n.name(),
                lowered.elapsed()
            );
            assert_eq!(
                created(&out),
                0,
                "{} admitted a QP after the cap was lowered to the use (allotted before: {allotted}):\n{out}\n{}",
                n.name(),
                cl.lab
                    .node(i + 1)
                    .run("tail -20 /tmp/agent.log")
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            );
        }
        for t in tries {
            t.kill();
        }
        for h in holders {
            h.kill();
        }
        if let Err(timeline) = checker.finish(12) {
            panic!("{timeline}");
        }
    });
}
