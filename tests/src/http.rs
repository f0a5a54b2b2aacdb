//! An HTTP/1.1 GET for the members' and agents' `/metrics` and `/status` in tests, plain or
//! over TLS with a client certificate.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
};

/// The whole response (headers and body) to `GET path` on `addr`.
pub fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("reading the response");
    body
}

/// `get` over TLS as `who`; the error says how the server refused (handshake or close).
pub fn get_tls(addr: SocketAddr, path: &str, who: &crate::pki::Cert) -> Result<String, String> {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(who.load().client_config(), name)
        .map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    tls.read_to_string(&mut body).map_err(|e| e.to_string())?;
    if body.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(body)
}

/// One sample of a `/metrics` body: `name` with its labels as exposed
/// (`rdmaq_grants_total`, `rdmaq_write_stage_seconds_sum{stage="append"}`).
pub fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
