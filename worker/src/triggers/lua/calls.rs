//! What a Lua script asks of the database, and how the chain's task
//! answers it. The script runs on its trigger's thread; the transaction
//! belongs to the chain's task, so `smsbus.query` and friends travel there
//! as requests and wait for the answer: all a run does is in the message's
//! transaction, and undone with it.
//!
//! `pcall` takes a savepoint, lazily: only when database work happens
//! inside it, so that an error it catches takes back what was done inside
//! and the script can carry on.

use postgres_types::{Format, IsNull, ToSql, Type};
use serde_json::{Map, Value as Json};
use tokio::sync::oneshot;
use tokio_postgres::types::private::BytesMut;

use deadpool_postgres::Transaction;

use crate::statements::{self, params, PgParam};

/// What travels from a running script to the chain's task.
pub enum FromLua {
    /// The script's thread took the job: its time limit runs from now.
    Started,
    Call(Request),
    /// `process` returned: the fields it changed, or why it failed.
    Done(Result<Map<String, Json>, super::RunError>),
}

pub struct Request {
    pub call: Call,
    /// `pcall`s entered since the last request that need their savepoint
    /// now, outermost first.
    pub open_savepoints: usize,
    pub reply: oneshot::Sender<Result<Reply, CallFailure>>,
}

pub enum Call {
    Query {
        sql: String,
        params: Vec<Param>,
    },
    Execute {
        sql: String,
        params: Vec<Param>,
    },
    Send(Map<String, Json>),
    Message(i64),
    /// The innermost `pcall` with a savepoint ended: keep its work or not.
    EndSavepoint {
        keep: bool,
    },
}

pub enum Reply {
    Rows(Vec<Json>),
    Count(u64),
    Id(i64),
    Message(Option<Json>),
    Done,
}

/// A parameter in PostgreSQL's text form, so the server reads it as it
/// would a literal of whatever type the statement needs there; None is
/// null.
#[derive(Debug, Clone)]
pub struct Param(pub Option<String>);

impl ToSql for Param {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    postgres_types::to_sql_checked!();
}

/// Of the type the statement needs there: `unknown` in Parse is what an
/// unspecified type is, so the server infers each parameter as it does for
/// a prepared statement (and for a quoted literal), and reads the text as
/// that type. Scripts' statements need no named prepare to learn their
/// parameters' types, and run in one round trip.
impl PgParam for Param {
    fn pg_type() -> Type {
        Type::UNKNOWN
    }
}

/// The fields `smsbus.send{...}` takes, as named in Lua, in the order of
/// the parameters in [`send`]'s statement.
pub const SEND_FIELDS: [&str; 12] = [
    "to",
    "body",
    "from",
    "channel",
    "priority",
    "scheduled_at",
    "valid_until",
    "request_report",
    "encoding",
    "custom",
    "batch_id",
    "idempotency_key",
];

/// The chain's side of one run: answers requests in the run's savepoint.
#[derive(Default)]
pub struct Server {
    /// One per open `pcall` savepoint: the error that aborted its work.
    savepoints: Vec<Option<String>>,
    /// An error outside any `pcall` savepoint: the run's database work is
    /// lost, whatever the script does next.
    pub aborted: Option<String>,
}

impl Server {
    pub async fn serve(&mut self, tx: &Transaction<'_>, request: Request) {
        let result = self.answer(tx, request.open_savepoints, request.call).await;
        // Fails only when the script's thread stopped waiting (it was given
        // up): nobody is left to tell.
        let _ = request.reply.send(result);
    }

    async fn answer(
        &mut self,
        tx: &Transaction<'_>,
        open: usize,
        call: Call,
    ) -> Result<Reply, CallFailure> {
        if let Some(e) = &self.aborted {
            return Err(CallFailure::RunAborted(e.clone()));
        }
        if open > 0 {
            tx.batch_execute(&"SAVEPOINT smsbus_pcall;".repeat(open))
                .await
                .map_err(|e| self.failed(&e))?;
            self.savepoints.extend(std::iter::repeat_n(None, open));
        }
        if let Call::EndSavepoint { keep } = call {
            return self.end_savepoint(tx, keep).await;
        }
        if let Some(Some(e)) = self.savepoints.last() {
            return Err(CallFailure::PcallAborted(e.clone()));
        }
        let result = match call {
            Call::Query { sql, params } => query(tx, &sql, &params).await.map(Reply::Rows),
            Call::Execute { sql, params } => execute(tx, &sql, &params)
                .await
                .map(Reply::Count)
                .map_err(CallError::from),
            Call::Send(fields) => send(tx, &fields).await.map(Reply::Id),
            Call::Message(id) => message(tx, id).await.map(Reply::Message),
            Call::EndSavepoint { .. } => return Ok(Reply::Done), // answered above
        };
        result.map_err(|e| match e {
            CallError::Database(e) => self.failed(&e),
            // The statement ran: the transaction is fine, the script may
            // catch this and carry on.
            CallError::Unreadable(e) => {
                CallFailure::Unreadable(super::super::chain::unreadable(&e))
            }
        })
    }

    /// Records a database error against the innermost savepoint, or the
    /// run, and returns it as the call's failure.
    fn failed(&mut self, e: &tokio_postgres::Error) -> CallFailure {
        let text = super::super::chain::error_text(e);
        match self.savepoints.last_mut() {
            Some(slot) => *slot = Some(text.clone()),
            None => self.aborted = Some(text.clone()),
        }
        CallFailure::Database(text)
    }

    async fn end_savepoint(
        &mut self,
        tx: &Transaction<'_>,
        keep: bool,
    ) -> Result<Reply, CallFailure> {
        let Some(error) = self.savepoints.pop() else {
            return Ok(Reply::Done);
        };
        let sql = match (keep, &error) {
            (true, None) => "RELEASE SAVEPOINT smsbus_pcall",
            _ => "ROLLBACK TO SAVEPOINT smsbus_pcall; RELEASE SAVEPOINT smsbus_pcall",
        };
        if let Err(e) = tx.batch_execute(sql).await {
            return Err(self.failed(&e));
        }
        match error {
            // The function inside caught the error itself, but its work
            // could not be kept.
            Some(e) if keep => Err(CallFailure::Database(e)),
            _ => Ok(Reply::Done),
        }
    }
}

/// Why a script's call to the `smsbus` module failed: the script gets
/// this as the error's text, and may catch it with `pcall`.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    #[error(transparent)]
    Argument(#[from] BadArgument),
    /// The statement failed; its work is lost with its savepoint or run.
    #[error("{0}")]
    Database(String),
    #[error("an earlier database error ended this run's work: {0}")]
    RunAborted(String),
    #[error("an earlier database error ended this pcall's work: {0}")]
    PcallAborted(String),
    /// The statement ran, but a value it returned cannot be decoded.
    #[error("a value the database returned cannot be given to the script: {0}")]
    Unreadable(String),
    /// Called outside `process` (say, from a finalizer after the run).
    #[error("the database is only there while a message is processed")]
    NoRun,
    #[error("the run was given up (time limit)")]
    GivenUp,
}

/// A script called the `smsbus` module with arguments it does not take;
/// nothing was asked of the database.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadArgument(pub String);

/// Why a statement failed, before the server decides what it means.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The statement failed: what it did is lost with its savepoint.
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    /// The statement ran, but a value it returned cannot be decoded (JSON
    /// nested deeper than the decoder goes).
    #[error("{0}")]
    Unreadable(tokio_postgres::Error),
}

/// The values of column 0 of `rows`.
fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    rows: &[tokio_postgres::Row],
) -> Result<Vec<T>, CallError> {
    rows.iter()
        .map(|r| r.try_get(0).map_err(CallError::Unreadable))
        .collect()
}

/// A statement a script wrote, as one row per JSON object: every column
/// type comes back in a form Lua has. Works for anything that returns
/// rows (SELECT, VALUES, INSERT/UPDATE/DELETE ... RETURNING).
async fn query(tx: &Transaction<'_>, sql: &str, params: &[Param]) -> Result<Vec<Json>, CallError> {
    let wrapped = format!(
        "WITH smsbus_rows AS (\n{}\n) SELECT to_jsonb(smsbus_rows) FROM smsbus_rows",
        trim_statement(sql)
    );
    let rows = statements::query(tx, &wrapped, &as_params(params)).await?;
    column(&rows)
}

async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param],
) -> Result<u64, tokio_postgres::Error> {
    statements::execute(tx, trim_statement(sql), &as_params(params)).await
}

async fn send(tx: &Transaction<'_>, fields: &Map<String, Json>) -> Result<i64, CallError> {
    const SQL: &str = "SELECT smsbus.send(to_address => $1::text, body => $2::text, from_address => $3::text,
                              channel => $4::text, priority => coalesce($5::smallint, 0::smallint),
                              scheduled_at => coalesce($6::timestamptz, now()), valid_until => $7::timestamptz,
                              request_report => coalesce($8::boolean, true), encoding => $9::text,
                              custom => $10::jsonb, batch_id => $11::text, idempotency_key => $12::text)";
    let params: Vec<Param> = SEND_FIELDS
        .iter()
        .map(|field| json_param(fields.get(*field)))
        .collect();
    let row = statements::query_one(tx, SQL, &as_params(&params)).await?;
    row.try_get(0).map_err(CallError::Unreadable)
}

async fn message(tx: &Transaction<'_>, id: i64) -> Result<Option<Json>, CallError> {
    let rows: Vec<_> = statements::query_opt(
        tx,
        "SELECT to_jsonb(m) FROM smsbus.message m WHERE id = $1",
        &params![id],
    )
    .await?
    .into_iter()
    .collect();
    Ok(column(&rows)?.pop())
}

/// A JSON value as a text parameter: strings as they are, anything else
/// as JSON text (a number, true/false, an object for a jsonb column).
pub fn json_param(value: Option<&Json>) -> Param {
    Param(match value {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    })
}

fn as_params(params: &[Param]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params.iter().map(statements::typed).collect()
}

/// Without the trailing semicolon a script may well write.
fn trim_statement(sql: &str) -> &str {
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_semicolons_go() {
        assert_eq!(trim_statement("SELECT 1 ;\n "), "SELECT 1");
        assert_eq!(trim_statement("SELECT ';'"), "SELECT ';'");
    }

    #[test]
    fn json_params_are_text() {
        assert_eq!(json_param(Some(&Json::from("a"))).0.as_deref(), Some("a"));
        assert_eq!(json_param(Some(&Json::from(4))).0.as_deref(), Some("4"));
        assert_eq!(
            json_param(Some(&serde_json::json!({"k": 1}))).0.as_deref(),
            Some("{\"k\":1}")
        );
        assert_eq!(json_param(Some(&Json::Null)).0, None);
        assert_eq!(json_param(None).0, None);
    }
}
