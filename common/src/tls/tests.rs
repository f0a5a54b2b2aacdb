//! The TLS layer on loopback: who gets in, and with which identity.

use std::{path::Path, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

use super::{
    Identity, Limits, Role, Tls, TlsFiles, client, incoming,
    issue::{self, Leaf, Pem, Validity},
};

fn write(dir: &Path, name: &str, pem: &Pem) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, &pem.cert).unwrap();
    std::fs::write(&key, &pem.key).unwrap();
    (cert, key)
}

struct Pki {
    dir: std::path::PathBuf,
    ca: Pem,
    ca_path: std::path::PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("rdmaq-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = issue::new_ca("test CA", Validity::days_from_now(10)).unwrap();
        let (ca_path, _) = write(&dir, "ca", &ca);
        Pki { dir, ca, ca_path }
    }

    fn files(&self, role: Role, name: &str, validity: Validity) -> TlsFiles {
        let leaf = Leaf {
            role,
            name: name.into(),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            validity,
        };
        let pem = issue::issue(&self.ca, &leaf).unwrap();
        let (cert, key) = write(&self.dir, &format!("{role}-{name}"), &pem);
        TlsFiles {
            ca: self.ca_path.clone(),
            cert,
            key,
        }
    }

    fn tls(&self, role: Role, name: &str) -> Arc<Tls> {
        Tls::load(self.files(role, name, Validity::days_from_now(10))).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a TLS listener as member 1 and returns the address and the accepted stream.
async fn serve(
    pki: &Pki,
) -> (
    String,
    tokio_stream::wrappers::ReceiverStream<std::io::Result<super::listener::Conn>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = pki.tls(Role::Member, "1");
    (addr, incoming(listener, Some(server), Limits::default()))
}

async fn dial(addr: &str, tls: Arc<Tls>) -> std::io::Result<()> {
    let uri: tonic::transport::Uri = format!("http://{addr}").parse().unwrap();
    let mut io = client::connect(tls, uri).await?.into_inner();
    // TLS 1.3 finishes the client's side before the server has judged the client's
    // certificate; a round of I/O is what surfaces a refusal.
    use tokio::io::AsyncWriteExt;
    io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    io.flush().await
}

async fn accepted(
    conns: &mut tokio_stream::wrappers::ReceiverStream<std::io::Result<super::listener::Conn>>,
) -> Option<Arc<Identity>> {
    let conn = tokio::time::timeout(Duration::from_secs(1), conns.next())
        .await
        .ok()??;
    Some(conn.unwrap().connect_info().identity.unwrap())
}

#[tokio::test]
async fn a_certificate_from_the_ca_is_accepted_with_its_role_and_name() {
    let pki = Pki::new("ok");
    let (addr, mut conns) = serve(&pki).await;
    dial(&addr, pki.tls(Role::Agent, "n1")).await.unwrap();
    let who = accepted(&mut conns).await.expect("the agent is accepted");
    assert_eq!((who.role, who.name.as_str()), (Role::Agent, "n1"));
    assert!(who.subject.contains("OU=agent"), "{}", who.subject);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new("nocert");
    let (addr, mut conns) = serve(&pki).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in super::certs(&pki.ca_path).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(accepted(&mut conns).await.is_none());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let pki = Pki::new("ours");
    let other = Pki::new("theirs");
    let (addr, mut conns) = serve(&pki).await;
    // Their client against our server.
    let _ = dial(&addr, other.tls(Role::Admin, "mallory")).await;
    assert!(accepted(&mut conns).await.is_none());
    // Our CA, but a server from theirs: the client refuses it.
    let (their_addr, _their_conns) = serve(&other).await;
    assert!(
        dial(&their_addr, pki.tls(Role::Admin, "alice"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new("expired");
    let (addr, mut conns) = serve(&pki).await;
    let old = Validity {
        not_before: (2020, 1, 1),
        not_after: (2021, 1, 1),
    };
    let tls = Tls::load(pki.files(Role::Admin, "old", old)).unwrap();
    let _ = dial(&addr, tls).await;
    assert!(accepted(&mut conns).await.is_none());
}

#[tokio::test]
async fn reload_switches_to_the_new_files_for_new_connections() {
    let pki = Pki::new("reload");
    let files = pki.files(Role::Viewer, "v", Validity::days_from_now(10));
    let tls = Tls::load(files.clone()).unwrap();
    assert_eq!(tls.identity().role, Role::Viewer);
    // Rotate the files in place to an admin certificate, then reload.
    let admin = pki.files(Role::Admin, "a", Validity::days_from_now(10));
    std::fs::copy(&admin.cert, &files.cert).unwrap();
    std::fs::copy(&admin.key, &files.key).unwrap();
    tls.reload().unwrap();
    assert_eq!(tls.identity().role, Role::Admin);
    // A broken file keeps the previous material.
    std::fs::write(&files.cert, "garbage").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.identity().role, Role::Admin);
}

#[test]
fn identity_needs_the_rdmaq_organization_and_one_role() {
    let pki = Pki::new("ident");
    // The CA itself has no OU: not an identity.
    let der = super::certs(&pki.ca_path).unwrap().remove(0);
    let err = Identity::from_der(&der).unwrap_err().to_string();
    assert!(err.contains("OU"), "{err}");
    assert!(
        Role::ALL
            .iter()
            .all(|r| r.as_str().parse::<Role>().ok() == Some(*r))
    );
    assert!("root".parse::<Role>().is_err());
}

#[test]
fn dates_parse_strictly() {
    assert_eq!(issue::parse_date("2027-02-03").unwrap(), (2027, 2, 3));
    for bad in ["2027-13-01", "2027-02", "tomorrow", "1900-01-01", ""] {
        assert!(issue::parse_date(bad).is_err(), "{bad}");
    }
}
