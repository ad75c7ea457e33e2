//! What a client asks of the messages it submitted: `query_sm` (SMPP 3.4
//! §4.8), their state, from the queue or the archive; `cancel_sm` (§4.9),
//! taking back messages not yet claimed by a channel (they become
//! `cancelled`); `replace_sm` (§4.10), a new text, validity, schedule or
//! receipt request for a message not yet claimed. A message of another
//! account is answered as one that does not exist.

use std::str::FromStr;

use rusmpp::pdus::QuerySmResp;
use rusmpp::types::{COctetString, EmptyOrFullCOctetString};
use rusmpp::CommandStatus;

use super::account::Account;
use super::receipt::smpp_state;
use super::smpp_time;
use crate::channels::smpp::carried::Carried;
use crate::channels::smpp::inbound;
use crate::statements::{self, params};
use smsbus_core::address;
use smsbus_core::text::Encoding;

/// Finds message `$1` of account `$2`, in the queue first. The final date
/// is SMPP's absolute time in UTC (`YYMMDDhhmmsstnnp`, §7.1.1.1).
const QUERY: &str = "
    SELECT m.status::text, to_char(m.done AT TIME ZONE 'UTC', 'YYMMDDHH24MISS') || '000+', m.last_error
    FROM (SELECT q.status, coalesce(q.delivered_at, q.updated_at) AS done, q.last_error, 1 AS rank
          FROM smsbus.message q WHERE q.id = $1 AND q.account = $2
          UNION ALL
          SELECT a.status, coalesce(a.delivered_at, a.updated_at), a.last_error, 2
          FROM smsbus.message_archive a WHERE a.id = $1 AND a.account = $2) m
    ORDER BY m.rank
    LIMIT 1";

/// The answer to a query_sm, or the status that refuses it.
pub async fn query_sm(
    pool: &deadpool_postgres::Pool,
    account: &Account,
    message_id: &str,
) -> Result<QuerySmResp, CommandStatus> {
    let Some(id) = account.parse_message_id(message_id) else {
        return Err(CommandStatus::EsmeRinvmsgid);
    };
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(account = %account.name, "smpp server: cannot answer query_sm: {e}");
        CommandStatus::EsmeRqueryfail
    };
    let client = pool.get().await.map_err(|e| unavailable(&e))?;
    let row = statements::query_opt(&client, QUERY, &params![id, account.name])
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or(CommandStatus::EsmeRinvmsgid)?;
    let status: String = row.get(0);
    let final_date: String = row.get(1);
    let last_error: Option<String> = row.get(2);
    let (_, state) = smpp_state(&status);
    let is_final = !matches!(status.as_str(), "scheduled" | "queued" | "sending" | "sent");
    let final_date = if is_final {
        EmptyOrFullCOctetString::from_str(&final_date).map_err(|e| unavailable(&e))?
    } else {
        EmptyOrFullCOctetString::empty()
    };
    Ok(QuerySmResp::builder()
        .message_id(COctetString::from_str(message_id).map_err(|e| unavailable(&e))?)
        .final_date(final_date)
        .message_state(state)
        .error_code(error_code(last_error.as_deref()))
        .build())
}

/// Cancels message `$1` of account `$2` if no channel claimed it yet (why
/// in `$3`), and gives its parts back to the account's credit, if it keeps
/// one. The HTTP API's DELETE uses it too.
pub const CANCEL_ONE: &str = "
    WITH cancelled AS (
        UPDATE smsbus.message m SET status = 'cancelled', last_error = $3
        WHERE m.id = $1 AND m.account = $2 AND m.status IN ('scheduled', 'queued')
        RETURNING m.id, m.segments
    ), refunded AS (
        UPDATE smsbus.account a SET credit = a.credit + (SELECT sum(c.segments) FROM cancelled c)
        WHERE a.name = $2 AND a.credit IS NOT NULL AND EXISTS (SELECT FROM cancelled)
    )
    SELECT c.id FROM cancelled c";

/// Every message of account `$1` to `$2` (from `$3`, when given) not yet
/// claimed, with the credit given back likewise.
const CANCEL_MATCHING: &str = "
    WITH cancelled AS (
        UPDATE smsbus.message m SET status = 'cancelled', last_error = 'cancelled by the client (cancel_sm)'
        WHERE m.account = $1 AND m.direction = 'out' AND m.to_address = $2
          AND ($3::text IS NULL OR m.from_address = $3) AND m.status IN ('scheduled', 'queued')
        RETURNING m.id, m.segments
    ), refunded AS (
        UPDATE smsbus.account a SET credit = a.credit + (SELECT sum(c.segments) FROM cancelled c)
        WHERE a.name = $1 AND a.credit IS NOT NULL AND EXISTS (SELECT FROM cancelled)
    )
    SELECT c.id FROM cancelled c";

const EXISTS: &str = "
    SELECT EXISTS (SELECT FROM smsbus.message q WHERE q.id = $1 AND q.account = $2)
        OR EXISTS (SELECT FROM smsbus.message_archive a WHERE a.id = $1 AND a.account = $2)";

fn database_error(account: &Account, what: &str, e: &dyn std::fmt::Display) -> CommandStatus {
    tracing::warn!(account = %account.name, "smpp server: cannot answer {what}: {e}");
    CommandStatus::EsmeRsyserr
}

/// Answers cancel_sm: one message by id, or (no id) every message to the
/// destination, from the source when given. `Ok` with how many.
pub async fn cancel_sm(
    pool: &deadpool_postgres::Pool,
    account: &Account,
    message_id: &str,
    (source, source_ton): (&str, u8),
    (destination, dest_ton): (&str, u8),
) -> Result<u64, CommandStatus> {
    let failed = |e: &dyn std::fmt::Display| database_error(account, "cancel_sm", e);
    let client = pool.get().await.map_err(|e| failed(&e))?;
    if message_id.is_empty() {
        let to = address::destination(&inbound::address(destination, dest_ton))
            .map_err(|_| CommandStatus::EsmeRinvdstadr)?
            .text;
        let from = if source.is_empty() {
            None
        } else {
            Some(
                address::sender(&inbound::address(source, source_ton))
                    .map_err(|_| CommandStatus::EsmeRinvsrcadr)?
                    .text,
            )
        };
        let rows = statements::query(&client, CANCEL_MATCHING, &params![account.name, to, from])
            .await
            .map_err(|e| failed(&e))?;
        return match rows.len() {
            0 => Err(CommandStatus::EsmeRcancelfail),
            n => Ok(n as u64),
        };
    }
    let id = account
        .parse_message_id(message_id)
        .ok_or(CommandStatus::EsmeRinvmsgid)?;
    let cancelled = statements::query_opt(
        &client,
        CANCEL_ONE,
        &params![id, account.name, "cancelled by the client (cancel_sm)"],
    )
    .await
    .map_err(|e| failed(&e))?;
    if cancelled.is_some() {
        return Ok(1);
    }
    let exists: bool = statements::query_one(&client, EXISTS, &params![id, account.name])
        .await
        .map_err(|e| failed(&e))?
        .get(0);
    // It exists but a channel has it, or it is done.
    Err(if exists {
        CommandStatus::EsmeRcancelfail
    } else {
        CommandStatus::EsmeRinvmsgid
    })
}

/// What a replace_sm asks to change.
pub struct Replacement<'a> {
    pub message_id: &'a str,
    pub short_message: &'a [u8],
    pub tlvs: &'a [rusmpp::tlvs::Tlv],
    pub schedule: &'a [u8],
    pub validity: &'a [u8],
    pub registered_delivery: u8,
}

const LOCK: &str = "
    SELECT m.status::text, coalesce(m.encoding, 'gsm7') FROM smsbus.message m
    WHERE m.id = $1 AND m.account = $2 FOR UPDATE";

/// `$3` body (null: kept), `$4`/`$5` SMPP times as text (null: kept),
/// `$6` receipts (0: none).
const REPLACE: &str = "
    UPDATE smsbus.message m
    SET body = coalesce($3, m.body),
        -- A new text is cut anew: the client's parts were of the old one.
        client_parts = CASE WHEN $3 IS NULL THEN m.client_parts END,
        scheduled_at = CASE WHEN $4::text IS NULL THEN m.scheduled_at
                            WHEN left($4, 1) = '+' THEN now() + substr($4, 2)::interval
                            ELSE $4::timestamptz END,
        valid_until = CASE WHEN $5::text IS NULL THEN m.valid_until
                           WHEN left($5, 1) = '+' THEN now() + substr($5, 2)::interval
                           ELSE $5::timestamptz END,
        receipts = nullif($6::smallint, 0)
    WHERE m.id = $1 AND m.account = $2";

/// Answers replace_sm for a message not yet claimed by a channel; the
/// new text is read in the message's data coding (replace_sm has none of
/// its own). A new schedule only for a message still scheduled.
pub async fn replace_sm(
    pool: &deadpool_postgres::Pool,
    account: &Account,
    replacement: &Replacement<'_>,
) -> Result<(), CommandStatus> {
    let failed = |e: &dyn std::fmt::Display| database_error(account, "replace_sm", e);
    let id = account
        .parse_message_id(replacement.message_id)
        .ok_or(CommandStatus::EsmeRinvmsgid)?;
    let schedule =
        smpp_time::parse(replacement.schedule).map_err(|_| CommandStatus::EsmeRinvsched)?;
    let validity =
        smpp_time::parse(replacement.validity).map_err(|_| CommandStatus::EsmeRinvexpiry)?;
    let mut client = pool.get().await.map_err(|e| failed(&e))?;
    let tx = client.transaction().await.map_err(|e| failed(&e))?;
    let Some(row) = statements::query_opt(&tx, LOCK, &params![id, account.name])
        .await
        .map_err(|e| failed(&e))?
    else {
        let exists: bool = statements::query_one(&tx, EXISTS, &params![id, account.name])
            .await
            .map_err(|e| failed(&e))?
            .get(0);
        return Err(if exists {
            CommandStatus::EsmeRreplacefail
        } else {
            CommandStatus::EsmeRinvmsgid
        });
    };
    let status: String = row.get(0);
    let encoding: String = row.get(1);
    let replaceable = match status.as_str() {
        "scheduled" => true,
        "queued" => schedule.is_none(),
        _ => false,
    };
    if !replaceable {
        return Err(CommandStatus::EsmeRreplacefail);
    }
    let body = if replacement.short_message.is_empty() && replacement.tlvs.is_empty() {
        None
    } else {
        let carried = Carried {
            esm_class: 0,
            // The new text is in the message's own encoding.
            data_coding: encoding.parse().map_or(0x00, Encoding::data_coding),
            source: "",
            source_ton: 0,
            destination: "",
            dest_ton: 0,
            short_message: replacement.short_message,
            tlvs: replacement.tlvs,
        };
        let decoded = inbound::decode(&carried).map_err(|_| CommandStatus::EsmeRinvmsglen)?;
        Some(decoded.text)
    };
    let receipts = i16::from(replacement.registered_delivery & 0x03);
    let replaced = statements::execute(
        &tx,
        REPLACE,
        &params![
            id,
            account.name,
            body,
            schedule.map(|t| t.to_string()),
            validity.map(|t| t.to_string()),
            receipts
        ],
    )
    .await;
    match replaced {
        Ok(_) => {}
        // The extension refuses what it refuses at INSERT too (a text
        // too long, say): the message stays as it was.
        Err(e) if e.as_db_error().is_some() => {
            tracing::info!(account = %account.name, "smpp server: replace_sm refused: {e}");
            return Err(CommandStatus::EsmeRreplacefail);
        }
        Err(e) => return Err(failed(&e)),
    }
    tx.commit().await.map_err(|e| failed(&e))
}

/// The network error a failure names (`err:NNN` in a provider's receipt),
/// when it fits query_sm_resp's one octet.
fn error_code(last_error: Option<&str>) -> u8 {
    last_error
        .and_then(|e| e.split("err:").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_receipt_text() {
        assert_eq!(error_code(Some("stat:UNDELIV err:011")), 11);
        assert_eq!(error_code(Some("stat:UNDELIV err:999")), 0);
        assert_eq!(
            error_code(Some("no delivery report before the deadline")),
            0
        );
        assert_eq!(error_code(None), 0);
    }
}
