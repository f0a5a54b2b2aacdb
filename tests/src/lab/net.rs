//! The lab's network: a namespace with bridge `br0` (the host side, `HOST_ADDR`/24) and one
//! tap per node. Deleting the namespace deletes the bridge and the taps with it.

use std::process::Command;

use super::{HOST_ADDR, LabError, run_host};

pub fn tap_name(i: usize) -> String {
    format!("tap{i}")
}

pub fn create(ns: &str, nodes: usize) -> Result<(), LabError> {
    let ip = |args: &[&str]| -> Result<(), LabError> {
        run_host(
            &format!("ip {}", args.join(" ")),
            Command::new("ip").args(args),
        )
        .map(drop)
    };
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{HOST_ADDR}/24"),
        "dev",
        "br0",
    ])?;
    ip(&["-n", ns, "link", "set", "br0", "up"])?;
    for i in 1..=nodes {
        let tap = tap_name(i);
        ip(&["-n", ns, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip(&["-n", ns, "link", "set", &tap, "master", "br0"])?;
        ip(&["-n", ns, "link", "set", &tap, "up"])?;
    }
    Ok(())
}

pub fn set_tap(ns: &str, i: usize, up: bool) -> Result<(), LabError> {
    let state = if up { "up" } else { "down" };
    let tap = tap_name(i);
    run_host(
        &format!("set {tap} {state}"),
        Command::new("ip").args(["-n", ns, "link", "set", &tap, state]),
    )
    .map(drop)
}

/// Deletes the namespace (and so its bridge and taps); quiet if it is already gone.
pub fn destroy(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(std::process::Stdio::null())
        .status();
}
