//! rdmaq-agent on a soft-RoCE node: a tenant capped across several processes, budget back
//! within a second of a SIGKILL, `rdmaq exec` and `rdmaq node status`; with a coordinator
//! on the lab bridge, admissions from live allotments while it is down, then fail-closed.
//! Needs root and qemu (the lab).

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use rdmaq_lab::{
    Kernel, Lab, LabSpec, Node, bins,
    lab::HOST_ADDR,
    node_agent::{self, SOCKET, STATUS},
    programs,
};

fn start() -> Lab {
    Lab::start(&LabSpec::new(1, Kernel::from_env()))
        .unwrap_or_else(|e| panic!("the soft-RoCE lab could not start: {e}"))
}

fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
}

/// `rdmaq node status -o json` of the node's agent: the text (for messages) and its JSON.
fn node_status(n: &Node) -> (String, serde_json::Value) {
    let status = n
        .run_ok(&format!(
            "{} node status --agent {STATUS} -o json",
            bins::bin("rdmaq").display()
        ))
        .unwrap()
        .stdout;
    let v = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    (status, v)
}

/// `rdmaq exec --tenant TENANT -- verbs_check ARGS` against the node's agent.
fn exec(tenant: &str, args: &str) -> String {
    format!(
        "RDMAQ_AGENT_SOCKET={SOCKET} RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/lib.log {} exec --tenant {tenant} --lib {} -- {} {args}",
        bins::bin("rdmaq").display(),
        bins::bin("librdmaq_intercept.so").display(),
        programs::verbs_check().display()
    )
}

#[test]
fn standalone_agent_caps_a_tenant_across_processes_and_sigkill_frees_budget() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let _agent = node_agent::start(
        n,
        "unknown_tenant = \"deny\"\n[[rules]]\nuid = 0\nlauncher_tenants = [\"t*\"]\ntenant = \"root\"\n[tenants.t1]\nmax_qp = 6\nmax_qp_per_process = 3",
        "",
    );
    // Per-process cap 3 and node cap 6: three processes asking for 4 each get 6 in all.
    let holders: Vec<_> = (0..3)
        .map(|i| n.spawn(&format!("{} > /tmp/h{i}.out 2>&1", exec("t1", "hold 4 60"))))
        .collect();
    let mut created = Vec::new();
    for i in 0..3 {
        let out = n
            .run_ok(&format!("for t in $(seq 100); do grep -q created /tmp/h{i}.out && break; sleep 0.1; done; cat /tmp/h{i}.out"))
            .unwrap()
            .stdout;
        created.push(field(&out, "created").parse::<u32>().unwrap());
    }
    assert_eq!(created.iter().sum::<u32>(), 6, "node cap 6: {created:?}");
    assert!(
        created.iter().all(|c| *c <= 3),
        "per-process cap 3: {created:?}"
    );

    // A tenant without a quota is denied (unknown_tenant = "deny"), another is unaffected.
    let other = n.run_ok(&exec("t-unknown", "qps 1")).unwrap().stdout;
    assert_eq!(field(&other, "created"), "0", "{other}");
    assert!(field(&other, "first_errno").ends_with("EDQUOT"), "{other}");
    // A launcher may name only what the rule's patterns allow: refused at the first verb
    // with EPERM, never charged to another tenant.
    let refused = n.run_ok(&exec("nobody", "qps 1")).unwrap().stdout;
    assert_eq!(field(&refused, "created"), "0", "{refused}");
    assert!(
        field(&refused, "first_errno").ends_with("EPERM"),
        "{refused}"
    );

    // SIGKILL a holder: its QPs are admissible again within a second.
    let (victim, held) = created.iter().enumerate().max_by_key(|(_, c)| **c).unwrap();
    holders[victim].kill();
    n.run_ok("sleep 1").unwrap();
    let out = n.run_ok(&exec("t1", "qps 3")).unwrap().stdout;
    assert_eq!(field(&out, "created"), held.to_string(), "{out}");

    let status = n
        .run_ok(&format!(
            "{} node status --agent {STATUS}",
            bins::bin("rdmaq").display()
        ))
        .unwrap()
        .stdout;
    assert!(
        status.contains("t1") && status.contains("standalone"),
        "{status}"
    );
    let metrics = node_agent::metrics(n);
    assert!(metrics.contains("rdmaq_agent_denials_total{"), "{metrics}");
    for h in holders {
        h.kill();
    }
}

struct Coordinator(Child);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn with_a_coordinator_admissions_outlive_it_until_the_lease_then_fail_closed() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let dir = lab.dir().join("coordinator");
    let addr = format!("{HOST_ADDR}:7100");
    let mut coord = Coordinator(
        lab.host_command(bins::bin("rdmaq-coordinator"))
            .args([
                "--id",
                "1",
                "--listen",
                &addr,
                "--initial-members",
                &format!("1={addr}"),
            ])
            // Plain text here (the insecure path); the cluster tests run with mutual TLS.
            // The lease outlives a program's start-up in the VM (`rdmaq exec` alone takes
            // 2-4 s under software emulation) with a margin: 8 s, heartbeats every 2 s.
            .args(["--lease-ttl-ms", "8000", "--insecure"])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cli = |args: &[&str]| {
        lab.host_command(bins::bin("rdmaq"))
            .args(["--endpoints", &addr, "--insecure"])
            .args(args)
            .output()
            .unwrap()
    };
    let set = cli(&["quota", "set", "t1", "--max-qp", "5"]);
    assert!(set.status.success(), "{set:?}");
    let _agent = node_agent::start(
        n,
        &format!(
            "node = \"n1\"\nendpoints = [\"{addr}\"]\nlease_margin_ms = 1000\ninsecure = true\n[[rules]]\nuid = 0\nlauncher_tenants = [\"t*\"]\ntenant = \"root\""
        ),
        "",
    );
    // The coordinator's global cap decides through the node's allotment.
    let out = n.run_ok(&exec("t1", "qps 8")).unwrap().stdout;
    assert_eq!(
        field(&out, "created"),
        "5",
        "{out}\n{}",
        n.run("cat /tmp/agent.log").unwrap().stdout
    );
    let usage = String::from_utf8_lossy(&cli(&["usage", "t1"]).stdout).to_string();
    assert!(usage.contains("n1"), "{usage}");

    // The coordinator dies: the live allotment keeps serving admissions...
    let _ = coord.0.kill();
    let _ = coord.0.wait();
    let out = n.run_ok(&exec("t1", "qps 3")).unwrap().stdout;
    assert_eq!(
        field(&out, "created"),
        "3",
        "{out}\n{}",
        n.run("cat /tmp/agent.log").unwrap().stdout
    );
    // ...until the lease runs out by the agent's clock (8 s lease, 1 s margin): fail-closed.
    n.run_ok("sleep 8").unwrap();
    let out = n.run_ok(&exec("t1", "qps 1")).unwrap().stdout;
    assert_eq!(field(&out, "created"), "0", "{out}");
    assert!(field(&out, "first_errno").ends_with("EDQUOT"), "{out}");
}

/// Runs `server` and `client` (against the node's own address) to completion. The client
/// starts once the server listens: on TCP port 18515 (0x4853) for the perftest and
/// pingpong programs, after 2 s for rping (RDMA CM, no TCP port).
fn pair(n: &Node, server: &str, client: &str) {
    let srv = n.spawn(server);
    if server.starts_with("rping") {
        std::thread::sleep(Duration::from_secs(2));
    } else {
        n.run_ok("for t in $(seq 300); do grep -qs ':4853 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.1; done; exit 1")
            .unwrap_or_else(|e| panic!("{server} never listened: {e}"));
    }
    let cli = n.run(client).unwrap();
    assert!(cli.success(), "{cli}");
    srv.wait_ok().unwrap_or_else(|e| panic!("{e}"));
}

fn ebpf_sees_every_qp_and_mr(kernel: Kernel) {
    let lab = Lab::start(&LabSpec::new(1, kernel)).unwrap_or_else(|e| panic!("lab: {e}"));
    let n = lab.node(1);
    let _agent = node_agent::start(n, "", "");
    n.run_ok("for t in $(seq 100); do grep -q 'eBPF monitor attached' /tmp/agent.log && break; sleep 0.1; done; grep 'eBPF monitor attached' /tmp/agent.log || cat /tmp/agent.log")
        .unwrap_or_else(|e| panic!("{e}"));
    let a = n.addr();
    let ev = |e: &str| {
        node_agent::metric(
            n,
            &format!("rdmaq_agent_kernel_events_total{{event=\"{e}\"}}"),
        )
    };
    pair(
        n,
        "ibv_rc_pingpong -d rxe0 -g 1 -n 20",
        &format!("ibv_rc_pingpong -d rxe0 -g 1 -n 20 {a}"),
    );
    assert!(
        ev("qp_create") >= 2 && ev("mr_create") >= 2 && ev("umem_get") >= 2,
        "pingpong: qp {} mr {} umem {}",
        ev("qp_create"),
        ev("mr_create"),
        ev("umem_get")
    );
    let before = ev("qp_create");
    pair(
        n,
        "ib_write_bw -d rxe0 -x 1 -F -q 8 -n 100",
        &format!("ib_write_bw -d rxe0 -x 1 -F -q 8 -n 100 {a}"),
    );
    assert!(
        ev("qp_create") >= before + 16,
        "ib_write_bw -q 8: {} new QPs",
        ev("qp_create") - before
    );
    let before = ev("qp_create");
    pair(
        n,
        &format!("rping -s -a {a} -C 3"),
        &format!("rping -c -a {a} -C 3"),
    );
    assert!(
        ev("qp_create") >= before + 2,
        "rping: {} new QPs",
        ev("qp_create") - before
    );
    n.run_ok("sleep 1").unwrap();
    // Every object created was destroyed again, and seen destroyed; no memory stays pinned.
    assert_eq!(ev("qp_create"), ev("qp_destroy"), "QPs");
    assert_eq!(ev("mr_create"), ev("mr_destroy"), "MRs");
    assert_eq!(ev("umem_get"), ev("umem_release"), "pinned memory");
    assert_eq!(
        node_agent::metric(n, "rdmaq_agent_kernel_objects{dim=\"pinned_bytes\"}"),
        0
    );
}

#[test]
fn ebpf_monitor_sees_every_qp_and_mr_on_debian_6_1() {
    rdmaq_lab::require_lab!();
    ebpf_sees_every_qp_and_mr(Kernel::Debian61);
}

#[test]
fn ebpf_monitor_sees_every_qp_and_mr_on_debian_6_12() {
    rdmaq_lab::require_lab!();
    ebpf_sees_every_qp_and_mr(Kernel::Debian612);
}

#[test]
fn a_program_without_the_library_is_charged_reported_and_capped_in_its_cgroup() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let _agent = node_agent::start(
        n,
        "backstop = \"cgroup\"\n[[rules]]\nuid = 0\ntenant = \"t-root\"\n[tenants.t-root]\nmax_qp = 100",
        "",
    );
    n.run_ok("for t in $(seq 100); do grep -q 'eBPF monitor attached' /tmp/agent.log && break; sleep 0.1; done")
        .unwrap();
    // A cgroup with the rdma controller, and an offender in it that bypasses the library.
    n.run_ok(
        "echo +rdma > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p /sys/fs/cgroup/offender",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let check = programs::verbs_check().display().to_string();
    let offender = n.spawn(&format!(
        "echo $$ > /sys/fs/cgroup/offender/cgroup.procs && exec {check} hold 2 30 > /tmp/offender.out 2>&1"
    ));
    n.run_ok("for t in $(seq 100); do grep -q created /tmp/offender.out && break; sleep 0.1; done")
        .unwrap();
    // Detected within a second: a log line naming pid and tenant, and the metric.
    let log = n
        .run_ok("for t in $(seq 20); do grep -q 'unadmitted RDMA objects' /tmp/agent.log && break; sleep 0.1; done; grep 'unadmitted RDMA objects' /tmp/agent.log")
        .unwrap_or_else(|e| panic!("not reported: {e}"))
        .stdout;
    let pid = n
        .run_ok("pidof verbs_check")
        .unwrap()
        .stdout
        .trim()
        .to_string();
    assert!(
        log.contains(&format!("pid={pid}")) && log.contains("t-root"),
        "{log}"
    );
    assert!(node_agent::metric(n, "rdmaq_agent_unadmitted_objects_total{tenant=\"t-root\"}") >= 2);
    // Charged to the tenant.
    let (status, v) = node_status(n);
    let t = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t-root")
        .unwrap();
    assert_eq!(t["unadmitted"]["qp"], 2, "{status}");
    // The cgroup is capped: the kernel refuses a further creation in it.
    let capped = n
        .run_ok("cat /sys/fs/cgroup/offender/rdma.max")
        .unwrap()
        .stdout;
    assert!(capped.contains("hca_object="), "rdma.max: {capped}");
    let second = n
        .run(&format!(
            "echo $$ > /sys/fs/cgroup/offender/cgroup.procs && exec {check} qps 1"
        ))
        .unwrap();
    assert!(
        !second.success() || second.stdout.contains("created 0"),
        "a creation in the capped cgroup succeeded:\n{second}"
    );
    offender.kill();
}

#[test]
fn a_restarted_agent_counts_what_the_kernel_holds_once_and_keeps_admitting() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    let config = "[[rules]]\nuid = 0\nlauncher_tenants = [\"t*\"]\ntenant = \"root\"\n[tenants.t1]\nmax_qp = 6";
    let first = node_agent::start(n, config, "");
    n.run_ok("for t in $(seq 100); do grep -q 'eBPF monitor attached' /tmp/agent.log && break; sleep 0.1; done").unwrap();
    let holder = n.spawn(&format!(
        "{} > /tmp/holder.out 2>&1",
        exec("t1", "hold 4 60")
    ));
    n.run_ok("for t in $(seq 100); do grep -q created /tmp/holder.out && break; sleep 0.1; done")
        .unwrap();
    assert_eq!(
        field(&n.run_ok("cat /tmp/holder.out").unwrap().stdout, "created"),
        "4"
    );

    // kill -9 the agent and start a new one while the holder keeps its QPs.
    first.kill();
    n.run_ok(&format!("sleep 0.5; rm -f {SOCKET}")).unwrap();
    let _second = node_agent::start(n, config, "");
    n.run_ok("for t in $(seq 100); do grep -q 'eBPF monitor attached' /tmp/agent.log && break; sleep 0.1; done; sleep 1").unwrap();
    let kernel_qps = n
        .run_ok("rdma resource show qp | grep -c 'comm verbs_check'")
        .unwrap()
        .stdout
        .trim()
        .parse::<u64>()
        .unwrap();
    assert_eq!(kernel_qps, 4);
    let (status, v) = node_status(n);
    let t1 = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t1")
        .unwrap_or_else(|| panic!("{status}"));
    let charged = t1["used"]["qp"].as_u64().unwrap() + t1["unadmitted"]["qp"].as_u64().unwrap();
    assert_eq!(
        charged, kernel_qps,
        "after restart the agent counts the kernel's QPs once: {status}"
    );
    // Admissions continue, from what is left of the cap: 6 - 4.
    let out = n.run_ok(&exec("t1", "qps 4")).unwrap().stdout;
    assert_eq!(field(&out, "created"), "2", "{out}");
    // The holder was not punished for objects a previous agent admitted.
    assert!(n.run_ok("pidof verbs_check").is_ok(), "the holder died");
    holder.kill();
}

/// Kubernetes' node-local layout, faked in the VM: pod cgroups as the systemd and cgroupfs
/// drivers name them, and kubelet-style pod directories. Programs run under the library in
/// those cgroups (no launcher, no environment naming a tenant) are charged to their pod's
/// namespace and capped by its caps — also a pod that appears after the agent started. A
/// pod the kubelet does not list, and a cgroup outside the kubelet's tree named like a
/// pod, get the default tenant (denied here).
#[test]
fn a_program_in_a_pod_is_charged_to_the_pods_namespace() {
    rdmaq_lab::require_lab!();
    let lab = start();
    let n = lab.node(1);
    const ML: &str = "0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91";
    const WEB: &str = "3c9d1e2f-aaaa-bbbb-cccc-123456789abc";
    const GHOST: &str = "99999999-8888-7777-6666-555555555555";
    let id = "5b0a2f1c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a";
    let systemd_pod = |uid: &str| {
        format!(
            "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        )
    };
    let ml = systemd_pod(ML);
    let web = format!("/sys/fs/cgroup/kubepods/burstable/pod{WEB}/{id}");
    let ghost = format!("/sys/fs/cgroup/kubepods/burstable/pod{GHOST}/{id}");
    let lookalike = format!(
        "/sys/fs/cgroup/user.slice/user-1000.slice/kubepods-besteffort-pod{}.slice/app",
        ML.replace('-', "_")
    );
    n.run_ok(&format!(
        "mkdir -p {ml} {web} {ghost} {lookalike} /tmp/kubelet-pods/ml-team_trainer-0_{ML}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let _agent = node_agent::start(
        n,
        "unknown_tenant = \"deny\"\npod_log_dir = \"/tmp/kubelet-pods\"\n\
         [[rules]]\ncgroup = \"/kubepods*\"\ntenant_from = \"pod-namespace\"\n\
         [tenants.ml-team]\nmax_qp = 3\n[tenants.web]\nmax_qp = 1",
        "",
    );
    // A pod scheduled after the agent started.
    n.run_ok(&format!(
        "mkdir -p /tmp/kubelet-pods/web_frontend-7d9f_{WEB}"
    ))
    .unwrap();
    let in_cgroup = |cgroup: &str| {
        let out = n
            .run_ok(&format!(
                "echo $$ > {cgroup}/cgroup.procs && RDMAQ_AGENT_SOCKET={SOCKET} \
                 RDMA_INTERCEPT_LOG_FILE_PATH=/tmp/lib.log LD_PRELOAD={} exec {} qps 5",
                bins::bin("librdmaq_intercept.so").display(),
                programs::verbs_check().display()
            ))
            .unwrap_or_else(|e| panic!("{e}"))
            .stdout;
        (field(&out, "created"), out)
    };
    let (created, out) = in_cgroup(&ml);
    assert_eq!(created, "3", "ml-team's cap is 3: {out}");
    assert!(field(&out, "first_errno").ends_with("EDQUOT"), "{out}");
    let (created, out) = in_cgroup(&web);
    assert_eq!(created, "1", "web's cap is 1: {out}");
    for cgroup in [&ghost, &lookalike] {
        let (created, out) = in_cgroup(cgroup);
        assert_eq!(created, "0", "{cgroup} is no listed pod: {out}");
    }
    let (status, v) = node_status(n);
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for tenant in ["ml-team", "web", "default"] {
        assert!(names.contains(&tenant), "{tenant} missing: {status}");
    }
}
