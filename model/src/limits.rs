//! A tenant's limits at every scope (DESIGN.md, "Budget model"): the one shape the
//! coordinator stores, the agent enforces and the library applies.

use serde::{Deserialize, Serialize};

use crate::Caps;

/// What to do with a QP asking for more work requests than the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrPolicy {
    /// Lower the request to the cap.
    #[default]
    Clamp,
    /// Refuse the QP (EDQUOT).
    Deny,
}

impl WrPolicy {
    pub fn name(self) -> &'static str {
        match self {
            WrPolicy::Clamp => "clamp",
            WrPolicy::Deny => "deny",
        }
    }
}

/// A tenant's caps. Field names are part of the replicated state's format (serde), so a
/// renamed field keeps its stored name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Cluster-wide caps: the sum of the nodes' allotments never exceeds them.
    #[serde(rename = "global")]
    pub cluster: Caps,
    /// Per node (host-wide) caps; in the agent's standalone mode, the node's whole budget.
    pub per_node: Caps,
    /// Per process caps, enforced by the agent (or the library, standalone).
    pub per_process: Caps,
    /// Work-request depth per QP.
    pub max_send_wr: Option<u32>,
    pub max_recv_wr: Option<u32>,
    pub wr_policy: WrPolicy,
    /// Creations per second (refilling token buckets).
    pub qp_create_per_sec: Option<u32>,
    pub mr_create_per_sec: Option<u32>,
}

impl Limits {
    /// No cap of any kind.
    pub const NONE: Limits = Limits {
        cluster: Caps::NONE,
        per_node: Caps::NONE,
        per_process: Caps::NONE,
        max_send_wr: None,
        max_recv_wr: None,
        wr_policy: WrPolicy::Clamp,
        qp_create_per_sec: None,
        mr_create_per_sec: None,
    };
}

impl std::fmt::Display for Limits {
    /// The caps that are set, as `rdmaq quota set` flags would name them (for the audit).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (scope, caps) in [
            ("", &self.cluster),
            ("-per-node", &self.per_node),
            ("-per-process", &self.per_process),
        ] {
            for (name, v) in [
                ("qp", caps.qp),
                ("mr", caps.mr),
                ("mr-bytes", caps.mr_bytes),
            ] {
                if let Some(v) = v {
                    parts.push(format!("max-{name}{scope}={v}"));
                }
            }
        }
        for (name, v) in [
            ("max-send-wr", self.max_send_wr),
            ("max-recv-wr", self.max_recv_wr),
            ("qp-create-per-sec", self.qp_create_per_sec),
            ("mr-create-per-sec", self.mr_create_per_sec),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        }
        if self.wr_policy == WrPolicy::Deny {
            parts.push("wr-policy=deny".into());
        }
        if parts.is_empty() {
            f.write_str("(no caps)")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_caps_like_the_cli_flags() {
        let mut l = Limits::NONE;
        assert_eq!(l.to_string(), "(no caps)");
        l.cluster.qp = Some(100);
        l.per_node.mr_bytes = Some(4096);
        l.wr_policy = WrPolicy::Deny;
        assert_eq!(
            l.to_string(),
            "max-qp=100 max-mr-bytes-per-node=4096 wr-policy=deny"
        );
    }

    #[test]
    fn the_cluster_caps_keep_their_stored_name() {
        let json = serde_json::to_value(Limits::NONE).unwrap();
        assert!(json.get("global").is_some(), "{json}");
        assert_eq!(json["wr_policy"], "Clamp");
    }
}
