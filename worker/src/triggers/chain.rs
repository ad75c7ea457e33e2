//! One message's chain of triggers, in a savepoint of the batch's
//! transaction (one commit for several messages): for each enabled
//! trigger in position order that is for the message's status and
//! direction, its condition is evaluated against the message as it is now
//! (so earlier triggers' changes count), then its script runs with the
//! message id as `$1`, inside a savepoint: a failing script takes back
//! only its own changes.
//!
//! The chain stops after a `final` trigger, or when a script sets
//! `trigger_status = 'processed'`. A script that moves the message to
//! another permanent status makes the extension arm it again for that
//! status: that status's chain runs next, in the same transaction, up to
//! [`MAX_DEPTH`] chains. The end is `processed` if any trigger ran,
//! `nomatch` if none did, `failed` (with the trigger's name and the error
//! in `last_error` and the trace) when a condition or script failed.

use deadpool_postgres::Transaction;

use super::catalog::Trigger;
use super::lua::LuaTriggers;
use crate::metrics;
use crate::statements::{self, params};

/// Chains run back to back for one message (a script moved it to another
/// permanent status, whose triggers move it again, ...) before the runner
/// calls it a loop.
pub const MAX_DEPTH: usize = 8;

/// The trace's line for a chain that failed: the status did not change.
const TRACE_FAILURE: &str =
    "INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, session_role, detail)
     SELECT id, status, status, smsbus._actor(), smsbus._actor_login(), 'triggers failed: ' || $2
     FROM smsbus.message WHERE id = $1";

/// Fails the chains of messages `ids` that are still processing, outside
/// any chain (the runner could not run them: see [`super::run`]), with
/// `error` in `last_error` and the trace; the ids it failed.
pub async fn fail(
    client: &mut deadpool_postgres::Object,
    ids: &[i64],
    error: &str,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let failed: Vec<i64> = statements::query(
        &tx,
        "UPDATE smsbus.message SET trigger_status = 'failed', last_error = $2
         WHERE id = ANY($1) AND trigger_status = 'processing' RETURNING id",
        &params![ids, error],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    for id in &failed {
        statements::execute(&tx, TRACE_FAILURE, &params![id, error]).await?;
    }
    tx.commit().await?;
    Ok(failed)
}

/// How a chain ended.
enum End {
    Ran,
    NoMatch,
    Failed(String),
    /// A script moved the message to another permanent status, for which
    /// the extension armed it again.
    Rearmed,
    /// A script decided (processed), deleted the message, or moved it on
    /// to a status without triggers.
    LeftAlone,
}

/// Runs the chains of message `id` inside `outer` (the batch's
/// transaction), in a savepoint of their own.
pub async fn run(
    outer: &mut Transaction<'_>,
    triggers: &[Trigger],
    lua: &LuaTriggers,
    id: i64,
) -> anyhow::Result<()> {
    let mut tx = outer.savepoint("smsbus_message").await?;
    let mut depth = 1;
    let end = loop {
        match chain(&mut tx, triggers, lua, id).await? {
            End::Rearmed if depth < MAX_DEPTH => {
                depth += 1;
                statements::execute(
                    &tx,
                    "UPDATE smsbus.message SET trigger_status = 'processing'
                     WHERE id = $1 AND trigger_status = 'pending'",
                    &params![id],
                )
                .await?;
            }
            End::Rearmed => {
                break End::Failed(format!(
                    "{MAX_DEPTH} trigger chains in a row: do the triggers move the message back and forth?"
                ))
            }
            end => break end,
        }
    };
    let (outcome, error) = match &end {
        End::Ran => ("processed", None),
        // An earlier chain ran the script that moved the message on.
        End::NoMatch if depth > 1 => ("processed", None),
        End::NoMatch => ("nomatch", None),
        End::Failed(e) => ("failed", Some(e.as_str())),
        End::Rearmed | End::LeftAlone => ("", None),
    };
    if !outcome.is_empty() {
        // An inbound message a trigger gave to an account goes out to its
        // SMPP binds (sql/smpp_outbox.sql) and its webhooks
        // (sql/webhooks.sql), in the same transaction.
        statements::execute(
            &tx,
            "WITH ended AS (
                 UPDATE smsbus.message SET trigger_status = $2::text::smsbus.trigger_status,
                        last_error = coalesce($3, last_error)
                 WHERE id = $1 AND trigger_status IN ('processing', 'pending')
                 RETURNING id, direction, account
             )
             SELECT smsbus._queue_inbound(e.id), smsbus._queue_inbound_webhooks(e.id) FROM ended e
             WHERE e.direction = 'in' AND e.account IS NOT NULL",
            &params![id, outcome, error],
        )
        .await?;
    } else if matches!(end, End::LeftAlone) {
        // The script decided itself; its message may still be owed.
        statements::execute(
            &tx,
            "SELECT smsbus._queue_inbound($1), smsbus._queue_inbound_webhooks($1)",
            &params![id],
        )
        .await?;
    }
    if let Some(e) = error {
        // The trace keeps it too: the status did not change, the chain failed.
        statements::execute(&tx, TRACE_FAILURE, &params![id, e]).await?;
        tracing::warn!(message = id, "{e}");
    }
    tx.commit().await?;
    Ok(())
}

/// The triggers of the message's current status, in order.
async fn chain(
    tx: &mut Transaction<'_>,
    triggers: &[Trigger],
    lua: &LuaTriggers,
    id: i64,
) -> anyhow::Result<End> {
    let mut end = End::NoMatch;
    for trigger in triggers {
        let current = statements::query_opt(
            tx,
            "SELECT status::text, direction, trigger_status::text FROM smsbus.message WHERE id = $1",
            &params![id],
        )
        .await?;
        let Some(row) = current else {
            return Ok(End::LeftAlone); // deleted by a script
        };
        let (status, direction, trigger_status): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        match trigger_status.as_str() {
            "processing" => {}
            "pending" => return Ok(End::Rearmed),
            _ => return Ok(End::LeftAlone),
        }
        if !trigger.applies(&status, &direction) {
            continue;
        }
        let step = step(tx, trigger, lua, id).await?;
        if !matches!(step, Step::NoMatch) && metrics::enabled() {
            ::metrics::counter!(metrics::TRIGGER_RUNS, "trigger" => trigger.name.clone())
                .increment(1);
        }
        match step {
            Step::NoMatch => {}
            Step::Ran => {
                end = End::Ran;
                if trigger.final_ {
                    break;
                }
            }
            Step::Failed(error) => {
                if metrics::enabled() {
                    ::metrics::counter!(metrics::TRIGGER_FAILURES, "trigger" => trigger.name.clone())
                    .increment(1);
                }
                return Ok(End::Failed(format!("trigger {}: {error}", trigger.name)));
            }
        }
    }
    // The last script may have moved the message on.
    let now: Option<String> = match statements::query_opt(
        tx,
        "SELECT trigger_status::text FROM smsbus.message WHERE id = $1",
        &params![id],
    )
    .await?
    {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    };
    Ok(match now.as_deref() {
        Some("processing") => end,
        Some("pending") => End::Rearmed,
        _ => End::LeftAlone,
    })
}

enum Step {
    NoMatch,
    Ran,
    Failed(String),
}

/// The condition, then the script, of one trigger, in a savepoint.
async fn step(
    tx: &mut Transaction<'_>,
    trigger: &Trigger,
    lua: &LuaTriggers,
    id: i64,
) -> anyhow::Result<Step> {
    let sp = tx.savepoint("smsbus_trigger").await?;
    // Checked when the row was written: one boolean expression. A Lua
    // script gets the row with it.
    let condition = format!(
        "SELECT ({}){} FROM smsbus.message AS message WHERE id = $1",
        trigger.condition,
        if trigger.language == "lua" {
            ", to_jsonb(message)"
        } else {
            ""
        }
    );
    let row = match statements::query_opt(&sp, &condition, &params![id]).await {
        Ok(row) => row,
        Err(e) => {
            sp.rollback().await?;
            return Ok(Step::Failed(format!("condition: {}", error_text(&e))));
        }
    };
    let matched = match row.as_ref().map(|r| r.try_get::<_, Option<bool>>(0)) {
        None => false,
        Some(Ok(value)) => value == Some(true),
        Some(Err(e)) => {
            sp.rollback().await?;
            return Ok(Step::Failed(format!("condition: {}", unreadable(&e))));
        }
    };
    let Some(row) = row.filter(|_| matched) else {
        sp.commit().await?;
        return Ok(Step::NoMatch);
    };
    let result = if trigger.language == "lua" {
        // The row is the script's input: one it cannot take (JSON nested
        // deeper than the decoder goes, anything else) fails this message
        // alone.
        let message = match row.try_get::<_, serde_json::Value>(1) {
            Ok(serde_json::Value::Object(message)) => message,
            Ok(other) => {
                sp.rollback().await?;
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return Ok(Step::Failed(format!(
                    "the message cannot be given to the script: it reads as {kind}, not an object"
                )));
            }
            Err(e) => {
                sp.rollback().await?;
                return Ok(Step::Failed(format!(
                    "the message cannot be given to the script: {}",
                    unreadable(&e)
                )));
            }
        };
        lua.run(&sp, trigger, id, message)
            .await
            .map_err(|e| e.to_string())
    } else {
        sql_script(&sp, trigger, id)
            .await
            .map_err(|e| error_text(&e))
    };
    match result {
        Ok(()) => {
            sp.commit().await?;
            Ok(Step::Ran)
        }
        Err(e) => {
            sp.rollback().await?;
            Ok(Step::Failed(e))
        }
    }
}

/// The statements of an SQL script, with the message id as `$1`.
async fn sql_script(
    sp: &Transaction<'_>,
    trigger: &Trigger,
    id: i64,
) -> Result<(), tokio_postgres::Error> {
    for statement in &trigger.statements {
        // $1 is a bigint, as when the script was checked, even where the
        // statement alone would not say (`SELECT $1`).
        statements::execute(sp, statement, &params![id]).await?;
    }
    Ok(())
}

/// Why a value the database sent cannot be read: the decoder's own words
/// (`recursion limit exceeded at line 1 column 129`) after the column's.
pub fn unreadable(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The database's message of an error, without the protocol wrapping.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}
