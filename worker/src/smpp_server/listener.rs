//! One `smsbus.smpp_server` row: its settings, its socket and its
//! sessions. The socket is opened with SO_REUSEPORT, so the workers of
//! one host listen on the same port and the kernel spreads connections
//! among them; on separate hosts each listens on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::{self, Context};

/// A listener's settings, read from its row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub listen: String,
    pub tls: Option<(String, String)>,
    pub interface_versions: Vec<String>,
    pub bind_timeout: Duration,
    pub enquire_link: Duration,
    pub inactivity_timeout: Duration,
    pub submit_window: usize,
}

pub const SETTINGS: &str = "
    SELECT name, listen, tls_cert_file, tls_key_file, interface_versions, bind_timeout_s, enquire_link_s,
           inactivity_timeout_s, submit_window
    FROM smsbus.smpp_server WHERE enabled ORDER BY name";

impl Settings {
    pub fn from_row(row: &tokio_postgres::Row) -> Settings {
        let seconds = |column: &str| Duration::from_secs(row.get::<_, i32>(column) as u64);
        let cert: Option<String> = row.get("tls_cert_file");
        let key: Option<String> = row.get("tls_key_file");
        Settings {
            name: row.get("name"),
            listen: row.get("listen"),
            tls: cert.zip(key),
            interface_versions: row.get("interface_versions"),
            bind_timeout: seconds("bind_timeout_s"),
            enquire_link: seconds("enquire_link_s"),
            inactivity_timeout: seconds("inactivity_timeout_s"),
            submit_window: row.get::<_, i32>("submit_window") as usize,
        }
    }
}

/// The TLS acceptor of a listener's `tls_cert_file` and `tls_key_file`.
pub fn acceptor(cert_file: &str, key_file: &str) -> anyhow::Result<TlsAcceptor> {
    crate::server_tls::acceptor(("tls_cert_file", cert_file), ("tls_key_file", key_file))
}

/// Opens the socket, shared with the other workers of this host.
fn listen(address: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = address
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            address
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("the name has no address"))
        })
        .with_context(|| format!("listen: cannot resolve {address}"))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("listen: cannot bind {addr}"))?;
    Ok(socket.listen(1024)?)
}

/// Listens until `stop`, then stops every session (each answers what is
/// committing and unbinds) and waits for them.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) -> anyhow::Result<()> {
    let settings = ctx.settings.clone();
    let tls = match &settings.tls {
        Some((cert, key)) => Some(acceptor(cert, key)?),
        None => None,
    };
    let listener = listen(&settings.listen)?;
    tracing::info!(server = %settings.name, listen = %settings.listen, tls = tls.is_some(), "smpp server: listening");
    let sessions = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(server = %settings.name, "smpp server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "smpp server: cannot set TCP_NODELAY: {e}");
        }
        let (ctx, stop, tls) = (ctx.clone(), stop.clone(), tls.clone());
        sessions.spawn(async move {
            match tls {
                None => session::run(ctx, stream, peer, stop).await,
                Some(tls) => {
                    let timeout = ctx.settings.bind_timeout;
                    match tokio::time::timeout(timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => session::run(ctx, stream, peer, stop).await,
                        Ok(Err(e)) => tracing::info!(%peer, "smpp server: TLS handshake failed: {e}"),
                        Err(_) => tracing::info!(%peer, "smpp server: no TLS handshake within {} s", timeout.as_secs()),
                    }
                }
            }
        });
    }
    drop(listener);
    sessions.close();
    sessions.wait().await;
    Ok(())
}
