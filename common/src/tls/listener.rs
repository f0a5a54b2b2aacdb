//! The server side: accepts TCP connections, does the TLS handshake off the accept loop
//! (so a slow or silent client holds up nobody), reads the peer's identity once per
//! connection, and caps how many connections are open at once.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::{
    Identity, Tls,
    admission::{Admission, Limits},
};

/// What a request knows about its connection (tonic puts it in the request extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The verified peer, or why its verified certificate names no rdmaq identity.
    pub identity: Result<Arc<Identity>, Arc<str>>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted, authenticated connection; its slot is freed when it closes.
pub struct Conn {
    stream: Stream,
    pub(super) info: ConnInfo,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<&Tls>,
) -> Result<(Stream, ConnInfo), String> {
    let Some(tls) = tls else {
        let info = ConnInfo {
            remote: Some(remote),
            identity: Ok(Arc::new(Identity::insecure())),
        };
        return Ok((Stream::Plain(tcp), info));
    };
    let stream = TlsAcceptor::from(tls.server_config())
        .accept(tcp)
        .await
        .map_err(|e| e.to_string())?;
    let identity = match stream.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => Identity::from_der(leaf)
            .map(Arc::new)
            .map_err(|e| Arc::from(e.to_string())),
        // The verifier demands a certificate, so this is only a belt to the braces.
        _ => Err(Arc::from("no client certificate")),
    };
    let info = ConnInfo {
        remote: Some(remote),
        identity,
    };
    Ok((Stream::Tls(Box::new(stream)), info))
}

/// Serves `listener` as a stream of authenticated connections for tonic's
/// `serve_with_incoming`. With `tls` None the connections are plain text and every caller
/// is [`Identity::insecure`].
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    limits: Limits,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let admission = Arc::new(Admission::new(limits));
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let handshaking = match admission.begin(remote.ip()) {
                Ok(h) => h,
                Err(why) => {
                    tracing::debug!(%remote, ?why, "connection closed before the handshake");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let tls = tls.clone();
            let admission = admission.clone();
            tokio::spawn(async move {
                let shaken = tokio::time::timeout(
                    admission.handshake_timeout(),
                    handshake(tcp, remote, tls.as_deref()),
                )
                .await;
                drop(handshaking);
                match shaken {
                    Ok(Ok((stream, info))) => {
                        let slot = match admission.open(info.identity.as_deref().ok()) {
                            Ok(slot) => slot,
                            Err(why) => {
                                tracing::warn!(%remote, ?why, "connection limit reached, closing");
                                return;
                            }
                        };
                        let conn = Conn {
                            stream,
                            info,
                            _slot: slot,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
