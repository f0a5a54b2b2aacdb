//! Who a peer is: the role and name its certificate carries. rdmaq certificates have the
//! subject `O=rdmaq, OU=<role>, CN=<name>` (see `rdmaq certs`); the CA's signature is what
//! makes that claim trustworthy, so it is read only from certificates rustls has verified.

use std::{fmt, str::FromStr};

use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// What a certificate allows its holder to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Quota and membership changes, and every read.
    Admin,
    /// Register, acquire, release and heartbeat for the one node its name says.
    Agent,
    /// Raft traffic between coordinator members.
    Member,
    /// Reads only: usage, quotas, status, audit.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Agent, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Role, TlsError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| TlsError::Identity(format!("unknown role {s:?}")))
    }
}

/// The organization every rdmaq certificate names; others are not rdmaq identities.
pub const ORGANIZATION: &str = "rdmaq";

/// A verified peer: its role, its name (the node of an agent, the id of a member, the
/// person or tool of an admin or viewer) and the full subject, which the audit trail records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub name: String,
    pub subject: String,
    /// The certificate's serial number (`canonical_serial`; what `rdmaq certs revoke` names).
    pub serial: String,
}

impl Identity {
    /// The caller of a plain-text (`--insecure` or dev) server: trusted with everything,
    /// which is exactly why plain text needs an explicit flag.
    pub fn insecure() -> Identity {
        Identity {
            role: Role::Admin,
            name: "insecure".into(),
            subject: "insecure (no TLS)".into(),
            serial: String::new(),
        }
    }

    /// `role:name`, how revocations by name spell an identity.
    pub fn key(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }

    /// Reads the role and name from a DER certificate (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Result<Identity, TlsError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| TlsError::Identity(format!("unreadable certificate: {e}")))?;
        let subject = cert.subject();
        let one = |what: &str, mut values: Vec<String>| -> Result<String, TlsError> {
            match values.len() {
                1 => Ok(values.remove(0)),
                n => Err(TlsError::Identity(format!(
                    "certificate subject {subject} has {n} {what} entries (needs exactly one)"
                ))),
            }
        };
        let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
            it.filter_map(|a| a.as_str().ok().map(str::to_string))
                .collect::<Vec<_>>()
        };
        let org = one("O", strings(&mut subject.iter_organization()))?;
        if org != ORGANIZATION {
            return Err(TlsError::Identity(format!(
                "certificate subject {subject} is not an rdmaq identity (O={org:?})"
            )));
        }
        let role: Role = one("OU", strings(&mut subject.iter_organizational_unit()))?.parse()?;
        let name = one("CN", strings(&mut subject.iter_common_name()))?;
        if name.is_empty() {
            return Err(TlsError::Identity(format!(
                "certificate subject {subject} has an empty CN"
            )));
        }
        Ok(Identity {
            role,
            name,
            subject: subject.to_string(),
            serial: canonical_serial(&cert.raw_serial_as_string())
                .ok_or_else(|| TlsError::Identity("unreadable certificate serial".into()))?,
        })
    }
}

/// A certificate serial as rdmaq compares them: hex digits only, lower case, no leading
/// zeros — so `00:8A:FF` (the DER octets), `8aff` (as openssl prints it) and `8AFF` are one
/// serial. None unless it is hex (colons allowed).
pub fn canonical_serial(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digits = hex.trim_start_matches('0').to_ascii_lowercase();
    Some(if digits.is_empty() {
        "0".into()
    } else {
        digits
    })
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}
