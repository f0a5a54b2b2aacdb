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

/// The namespace of coordinator member `id` placed apart (`add_member_host`).
pub fn member_netns(ns: &str, id: u64) -> String {
    format!("{ns}-m{id}")
}

/// The lab-side end of member `id`'s link, on the bridge.
fn member_link(id: u64) -> String {
    format!("vm{id}")
}

/// Member `id`'s address when it runs in a namespace of its own: 10.77.0.(1 + id).
pub fn member_addr(id: u64) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 77, 0, 1 + id as u8)
}

/// A namespace of its own for coordinator member `id`, linked to the bridge by a veth pair:
/// taking the link down cuts the member off from everyone (the other members, the nodes, the
/// host side) while it keeps running, as a real network partition would.
pub fn create_member_host(ns: &str, id: u64) -> Result<(String, std::net::Ipv4Addr), LabError> {
    let own = member_netns(ns, id);
    let (link, addr) = (member_link(id), member_addr(id));
    let ip = |args: &[&str]| -> Result<(), LabError> {
        run_host(
            &format!("ip {}", args.join(" ")),
            Command::new("ip").args(args),
        )
        .map(drop)
    };
    ip(&["netns", "add", &own])?;
    ip(&["-n", &own, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", ns, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &own,
    ])?;
    ip(&["-n", ns, "link", "set", &link, "master", "br0"])?;
    ip(&["-n", ns, "link", "set", &link, "up"])?;
    ip(&[
        "-n",
        &own,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &own, "link", "set", "eth0", "up"])?;
    Ok((own, addr))
}

/// Takes member `id`'s link to the bridge down (`up = false`) or up again.
pub fn set_member_link(ns: &str, id: u64, up: bool) -> Result<(), LabError> {
    let state = if up { "up" } else { "down" };
    let link = member_link(id);
    run_host(
        &format!("set {link} {state}"),
        Command::new("ip").args(["-n", ns, "link", "set", &link, state]),
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

/// Deletes the members' own namespaces (`create_member_host`) of lab `ns`.
pub fn destroy_members(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let prefix = format!("{ns}-m");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.starts_with(&prefix) {
            destroy(name);
        }
    }
}
