//! `rdmaq certs init|issue`: a CA and role certificates for a cluster, without openssl.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::Subcommand;
use rdmaq_common::tls::{
    Role,
    issue::{self, Leaf, Pem, Validity},
};

#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// Create a CA in DIR (ca.pem, ca-key.pem). Keep ca-key.pem off the cluster's hosts.
    Init {
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "rdmaq CA")]
        name: String,
        #[arg(long, default_value = "3650")]
        days: u32,
        /// Replace an existing CA in DIR (certificates it issued stop being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for a role, signed by the CA in --dir.
    Issue(IssueArgs),
    /// Revoke a certificate cluster-wide (replicated; refused on every call from then on).
    Revoke(RevokeArgs),
    /// List revoked certificates and identities.
    Revoked,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["serial", "cert", "identity"])))]
pub struct RevokeArgs {
    /// The certificate's serial number (hex, colons allowed).
    #[arg(long)]
    pub serial: Option<String>,
    /// The certificate file itself (its serial is revoked).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// role:name, e.g. agent:node7 or member:3: every certificate for it (a decommissioned
    /// node or member), until lifted.
    #[arg(long)]
    pub identity: Option<String>,
    /// Lift the revocation instead.
    #[arg(long)]
    pub lift: bool,
}

impl CertsCmd {
    /// Whether the command works on local files only (no coordinator).
    pub fn is_local(&self) -> bool {
        matches!(self, CertsCmd::Init { .. } | CertsCmd::Issue(_))
    }
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Directory holding the CA (from `rdmaq certs init`).
    #[arg(long)]
    dir: PathBuf,
    /// admin (quotas, membership), agent (one node), member (Raft), viewer (reads).
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// The agent's node name (for --role agent; same as --name).
    #[arg(long, conflicts_with = "name")]
    node: Option<String>,
    /// The identity: a member's id, an admin's or viewer's user name.
    #[arg(long)]
    name: Option<String>,
    /// Host names and IP addresses the holder is dialled at (needed for members).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Valid for this many days from now.
    #[arg(long, default_value = "365")]
    days: u32,
    /// Validity start instead (YYYY-MM-DD).
    #[arg(long, requires = "not_after")]
    not_before: Option<String>,
    /// Validity end instead (YYYY-MM-DD).
    #[arg(long, requires = "not_before")]
    not_after: Option<String>,
    /// Write PREFIX.pem and PREFIX-key.pem (default: DIR/ROLE-NAME).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: rdmaq_common::tls::TlsError| e.to_string())
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `pem` as `prefix.pem` (0644) and `prefix-key.pem` (0600).
fn write_pair(prefix: &Path, pem: &Pem) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = prefix.with_file_name(format!("{}.pem", file_name(prefix)));
    let key = prefix.with_file_name(format!("{}-key.pem", file_name(prefix)));
    write_file(&cert, &pem.cert, 0o644)?;
    write_file(&key, &pem.key, 0o600)?;
    Ok((cert, key))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_ca(dir: &Path) -> anyhow::Result<Pem> {
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {} (create a CA with `rdmaq certs init`)",
                p.display()
            )
        })
    };
    Ok(Pem {
        cert: read("ca.pem")?,
        key: read("ca-key.pem")?,
    })
}

pub fn run(cmd: CertsCmd) -> anyhow::Result<String> {
    match cmd {
        CertsCmd::Revoke(_) | CertsCmd::Revoked => {
            unreachable!("revocations go to the coordinator (cmd::revoke)")
        }
        CertsCmd::Init {
            dir,
            name,
            days,
            force,
        } => {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if dir.join("ca.pem").exists() && !force {
                bail!(
                    "{} already holds a CA; pass --force to replace it",
                    dir.display()
                );
            }
            let ca = issue::new_ca(&name, Validity::days_from_now(days))?;
            let (cert, key) = write_pair(&dir.join("ca"), &ca)?;
            Ok(format!(
                "CA {:?}: {} {}",
                name,
                cert.display(),
                key.display()
            ))
        }
        CertsCmd::Issue(a) => {
            let name = match (a.node, a.name) {
                (Some(n), None) | (None, Some(n)) => n,
                _ => bail!("name the holder with --name (or --node for an agent)"),
            };
            let validity = match (a.not_before, a.not_after) {
                (Some(b), Some(e)) => Validity {
                    not_before: issue::parse_date(&b)?,
                    not_after: issue::parse_date(&e)?,
                },
                _ => Validity::days_from_now(a.days),
            };
            if a.role == Role::Member && a.sans.is_empty() {
                bail!("a member certificate needs --san for each address it is dialled at");
            }
            let ca = read_ca(&a.dir)?;
            let leaf = Leaf {
                role: a.role,
                name: name.clone(),
                sans: a.sans,
                validity,
            };
            let pem = issue::issue(&ca, &leaf)?;
            let prefix = a
                .out
                .unwrap_or_else(|| a.dir.join(format!("{}-{name}", a.role)));
            let (cert, key) = write_pair(&prefix, &pem)?;
            Ok(format!(
                "{} {name:?}: {} {}",
                a.role,
                cert.display(),
                key.display()
            ))
        }
    }
}
