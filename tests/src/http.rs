//! A plain HTTP/1.1 GET for the members' and agents' `/metrics` and `/status` in tests.

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
