//! Who may bind: a bind's system_id and password checked against
//! `smsbus.account`, in the order that tells a client as little as the
//! SMPP statuses allow and spends a password check (argon2id, tens of
//! milliseconds of the database's CPU) only on a client that may connect
//! from where it is.

use std::net::IpAddr;

use rusmpp::CommandStatus;

use crate::statements::{self, params};

/// The account of a bind, as its submissions need it.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub default_source: Option<String>,
    /// A PostgreSQL regular expression (checked by the database).
    pub allowed_sources: Option<String>,
    pub throughput: Option<f64>,
    pub channel: Option<String>,
    pub hex_ids: bool,
    /// Unanswered deliver_sm per bind.
    pub deliver_window: i32,
    /// How long inbound messages go to it.
    pub long_message: super::mo::LongMessage,
    /// Its messages go on in the parts it sent, with their headers.
    pub keep_udh: bool,
}

impl Account {
    /// The message id a client is told, in the account's format.
    pub fn message_id(&self, id: i64) -> String {
        if self.hex_ids {
            format!("{id:x}")
        } else {
            id.to_string()
        }
    }

    /// The message id a client gives back (query_sm and friends), read in
    /// the account's format.
    pub fn parse_message_id(&self, text: &str) -> Option<i64> {
        let text = text.trim();
        if self.hex_ids {
            i64::from_str_radix(text, 16).ok()
        } else {
            text.parse().ok()
        }
        .filter(|id| *id > 0)
    }
}

/// The kinds of bind (SMPP 3.4 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindType {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindType {
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Transmitter => "transmitter",
            BindType::Receiver => "receiver",
            BindType::Transceiver => "transceiver",
        }
    }

    pub fn transmits(self) -> bool {
        self != BindType::Receiver
    }

    pub fn receives(self) -> bool {
        self != BindType::Transmitter
    }
}

/// Why a bind is refused: the status for the client, a reason for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BindRefused {
    pub status: CommandStatus,
    pub reason: String,
}

fn refused(status: CommandStatus, reason: String) -> BindRefused {
    BindRefused { status, reason }
}

const ACCOUNT: &str = "
    SELECT a.enabled, a.bind_types, (a.allowed_ips IS NULL OR $2::inet <<= ANY (a.allowed_ips)) AS ip_allowed,
           a.default_source, a.allowed_sources, a.throughput, a.channel, a.message_id_format, a.deliver_window,
           a.long_message, a.keep_udh
    FROM smsbus.account a WHERE a.name = $1";

/// Checks a bind's credentials. A database error is refused with
/// ESME_RSYSERR by the caller.
pub async fn authenticate(
    client: &tokio_postgres::Client,
    system_id: &str,
    password: &str,
    bind_type: BindType,
    peer: IpAddr,
) -> Result<Result<Account, BindRefused>, tokio_postgres::Error> {
    let Some(row) = statements::query_opt(client, ACCOUNT, &params![system_id, peer]).await? else {
        return Ok(Err(refused(
            CommandStatus::EsmeRinvsysid,
            format!("no account {system_id:?}"),
        )));
    };
    if !row.get::<_, bool>("ip_allowed") {
        return Ok(Err(refused(
            CommandStatus::EsmeRbindfail,
            format!("account {system_id} may not connect from {peer}"),
        )));
    }
    let matches: bool = statements::query_one(
        client,
        "SELECT smsbus._verify_password($1, $2)",
        &params![system_id, password],
    )
    .await?
    .get(0);
    if !matches {
        return Ok(Err(refused(
            CommandStatus::EsmeRinvpaswd,
            format!("wrong password for account {system_id}"),
        )));
    }
    if !row.get::<_, bool>("enabled") {
        return Ok(Err(refused(
            CommandStatus::EsmeRbindfail,
            format!("account {system_id} is disabled"),
        )));
    }
    let bind_types: Vec<String> = row.get("bind_types");
    if !bind_types.iter().any(|t| t == bind_type.as_str()) {
        return Ok(Err(refused(
            CommandStatus::EsmeRbindfail,
            format!("account {system_id} may not bind as {}", bind_type.as_str()),
        )));
    }
    Ok(Ok(Account {
        name: system_id.to_owned(),
        default_source: row.get("default_source"),
        allowed_sources: row.get("allowed_sources"),
        throughput: row.get::<_, Option<f32>>("throughput").map(f64::from),
        channel: row.get("channel"),
        hex_ids: row.get::<_, String>("message_id_format") == "hex",
        deliver_window: row.get("deliver_window"),
        long_message: super::mo::LongMessage::from_setting(row.get("long_message")),
        keep_udh: row.get("keep_udh"),
    }))
}
