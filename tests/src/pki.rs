//! Certificates for the tests, issued with the real `rdmaq certs` commands: a CA per
//! cluster, member certificates for its addresses, and admin, viewer and per-node agent
//! certificates for clients.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use rdmaq_common::tls::{self, Tls, TlsFiles};
use tonic::transport::Channel;

use crate::bins::bin;

pub struct Pki {
    pub dir: PathBuf,
}

/// One holder's files.
#[derive(Debug, Clone)]
pub struct Cert {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    /// `--tls-ca CA --tls-cert CERT --tls-key KEY`, as every rdmaq binary takes them.
    pub fn flags(&self) -> Vec<String> {
        [
            ("--tls-ca", &self.ca),
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
        ]
        .into_iter()
        .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
        .collect()
    }

    /// The `[tls]` table of a config file.
    pub fn toml(&self) -> String {
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }

    pub fn load(&self) -> Arc<Tls> {
        Tls::load(TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
        .unwrap_or_else(|e| panic!("loading {}: {e}", self.cert.display()))
    }

    /// A lazily connecting gRPC channel to `addr` with this certificate.
    pub fn channel(&self, addr: &str, timeout: Duration) -> Channel {
        let ep = tls::endpoint(addr, Duration::from_millis(500)).expect("a valid address");
        tls::connect_lazy(ep.timeout(timeout), Some(self.load()))
    }
}

fn rdmaq(args: &[&str]) {
    let out = Command::new(bin("rdmaq"))
        .args(args)
        .output()
        .expect("running rdmaq certs");
    assert!(
        out.status.success(),
        "rdmaq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA in `dir` (`rdmaq certs init`).
    pub fn new(dir: &Path) -> Pki {
        rdmaq(&["certs", "init", &dir.display().to_string(), "--force"]);
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues (once) a certificate for `role` and `name`, with `extra` flags.
    pub fn issue(&self, role: &str, name: &str, extra: &[&str]) -> Cert {
        let prefix = self.dir.join(format!("{role}-{name}"));
        let cert = Cert {
            ca: self.ca(),
            cert: prefix.with_extension("pem"),
            key: self.dir.join(format!("{role}-{name}-key.pem")),
        };
        if !cert.cert.exists() || !extra.is_empty() {
            let dir = self.dir.display().to_string();
            let out = prefix.display().to_string();
            let mut args = vec![
                "certs", "issue", "--dir", &dir, "--role", role, "--name", name, "--out", &out,
            ];
            args.extend_from_slice(extra);
            rdmaq(&args);
        }
        cert
    }

    /// A member certificate for the addresses it is dialled at.
    pub fn member(&self, id: u64, hosts: &[String]) -> Cert {
        let mut extra = Vec::new();
        for h in hosts {
            extra.push("--san");
            extra.push(h.as_str());
        }
        self.issue("member", &id.to_string(), &extra)
    }

    pub fn admin(&self) -> Cert {
        self.issue("admin", "test-admin", &[])
    }

    pub fn viewer(&self) -> Cert {
        self.issue("viewer", "test-viewer", &[])
    }

    /// The agent certificate of `node`.
    pub fn agent(&self, node: &str) -> Cert {
        self.issue("agent", node, &[])
    }
}
