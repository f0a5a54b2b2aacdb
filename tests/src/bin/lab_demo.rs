//! The README's main job, for now: boots two soft-RoCE nodes in the lab and runs a
//! cross-node `ibv_rc_pingpong` between them, printing what happens. Later issues grow it
//! into the cluster demo (coordinator, agents, a tenant capped across nodes).
#![forbid(unsafe_code)]

use std::{process::ExitCode, thread, time::Duration};

use rdmaq_lab::{Kernel, Lab, LabSpec};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let kernel = Kernel::from_env();
    println!("booting 2 soft-RoCE nodes ({}) ...", kernel.meta_package());
    let started = std::time::Instant::now();
    let lab = Lab::start(&LabSpec::new(2, kernel))?;
    println!(
        "up in {:.1} s, kernel {}, namespace {}",
        started.elapsed().as_secs_f64(),
        lab.kernel_release(),
        lab.netns()
    );
    for node in lab.nodes() {
        let dev = node.run_ok("ibv_devinfo -d rxe0 | grep -E 'hca_id|state|link_layer'")?;
        println!("{} ({}):", node.name(), node.addr());
        for line in dev.stdout.lines() {
            println!("    {}", line.trim());
        }
    }
    let (server, client) = (lab.node(2), lab.node(1));
    println!(
        "ibv_rc_pingpong: {} -> {} (1000 x 4 KiB over rxe)",
        client.name(),
        server.name()
    );
    let srv = server.spawn("ibv_rc_pingpong -d rxe0 -g 1 -n 1000 -s 4096");
    thread::sleep(Duration::from_secs(2));
    let out = client.run_ok(&format!(
        "ibv_rc_pingpong -d rxe0 -g 1 -n 1000 -s 4096 {}",
        server.addr()
    ))?;
    srv.wait_ok()?;
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        println!("    {}", line.trim());
    }
    println!("both sides exited 0; tearing the lab down");
    Ok(())
}
