//! The cluster end to end in the soft-RoCE lab: 3 coordinator members on the lab bridge, 3
//! RDMA nodes each running an agent, unmodified programs under the library on every node.
//! A checker samples every node's real kernel QPs throughout and fails the test at any
//! instant where the tenant's cluster-wide total exceeds its cap; one scenario runs real
//! traffic (ib_write_bw) between two nodes under the caps. Needs root and qemu.

use std::time::{Duration, Instant};

use rdmaq_lab::{
    Kernel,
    cluster_lab::{Checker, ClusterLab, created, created_in, kernel_qps, run_as},
};

#[test]
fn a_global_cap_holds_across_three_nodes() {
    rdmaq_lab::require_lab!();
    let cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    let set = cl.cli(&["quota", "set", "t1", "--max-qp", "12"]);
    assert!(set.status.success(), "{set:?}");
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check");
        // Programs on all three nodes ask for 8 QPs each, at the same time.
        let holders: Vec<_> = cl.spawn_everywhere(&format!(
            "{} > /tmp/h.out 2>&1",
            ClusterLab::exec("t1", "hold 8 40")
        ));
        let per_node: Vec<u64> = cl
            .lab
            .nodes()
            .iter()
            .map(|n| {
                let out = created_in(n, "/tmp/h.out");
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
            let u = cl.usage("t1");
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

#[test]
fn moving_demand_and_two_tenants() {
    rdmaq_lab::require_lab!();
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
        let out = run_as(cl.lab.node(1), "t1", "hold 8 3");
        assert_eq!(created(&out), 8, "t1 on node1: {out}");
        t2.wait_ok().unwrap();
        let t2_out = cl.lab.node(3).run_ok("cat /tmp/t2.out").unwrap().stdout;
        assert_eq!(created(&t2_out), 6, "t2 on node3: {t2_out}");

        // Moving demand: t1's programs on node1 have exited; node3 gets that budget once
        // node1's agent gives back what it no longer uses (idle 5 s + a heartbeat: < 10 s).
        let took = cl.until_created(3, "t1", "qps 8", (8, 8), Duration::from_secs(20));
        eprintln!("t1's budget moved from node1 to node3 in {took:?}");
        // The tenants' kernel QPs never exceeded t1's cap plus t2's at any instant.
        if let Err(timeline) = checker.finish(8 + 6) {
            panic!("{timeline}");
        }
    });
}

#[test]
fn lowering_a_cap_holds_for_new_admissions_on_every_node_within_a_second() {
    rdmaq_lab::require_lab!();
    // Agents heartbeat only every 10 s here, so a refusal within a second of the change can
    // only come from the coordinator's quota-change stream, not from a periodic heartbeat.
    let slow_heartbeats = [
        "--agent-heartbeat-interval-ms",
        "10000",
        "--lease-ttl-ms",
        "30000",
        "--node-dead-ms",
        "60000",
    ];
    let cl = ClusterLab::start(3, Kernel::from_env(), &slow_heartbeats)
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    let set = cl.cli(&["quota", "set", "t1", "--max-qp", "12"]);
    assert!(set.status.success(), "{set:?}");
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check");
        // Programs on every node open the device first (a program start takes seconds in
        // these VMs) and create one QP only when told to.
        let tries: Vec<_> = cl.spawn_everywhere(&format!(
            "rm -f /tmp/go; {} > /tmp/c.out 2>&1",
            ClusterLab::exec("t1", "gated /tmp/go 1")
        ));
        std::thread::sleep(Duration::from_secs(4));
        // Then two QPs held on every node; the agents acquire ahead of demand, so each also
        // holds spare allotment it could admit from.
        let holders: Vec<_> = cl.spawn_everywhere(&format!(
            "{} > /tmp/h.out 2>&1",
            ClusterLab::exec("t1", "hold 2 40")
        ));
        for n in cl.lab.nodes() {
            let out = created_in(n, "/tmp/h.out");
            assert_eq!(created(&out), 2, "{}: {out}", n.name());
        }
        let allotted = |cl: &ClusterLab| {
            cl.usage("t1")["tenants"][0]["allotted"]["qp"]
                .as_u64()
                .unwrap_or(0)
        };
        let before = allotted(&cl);
        assert!(
            before > 6,
            "no spare allotment to admit from: {before} allotted"
        );
        // Lower the cap to what is in use; half a second later every node tries one more QP,
        // and each is refused although it still had spare allotment a moment ago.
        let set = cl.cli(&["quota", "set", "t1", "--max-qp", "6"]);
        assert!(set.status.success(), "{set:?}");
        let lowered = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        for n in cl.lab.nodes() {
            n.run_ok("touch /tmp/go").unwrap();
        }
        for (i, n) in cl.lab.nodes().iter().enumerate() {
            let out = created_in(n, "/tmp/c.out");
            eprintln!(
                "{}: result read {:?} after lowering",
                n.name(),
                lowered.elapsed()
            );
            assert_eq!(
                created(&out),
                0,
                "{} admitted a QP after the cap was lowered to the use ({before} allotted before):\n{out}\n{}",
                n.name(),
                cl.lab
                    .node(i + 1)
                    .run("tail -20 /tmp/agent.log")
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            );
        }
        // The agents gave back what was asked of them: every node's allotment is down to
        // its use (the holders' QPs and the tokens their processes hold ahead of demand).
        let spare = |cl: &ClusterLab| -> u64 {
            cl.usage("t1")["tenants"][0]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let (a, u) = (n["allotted"]["qp"].as_u64(), n["used"]["qp"].as_u64());
                    a.unwrap_or(0).saturating_sub(u.unwrap_or(0))
                })
                .sum()
        };
        let deadline = lowered + Duration::from_secs(5);
        while spare(&cl) > 0 {
            assert!(
                Instant::now() < deadline,
                "allotments never came down to the new cap: {}",
                cl.usage("t1")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "allotted {before} -> {} within {:?} of lowering",
            allotted(&cl),
            lowered.elapsed()
        );
        for t in tries {
            t.kill();
        }
        for h in holders {
            h.kill();
        }
        // Only the 6 held QPs ever existed.
        if let Err(timeline) = checker.finish(6) {
            panic!("{timeline}");
        }
    });
}

#[test]
fn real_traffic_between_two_nodes_completes_under_the_caps() {
    rdmaq_lab::require_lab!();
    let cl = ClusterLab::start(3, Kernel::from_env(), &[])
        .unwrap_or_else(|e| panic!("cluster lab: {e}"));
    let set = cl.cli(&["quota", "set", "t1", "--max-qp", "6"]);
    assert!(set.status.success(), "{set:?}");
    std::thread::scope(|s| {
        let checker = Checker::spawn(s, &cl.lab, "verbs_check|ib_write_bw");
        // ib_write_bw between node1 (server) and node2 (client), both under the library as
        // t1, for 20 s of RDMA writes. `-F`: perftest calibrates the CPU clock by sampling
        // after the traffic and, without it, exits 1 ("Can't produce a report") when the
        // samples of a busy emulated CPU correlate below r² 0.9 — a tool failure, not ours.
        let bw = "ib_write_bw -d rxe0 -x 1 -F -D 20";
        let (n1, n2, n3) = (cl.lab.node(1), cl.lab.node(2), cl.lab.node(3));
        let server = n1.spawn_with_timeout(
            &ClusterLab::exec_program("t1", bw),
            Duration::from_secs(120),
        );
        // The server creates its QP once a client has connected to its TCP port (18515,
        // 0x4853), which takes seconds to open under emulation when the machine is busy: the
        // client starts once it listens.
        n1.run_ok(
            "for t in $(seq 300); do grep -qs ':4853 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.1; done; exit 1",
        )
        .unwrap_or_else(|e| panic!("the ib_write_bw server never listened: {e}"));
        let client = n2.spawn_with_timeout(
            &ClusterLab::exec_program("t1", &format!("{bw} {}", n1.addr())),
            Duration::from_secs(120),
        );
        for n in [n1, n2] {
            let start = Instant::now();
            while kernel_qps(n, "ib_write_bw").unwrap_or(0) == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{}: ib_write_bw never created its QP; library log:\n{}",
                    n.name(),
                    n.run("tail /tmp/lib.log")
                        .map(|o| o.stdout)
                        .unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let pair_qps =
            kernel_qps(n1, "ib_write_bw").unwrap_or(0) + kernel_qps(n2, "ib_write_bw").unwrap_or(0);
        // While the traffic runs, node3 gets exactly what the pair leaves of the cap (once
        // node1 and node2 have given back the spare allotment they acquired ahead).
        let rest = 6 - pair_qps;
        let start = Instant::now();
        loop {
            let out = run_as(n3, "t1", "qps 8");
            let got = created(&out);
            assert!(
                got <= rest,
                "node3 got {got} with {pair_qps} QPs of the pair in use: {out}"
            );
            if got == rest {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "node3 never got the {rest} QPs the pair leaves: {out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            kernel_qps(n1, "ib_write_bw").unwrap_or(0) > 0,
            "the traffic ended before the cap was shown full"
        );
        // The pair completes: both report their completed writes and exit 0. After its
        // report perftest syncs the two ends once more over TCP; on an overloaded machine
        // that last exchange can fail (seen in a fresh-clone CI at 0.8 MB/s) once the writes
        // are done and reported — the tool's teardown, not the traffic: that failure alone
        // is allowed.
        let teardown = "Failed to exchange data between server and clients";
        let (client, server) = (client.wait().unwrap(), server.wait().unwrap());
        for (side, out) in [("client", &client), ("server", &server)] {
            let text = format!("{}{}", out.stdout, out.stderr);
            let row = text
                .lines()
                .find(|l| l.trim_start().starts_with("65536"))
                .unwrap_or_else(|| panic!("no result row from the {side}:\n{text}"));
            let after_report = text
                .find(row)
                .is_some_and(|at| text[at..].contains(teardown));
            assert!(
                out.success() || after_report,
                "ib_write_bw {side} failed:\n{text}"
            );
            eprintln!("ib_write_bw {side} under the library: {}", row.trim());
            let fields: Vec<f64> = row
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            // The iteration count is counted, not timed; the bandwidth columns read 0 when
            // perftest's clock calibration failed, so only the completed writes are asserted.
            assert!(
                fields.len() >= 4 && fields[1] > 0.0,
                "no completed iterations from the {side}: {row}"
            );
        }
        if let Err(timeline) = checker.finish(6) {
            panic!("{timeline}");
        }
    });
}
