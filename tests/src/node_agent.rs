//! The real rdmaq-agent inside a lab node, for the tests and benchmarks that drive it: a
//! TOML config, a socket and a log under /tmp, and (for `start`) its status listener on the
//! node's loopback.

use std::time::Duration;

use crate::{Node, Pending, bins};

/// The socket of the agent `start` runs.
pub const SOCKET: &str = "/tmp/agent.sock";
/// Its status listener (`/metrics`, `/status`).
pub const STATUS: &str = "127.0.0.1:9465";

/// Starts the agent with `config` (TOML) and `extra` flags, its status listener on
/// `STATUS`, and waits for its socket: `/tmp/agent.{toml,log}` and `SOCKET`.
pub fn start<'a>(n: &'a Node, config: &str, extra: &str) -> Pending<'a> {
    start_named(
        n,
        "agent",
        config,
        &format!("--status-listen {STATUS} {extra}"),
    )
}

/// Starts an agent whose files are `/tmp/NAME.toml`, `/tmp/NAME.log` and `/tmp/NAME.sock`,
/// and waits for its socket.
pub fn start_named<'a>(n: &'a Node, name: &str, config: &str, extra: &str) -> Pending<'a> {
    n.run_ok(&format!("cat > /tmp/{name}.toml <<'EOF'\n{config}\nEOF"))
        .unwrap();
    let p = n.spawn_with_timeout(
        &format!(
            "{} --config /tmp/{name}.toml --socket /tmp/{name}.sock {extra} > /tmp/{name}.log 2>&1",
            bins::bin("rdmaq-agent").display()
        ),
        Duration::from_secs(300),
    );
    n.run_ok(&format!(
        "for t in $(seq 100); do [ -S /tmp/{name}.sock ] && break; sleep 0.1; done; \
         [ -S /tmp/{name}.sock ] || cat /tmp/{name}.log"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    p
}

/// The agent's `/metrics`, fetched inside the node.
pub fn metrics(n: &Node) -> String {
    let (host, port) = STATUS.split_once(':').expect("host:port");
    n.run_ok(&format!(
        "bash -c \"exec 3<>/dev/tcp/{host}/{port}; \
         printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3\""
    ))
    .unwrap()
    .stdout
}

/// One sample of the agent's metrics (`name` with its labels), 0 if absent.
pub fn metric(n: &Node, name: &str) -> u64 {
    metrics(n)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// The agent's `/status` (`rdmaq node status -o json`), fetched inside the node.
pub fn status(n: &Node) -> serde_json::Value {
    let out = n
        .run_ok(&format!(
            "{} node status --agent {STATUS} -o json",
            bins::bin("rdmaq").display()
        ))
        .unwrap_or_else(|e| panic!("{e}"))
        .stdout;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// One tenant's entry of the agent's `/status` (null if the agent has none).
pub fn tenant_status(n: &Node, tenant: &str) -> serde_json::Value {
    status(n)["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == tenant).cloned())
        .unwrap_or_default()
}
