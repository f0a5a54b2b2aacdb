//! A tenant's limits at every scope (DESIGN.md, "Budget model"): the one shape the
//! coordinator stores, the agent enforces and the library applies.

use serde::{Deserialize, Serialize, Serializer, ser::SerializeStruct};

use crate::{Caps, QpTypes};

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

/// What a QP creation asks for, as far as limits care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpShape {
    /// `ibv_qp_type`.
    pub qp_type: u32,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
}

/// Why a QP's shape is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeDenial {
    /// Its type is not in the tenant's list.
    Type { qp_type: u32, allowed: QpTypes },
    /// It asks for more work requests than the cap, and the policy is deny.
    WorkRequests {
        field: &'static str,
        asked: u32,
        cap: u32,
    },
}

impl std::fmt::Display for ShapeDenial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShapeDenial::Type { qp_type, allowed } => {
                write!(f, "QP type {qp_type} is not one of {allowed}")
            }
            ShapeDenial::WorkRequests { field, asked, cap } => {
                write!(f, "{field} {asked} is above the cap {cap}")
            }
        }
    }
}

/// A tenant's caps. Field names are part of the replicated state's format (serde), so a
/// renamed field keeps its stored name. Serialized by hand (below) to leave out an unset
/// `qp_types` in text formats only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
    /// Creations per second on each node (refilling token buckets).
    pub qp_create_per_sec: Option<u32>,
    pub mr_create_per_sec: Option<u32>,
    /// QP types the tenant may create; `None`: any.
    #[serde(default)]
    pub qp_types: Option<QpTypes>,
}

/// As derived, except that text formats (JSON snapshots, TOML) leave out an unset
/// `qp_types`, as they did before it existed. Binary formats have no optional fields: they
/// always carry it (serde's `skip_serializing_if` cannot tell the two apart).
impl Serialize for Limits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let skip_types = s.is_human_readable() && self.qp_types.is_none();
        let mut st = s.serialize_struct("Limits", if skip_types { 8 } else { 9 })?;
        st.serialize_field("global", &self.cluster)?;
        st.serialize_field("per_node", &self.per_node)?;
        st.serialize_field("per_process", &self.per_process)?;
        st.serialize_field("max_send_wr", &self.max_send_wr)?;
        st.serialize_field("max_recv_wr", &self.max_recv_wr)?;
        st.serialize_field("wr_policy", &self.wr_policy)?;
        st.serialize_field("qp_create_per_sec", &self.qp_create_per_sec)?;
        st.serialize_field("mr_create_per_sec", &self.mr_create_per_sec)?;
        if skip_types {
            st.skip_field("qp_types")?;
        } else {
            st.serialize_field("qp_types", &self.qp_types)?;
        }
        st.end()
    }
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
        qp_types: None,
    };

    /// Checks a QP's type and work-request depths against these limits: `Ok(None)` as asked,
    /// `Ok(Some((send, recv)))` lowered to the caps (clamp policy), or why it is refused.
    pub fn check_qp_shape(&self, qp: QpShape) -> Result<Option<(u32, u32)>, ShapeDenial> {
        if let Some(types) = self.qp_types
            && !types.allows(qp.qp_type)
        {
            return Err(ShapeDenial::Type {
                qp_type: qp.qp_type,
                allowed: types,
            });
        }
        let mut out = (qp.max_send_wr, qp.max_recv_wr);
        for (field, asked, cap) in [
            ("max_send_wr", &mut out.0, self.max_send_wr),
            ("max_recv_wr", &mut out.1, self.max_recv_wr),
        ] {
            if let Some(cap) = cap
                && *asked > cap
            {
                if self.wr_policy == WrPolicy::Deny {
                    return Err(ShapeDenial::WorkRequests {
                        field,
                        asked: *asked,
                        cap,
                    });
                }
                *asked = cap;
            }
        }
        Ok((out != (qp.max_send_wr, qp.max_recv_wr)).then_some(out))
    }

    /// Whether each QP must be decided on its own at creation (its type, its work requests
    /// or its creation rate are limited), instead of from tokens taken ahead.
    pub fn shapes_qps(&self) -> bool {
        self.max_send_wr.is_some()
            || self.max_recv_wr.is_some()
            || self.qp_types.is_some()
            || self.qp_create_per_sec.is_some()
    }

    /// Whether each MR must be decided on its own at registration (its creation rate is
    /// limited).
    pub fn shapes_mrs(&self) -> bool {
        self.mr_create_per_sec.is_some()
    }
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
        if let Some(t) = self.qp_types {
            parts.push(format!("qp-types={t}"));
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
    fn qp_shapes_are_clamped_or_refused() {
        use crate::qpt;
        let shape = |qp_type, max_send_wr, max_recv_wr| QpShape {
            qp_type,
            max_send_wr,
            max_recv_wr,
        };
        let mut l = Limits::NONE;
        assert_eq!(l.check_qp_shape(shape(qpt::RC, 1 << 20, 1 << 20)), Ok(None));
        l.max_send_wr = Some(64);
        assert_eq!(l.check_qp_shape(shape(qpt::RC, 16, 999)), Ok(None));
        assert_eq!(
            l.check_qp_shape(shape(qpt::RC, 100, 999)),
            Ok(Some((64, 999)))
        );
        l.wr_policy = WrPolicy::Deny;
        assert_eq!(
            l.check_qp_shape(shape(qpt::RC, 100, 1)),
            Err(ShapeDenial::WorkRequests {
                field: "max_send_wr",
                asked: 100,
                cap: 64
            })
        );
        l.qp_types = Some(crate::QpTypes::parse("UD").unwrap());
        assert!(matches!(
            l.check_qp_shape(shape(qpt::RC, 1, 1)),
            Err(ShapeDenial::Type { qp_type: 2, .. })
        ));
        assert_eq!(l.check_qp_shape(shape(qpt::UD, 1, 1)), Ok(None));
        assert!(l.shapes_qps() && !l.shapes_mrs());
    }

    #[test]
    fn the_cluster_caps_keep_their_stored_name() {
        let json = serde_json::to_value(Limits::NONE).unwrap();
        assert!(json.get("global").is_some(), "{json}");
        assert_eq!(json["wr_policy"], "Clamp");
    }

    #[test]
    fn text_leaves_out_unset_qp_types_and_reads_back_either_way() {
        let mut l = Limits::NONE;
        let json = serde_json::to_value(l).unwrap();
        assert!(json.get("qp_types").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<Limits>(json).unwrap(), l);
        l.qp_types = Some(crate::QpTypes::parse("UD").unwrap());
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains("qp_types"), "{json}");
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), l);
    }
}
