//! The TLS command-line flags every rdmaq binary takes (and their `RDMAQ_*` variables).

use std::path::PathBuf;

use super::{TlsError, TlsFiles};

/// `--tls-ca/--tls-cert/--tls-key` and `--insecure`, flattened into each binary's flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA bundle the peers' certificates are verified against.
    #[arg(long, env = "RDMAQ_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// This process's certificate (PEM): member, agent, admin or viewer.
    #[arg(long, env = "RDMAQ_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, env = "RDMAQ_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Plain-text gRPC, every caller trusted as admin (dev and tests only).
    #[arg(long, env = "RDMAQ_INSECURE", global = true)]
    pub insecure: bool,
}

impl TlsArgs {
    /// The three files if all were given, none if none was; one or two is an error.
    pub fn files(&self) -> Result<Option<TlsFiles>, TlsError> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => Err(TlsError::Identity(
                "--tls-ca, --tls-cert and --tls-key go together".into(),
            )),
        }
    }
}
