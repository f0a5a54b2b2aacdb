//! HTTP endpoints (/metrics, /status) on the same kind of listener as gRPC: handshakes and
//! connections bounded as in `admission.rs`, and, with TLS, only callers whose verified
//! certificate has one of the allowed roles (others are closed after the handshake).

use std::{io, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

use super::{Conn, ConnInfo, Limits, Role, Tls, incoming};

/// An `axum::serve` listener over `tls::incoming`.
pub struct HttpListener {
    incoming: ReceiverStream<io::Result<Conn>>,
    local: SocketAddr,
    allowed: &'static [Role],
    tls: bool,
}

impl HttpListener {
    /// Serves `listener` with `tls` (None: plain text, anyone local to the address) to
    /// callers of the `allowed` roles.
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<Tls>>,
        limits: Limits,
        allowed: &'static [Role],
    ) -> io::Result<HttpListener> {
        let local = listener.local_addr()?;
        let secure = tls.is_some();
        Ok(HttpListener {
            incoming: incoming(listener, tls, limits),
            local,
            allowed,
            tls: secure,
        })
    }

    fn admits(&self, info: &ConnInfo) -> bool {
        !self.tls
            || info
                .identity
                .as_ref()
                .is_ok_and(|who| self.allowed.contains(&who.role))
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    /// Who is connected: handlers read it with `ConnectInfo<ConnInfo>` (serve the router
    /// `into_make_service_with_connect_info::<ConnInfo>()`), to check it per request.
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Conn, ConnInfo) {
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) if self.admits(&conn.info) => {
                    let info = conn.info.clone();
                    return (conn, info);
                }
                Some(Ok(conn)) => {
                    tracing::warn!(remote = ?conn.info.remote, identity = ?conn.info.identity, allowed = ?self.allowed, "HTTP caller refused: role not allowed");
                }
                Some(Err(e)) => tracing::warn!(error = %e, "HTTP accept failed"),
                // The accepting task has ended (the runtime is going down).
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnInfo> {
        Ok(ConnInfo {
            remote: Some(self.local),
            identity: Err(Arc::from("the listener itself")),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for ConnInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> ConnInfo {
        stream.remote_addr().clone()
    }
}
