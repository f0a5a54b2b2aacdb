//! The soft-RoCE lab's own tests: real RDMA nodes boot, talk to each other over rxe, can be
//! cut off and restored, and a failing command shows the node's output.
//! They need root (network namespaces, taps) and qemu; the lab installs what is missing.

use rdmaq_lab::{Kernel, Lab, LabError, LabSpec};

fn start(nodes: usize, kernel: Kernel) -> Lab {
    match Lab::start(&LabSpec::new(nodes, kernel)) {
        Ok(lab) => lab,
        Err(e) => panic!("the soft-RoCE lab could not start: {e}"),
    }
}

/// Runs `ibv_rc_pingpong` with node `server` serving and node `client` connecting.
fn pingpong(lab: &Lab, server: usize, client: usize) -> Result<(), LabError> {
    let srv = lab
        .node(server)
        .spawn("ibv_rc_pingpong -d rxe0 -g 1 -n 100 -s 4096");
    // The server must be listening before the client connects; it binds within a second.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let cli = lab.node(client).run(&format!(
        "ibv_rc_pingpong -d rxe0 -g 1 -n 100 -s 4096 {}",
        lab.node(server).addr()
    ))?;
    if !cli.success() {
        srv.kill();
        let _ = srv.wait();
        return Err(LabError::CommandFailed(Box::new(cli)));
    }
    srv.wait_ok().map(drop)
}

fn port_active(kernel: Kernel) {
    let lab = start(1, kernel);
    let node = lab.node(1);
    let uname = node.run_ok("uname -r").unwrap();
    assert_eq!(uname.stdout.trim(), lab.kernel_release());
    let info = node
        .run_ok("ibv_devinfo -d rxe0")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        info.stdout.contains("PORT_ACTIVE"),
        "rxe0 is not active on {}:\n{info}",
        lab.kernel_release()
    );
}

#[test]
fn one_node_port_active_on_debian_6_1() {
    rdmaq_lab::require_lab!();
    port_active(Kernel::Debian61);
}

#[test]
fn one_node_port_active_on_debian_6_12() {
    rdmaq_lab::require_lab!();
    port_active(Kernel::Debian612);
}

#[test]
fn two_nodes_pingpong_then_cut_and_restore() {
    rdmaq_lab::require_lab!();
    let lab = start(2, Kernel::from_env());
    pingpong(&lab, 2, 1).unwrap_or_else(|e| panic!("pingpong node1 -> node2: {e}"));

    // The host side of the bridge reaches every node (coordinators will run there).
    let ping = lab
        .host_command("ping")
        .args(["-c", "1", "-W", "5", &lab.node(2).addr().to_string()])
        .output()
        .unwrap();
    assert!(ping.status.success(), "host cannot reach node2: {ping:?}");

    lab.cut(2).unwrap();
    let cut = lab.node(1).run(&format!(
        "timeout 20 ibv_rc_pingpong -d rxe0 -g 1 -n 10 {}",
        lab.node(2).addr()
    ));
    let cut = cut.unwrap();
    assert!(
        !cut.success(),
        "pingpong to a cut-off node succeeded:\n{cut}"
    );
    // The node itself still runs and answers on its control port.
    lab.node(2).run_ok("true").unwrap();

    lab.restore(2).unwrap();
    pingpong(&lab, 2, 1).unwrap_or_else(|e| panic!("pingpong after restore: {e}"));
}

#[test]
fn failing_command_reports_the_nodes_output() {
    rdmaq_lab::require_lab!();
    let lab = start(1, Kernel::from_env());
    // The host's /tmp (where a checkout may live) is visible in the node, and writable there.
    let probe = lab.dir().join("probe");
    std::fs::write(&probe, "written on the host after boot").unwrap();
    let seen = lab
        .node(1)
        .run_ok(&format!(
            "cat {} && touch /tmp/guest-write",
            probe.display()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seen.stdout.trim(), "written on the host after boot");

    let err = lab
        .node(1)
        .run_ok("echo to-stdout; echo to-stderr >&2; exit 3")
        .expect_err("a command exiting 3 must fail");
    let msg = err.to_string();
    for needle in ["node1", "exited with 3", "to-stdout", "to-stderr"] {
        assert!(msg.contains(needle), "{needle:?} missing from:\n{msg}");
    }
    // A killed node fails its commands instead of hanging them.
    let long = lab.node(1).spawn("sleep 600");
    lab.kill(1);
    assert!(matches!(long.wait(), Err(LabError::NodeGone { .. })));
}
