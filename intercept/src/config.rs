//! The library's settings, read once from the environment: the original design's
//! `RDMA_INTERCEPT_*` variables with their original defaults, plus `RDMAQ_*` additions.

use std::path::PathBuf;

use rdmaq_model::{Caps, Limits, QpTypes, WrPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What to do when what enforces a cap (the agent, the host table) is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Go on without it (the agent: under the standalone limits; the host table: without
    /// the host-wide cap), said once in the log.
    Open,
    /// Refuse with EAGAIN.
    Closed,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `RDMA_INTERCEPT_ENABLE` (default 1): 0 makes the library a pure pass-through.
    pub enabled: bool,
    /// The standalone caps, in the model's one shape:
    /// - `per_process.qp`: `RDMA_INTERCEPT_MAX_QP_PER_PROCESS` (default 100) and
    ///   `per_node.qp`: `RDMA_INTERCEPT_MAX_GLOBAL_QP` (default 1000, QPs of all processes
    ///   on the host), both only with `RDMA_INTERCEPT_ENABLE_QP_CONTROL=1` (default 0);
    /// - `per_process.mr`: `RDMA_INTERCEPT_MAX_MR_PER_PROCESS` (default 1000);
    /// - `per_process.mr_bytes`: `RDMA_INTERCEPT_MAX_MEMORY_PER_PROCESS` in MiB (default
    ///   10240);
    /// - `max_send_wr`/`max_recv_wr`: `RDMAQ_MAX_SEND_WR` / `RDMAQ_MAX_RECV_WR`, per QP;
    /// - `wr_policy`: `RDMAQ_WR_POLICY` = clamp (default) | deny;
    /// - `qp_create_per_sec`/`mr_create_per_sec`: `RDMAQ_QP_CREATE_RATE` /
    ///   `RDMAQ_MR_CREATE_RATE`;
    /// - `qp_types`: `RDMAQ_ALLOWED_QP_TYPES`, e.g. `RC,UD` (default: all; a list that does
    ///   not parse allows none, and is reported at first use).
    pub limits: Limits,
    /// `RDMA_INTERCEPT_LOG_LEVEL` (default INFO).
    pub log_level: Level,
    /// `RDMA_INTERCEPT_LOG_FILE_PATH` (default /tmp/rdma_intercept.log).
    pub log_path: PathBuf,
    /// `RDMAQ_HOST_STATE` (default /dev/shm/rdmaq-host-qp.v4): the directory of the
    /// host-wide QP tables.
    pub host_state: PathBuf,
    /// `RDMAQ_HOST_TABLE_FAILURE` = open (default) | closed: when the host tables cannot be
    /// used, run without the host-wide cap, or refuse QPs.
    pub host_table_failure: Failure,
    /// `RDMAQ_AGENT_SOCKET` (default /run/rdmaq/agent.sock): agent mode when it exists.
    pub agent_socket: PathBuf,
    /// `RDMAQ_AGENT_MODE_FILE` (default /run/rdmaq/agent-mode): the node's agent-mode
    /// marker, written by the agent; a socket it lists is never "no agent here".
    pub agent_mode_file: PathBuf,
    /// `RDMAQ_AGENT_FAILURE` = closed (default) | open.
    pub agent_failure: Failure,
    /// `RDMAQ_TENANT`: the launcher's tenant (`rdmaq exec --tenant`), if the agent allows it.
    pub launcher_tenant: String,
    /// `RDMAQ_AGENT_TIMEOUT_MS` (default 2000): per round trip to the agent (which may
    /// itself wait up to a second for the coordinator on a tenant's first admission).
    pub agent_timeout_ms: u64,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn flag(name: &str, default: bool) -> bool {
    match var(name).as_deref() {
        Some("0" | "false" | "no" | "off") => false,
        Some(_) => true,
        None => default,
    }
}

/// A number, or the default when unset or unparsable (a typo must not break the program;
/// it is logged at startup by `problems`).
fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    var(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn opt_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    var(name).and_then(|v| v.parse().ok())
}

impl Config {
    pub fn from_env() -> Config {
        let qp_control = flag("RDMA_INTERCEPT_ENABLE_QP_CONTROL", false);
        let qp_cap = |name, default| qp_control.then(|| num(name, default));
        Config {
            enabled: flag("RDMA_INTERCEPT_ENABLE", true),
            limits: Limits {
                per_process: Caps {
                    qp: qp_cap("RDMA_INTERCEPT_MAX_QP_PER_PROCESS", 100),
                    mr: Some(num("RDMA_INTERCEPT_MAX_MR_PER_PROCESS", 1000)),
                    mr_bytes: Some(
                        num::<u64>("RDMA_INTERCEPT_MAX_MEMORY_PER_PROCESS", 10240)
                            .saturating_mul(1 << 20),
                    ),
                },
                per_node: Caps {
                    qp: qp_cap("RDMA_INTERCEPT_MAX_GLOBAL_QP", 1000),
                    ..Caps::NONE
                },
                max_send_wr: opt_num("RDMAQ_MAX_SEND_WR"),
                max_recv_wr: opt_num("RDMAQ_MAX_RECV_WR"),
                wr_policy: match var("RDMAQ_WR_POLICY").as_deref() {
                    Some("deny") => WrPolicy::Deny,
                    _ => WrPolicy::Clamp,
                },
                qp_create_per_sec: opt_num("RDMAQ_QP_CREATE_RATE"),
                mr_create_per_sec: opt_num("RDMAQ_MR_CREATE_RATE"),
                qp_types: var("RDMAQ_ALLOWED_QP_TYPES")
                    .map(|s| QpTypes::parse(&s).unwrap_or(QpTypes::from_values(&[]))),
                ..Limits::NONE
            },
            log_level: match var("RDMA_INTERCEPT_LOG_LEVEL")
                .unwrap_or_default()
                .to_ascii_uppercase()
                .as_str()
            {
                "DEBUG" | "TRACE" => Level::Debug,
                "WARN" | "WARNING" => Level::Warn,
                "ERROR" => Level::Error,
                _ => Level::Info,
            },
            log_path: var("RDMA_INTERCEPT_LOG_FILE_PATH")
                .unwrap_or_else(|| "/tmp/rdma_intercept.log".into())
                .into(),
            host_state: var("RDMAQ_HOST_STATE")
                .unwrap_or_else(|| "/dev/shm/rdmaq-host-qp.v4".into())
                .into(),
            host_table_failure: match var("RDMAQ_HOST_TABLE_FAILURE").as_deref() {
                Some("closed") => Failure::Closed,
                _ => Failure::Open,
            },
            agent_socket: var("RDMAQ_AGENT_SOCKET")
                .unwrap_or_else(|| "/run/rdmaq/agent.sock".into())
                .into(),
            agent_mode_file: var("RDMAQ_AGENT_MODE_FILE")
                .unwrap_or_else(|| "/run/rdmaq/agent-mode".into())
                .into(),
            // A quota must hold while its agent is unreachable: closed unless asked otherwise.
            agent_failure: match var("RDMAQ_AGENT_FAILURE").as_deref() {
                Some("open") => Failure::Open,
                _ => Failure::Closed,
            },
            launcher_tenant: var("RDMAQ_TENANT").unwrap_or_default(),
            agent_timeout_ms: num("RDMAQ_AGENT_TIMEOUT_MS", 2000),
        }
    }

    /// Variables that are set but could not be understood (logged once at first use).
    pub fn problems() -> Vec<String> {
        let numeric = [
            "RDMA_INTERCEPT_MAX_QP_PER_PROCESS",
            "RDMA_INTERCEPT_MAX_GLOBAL_QP",
            "RDMA_INTERCEPT_MAX_MR_PER_PROCESS",
            "RDMA_INTERCEPT_MAX_MEMORY_PER_PROCESS",
            "RDMAQ_MAX_SEND_WR",
            "RDMAQ_MAX_RECV_WR",
            "RDMAQ_QP_CREATE_RATE",
            "RDMAQ_MR_CREATE_RATE",
            "RDMAQ_AGENT_TIMEOUT_MS",
        ];
        let mut problems: Vec<String> = numeric
            .iter()
            .filter_map(|n| {
                let v = var(n)?;
                v.parse::<u64>()
                    .is_err()
                    .then(|| format!("{n}={v:?} is not a number; using the default"))
            })
            .collect();
        if let Some(v) = var("RDMAQ_ALLOWED_QP_TYPES")
            && let Err(why) = QpTypes::parse(&v)
        {
            problems.push(format!(
                "RDMAQ_ALLOWED_QP_TYPES: {why}; no QP type is allowed"
            ));
        }
        problems
    }
}
