//! Coordinator configuration: a TOML file, overridden by environment and flags (see
//! main.rs), validated with errors that name the offending key.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use rdmaq_common::tls::TlsFiles;

use crate::{Error, raft::NodeId, state::LeasePolicy};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This member's Raft id (≥ 1).
    pub id: NodeId,
    /// Where the gRPC services listen; also this member's address for its peers.
    pub listen: SocketAddr,
    /// The address peers and clients use for this member, if not `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// The initial members, id -> host:port. The lowest id initializes a fresh cluster.
    /// Empty: this member joins an existing cluster (`rdmaq cluster add-member`).
    #[serde(default)]
    pub initial_members: BTreeMap<String, String>,
    #[serde(default = "defaults::lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    #[serde(default = "defaults::node_dead_ms")]
    pub node_dead_ms: u64,
    #[serde(default = "defaults::heartbeat_interval_ms")]
    pub agent_heartbeat_interval_ms: u64,
    #[serde(default = "defaults::raft_heartbeat_ms")]
    pub raft_heartbeat_ms: u64,
    #[serde(default = "defaults::election_timeout_ms")]
    pub election_timeout_ms: u64,
    /// A snapshot is taken every this many log entries; older entries are purged.
    #[serde(default = "defaults::snapshot_every")]
    pub snapshot_every: u64,
    /// How long a write or linearizable read waits for a quorum before failing.
    #[serde(default = "defaults::quorum_timeout_ms")]
    pub quorum_timeout_ms: u64,
    /// Prometheus `/metrics` listener (none if unset).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` over TLS, to admin and viewer certificates only (needs [tls]).
    #[serde(default)]
    pub metrics_tls: bool,
    /// Certificates for mutual TLS on every gRPC link (required unless `insecure`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Serve and dial in plain text, trusting every caller as admin. Dev and tests only.
    #[serde(default)]
    pub insecure: bool,
    /// A follower tells agents to move to the leader (it marks the calls it forwarded) only
    /// while fewer nodes than this are registered. Above it every member keeps serving its
    /// own agents and forwards their calls in batches, so that the agents' TLS and HTTP/2
    /// are spread over the members instead of all landing on the leader (docs/benchmarks.md,
    /// scale-sim). 0: never.
    #[serde(default = "defaults::leader_hint_max_nodes")]
    pub leader_hint_max_nodes: usize,
    /// gRPC connections open at once; more are closed at accept.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// TLS handshakes in progress at once from addresses that are not members'; more are
    /// closed at accept (members' addresses have a pool of the same size to themselves).
    #[serde(default = "defaults::max_handshakes")]
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one such address.
    #[serde(default = "defaults::max_handshakes_per_address")]
    pub max_handshakes_per_address: usize,
    /// Time a caller has to complete its TLS handshake.
    #[serde(default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Test only (`--test-clock-offset-ms`, never from the file): shifts this member's wall
    /// clock, to show that leases do not depend on members' clocks agreeing.
    #[serde(skip)]
    pub test_clock_offset_ms: i64,
}

mod defaults {
    pub fn leader_hint_max_nodes() -> usize {
        2_000
    }
    pub fn lease_ttl_ms() -> u64 {
        10_000
    }
    pub fn node_dead_ms() -> u64 {
        24 * 3600 * 1000
    }
    pub fn heartbeat_interval_ms() -> u64 {
        2_000
    }
    pub fn raft_heartbeat_ms() -> u64 {
        100
    }
    pub fn election_timeout_ms() -> u64 {
        400
    }
    pub fn quorum_timeout_ms() -> u64 {
        5_000
    }
    pub fn snapshot_every() -> u64 {
        5_000
    }
    pub fn max_connections() -> usize {
        4096
    }
    pub fn max_handshakes() -> usize {
        1024
    }
    pub fn max_handshakes_per_address() -> usize {
        16
    }
    pub fn handshake_timeout_ms() -> u64 {
        3_000
    }
}

fn bad(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// Parses a TOML document; unknown keys and wrong types are errors naming the key.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let cfg: Config = rdmaq_common::config::parse_toml(text).map_err(|e| Error::Config {
            key: e.key,
            reason: e.reason,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.id == 0 {
            return Err(bad("id", "member ids start at 1"));
        }
        for (id, addr) in &self.initial_members {
            let key = format!("initial_members.{id}");
            id.parse::<NodeId>()
                .ok()
                .filter(|i| *i > 0)
                .ok_or_else(|| bad(&key, format!("{id:?} is not a member id (≥ 1)")))?;
            addr.parse::<SocketAddr>()
                .map_err(|_| bad(&key, format!("{addr:?} is not host:port")))?;
        }
        if !self.initial_members.is_empty()
            && !self.initial_members.contains_key(&self.id.to_string())
        {
            return Err(bad(
                "initial_members",
                format!("does not contain this member's id {}", self.id),
            ));
        }
        if self.lease_ttl_ms < 500 {
            return Err(bad(
                "lease_ttl_ms",
                format!("{} ms is too short (≥ 500)", self.lease_ttl_ms),
            ));
        }
        if self.agent_heartbeat_interval_ms * 2 > self.lease_ttl_ms {
            return Err(bad(
                "agent_heartbeat_interval_ms",
                format!(
                    "{} ms: agents must heartbeat at least twice per lease ({} ms)",
                    self.agent_heartbeat_interval_ms, self.lease_ttl_ms
                ),
            ));
        }
        if self.node_dead_ms < self.lease_ttl_ms {
            return Err(bad("node_dead_ms", "must not be shorter than lease_ttl_ms"));
        }
        if self.raft_heartbeat_ms == 0 || self.election_timeout_ms < 2 * self.raft_heartbeat_ms {
            return Err(bad(
                "election_timeout_ms",
                "must be at least twice raft_heartbeat_ms",
            ));
        }
        match (&self.tls, self.insecure) {
            (None, false) => {
                return Err(bad(
                    "tls",
                    "no certificates: set tls.ca, tls.cert and tls.key (or insecure = true for plain text)",
                ));
            }
            (Some(_), true) => {
                return Err(bad("insecure", "set together with [tls]; choose one"));
            }
            _ => {}
        }
        if self.metrics_tls && self.tls.is_none() {
            return Err(bad("metrics_tls", "needs [tls] certificates"));
        }
        for (key, v) in [
            ("max_connections", self.max_connections),
            ("max_handshakes", self.max_handshakes),
            (
                "max_handshakes_per_address",
                self.max_handshakes_per_address,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if !(100..=60_000).contains(&self.handshake_timeout_ms) {
            return Err(bad(
                "handshake_timeout_ms",
                format!("{} ms is outside 100..=60000", self.handshake_timeout_ms),
            ));
        }
        if self.snapshot_every < 10 {
            return Err(bad("snapshot_every", "must be at least 10 entries"));
        }
        Ok(())
    }

    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    pub fn policy(&self) -> LeasePolicy {
        LeasePolicy {
            lease_ttl_ms: self.lease_ttl_ms,
            node_dead_ms: self.node_dead_ms,
        }
    }

    pub fn initial_members(&self) -> BTreeMap<NodeId, String> {
        self.initial_members
            .iter()
            .filter_map(|(id, addr)| Some((id.parse().ok()?, addr.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
listen = "127.0.0.1:7001"
data_dir = "/tmp/x"
insecure = true
[initial_members]
1 = "127.0.0.1:7001"
2 = "127.0.0.1:7002"
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.initial_members().len(), 2);
        assert_eq!(c.lease_ttl_ms, 10_000);
    }

    #[test]
    fn the_documented_example_parses_and_sets_every_key() {
        let text = include_str!("../../deploy/coordinator.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.initial_members().len(), 3);
        assert!(c.metrics_listen.is_some());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (format!("{GOOD}\nbogus_key = 1\n"), "bogus_key"),
            (GOOD.replace("id = 1", "id = 0"), "id"),
            (GOOD.replace("id = 1", "id = \"one\""), "id"),
            (
                GOOD.replace("2 = \"127.0.0.1:7002\"", "2 = \"nowhere\""),
                "initial_members.2",
            ),
            (format!("lease_ttl_ms = 10\n{GOOD}"), "lease_ttl_ms"),
            (GOOD.replace("insecure = true", ""), "tls"),
            (
                GOOD.replace("insecure = true", "[tls]\nca = \"a\"\ncert = \"b\"\n"),
                "tls.key",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key:?} not named in: {err}");
        }
    }

    /// Fuzz target: the config parser never panics on any document, and every error names
    /// the key (or the document) it is about.
    #[test]
    fn fuzz_config_parser() {
        const KEYS: &[&str] = &[
            "id",
            "listen",
            "advertise",
            "data_dir",
            "initial_members",
            "initial_members.1",
            "lease_ttl_ms",
            "node_dead_ms",
            "agent_heartbeat_interval_ms",
            "raft_heartbeat_ms",
            "election_timeout_ms",
            "snapshot_every",
            "quorum_timeout_ms",
            "metrics_listen",
            "metrics_tls",
            "tls",
            "tls.ca",
            "tls.cert",
            "tls.key",
            "insecure",
            "max_connections",
            "max_handshakes",
            "max_handshakes_per_address",
            "handshake_timeout_ms",
        ];
        rdmaq_common::fuzz::run_for(
            "coordinator config",
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
