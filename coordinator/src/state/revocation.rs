//! Revoked certificates, replicated like everything else: every member refuses them on
//! every call. A revocation names one certificate (its serial) or an identity (`role:name`:
//! every certificate for it, until the revocation is lifted — a decommissioned node or
//! member).

use imbl::OrdMap;
use rdmaq_common::tls::{Identity, canonical_serial};
use serde::{Deserialize, Serialize};

use super::{command::ApplyError, validate};

/// Longest serial (20 octets in hex, RFC 5280) or identity accepted.
const MAX_LEN: usize = 160;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// Serial (lowercase hex) -> when it was revoked (Unix ms).
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub serials: OrdMap<String, u64>,
    /// `role:name` -> when it was revoked (Unix ms).
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub identities: OrdMap<String, u64>,
}

/// A caller's certificate, as a proposal carries it to be checked when it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Canonical serial (`canonical_serial`).
    pub serial: String,
    /// `role:name`.
    pub identity: String,
}

impl Credential {
    /// None for the insecure (plain-text) caller, which has no certificate.
    pub fn of(who: &Identity) -> Option<Credential> {
        (!who.serial.is_empty()).then(|| Credential {
            serial: who.serial.clone(),
            identity: who.key(),
        })
    }
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revoked {
    Serial(String),
    Identity(String),
}

impl Revoked {
    /// Checks and normalizes (serials: hex without colons, lowercase).
    pub fn checked(self) -> Result<Revoked, ApplyError> {
        let invalid = |field: &str, reason: String| ApplyError::Invalid {
            field: field.into(),
            reason,
        };
        match self {
            Revoked::Serial(s) => match canonical_serial(&s) {
                Some(hex) if s.len() <= MAX_LEN => Ok(Revoked::Serial(hex)),
                _ => Err(invalid(
                    "serial",
                    format!("{s:?} is not a hex certificate serial"),
                )),
            },
            Revoked::Identity(id) => {
                let Some((role, name)) = id.split_once(':') else {
                    return Err(invalid(
                        "identity",
                        format!("{id:?} is not role:name (e.g. agent:node7)"),
                    ));
                };
                if !["admin", "agent", "member", "viewer"].contains(&role) {
                    return Err(invalid(
                        "identity",
                        format!("{role:?} is not a role (admin, agent, member, viewer)"),
                    ));
                }
                if name.is_empty() || id.len() > MAX_LEN {
                    return Err(invalid(
                        "identity",
                        format!("{id:?}: the name is empty or too long"),
                    ));
                }
                if role == "agent" {
                    validate::name("identity", name)?;
                }
                Ok(Revoked::Identity(id))
            }
        }
    }
}

impl Revocations {
    pub fn add(&mut self, what: &Revoked, at_ms: u64) {
        match what {
            Revoked::Serial(s) => self.serials.entry(s.clone()).or_insert(at_ms),
            Revoked::Identity(i) => self.identities.entry(i.clone()).or_insert(at_ms),
        };
    }

    /// Lifts a revocation; false if there was none.
    pub fn lift(&mut self, what: &Revoked) -> bool {
        match what {
            Revoked::Serial(s) => self.serials.remove(s).is_some(),
            Revoked::Identity(i) => self.identities.remove(i).is_some(),
        }
    }

    /// Why `who` may no longer call, if it is revoked.
    pub fn refuses(&self, who: &Identity) -> Option<String> {
        self.refuses_credential(&Credential::of(who)?)
    }

    /// Why the holder of `c` may no longer act, if it is revoked.
    pub fn refuses_credential(&self, c: &Credential) -> Option<String> {
        if self.serials.contains_key(&c.serial) {
            return Some(format!(
                "certificate {} ({}) is revoked",
                c.serial, c.identity
            ));
        }
        self.identities
            .contains_key(&c.identity)
            .then(|| format!("{} is revoked", c.identity))
    }

    pub fn is_empty(&self) -> bool {
        self.serials.is_empty() && self.identities.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use rdmaq_common::tls::Role;

    use super::*;

    fn who(serial: &str) -> Identity {
        Identity {
            role: Role::Agent,
            name: "n1".into(),
            subject: "O=rdmaq,OU=agent,CN=n1".into(),
            serial: serial.into(),
        }
    }

    #[test]
    fn a_serial_revokes_one_certificate_and_an_identity_all_until_lifted() {
        let mut r = Revocations::default();
        // As printed with a leading zero octet and upper case, as the certificate reads.
        let serial = Revoked::Serial("00:8A:ff".into()).checked().unwrap();
        r.add(&serial, 5_000);
        assert!(r.refuses(&who("8aff")).is_some());
        assert!(r.refuses(&who("b00")).is_none());
        let id = Revoked::Identity("agent:n1".into()).checked().unwrap();
        r.add(&id, 10_000);
        assert!(r.refuses(&who("b00")).is_some());
        assert!(r.lift(&id));
        assert!(!r.lift(&id), "nothing left to lift");
        assert!(r.refuses(&who("b00")).is_none());
        assert!(
            r.refuses(&who("8aff")).is_some(),
            "the serial stays revoked"
        );
    }

    #[test]
    fn bad_revocations_name_the_field() {
        for (bad, field) in [
            (Revoked::Serial("xyz".into()), "serial"),
            (Revoked::Serial(String::new()), "serial"),
            (Revoked::Identity("n1".into()), "identity"),
            (Revoked::Identity("king:n1".into()), "identity"),
            (Revoked::Identity("agent:".into()), "identity"),
        ] {
            match bad.checked() {
                Err(ApplyError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }
}
