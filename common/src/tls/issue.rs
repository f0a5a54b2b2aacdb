//! Issuing rdmaq certificates (rcgen): a CA for a cluster, and leaf certificates whose
//! subject carries the role and name that [`super::Identity`] reads back.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};

use super::{ORGANIZATION, Role, TlsError};

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// Validity window as calendar dates (UTC midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: (i32, u8, u8),
    pub not_after: (i32, u8, u8),
}

impl Validity {
    /// From yesterday (clock skew between hosts) for `days` days.
    pub fn days_from_now(days: u32) -> Validity {
        let today = time_now();
        let from = today - time::Duration::days(1);
        let to = today + time::Duration::days(i64::from(days));
        Validity {
            not_before: ymd(from),
            not_after: ymd(to),
        }
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn ymd(t: time::OffsetDateTime) -> (i32, u8, u8) {
    (t.year(), t.month() as u8, t.day())
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<(i32, u8, u8), TlsError> {
    let bad = || TlsError::Identity(format!("{s:?} is not a date (YYYY-MM-DD)"));
    let mut parts = s.splitn(3, '-');
    let y: i32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let m: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let d: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    Ok((y, m, d))
}

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Identity(format!("certificate generation: {e}"))
}

fn window(params: &mut CertificateParams, v: Validity) {
    let (y, m, d) = v.not_before;
    params.not_before = date_time_ymd(y, m, d);
    let (y, m, d) = v.not_after;
    params.not_after = date_time_ymd(y, m, d);
}

/// A new self-signed CA named `name`.
pub fn new_ca(name: &str, validity: Validity) -> Result<Pem, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    window(&mut params, validity);
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.self_signed(&key).map_err(rc)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub role: Role,
    /// The node of an agent, the id of a member, the user of an admin or viewer.
    pub name: String,
    /// Host names and IP addresses a member is dialled at (members serve; others need none).
    pub sans: Vec<String>,
    pub validity: Validity,
}

/// Issues `leaf`, signed by the CA in `ca`.
pub fn issue(ca: &Pem, leaf: &Leaf) -> Result<Pem, TlsError> {
    if leaf.name.is_empty() {
        return Err(TlsError::Identity("the certificate name is empty".into()));
    }
    let ca_key = KeyPair::from_pem(&ca.key).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(rc)?;
    let mut params = CertificateParams::new(leaf.sans.clone()).map_err(rc)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::OrganizationalUnitName, leaf.role.as_str());
    dn.push(DnType::CommonName, leaf.name.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Members serve and also dial each other; everyone else only dials.
    params.extended_key_usages = match leaf.role {
        Role::Member => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    window(&mut params, leaf.validity);
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.signed_by(&key, &issuer).map_err(rc)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
