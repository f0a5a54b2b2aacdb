//! The kinds of object rdmaq admits and counts against caps.

use rdmaq_proto::intercept as wire;
use serde::{Deserialize, Serialize};

/// A held object that quotas cap: queue pairs and memory regions. (CQs and PDs are
/// counted and reported, never capped, so they are not one.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Qp,
    Mr,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Qp => "qp",
            Resource::Mr => "mr",
        }
    }

    /// The capped resource an intercept message is about; `None` for CQs, PDs and
    /// unknown values.
    pub fn from_wire(resource: i32) -> Option<Resource> {
        match wire::Resource::try_from(resource) {
            Ok(wire::Resource::Qp) => Some(Resource::Qp),
            Ok(wire::Resource::Mr) => Some(Resource::Mr),
            _ => None,
        }
    }

    pub fn to_wire(self) -> wire::Resource {
        match self {
            Resource::Qp => wire::Resource::Qp,
            Resource::Mr => wire::Resource::Mr,
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_uncapped_kinds() {
        for r in [Resource::Qp, Resource::Mr] {
            assert_eq!(Resource::from_wire(r.to_wire() as i32), Some(r));
        }
        for other in [
            wire::Resource::Cq,
            wire::Resource::Pd,
            wire::Resource::Unspecified,
        ] {
            assert_eq!(Resource::from_wire(other as i32), None);
        }
        assert_eq!(Resource::from_wire(99), None);
    }
}
