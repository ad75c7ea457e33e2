//! Why an SMPP session ended. Every variant surfaces in the same two
//! places: the worker's log (`reconnecting in …`) and, as the reason,
//! `channel_state.last_error` while no session of the channel is bound.
//! A session reconnects with backoff after any of them; a refused bind
//! ([`SessionError::is_refusal`]) is logged as an error, since the account
//! or its settings must change before it can succeed, the rest as warnings.

use std::io;

use rusmpp::CommandStatus;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The TCP connection could not be opened (`link::connect`).
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    /// The TCP connection did not open within `connect_timeout_s`.
    #[error("cannot connect to {address}: timed out")]
    ConnectTimeout { address: String },
    /// `host` cannot be checked against a certificate (`tls::handshake`).
    #[error("tls: {host:?} is not a valid server name: {reason}")]
    TlsServerName { host: String, reason: String },
    /// The TLS handshake failed: certificate, protocol (`tls::handshake`).
    #[error("TLS handshake with {host} failed: {source}")]
    TlsHandshake { host: String, source: io::Error },
    /// The TLS handshake did not finish within `connect_timeout_s`.
    #[error("TLS handshake with {address} timed out")]
    TlsTimeout { address: String },
    /// A bind field from the config does not fit in its PDU field
    /// (`link::bind`; config validation should have caught it).
    #[error("{field}: {reason}")]
    BindField { field: &'static str, reason: String },
    /// The provider answered the bind with an error status (`link::bind`):
    /// wrong system_id or password, an account not allowed this bind.
    #[error("bind refused: {}", status_text(*.status))]
    BindRefused { status: CommandStatus },
    /// No answer to the bind within `response_timeout_s` (`link::bind`).
    #[error("no answer to the bind")]
    BindUnanswered,
    /// The channel stopped before the bind was answered (`link::bind`).
    #[error("stopped while binding")]
    StoppedWhileBinding,
    /// The provider closed the connection; when, it says.
    #[error("{0}")]
    Closed(Closing),
    /// Reading from the link failed before the bind was answered.
    #[error("during the bind: {0}")]
    ReadDuringBind(io::Error),
    /// Reading from the bound link failed.
    #[error("link error: {0}")]
    Read(io::Error),
    /// Writing `what` to the link failed.
    #[error("cannot {what}: {source}")]
    Write { what: Writing, source: io::Error },
    /// The provider sent an unbind; we answered it.
    #[error("the provider unbound")]
    ProviderUnbound,
    /// An enquire_link went unanswered for `response_timeout_s`.
    #[error("no enquire_link_resp within {seconds}s: the link is dead")]
    EnquireLinkUnanswered { seconds: f64 },
}

impl SessionError {
    /// The provider refused the bind: retrying alone will not mend it.
    pub fn is_refusal(&self) -> bool {
        matches!(self, SessionError::BindRefused { .. })
    }

    pub(super) fn write(what: Writing) -> impl FnOnce(io::Error) -> SessionError {
        move |source| SessionError::Write { what, source }
    }
}

/// When the provider closed the connection.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[non_exhaustive]
pub enum Closing {
    #[error("connection closed during the bind")]
    DuringBind,
    #[error("the provider closed the connection")]
    WhileBound,
    #[error("connection lost while stopping")]
    WhileStopping,
}

/// What could not be written to the link.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[non_exhaustive]
pub enum Writing {
    #[error("send the bind")]
    Bind,
    #[error("write submit_sm")]
    SubmitSm,
    #[error("send enquire_link")]
    EnquireLink,
    #[error("answer enquire_link")]
    EnquireLinkResp,
    /// A deliver_sm_resp, data_sm_resp or generic_nack.
    #[error("answer")]
    Answer,
}

/// `ESME_RTHROTTLED (0x00000058)`.
pub fn status_text(status: CommandStatus) -> String {
    let code = u32::from(status);
    let name = format!("{status:?}");
    let name = if name.starts_with("Other") {
        "unknown status".to_owned()
    } else {
        // EsmeRthrottled -> ESME_RTHROTTLED
        name.replacen("Esme", "ESME_", 1).to_ascii_uppercase()
    };
    format!("{name} (0x{code:08X})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_bind_reads_as_one_and_stands_apart() {
        let refused = SessionError::BindRefused {
            status: CommandStatus::EsmeRinvpaswd,
        };
        assert_eq!(
            refused.to_string(),
            "bind refused: ESME_RINVPASWD (0x0000000E)"
        );
        assert!(refused.is_refusal());
        let lost = SessionError::Closed(Closing::WhileBound);
        assert_eq!(lost.to_string(), "the provider closed the connection");
        assert!(!lost.is_refusal());
    }

    #[test]
    fn errors_read_as_the_operator_knows_them() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        let cases = [
            (
                SessionError::write(Writing::SubmitSm)(reset()),
                "cannot write submit_sm: connection reset",
            ),
            (
                SessionError::write(Writing::Answer)(reset()),
                "cannot answer: connection reset",
            ),
            (
                SessionError::ConnectTimeout {
                    address: "smsc:2775".into(),
                },
                "cannot connect to smsc:2775: timed out",
            ),
            (
                SessionError::EnquireLinkUnanswered { seconds: 2.5 },
                "no enquire_link_resp within 2.5s: the link is dead",
            ),
            (
                SessionError::ReadDuringBind(reset()),
                "during the bind: connection reset",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn statuses_read_as_the_specification_names_them() {
        assert_eq!(
            status_text(CommandStatus::EsmeRthrottled),
            "ESME_RTHROTTLED (0x00000058)"
        );
        assert_eq!(
            status_text(CommandStatus::Other(0x0400)),
            "unknown status (0x00000400)"
        );
    }
}
