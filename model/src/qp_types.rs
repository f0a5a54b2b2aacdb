//! A set of QP types a tenant may create (`ibv_qp_type` values), by the names operators
//! write: `RC`, `UC`, `UD`, `RAW_PACKET`, `XRC_SEND`, `XRC_RECV` (`XRC` for both).

use serde::{Deserialize, Serialize};

/// `enum ibv_qp_type` values.
pub mod qpt {
    pub const RC: u32 = 2;
    pub const UC: u32 = 3;
    pub const UD: u32 = 4;
    pub const RAW_PACKET: u32 = 8;
    pub const XRC_SEND: u32 = 9;
    pub const XRC_RECV: u32 = 10;
}

const NAMES: [(&str, u32); 6] = [
    ("RC", qpt::RC),
    ("UC", qpt::UC),
    ("UD", qpt::UD),
    ("RAW_PACKET", qpt::RAW_PACKET),
    ("XRC_SEND", qpt::XRC_SEND),
    ("XRC_RECV", qpt::XRC_RECV),
];

/// The allowed QP types: bit `n` is `ibv_qp_type` `n`. Types without a name (a driver's
/// own) are never in a set: a tenant limited to a list may create only what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QpTypes(u32);

impl QpTypes {
    /// From a list such as `RC,UD` (case-insensitive; `RAW` for `RAW_PACKET`, `XRC` for both
    /// XRC types, `XRC_INI`/`XRC_TGT` as in verbs.h's comments). The error names the word.
    pub fn parse(list: &str) -> Result<QpTypes, String> {
        let mut bits = 0u32;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let types: &[u32] = match word.to_ascii_uppercase().as_str() {
                "RC" => &[qpt::RC],
                "UC" => &[qpt::UC],
                "UD" => &[qpt::UD],
                "RAW" | "RAW_PACKET" => &[qpt::RAW_PACKET],
                "XRC" => &[qpt::XRC_SEND, qpt::XRC_RECV],
                "XRC_SEND" | "XRC_INI" => &[qpt::XRC_SEND],
                "XRC_RECV" | "XRC_TGT" => &[qpt::XRC_RECV],
                _ => {
                    return Err(format!(
                        "{word:?} is not a QP type (RC, UC, UD, RAW_PACKET, XRC, XRC_SEND, XRC_RECV)"
                    ));
                }
            };
            for t in types {
                bits |= 1 << t;
            }
        }
        if bits == 0 {
            return Err(format!("{list:?} names no QP type"));
        }
        Ok(QpTypes(bits))
    }

    /// From `ibv_qp_type` values (those without a name are dropped).
    pub fn from_values(values: &[u32]) -> QpTypes {
        QpTypes(
            values
                .iter()
                .filter(|v| NAMES.iter().any(|(_, n)| n == *v))
                .fold(0, |bits, v| bits | 1 << v),
        )
    }

    pub fn allows(&self, qp_type: u32) -> bool {
        qp_type < 32 && self.0 & (1 << qp_type) != 0
    }

    /// The `ibv_qp_type` values in the set.
    pub fn values(&self) -> Vec<u32> {
        NAMES
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| self.allows(*v))
            .collect()
    }

    /// The names in the set, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(_, v)| self.allows(*v))
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for QpTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_to_sets_and_back() {
        let t = QpTypes::parse("rc, UD").unwrap();
        assert!(t.allows(qpt::RC) && t.allows(qpt::UD) && !t.allows(qpt::UC));
        assert_eq!(t.to_string(), "RC,UD");
        assert_eq!(t.values(), [qpt::RC, qpt::UD]);
        assert_eq!(
            QpTypes::parse("XRC").unwrap().names(),
            ["XRC_SEND", "XRC_RECV"]
        );
        assert_eq!(QpTypes::from_values(&t.values()), t);
        // A driver's own type (IBV_QPT_DRIVER = 0xff) is never allowed by a list.
        assert!(!t.allows(0xff));
        assert_eq!(QpTypes::from_values(&[0xff, 1000]), QpTypes(0));
    }

    #[test]
    fn bad_lists_name_the_word() {
        assert!(QpTypes::parse("RC,bogus").unwrap_err().contains("bogus"));
        assert!(QpTypes::parse(" , ").is_err());
    }
}
