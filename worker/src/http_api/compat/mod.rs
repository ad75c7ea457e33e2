//! Compatibility endpoints, so integrations written for other gateways
//! move to smsbus without a change: Kannel's `/cgi-bin/sendsms`
//! ([`kannel`]) and Jasmin's `/send` ([`jasmin`]). Both sign in with an
//! account's name and password (the SMPP password, `smsbus.set_password`),
//! answer in their gateway's words, and take a `dlr-url` that becomes a
//! callback of the message in the webhook outbox
//! (`smsbus._add_callback`), called as that gateway calls it
//! ([`crate::webhooks::callbacks`]).
//!
//! What the two share is here: the password check, reused for a second
//! (an argon2id verification costs the database milliseconds, and these
//! clients sign every request), the account's `throughput` as a request
//! rate, and the insert of a request's messages and callbacks in one
//! transaction, answered after its commit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;

use super::Api;
use crate::statements::{self, params};

pub mod jasmin;
pub mod kannel;

/// An account whose password was given.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    throughput: Option<f32>,
}

/// Why a sign-in failed.
#[derive(Debug)]
pub enum Denied {
    /// Unknown account, wrong password, disabled, or from outside its
    /// `allowed_ips`: the same answer for all.
    Credentials,
    /// Beyond the account's `throughput`.
    Throttled,
    /// The database could not be asked.
    Unavailable,
}

/// How long a password check is reused.
const PASSWORD_CHECK_KEPT: Duration = Duration::from_secs(1);
/// Most checks kept; beyond, the cache starts afresh.
const PASSWORD_CHECKS: usize = 10_000;

/// Recent good password checks, by account, SHA-256 of the password and
/// peer. Only good ones: a wrong password costs a verification each time.
#[derive(Default)]
pub struct Passwords {
    checks: Mutex<HashMap<Signing, (Instant, Account)>>,
}

/// An account, the SHA-256 of the password given for it, and the address
/// it was given from.
type Signing = (String, [u8; 32], Option<IpAddr>);

/// Checks `password` for `account` from `peer`, and the account's rate.
pub async fn sign_in(
    api: &Api,
    account: &str,
    password: &str,
    peer: Option<IpAddr>,
) -> Result<Account, Denied> {
    let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    let key = (account.to_owned(), digest, peer);
    let cached = {
        let checks = api
            .passwords
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        checks
            .get(&key)
            .filter(|(at, _)| at.elapsed() < PASSWORD_CHECK_KEPT)
            .map(|(_, a)| a.clone())
    };
    let signed_in = match cached {
        Some(account) => account,
        None => {
            let client = api.pool.get().await.map_err(|e| {
                tracing::warn!("http api: no connection for a password check: {e}");
                Denied::Unavailable
            })?;
            let peer_text = peer.map(|ip| ip.to_string());
            let row = statements::query_opt(
                &client,
                "SELECT a.name, a.throughput FROM smsbus.account a
                 WHERE a.name = $1 AND a.enabled
                   AND (a.allowed_ips IS NULL OR $3::text::inet <<= ANY (a.allowed_ips))
                   AND smsbus._verify_password($1, $2)",
                &params![account, password, peer_text],
            )
            .await
            .map_err(|e| {
                tracing::warn!("http api: cannot check a password: {e}");
                Denied::Unavailable
            })?
            .ok_or_else(|| {
                tracing::info!(account, ?peer, "http api: sign-in refused");
                Denied::Credentials
            })?;
            let signed_in = Account {
                name: row.get(0),
                throughput: row.get(1),
            };
            let mut checks = api
                .passwords
                .checks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if checks.len() >= PASSWORD_CHECKS {
                checks.clear();
            }
            checks.insert(key, (Instant::now(), signed_in.clone()));
            signed_in
        }
    };
    if !api
        .account_rates
        .allow(&signed_in.name, signed_in.throughput.map(f64::from))
    {
        return Err(Denied::Throttled);
    }
    Ok(signed_in)
}

/// One message of a request, in the columns of `smsbus.message`.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub to: String,
    pub body: String,
    pub from: Option<String>,
    pub channel: Option<String>,
    /// When to send: a timestamptz, or `+` and an interval from now.
    pub scheduled: Option<String>,
    /// Until when to try: the same forms.
    pub validity: Option<String>,
    pub priority: Option<i16>,
    pub request_report: Option<bool>,
    pub encoding: Option<String>,
    pub custom: Option<Value>,
}

/// A request's dlr-url, for each of its messages.
#[derive(Debug)]
pub struct Callback {
    pub style: &'static str,
    pub url: String,
    pub method: &'static str,
    pub mask: i32,
}

/// A message as inserted: its id and the status the router gave it.
#[derive(Debug)]
pub struct Inserted {
    pub id: i64,
    pub status: String,
}

/// Why a request's messages were not inserted.
#[derive(Debug)]
pub enum Refused {
    /// The extension refused one (its message, and the column it names).
    Message {
        text: String,
        column: Option<String>,
    },
    Unavailable,
}

const INSERT: &str = "
    INSERT INTO smsbus.message AS m (account, to_address, body, from_address, channel, scheduled_at,
                                      valid_until, priority, request_report, encoding, custom)
    SELECT a.name, $2::text, $3::text, $4::text, coalesce($5::text, a.channel),
           CASE WHEN $6::text IS NULL THEN now()
                WHEN left($6::text, 1) = '+' THEN now() + substr($6::text, 2)::interval
                ELSE $6::text::timestamptz END,
           CASE WHEN $7::text IS NULL THEN NULL
                WHEN left($7::text, 1) = '+' THEN now() + substr($7::text, 2)::interval
                ELSE $7::text::timestamptz END,
           coalesce($8::int2, 0), coalesce($9::bool, true), $10::text, $11::jsonb
    FROM smsbus.account a WHERE a.name = $1
    RETURNING m.id, m.status::text";

/// Inserts `messages` for `account`, each with `callback`, in one
/// transaction; answers once it committed.
pub async fn send(
    api: &Api,
    account: &Account,
    messages: &[Outgoing],
    callback: Option<&Callback>,
) -> Result<Vec<Inserted>, Refused> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!("http api: cannot insert a message: {e}");
        Refused::Unavailable
    };
    let mut client = api.pool.get().await.map_err(|e| unavailable(&e))?;
    let transaction = client.transaction().await.map_err(|e| unavailable(&e))?;
    let mut inserted = Vec::with_capacity(messages.len());
    for m in messages {
        let row = statements::query_opt(
            &transaction,
            INSERT,
            &params![
                account.name,
                m.to,
                m.body,
                m.from,
                m.channel,
                m.scheduled,
                m.validity,
                m.priority,
                m.request_report,
                m.encoding,
                m.custom
            ],
        )
        .await
        .map_err(|e| refusal(&e))?
        // The account went away since its password was checked.
        .ok_or_else(|| Refused::Message {
            text: format!("account {} does not exist", account.name),
            column: None,
        })?;
        let message = Inserted {
            id: row.get(0),
            status: row.get(1),
        };
        if let Some(c) = callback {
            statements::execute(
                &transaction,
                "SELECT smsbus._add_callback($1, $2, $3, $4, $5, $6)",
                &params![message.id, account.name, c.style, c.url, c.method, c.mask],
            )
            .await
            .map_err(|e| refusal(&e))?;
        }
        inserted.push(message);
    }
    transaction.commit().await.map_err(|e| unavailable(&e))?;
    Ok(inserted)
}

/// The extension's refusal of a message (SQLSTATE class 22 or 23), or a
/// failure of the database.
fn refusal(e: &tokio_postgres::Error) -> Refused {
    match e.as_db_error() {
        Some(db) if super::messages::refused(e) || db.code() == &SqlState::NO_DATA_FOUND => {
            Refused::Message {
                text: db.message().to_owned(),
                column: db.column().map(str::to_owned),
            }
        }
        _ => {
            tracing::warn!("http api: cannot insert a message: {e}");
            Refused::Unavailable
        }
    }
}

/// The fields of a query string or form body, their values as bytes
/// (`+` a space, `%xx` an octet), so a charset can be applied to them.
pub fn fields(encoded: &[u8]) -> Vec<(String, Vec<u8>)> {
    encoded
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (
                String::from_utf8_lossy(&decode(name)).into_owned(),
                decode(value),
            )
        })
        .collect()
}

fn decode(octets: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = octets
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced).collect()
}

/// Octets as the hexadecimal digits of an `encoding = 'binary'` body.
pub fn hex(octets: &[u8]) -> String {
    octets.iter().map(|b| format!("{b:02x}")).collect()
}

/// UTF-16BE (UCS-2) octets as text; None for an odd length or a lone
/// surrogate.
pub fn utf16be(octets: &[u8]) -> Option<String> {
    if !octets.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = octets
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// ISO-8859-1 octets as text (each octet is its code point).
pub fn latin1(octets: &[u8]) -> String {
    octets.iter().map(|&b| char::from(b)).collect()
}

/// Minutes from now as the `+interval` form of [`Outgoing`].
pub fn minutes_from_now(minutes: i64) -> String {
    format!("+{minutes} minutes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_octets() {
        let parsed = fields(b"username=acme&text=caf%E9+au+lait&to=%2B31612345678&flag&=x");
        assert_eq!(
            parsed,
            [
                ("username".to_owned(), b"acme".to_vec()),
                ("text".to_owned(), b"caf\xe9 au lait".to_vec()),
                ("to".to_owned(), b"+31612345678".to_vec()),
                ("flag".to_owned(), Vec::new()),
                (String::new(), b"x".to_vec()),
            ]
        );
    }
}
