//! The link to the provider: the TCP connection (TLS over it when the
//! channel asks), framed by [`SmppCodec`], bound and, at the end, unbound.
//! What happens while bound is the session's ([`super::session`]).

use std::str::FromStr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::codec::{Frame, SmppCodec};
use super::config::{BindMode, SmppConfig};
use super::error::{Closing, SessionError, Writing};

/// How long an unbind waits for its answer before the socket is closed.
const UNBIND_WAIT: Duration = Duration::from_secs(2);

/// A connection to the provider, plain or TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(super) type Link = Framed<Box<dyn Stream>, SmppCodec>;

/// Opens the connection (and TLS with `tls`), each step bounded by
/// `connect_timeout_s`; None when `stop` comes first.
pub(super) async fn connect(
    channel: &str,
    config: &SmppConfig,
    tls: Option<&TlsConnector>,
    stop: &CancellationToken,
) -> Option<Result<Link, SessionError>> {
    let address = format!("{}:{}", config.host, config.port);
    let connect = tokio::time::timeout(config.connect_timeout(), TcpStream::connect(&address));
    let stream = tokio::select! {
        _ = stop.cancelled() => return None,
        result = connect => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Some(Err(SessionError::Connect { address, source })),
            Err(_) => return Some(Err(SessionError::ConnectTimeout { address })),
        },
    };
    if let Err(e) = stream.set_nodelay(true) {
        // Only latency suffers: small PDUs may wait for Nagle's timer.
        tracing::debug!(
            channel,
            "cannot set TCP_NODELAY on the link to {address}: {e}"
        );
    }
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(stream),
        Some(connector) => {
            let handshake = tokio::time::timeout(
                config.connect_timeout(),
                super::tls::handshake(connector, &config.host, stream),
            );
            match handshake.await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return Some(Err(SessionError::TlsTimeout { address })),
            }
        }
    };
    Some(Ok(Framed::new(stream, SmppCodec::new())))
}

/// Binds as `mode` with the request number `sequence`, waiting at most
/// `response_timeout_s` for the answer.
pub(super) async fn bind(
    link: &mut Link,
    config: &SmppConfig,
    mode: BindMode,
    sequence: u32,
    stop: &CancellationToken,
) -> Result<(), SessionError> {
    let (system_id, password, system_type, range) = (
        text(&config.system_id, "system_id")?,
        text(&config.password, "password")?,
        text(&config.system_type, "system_type")?,
        text(&config.address_range, "address_range")?,
    );
    let version = InterfaceVersion::from(config.interface_version_byte());
    // The three binds carry the same fields.
    macro_rules! bind {
        ($kind:ident) => {
            $kind::new(
                system_id,
                password,
                system_type,
                version,
                Ton::Unknown,
                Npi::Unknown,
                range,
            )
            .into()
        };
    }
    let pdu: Pdu = match mode {
        BindMode::Transmitter => bind!(BindTransmitter),
        BindMode::Receiver => bind!(BindReceiver),
        BindMode::Transceiver | BindMode::TxRx => bind!(BindTransceiver),
    };
    link.send(Command::new(CommandStatus::EsmeRok, sequence, pdu))
        .await
        .map_err(SessionError::write(Writing::Bind))?;
    let deadline = tokio::time::sleep(config.response_timeout());
    tokio::pin!(deadline);
    loop {
        let frame = tokio::select! {
            _ = &mut deadline => return Err(SessionError::BindUnanswered),
            _ = stop.cancelled() => return Err(SessionError::StoppedWhileBinding),
            frame = link.next() => frame,
        };
        match frame {
            None => return Err(SessionError::Closed(Closing::DuringBind)),
            Some(Err(e)) => return Err(SessionError::ReadDuringBind(e)),
            Some(Ok(Frame::Command(command))) if command.sequence_number() == sequence => {
                let status = command.status();
                if status == CommandStatus::EsmeRok {
                    return Ok(());
                }
                return Err(SessionError::BindRefused { status });
            }
            Some(Ok(Frame::Command(command))) if command.id() == CommandId::GenericNack => {
                let status = command.status();
                return Err(SessionError::BindRefused { status });
            }
            // Anything else before the bind answer is ignored.
            Some(Ok(_)) => {}
        }
    }
}

/// Sends an unbind numbered `sequence`, waits a little for its answer
/// (whatever else arrives meanwhile is dropped: the window was drained
/// before) and closes the link. Best effort: the session is over either
/// way, so a link that fails now is only logged.
pub(super) async fn unbind(channel: &str, link: &mut Link, sequence: u32) {
    if let Err(e) = link
        .send(Command::new(CommandStatus::EsmeRok, sequence, Pdu::Unbind))
        .await
    {
        tracing::debug!(channel, "cannot send unbind, closing without it: {e}");
        return;
    }
    let answered = async {
        while let Some(Ok(frame)) = link.next().await {
            if let Frame::Command(c) = frame {
                if c.id() == CommandId::UnbindResp {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(UNBIND_WAIT, answered).await.is_err() {
        tracing::debug!(channel, "no unbind_resp within {UNBIND_WAIT:?}, closing");
    }
    if let Err(e) = link.close().await {
        tracing::debug!(channel, "closing the link after unbind: {e}");
    }
}

/// A config value as a bind field, or the field's name and why not.
fn text<const MIN: usize, const MAX: usize>(
    value: &str,
    field: &'static str,
) -> Result<COctetString<MIN, MAX>, SessionError> {
    COctetString::from_str(value).map_err(|e| SessionError::BindField {
        field,
        reason: e.to_string(),
    })
}
