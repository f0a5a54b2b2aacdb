//! The client side: tonic channels whose connections are made by rustls with this process's
//! certificate, verifying the server against the CA and the address dialled.

use std::{io, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Tls, TlsError};

/// An endpoint for `host:port` (or a full `http://` URL), with the connect timeout set.
pub fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, TlsError> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(url)
        .map(|e| e.connect_timeout(connect_timeout).tcp_nodelay(true))
        .map_err(|e| TlsError::Endpoint {
            endpoint: address.to_string(),
            reason: e.to_string(),
        })
}

pub(super) async fn connect(
    tls: Arc<Tls>,
    uri: Uri,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let bad =
        |reason: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {reason}"));
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    // The URI keeps IPv6 literals bracketed; a server name and a socket address do not.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| bad("not a valid server name"))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls.client_config())
        .connect(server_name, tcp)
        .await?;
    Ok(TokioIo::new(stream))
}

/// A channel that connects when first used (and again after a failure), over TLS when `tls`
/// is given, in plain text otherwise. Each new connection uses the material current then.
pub fn connect_lazy(endpoint: Endpoint, tls: Option<Arc<Tls>>) -> Channel {
    match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            connect(tls.clone(), uri)
        })),
    }
}
