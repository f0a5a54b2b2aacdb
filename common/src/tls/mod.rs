//! Mutual TLS for every gRPC link (rustls, no OpenSSL): the certificate material and its
//! reload, the verified identity of a peer, a listener that hands tonic authenticated
//! connections, and a connector for clients.

mod admission;
mod args;
mod client;
#[cfg(feature = "http")]
mod http;
mod identity;
#[cfg(feature = "certs")]
pub mod issue;
mod listener;
mod mismatch;
mod reload;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

pub use admission::{Limits, Refused};
pub use args::TlsArgs;
pub use client::{connect_lazy, endpoint};
#[cfg(feature = "http")]
pub use http::HttpListener;
pub use identity::{Identity, ORGANIZATION, Role, canonical_serial};
pub use listener::{Conn, ConnInfo, incoming};
pub use mismatch::{error_chain, mismatch, status_text};
pub use reload::watch;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate identity: {0}")]
    Identity(String),
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// Where a process finds its TLS material (PEM files): the CA bundle it trusts for peers,
/// and its own certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn paths(&self) -> [&Path; 3] {
        [&self.ca, &self.cert, &self.key]
    }
}

/// ALPN for gRPC over TLS.
const H2: &[u8] = b"h2";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The identity in the (first) certificate of a PEM file, e.g. to revoke it.
pub fn identity_of(path: &Path) -> Result<Identity, TlsError> {
    Identity::from_der(&certs(path)?[0])
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Both sides' rustls configurations built from one set of files.
struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    identity: Identity,
}

fn build(files: &TlsFiles) -> Result<Material, TlsError> {
    let roots = roots(&files.ca)?;
    let chain = certs(&files.cert)?;
    let identity = Identity::from_der(&chain[0])?;
    let key = key(&files.key)?;

    // Every client must present a certificate from the CA: there is no anonymous access.
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Identity(format!("client verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![H2.to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![H2.to_vec()];
    Ok(Material {
        server: Arc::new(server),
        client: Arc::new(client),
        identity,
    })
}

/// A process's TLS material, reloadable in place: connections made after a reload use the
/// new files, established ones (and everything they admitted) carry on.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Material>,
}

impl Tls {
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let material = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(material),
        }))
    }

    /// Rereads the files; on error the previous material stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = material;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn with<T>(&self, f: impl FnOnce(&Material) -> T) -> T {
        f(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.with(|m| m.server.clone())
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.with(|m| m.client.clone())
    }

    /// Who this process is, by its own certificate.
    pub fn identity(&self) -> Identity {
        self.with(|m| m.identity.clone())
    }
}

#[cfg(all(test, feature = "certs"))]
mod tests;
