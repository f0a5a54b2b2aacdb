//! rdmaq-agent configuration: a TOML file (every key in deploy/agent.toml), with flags and
//! `RDMAQ_*` environment overriding the main keys (see main.rs). Unknown keys and bad
//! values are errors naming the key.

use rdmaq_common::tls::TlsFiles;
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use rdmaq_common::units::parse_size;
use serde::Deserialize;

use rdmaq_model::{Caps, Limits, QpTypes, WrPolicy};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseLost {
    /// Admit nothing new once the coordinator's lease cannot be proven alive.
    #[default]
    FailClosed,
    /// Keep admitting up to the `fail_static_floor` per tenant on this node.
    FailStatic,
}

/// What the agent does about a process holding RDMA objects nobody admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backstop {
    /// Charge them to the tenant, log and count them.
    #[default]
    Report,
    /// Also cap the process's cgroup with the cgroup-v2 `rdma` controller (`rdma.max`).
    Cgroup,
    /// Also kill the process.
    Kill,
}

/// What a tenant with no caps anywhere (no `[tenants.*]` entry, no quota at the
/// coordinator) may do on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownTenant {
    /// Not capped (and, with a coordinator, not reported: a hole the operator chooses).
    Allow,
    /// Nothing is admitted; with a coordinator, its use is still reported, and a quota set
    /// later applies at once.
    Deny,
}

/// A byte size written as a number or as a string like "10GiB".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// A tenant's caps on this node (standalone mode), as written in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub max_qp: Option<u64>,
    pub max_mr: Option<u64>,
    pub max_mr_bytes: Option<Size>,
    pub max_qp_per_process: Option<u64>,
    pub max_mr_per_process: Option<u64>,
    pub max_mr_bytes_per_process: Option<Size>,
    pub max_send_wr: Option<u32>,
    pub max_recv_wr: Option<u32>,
    #[serde(default)]
    pub deny_wr_over_cap: bool,
    pub qp_create_per_sec: Option<u32>,
    pub mr_create_per_sec: Option<u32>,
    /// QP types the tenant may create, e.g. `["RC", "UD"]`; absent: any.
    #[serde(default)]
    pub allowed_qp_types: Option<Vec<String>>,
}

impl TenantConfig {
    /// These caps as the node applies them: `max_*` are the node's (standalone: the whole
    /// budget of the tenant here), `*_per_process` each process's.
    pub fn limits(&self) -> Limits {
        Limits {
            per_node: Caps {
                qp: self.max_qp,
                mr: self.max_mr,
                mr_bytes: self.max_mr_bytes.map(|s| s.0),
            },
            per_process: Caps {
                qp: self.max_qp_per_process,
                mr: self.max_mr_per_process,
                mr_bytes: self.max_mr_bytes_per_process.map(|s| s.0),
            },
            max_send_wr: self.max_send_wr,
            max_recv_wr: self.max_recv_wr,
            wr_policy: if self.deny_wr_over_cap {
                WrPolicy::Deny
            } else {
                WrPolicy::Clamp
            },
            qp_create_per_sec: self.qp_create_per_sec,
            mr_create_per_sec: self.mr_create_per_sec,
            // Checked by Config::validate.
            qp_types: self
                .allowed_qp_types
                .as_ref()
                .and_then(|t| QpTypes::parse(&t.join(",")).ok()),
            ..Limits::NONE
        }
    }
}

/// How a connecting process is mapped to a tenant: the first rule that matches wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Glob (`*` matches any run of characters) on the process's cgroup v2 path.
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The tenant; may be omitted when `launcher_tenants` or `tenant_from` is set.
    pub tenant: Option<String>,
    /// Take the tenant from the process itself instead of naming one: `"pod-namespace"`
    /// charges a process in a Kubernetes pod to the pod's namespace (from the kubelet's
    /// directories under `pod_log_dir`). A process that is in no pod the kubelet knows does
    /// not match the rule. Needs a `cgroup` glob anchored at the kubelet's cgroup root.
    #[serde(default)]
    pub tenant_from: Option<TenantFrom>,
    /// Put before the name `tenant_from` finds (e.g. `"k8s:"` makes namespace `ml` tenant
    /// `k8s:ml`).
    #[serde(default)]
    pub tenant_prefix: String,
    /// Tenants a launcher (`rdmaq exec --tenant`, `RDMAQ_TENANT`) may name for processes
    /// matching this rule: globs (`*` matches any run of characters). A name matching none
    /// is refused at the program's hello.
    #[serde(default)]
    pub launcher_tenants: Vec<String>,
    /// Replaced by `launcher_tenants` (an error naming it, so that an old config cannot
    /// silently let launchers name any tenant).
    #[serde(default)]
    pub allow_launcher: Option<bool>,
}

/// Where a rule's tenant comes from when it names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TenantFrom {
    /// The namespace of the Kubernetes pod the process runs in.
    PodNamespace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default = "defaults::socket")]
    pub socket: PathBuf,
    /// Permission bits of the socket, octal string.
    #[serde(default = "defaults::socket_mode")]
    pub socket_mode: String,
    /// Group owning the socket (numeric gid), if not the agent's.
    #[serde(default)]
    pub socket_gid: Option<u32>,
    /// User owning the socket (numeric uid), if not the agent's.
    #[serde(default)]
    pub socket_uid: Option<u32>,
    /// The node's agent-mode marker, which the library reads (see mode_file.rs).
    #[serde(default = "defaults::mode_file")]
    pub mode_file: PathBuf,
    /// Connections the socket holds at most, in all and per peer uid, counted from accept.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    #[serde(default = "defaults::max_connections_per_uid")]
    pub max_connections_per_uid: usize,
    /// Coordinator members; empty: standalone mode, caps from `[tenants.*]`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The node's address as the coordinator should record it.
    #[serde(default)]
    pub address: Option<String>,
    /// HTTP listener for /metrics and /status.
    #[serde(default)]
    pub status_listen: Option<SocketAddr>,
    /// Stop using an allotment this long before its lease would expire by the agent's
    /// own clock.
    #[serde(default = "defaults::lease_margin_ms")]
    pub lease_margin_ms: u64,
    /// The longest an admission short of allotment waits for the coordinator's grant before
    /// it is denied (a slow coordinator costs a denial, never a hang). The library learns it
    /// at hello and waits at least this long (plus a second) for the agent's answer.
    #[serde(default = "defaults::acquire_wait_ms")]
    pub acquire_wait_ms: u64,
    #[serde(default)]
    pub on_lease_lost: LeaseLost,
    /// Per-tenant budget usable while the lease is lost, with `on_lease_lost = "fail-static"`.
    #[serde(default)]
    pub fail_static_floor: TenantConfig,
    /// Default: `deny` with a coordinator, `allow` standalone (the original design).
    #[serde(default)]
    pub unknown_tenant: Option<UnknownTenant>,
    #[serde(default)]
    pub backstop: Backstop,
    /// Where the cgroup-v2 hierarchy is mounted.
    #[serde(default = "defaults::cgroup_root")]
    pub cgroup_root: PathBuf,
    /// The kubelet's per-pod log directories (`<namespace>_<pod>_<uid>`), which rules with
    /// `tenant_from = "pod-namespace"` read.
    #[serde(default = "defaults::pod_log_dir")]
    pub pod_log_dir: PathBuf,
    /// Tenant of processes no rule matches.
    #[serde(default = "defaults::default_tenant")]
    pub default_tenant: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Standalone caps per tenant (and fallbacks when a coordinator has no quota).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Certificates for mutual TLS to the coordinator; the certificate must be an agent
    /// certificate for this node. Required with `endpoints` unless `insecure`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Talk plain text to a coordinator run with `insecure` (dev and tests only).
    #[serde(default)]
    pub insecure: bool,
}

mod defaults {
    use std::path::PathBuf;

    pub fn socket() -> PathBuf {
        "/run/rdmaq/agent.sock".into()
    }
    pub fn socket_mode() -> String {
        "0666".into()
    }
    pub fn mode_file() -> PathBuf {
        "/run/rdmaq/agent-mode".into()
    }
    pub fn max_connections() -> usize {
        16_384
    }
    pub fn max_connections_per_uid() -> usize {
        1_024
    }
    pub fn lease_margin_ms() -> u64 {
        2_000
    }
    pub fn acquire_wait_ms() -> u64 {
        1_000
    }
    pub fn cgroup_root() -> PathBuf {
        "/sys/fs/cgroup".into()
    }
    pub fn pod_log_dir() -> PathBuf {
        "/var/log/pods".into()
    }
    pub fn default_tenant() -> String {
        "default".into()
    }
}

/// A rule that takes the tenant from the pod: it names no tenant itself, and its cgroup glob
/// is anchored — an unanchored one (`*kubepods*`) would also match a cgroup an unprivileged
/// user made in their own delegated subtree and named like a pod.
fn validate_tenant_from(i: usize, r: &Rule) -> Result<(), Error> {
    if r.tenant.is_some() {
        return Err(bad(
            &format!("rules[{i}].tenant_from"),
            "set either tenant or tenant_from, not both",
        ));
    }
    match r.cgroup.as_deref() {
        Some(g) if g.starts_with('/') && !g[1..].starts_with('*') && g.len() > 1 => {}
        other => {
            return Err(bad(
                &format!("rules[{i}].cgroup"),
                format!(
                    "{other:?}: a tenant_from rule needs a cgroup glob anchored at the kubelet's \
                     cgroup root, e.g. \"/kubepods*\" (an unanchored glob also matches cgroups \
                     users may create and name like a pod)"
                ),
            ));
        }
    }
    if !r.tenant_prefix.is_empty() {
        rdmaq_model::check_name(&format!("{}x", r.tenant_prefix)).map_err(|why| {
            bad(
                &format!("rules[{i}].tenant_prefix"),
                format!("{:?} cannot start a tenant name: {why}", r.tenant_prefix),
            )
        })?;
    }
    Ok(())
}

fn bad(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let cfg: Config = rdmaq_common::config::parse_toml(text).map_err(|e| Error::Config {
            key: e.key,
            reason: e.reason,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), Error> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                bad(
                    "socket_mode",
                    format!("{:?} is not octal permission bits", self.socket_mode),
                )
            })?;
        if self.max_connections_per_uid == 0 {
            return Err(bad("max_connections_per_uid", "must be at least 1"));
        }
        if self.max_connections < self.max_connections_per_uid {
            return Err(bad(
                "max_connections",
                format!(
                    "{} is below max_connections_per_uid ({}): one uid could take them all",
                    self.max_connections, self.max_connections_per_uid
                ),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.allow_launcher.is_some() {
                return Err(bad(
                    &format!("rules[{i}].allow_launcher"),
                    "replaced by launcher_tenants = [\"pattern\", ...]: name the tenants a \
                     launcher may choose for this rule's processes",
                ));
            }
            if r.tenant.is_none() && r.launcher_tenants.is_empty() && r.tenant_from.is_none() {
                return Err(bad(
                    &format!("rules[{i}].tenant"),
                    "a rule needs a tenant, tenant_from or launcher_tenants",
                ));
            }
            if r.tenant_from.is_some() {
                validate_tenant_from(i, r)?;
            } else if !r.tenant_prefix.is_empty() {
                return Err(bad(
                    &format!("rules[{i}].tenant_prefix"),
                    "only applies with tenant_from",
                ));
            }
            if r.cgroup.is_none() && r.uid.is_none() && r.gid.is_none() {
                return Err(bad(
                    &format!("rules[{i}]"),
                    "a rule needs cgroup, uid or gid to match on",
                ));
            }
            if let Some(t) = &r.tenant {
                rdmaq_model::check_name(t)
                    .map_err(|why| bad(&format!("rules[{i}].tenant"), why))?;
            }
            for (j, p) in r.launcher_tenants.iter().enumerate() {
                if p.is_empty() || p.contains(|c: char| c.is_whitespace() || c.is_control()) {
                    return Err(bad(
                        &format!("rules[{i}].launcher_tenants[{j}]"),
                        format!("{p:?} is not a tenant pattern"),
                    ));
                }
            }
        }
        rdmaq_model::check_name(&self.default_tenant).map_err(|why| bad("default_tenant", why))?;
        for (name, t) in &self.tenants {
            rdmaq_model::check_name(name).map_err(|why| bad(&format!("tenants.{name}"), why))?;
            if let Some(types) = &t.allowed_qp_types {
                QpTypes::parse(&types.join(","))
                    .map_err(|why| bad(&format!("tenants.{name}.allowed_qp_types"), why))?;
            }
        }
        if !self.standalone() {
            match (&self.tls, self.insecure) {
                (None, false) => {
                    return Err(bad(
                        "tls",
                        "endpoints are set but no certificates: set tls.ca, tls.cert and tls.key (or insecure = true)",
                    ));
                }
                (Some(_), true) => {
                    return Err(bad("insecure", "set together with [tls]; choose one"));
                }
                _ => {}
            }
        }
        if self.lease_margin_ms > 60_000 {
            return Err(bad(
                "lease_margin_ms",
                "more than a minute; leases are seconds long",
            ));
        }
        if !(1..=30_000).contains(&self.acquire_wait_ms) {
            return Err(bad(
                "acquire_wait_ms",
                format!(
                    "{} is outside 1..=30000: a program waits this long for a verb",
                    self.acquire_wait_ms
                ),
            ));
        }
        Ok(())
    }

    pub fn socket_mode_bits(&self) -> u32 {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8).unwrap_or(0o666)
    }

    pub fn standalone(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The policy for tenants with no caps anywhere, the default depending on the mode.
    pub fn unknown_tenant(&self) -> UnknownTenant {
        self.unknown_tenant.unwrap_or(if self.standalone() {
            UnknownTenant::Allow
        } else {
            UnknownTenant::Deny
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let c = Config::from_toml(include_str!("../../deploy/agent.toml")).unwrap();
        assert!(!c.rules.is_empty());
        assert!(c.tenants.contains_key("t1"));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("bogus = 1", "bogus"),
            ("socket_mode = \"999\"", "socket_mode"),
            ("[tenants.t1]\nmax_mr_bytes = \"10XiB\"", "XiB"),
            ("[tenants.t1]\nmax_qq = 3", "max_qq"),
            ("[[rules]]\nuid = 5", "rules[0].tenant"),
            (
                "[[rules]]\nuid = 5\nallow_launcher = true",
                "rules[0].allow_launcher",
            ),
            ("[[rules]]\nlauncher_tenants = [\"a*\"]", "rules[0]"),
            ("default_tenant = \"a b\"", "default_tenant"),
            ("[[rules]]\nuid = 5\ntenant = \"-x\"", "rules[0].tenant"),
            ("on_lease_lost = \"panic\"", "panic"),
            ("acquire_wait_ms = 0", "acquire_wait_ms"),
            ("acquire_wait_ms = 60000", "acquire_wait_ms"),
            (
                "[[rules]]\ncgroup = \"*kubepods*\"\ntenant_from = \"pod-namespace\"",
                "rules[0].cgroup",
            ),
            (
                "[[rules]]\ntenant_from = \"pod-namespace\"",
                "rules[0].cgroup",
            ),
            (
                "[[rules]]\ncgroup = \"/kubepods*\"\ntenant_from = \"pod-namespace\"\ntenant = \"x\"",
                "rules[0].tenant_from",
            ),
            (
                "[[rules]]\ncgroup = \"/kubepods*\"\ntenant_from = \"pod-namespace\"\ntenant_prefix = \"a b\"",
                "rules[0].tenant_prefix",
            ),
            (
                "[[rules]]\nuid = 5\ntenant = \"x\"\ntenant_prefix = \"k8s:\"",
                "rules[0].tenant_prefix",
            ),
            (
                "[[rules]]\ncgroup = \"/kubepods*\"\ntenant_from = \"pod-label\"",
                "pod-label",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key), "{key:?} not named in: {err}");
        }
    }

    /// Fuzz target: the config parser never panics on any document, and every error names
    /// the key (or the document) it is about.
    #[test]
    fn fuzz_config_parser() {
        const KEYS: &[&str] = &[
            "node",
            "socket",
            "socket_mode",
            "socket_gid",
            "socket_uid",
            "endpoints",
            "address",
            "status_listen",
            "lease_margin_ms",
            "acquire_wait_ms",
            "on_lease_lost",
            "fail_static_floor",
            "fail_static_floor.max_qp",
            "unknown_tenant",
            "backstop",
            "cgroup_root",
            "pod_log_dir",
            "default_tenant",
            "rules",
            "tenants",
            "tenants.t1",
            "tenants.t1.max_qp",
            "tenants.t1.max_mr_bytes",
            "tenants.t1.qp_create_per_sec",
            "tls",
            "tls.ca",
            "tls.cert",
            "tls.key",
            "insecure",
        ];
        rdmaq_common::fuzz::run_for(
            "agent config",
            rdmaq_common::fuzz::toml_documents(KEYS),
            |doc| {
                match Config::from_toml(&doc) {
                    Ok(c) => proptest::prop_assert!(c.validate().is_ok()),
                    Err(Error::Config { key, reason }) => {
                        rdmaq_common::fuzz::config_error_names_a_key(&doc, KEYS, &key, &reason)?
                    }
                    Err(e) => proptest::prop_assert!(false, "not a config error: {e}"),
                }
                Ok(())
            },
        );
    }
}
