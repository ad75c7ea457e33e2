//! `query_sm` (SMPP 3.4 §4.8): the state of a message the account
//! submitted, from the queue or the archive. A message of another account
//! is answered as one that does not exist.

use std::str::FromStr;

use rusmpp::pdus::QuerySmResp;
use rusmpp::types::{COctetString, EmptyOrFullCOctetString};
use rusmpp::CommandStatus;

use super::account::Account;
use super::receipt::smpp_state;

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
    let row = client
        .query_opt(QUERY, &[&id, &account.name])
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
