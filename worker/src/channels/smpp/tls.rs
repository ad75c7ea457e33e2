//! TLS for providers that require it (rustls on the ring provider): the
//! provider's certificate is checked against `tls_ca` (a PEM file) or, by
//! default, the system's roots, and must name `host`.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::SmppConfig;
use super::error::SessionError;

/// The connector for a channel; errors name the setting at fault.
pub fn connector(config: &SmppConfig) -> anyhow::Result<TlsConnector> {
    let client = crate::channels::tls::client_config(config.tls_ca.as_deref())?;
    Ok(TlsConnector::from(Arc::new(client)))
}

/// The TLS handshake over a connected socket.
pub async fn handshake(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, SessionError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| SessionError::TlsServerName {
        host: host.to_owned(),
        reason: e.to_string(),
    })?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|source| SessionError::TlsHandshake {
            host: host.to_owned(),
            source,
        })
}
