//! `rdmaq node status`: the local agent's view (tenants, budget, use, lease), from its
//! status listener.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::output::{Format, Table, bytes, json};

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// The local agent's tenants, budget, use and leases.
    Status {
        /// The agent's status listener (host:port).
        #[arg(long, env = "RDMAQ_AGENT_STATUS", default_value = "127.0.0.1:9465")]
        agent: String,
    },
}

fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s =
        TcpStream::connect(addr).with_context(|| format!("agent status listener {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "agent {addr} answered {}",
            head.lines().next().unwrap_or("nothing")
        );
    }
    Ok(body.to_string())
}

fn cap(v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(u64::MAX) | None => "-".into(),
        Some(n) => n.to_string(),
    }
}

pub fn run(format: Format, cmd: NodeCmd) -> anyhow::Result<String> {
    let NodeCmd::Status { agent } = cmd;
    let body = get(&agent, "/status")?;
    let v: serde_json::Value = serde_json::from_str(&body).context("the agent's /status")?;
    if format == Format::Json {
        return Ok(json(&v));
    }
    let mut t = Table::new(&[
        "TENANT",
        "SOURCE",
        "QP-USED",
        "QP-BUDGET",
        "MR-USED",
        "BYTES-USED",
        "UNADMITTED-QP",
        "LEASE",
        "DENIALS",
    ]);
    for tenant in v["tenants"].as_array().into_iter().flatten() {
        let lease = match (
            tenant["lease_alive"].as_bool(),
            tenant["lease_remaining_ms"].as_u64(),
        ) {
            (Some(true), Some(ms)) => format!("{ms} ms left"),
            (Some(true), None) => "local".into(),
            _ => "LOST".into(),
        };
        t.row(vec![
            tenant["name"].as_str().unwrap_or("?").to_string(),
            tenant["source"].as_str().unwrap_or("?").to_string(),
            tenant["used"]["qp"].to_string(),
            cap(&tenant["allotment"]["qp"]),
            tenant["used"]["mr"].to_string(),
            bytes(tenant["used"]["mr_bytes"].as_u64().unwrap_or(0)),
            tenant["unadmitted"]["qp"].to_string(),
            lease,
            tenant["denials"].to_string(),
        ]);
    }
    Ok(format!(
        "node {} ({} mode), {} connected processes\n{}",
        v["node"].as_str().unwrap_or("?"),
        v["mode"].as_str().unwrap_or("?"),
        v["connections"],
        t.render()
    ))
}
