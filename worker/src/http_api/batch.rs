//! `POST /v1/messages/batch`: up to 10,000 messages of the key's account
//! in one transaction, answered once it is committed with a result per
//! item, in order: 201 and the message, or 422 and why. A refused item
//! does not refuse the others: the whole batch is tried in one statement,
//! and when the extension refuses a row, again row by row under
//! savepoints, so each refusal lands on its own item.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_postgres::Transaction;

use super::auth::{Caller, Scope};
use super::error::{ApiError, ErrorBody};
use super::messages::{read_error, refusal, refused, NewMessage, MESSAGE_JSON};
use super::Api;
use crate::statements::{self, params};

/// The most messages one batch holds.
pub const MOST: usize = 10_000;

/// Messages to send in one transaction.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// 1 to 10,000 messages. Each is read on its own, so one that is
    /// not a message refuses only itself.
    #[schema(value_type = Vec<NewMessage>)]
    messages: Vec<Box<RawValue>>,
}

/// One item's result: 201 and the message (its JSON as the database wrote
/// it), or its refusal.
#[derive(Serialize)]
struct Outcome {
    index: usize,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<super::error::ErrorDetail>,
}

#[derive(Serialize)]
struct Results {
    created: usize,
    refused: usize,
    results: Vec<Outcome>,
}

static INSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(insert_sql_text);

fn insert_sql_text() -> String {
    format!(
        "INSERT INTO smsbus.message AS m (account, to_address, body, from_address, channel, scheduled_at,
                                          valid_until, priority, request_report, encoding, custom, batch_id)
         SELECT a.name, u.to_address, u.body, u.from_address, coalesce(u.channel, a.channel),
                coalesce(u.scheduled_at::timestamptz, now()), u.valid_until::timestamptz,
                coalesce(u.priority, 0), coalesce(u.request_report, true), u.encoding, u.custom, u.batch_id
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int2[],
                     $9::bool[], $10::text[], $11::jsonb[], $12::text[]) WITH ORDINALITY
              AS u(to_address, body, from_address, channel, scheduled_at, valid_until, priority,
                   request_report, encoding, custom, batch_id, n)
         JOIN smsbus.account a ON a.name = $1
         ORDER BY u.n
         RETURNING ({MESSAGE_JSON})::text"
    )
}

/// Inserts `items` (all of them or none); the rows in order.
async fn insert(
    tx: &Transaction<'_>,
    account: &str,
    items: &[&NewMessage],
) -> Result<Vec<String>, tokio_postgres::Error> {
    fn column<T: Clone>(items: &[&NewMessage], f: impl Fn(&NewMessage) -> T) -> Vec<T> {
        items.iter().map(|m| f(m)).collect()
    }
    let rows = statements::query(
        tx,
        &INSERT_SQL,
        &params![
            account,
            column(items, |m| m.to.clone()),
            column(items, |m| m.body.clone()),
            column(items, |m| m.from.clone()),
            column(items, |m| m.channel.clone()),
            column(items, |m| m.scheduled_at.clone()),
            column(items, |m| m.valid_until.clone()),
            column(items, |m| m.priority),
            column(items, |m| m.request_report),
            column(items, |m| m.encoding.clone()),
            column(items, |m| m.custom.clone()),
            column(items, |m| m.batch_id.clone())
        ],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// An item's refusal, its `error` the body a refusal of a whole request has.
fn failure(index: usize, error: ApiError) -> Outcome {
    Outcome {
        index,
        status: error.status.as_u16(),
        message: None,
        error: Some(error.into_body().error),
    }
}

/// An item inserted: `message` the row's JSON text, as jsonb wrote it.
fn created(index: usize, message: String) -> Result<Outcome, ApiError> {
    let message = RawValue::from_string(message)
        .map_err(|e| ApiError::unavailable("a message row that is not JSON", &e))?;
    Ok(Outcome {
        index,
        status: 201,
        message: Some(message),
        error: None,
    })
}

/// Sends up to 10,000 messages in one transaction, answered once it is
/// committed with a result per item, in order.
#[utoipa::path(post, path = "/v1/messages/batch", tag = "messages", request_body = Batch,
    responses(
        (status = 200, description = "{created, refused, results: [{index, status, message | error}]}", body = Object),
        (status = 422, description = "Not a batch, or more than 10,000", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(api): State<Api>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::Send)?;
    let batch: Batch = serde_json::from_slice(&body).map_err(read_error)?;
    if batch.messages.is_empty() || batch.messages.len() > MOST {
        return Err(ApiError::invalid(
            Some("messages".into()),
            format!("a batch holds 1 to {MOST} messages"),
        ));
    }
    let mut results: Vec<Option<Outcome>> = (0..batch.messages.len()).map(|_| None).collect();
    let mut readable = Vec::new();
    for (i, item) in batch.messages.iter().enumerate() {
        match serde_json::from_str::<NewMessage>(item.get()) {
            Ok(m) => readable.push((i, m)),
            Err(e) => results[i] = Some(failure(i, read_error(e))),
        }
    }
    let mut client = api.pool.get().await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| ApiError::unavailable("cannot begin a batch", &e))?;
    let all: Vec<&NewMessage> = readable.iter().map(|(_, m)| m).collect();
    tx.batch_execute("SAVEPOINT whole")
        .await
        .map_err(|e| ApiError::unavailable("cannot begin a batch", &e))?;
    match insert(&tx, &caller.account, &all).await {
        Ok(rows) => {
            for ((i, _), row) in readable.iter().zip(rows) {
                results[*i] = Some(created(*i, row)?);
            }
        }
        Err(e) if refused(&e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT whole")
                .await
                .map_err(|e| ApiError::unavailable("cannot write a batch", &e))?;
            for (i, m) in &readable {
                tx.batch_execute("SAVEPOINT one")
                    .await
                    .map_err(|e| ApiError::unavailable("cannot write a batch", &e))?;
                match insert(&tx, &caller.account, &[m]).await {
                    Ok(mut rows) => {
                        results[*i] = Some(created(*i, rows.remove(0))?);
                        tx.batch_execute("RELEASE SAVEPOINT one")
                    }
                    Err(e) if refused(&e) => {
                        results[*i] = Some(failure(*i, refusal(&e)));
                        tx.batch_execute("ROLLBACK TO SAVEPOINT one")
                    }
                    Err(e) => return Err(ApiError::unavailable("cannot write a batch", &e)),
                }
                .await
                .map_err(|e| ApiError::unavailable("cannot write a batch", &e))?;
            }
        }
        Err(e) => return Err(ApiError::unavailable("cannot write a batch", &e)),
    }
    tx.commit()
        .await
        .map_err(|e| ApiError::unavailable("cannot commit a batch", &e))?;
    let results: Vec<Outcome> = results.into_iter().flatten().collect();
    let created = results.iter().filter(|r| r.status == 201).count();
    let body = Results {
        created,
        refused: results.len() - created,
        results,
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| ApiError::unavailable("cannot write a batch's answer", &e))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
