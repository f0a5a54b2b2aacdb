//! `rdmaq node status`: the local agent's view (tenants, budget, use, lease), from its
//! status listener.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Subcommand;

use rdmaq_proto::status::NodeStatus;

use crate::output::{Format, Table, bytes, cap, json};

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

pub fn run(format: Format, cmd: NodeCmd) -> anyhow::Result<String> {
    let NodeCmd::Status { agent } = cmd;
    let body = get(&agent, "/status")?;
    let status: NodeStatus =
        serde_json::from_str(&body).with_context(|| format!("the agent's /status at {agent}"))?;
    if format == Format::Json {
        return Ok(json(&status));
    }
    let mut t = Table::new(&[
        "TENANT",
        "BUDGET",
        "QP-USED",
        "QP-BUDGET",
        "MR-USED",
        "BYTES-USED",
        "UNADMITTED-QP",
        "LEASE",
        "DENIALS",
    ]);
    for tenant in &status.tenants {
        let lease = match (tenant.lease_alive, tenant.lease_remaining_ms) {
            (true, Some(ms)) => format!("{ms} ms left"),
            (true, None) => "local".into(),
            (false, _) => "LOST".into(),
        };
        let allotment = tenant.allotment;
        let used = tenant.used;
        t.row(vec![
            tenant.name.clone(),
            tenant.budget_from.as_str().to_string(),
            used.qp.to_string(),
            cap((allotment.qp != u64::MAX).then_some(allotment.qp)),
            used.mr.to_string(),
            bytes(used.mr_bytes),
            tenant.unadmitted.qp.to_string(),
            lease,
            tenant.denials.to_string(),
        ]);
    }
    Ok(format!(
        "node {} ({} mode), {} connected processes\n{}",
        status.node,
        status.mode.as_str(),
        status.connections,
        t.render()
    ))
}
