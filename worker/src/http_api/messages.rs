//! Messages over HTTP: `POST /v1/messages` inserts one row for the key's
//! account and answers 201 with it once committed (a message the router
//! blocked or found no channel for exists too: 201 with that status);
//! `GET /v1/messages/{id}` shows one of the account's messages, live or
//! archived, with its parts and trace. Another account's message is 404,
//! as if it did not exist.
//!
//! An `Idempotency-Key` header is kept as `<account>:<key>` in
//! `message.idempotency_key`: a retry with the same key answers 200 with
//! the first message, and accounts cannot collide or probe each other's
//! keys.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::auth::{Caller, Scope};
use super::error::{ApiError, ErrorBody};
use super::Api;
use crate::statements::{self, params};

/// A message to send: the fields of `smsbus.message` a sender writes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The destination, e.g. +31612345678.
    pub(super) to: String,
    /// The text (or, with encoding binary, octets in hexadecimal digits).
    pub(super) body: String,
    /// The sender: a number or an alphanumeric name.
    pub(super) from: Option<String>,
    /// The channel to send through; none: the account's, else the router's.
    pub(super) channel: Option<String>,
    /// RFC 3339 (or any form PostgreSQL reads as timestamptz).
    pub(super) scheduled_at: Option<String>,
    pub(super) valid_until: Option<String>,
    /// Higher goes first (default 0).
    pub(super) priority: Option<i16>,
    /// Ask the provider for a delivery report (default true).
    pub(super) request_report: Option<bool>,
    /// gsm7, ucs2, latin1 or binary; none: gsm7 when every character allows, else ucs2.
    pub(super) encoding: Option<String>,
    /// Fields of your own, kept with the message.
    #[schema(value_type = Option<Object>)]
    pub(super) custom: Option<Value>,
    pub(super) batch_id: Option<String>,
}

/// A message as the API shows it (`m` the row).
pub(super) const MESSAGE_JSON: &str = "jsonb_build_object(
    'id', m.id, 'status', m.status, 'direction', m.direction,
    'to', m.to_address, 'from', m.from_address, 'body', m.body, 'channel', m.channel,
    'encoding', m.encoding, 'segments', m.segments, 'priority', m.priority,
    'scheduled_at', m.scheduled_at, 'valid_until', m.valid_until, 'request_report', m.request_report,
    'custom', m.custom, 'batch_id', m.batch_id, 'last_error', m.last_error, 'routed_by', m.routed_by,
    'created_at', m.created_at, 'updated_at', m.updated_at, 'sent_at', m.sent_at,
    'delivered_at', m.delivered_at, 'received_at', m.received_at)";

/// The statements, built once from [`MESSAGE_JSON`].
static INSERT_SQL: LazyLock<String> = LazyLock::new(insert_sql_text);
static BY_KEY_SQL: LazyLock<String> = LazyLock::new(by_key_sql_text);
static SHOW_SQL: LazyLock<String> = LazyLock::new(show_sql_text);
static LIST_SQL: LazyLock<String> = LazyLock::new(list_sql_text);

fn insert_sql_text() -> String {
    format!(
        "INSERT INTO smsbus.message AS m (account, to_address, body, from_address, channel, scheduled_at,
                                          valid_until, priority, request_report, encoding, custom, batch_id,
                                          idempotency_key)
         SELECT a.name, $2::text, $3::text, $4::text, coalesce($5::text, a.channel),
                coalesce($6::text::timestamptz, now()), $7::text::timestamptz, coalesce($8::int2, 0),
                coalesce($9::bool, true), $10::text, $11::jsonb, $12::text, $13::text
         FROM smsbus.account a WHERE a.name = $1
         RETURNING ({MESSAGE_JSON})::text"
    )
}

fn by_key_sql_text() -> String {
    format!(
        "SELECT {MESSAGE_JSON} FROM smsbus.message m WHERE m.idempotency_key = $1 AND m.account = $2
         UNION ALL
         SELECT {MESSAGE_JSON} FROM smsbus.message_archive m WHERE m.idempotency_key = $1 AND m.account = $2
         LIMIT 1"
    )
}

fn show_sql_text() -> String {
    format!(
        "WITH found AS (
             SELECT {MESSAGE_JSON} AS message FROM smsbus.message m WHERE m.id = $1 AND m.account = $2
             UNION ALL
             SELECT {MESSAGE_JSON} FROM smsbus.message_archive m WHERE m.id = $1 AND m.account = $2
             LIMIT 1)
         SELECT f.message || jsonb_build_object(
             'parts', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                    'part', p.part, 'channel', p.channel, 'reference', p.reference,
                                    'status', p.status, 'detail', p.detail, 'submitted_at', p.submitted_at,
                                    'reported_at', p.reported_at) ORDER BY p.part)
                                FROM (SELECT * FROM smsbus.message_part WHERE message_id = $1
                                      UNION ALL
                                      SELECT * FROM smsbus.message_part_archive WHERE message_id = $1) p),
                               '[]'::jsonb),
             'trace', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                    'at', e.at, 'from', e.from_status, 'to', e.to_status, 'actor', e.actor,
                                    'detail', e.detail) ORDER BY e.id)
                                FROM (SELECT * FROM smsbus.message_event WHERE message_id = $1
                                      UNION ALL
                                      SELECT * FROM smsbus.message_event_archive WHERE message_id = $1) e),
                               '[]'::jsonb))
         FROM found f"
    )
}

/// Sends a message: answered once its row is committed, with the status
/// the router gave it (blocked and nochannel messages exist too).
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = NewMessage,
    params(("Idempotency-Key" = Option<String>, Header,
            description = "The same key again answers 200 with the first message")),
    responses(
        (status = 201, description = "The message, committed", body = Object),
        (status = 200, description = "A retry: the message first sent with this Idempotency-Key", body = Object),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not this key's scope or address", body = ErrorBody),
        (status = 422, description = "Refused: the message and the field", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::Send)?;
    let new: NewMessage = serde_json::from_slice(&body).map_err(read_error)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some("Idempotency-Key".into()),
                        "the Idempotency-Key header must be 1-255 visible ASCII characters",
                    )
                })?;
            Some(format!("{}:{key}", caller.account))
        }
    };
    let client = api.pool.get().await?;
    // Typed, so the statement is parsed, bound and run in one round trip,
    // with no prepared statement left on the connection (a pooler in
    // transaction mode could not keep one).
    let inserted = client
        .query_typed(
            &INSERT_SQL,
            &[
                (&caller.account, Type::TEXT),
                (&new.to, Type::TEXT),
                (&new.body, Type::TEXT),
                (&new.from, Type::TEXT),
                (&new.channel, Type::TEXT),
                (&new.scheduled_at, Type::TEXT),
                (&new.valid_until, Type::TEXT),
                (&new.priority, Type::INT2),
                (&new.request_report, Type::BOOL),
                (&new.encoding, Type::TEXT),
                (&new.custom, Type::JSONB),
                (&new.batch_id, Type::TEXT),
                (&idempotency_key, Type::TEXT),
            ],
        )
        .await
        .map(|rows| rows.into_iter().next());
    match inserted {
        // The row as the database wrote it, passed on as it is.
        Ok(Some(row)) => Ok((
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            row.get::<_, String>(0),
        )
            .into_response()),
        // The account went away since its key was checked.
        Ok(None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the key's account no longer exists",
        )),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) && idempotency_key.is_some() => {
            // The same key again: the first message, whatever this body said.
            let first = statements::query_opt(
                &client,
                &BY_KEY_SQL,
                &params![idempotency_key, caller.account],
            )
            .await
            .map_err(|e| ApiError::unavailable("cannot read a message", &e))?
            .ok_or_else(|| refusal(&e))?;
            Ok((StatusCode::OK, Json(first.get::<_, Value>(0))).into_response())
        }
        Err(e) => Err(refusal(&e)),
    }
}

/// One of the account's messages, with its parts and trace.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = i64, Path, description = "The message's id")),
    responses(
        (status = 200, description = "The message, its parts and trace", body = Object),
        (status = 404, description = "No message of this account has this id", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    Ok(Json(read_message(&api, &caller, id).await?))
}

/// Message `id` of the caller's account, with its parts and trace, read
/// as the caller; 404 for one it may not see.
async fn read_message(api: &Api, caller: &Caller, id: i64) -> Result<Value, ApiError> {
    let row = api
        .read_one_as(
            caller,
            "cannot read a message",
            &SHOW_SQL,
            &params![id, caller.account],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(row.get(0))
}

/// A body that is not a message: 422 naming the field where serde can.
pub(super) fn read_error(e: serde_json::Error) -> ApiError {
    let text = e.to_string();
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"))
        .map(str::to_owned);
    ApiError::invalid(field, format!("the body is not a message: {text}"))
}

/// The request fields, by the columns the database names in its errors.
const FIELDS: [(&str, &str); 11] = [
    ("to_address", "to"),
    ("from_address", "from"),
    ("scheduled_at", "scheduled_at"),
    ("valid_until", "valid_until"),
    ("idempotency_key", "Idempotency-Key"),
    ("batch_id", "batch_id"),
    ("priority", "priority"),
    ("encoding", "encoding"),
    ("channel", "channel"),
    ("custom", "custom"),
    ("body", "body"),
];

/// Whether the database refused a row of the request, rather than failed:
/// class 22 (data exceptions: the extension's refusals, bad times and
/// numbers) and 23 (integrity: not null, unique, check).
pub(super) fn refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| matches!(&d.code().code()[..2], "22" | "23"))
}

/// What the database said of an INSERT: the extension's refusal of the
/// message (422, its text, the field it names), or unavailable.
pub(super) fn refusal(e: &tokio_postgres::Error) -> ApiError {
    let Some(db) = e.as_db_error().filter(|_| refused(e)) else {
        return ApiError::unavailable("cannot insert a message", e);
    };
    let code = db.code().code();
    let message = db.message().to_owned();
    let field = db
        .column()
        .and_then(|c| FIELDS.iter().find(|(column, _)| *column == c))
        .or_else(|| FIELDS.iter().find(|(column, _)| message.contains(column)))
        .map(|(_, field)| (*field).to_owned())
        .or_else(|| {
            // Bad times: PostgreSQL names the value, not the column.
            matches!(code, "22007" | "22008").then(|| "scheduled_at or valid_until".to_owned())
        });
    ApiError::invalid(field, message)
}

/// Cancels a message no channel has taken yet (status `cancelled`, its
/// parts back to the account's credit); 409 for one already on its way or
/// done, 404 for one not the account's.
#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = i64, Path, description = "The message's id")),
    responses(
        (status = 200, description = "The message, cancelled", body = Object),
        (status = 404, description = "No message of this account has this id", body = ErrorBody),
        (status = 409, description = "Already taken by a channel, or done", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Send)?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    let client = api.pool.get().await?;
    let cancelled = statements::query_opt(
        &client,
        crate::smpp_server::queries::CANCEL_ONE,
        &params![id, caller.account, "cancelled by the client (HTTP API)"],
    )
    .await
    .map_err(|e| ApiError::unavailable("cannot cancel a message", &e))?;
    drop(client);
    let message = read_message(&api, &caller, id).await?;
    if cancelled.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!(
                "message {id} is {}: only scheduled or queued messages can be cancelled",
                message["status"].as_str().unwrap_or("past that")
            ),
        ));
    }
    Ok(Json(message))
}

/// What `GET /v1/messages` filters and pages by.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only messages with this status.
    status: Option<String>,
    /// Only messages of this batch.
    batch_id: Option<String>,
    /// Created at or after (a timestamptz).
    since: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<i64>,
    /// Messages a page, 1-1000 (default 100).
    limit: Option<i64>,
}

/// The most messages one page holds.
const PAGE_LIMIT: i64 = 1000;

fn list_sql_text() -> String {
    let filter = "m.account = $1 AND ($2::text IS NULL OR m.status = $2::text::smsbus.status)
                  AND ($3::text IS NULL OR m.batch_id = $3)
                  AND ($4::text IS NULL OR m.created_at >= $4::text::timestamptz)
                  AND ($5::bigint IS NULL OR m.id < $5)";
    format!(
        "SELECT p.message FROM (
             (SELECT m.id, {MESSAGE_JSON} AS message FROM smsbus.message m WHERE {filter}
              ORDER BY m.id DESC LIMIT $6)
             UNION ALL
             (SELECT m.id, {MESSAGE_JSON} FROM smsbus.message_archive m WHERE {filter}
              ORDER BY m.id DESC LIMIT $6)) p
         ORDER BY p.id DESC LIMIT $6"
    )
}

/// The account's messages, newest first, a page at a time. The cursor is
/// the last id shown, so messages sent while a client pages (they get
/// higher ids) never shift the pages after it.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(ListQuery),
    responses(
        (status = 200, description = "{messages, next_cursor}", body = Object),
        (status = 422, description = "A filter that is not one", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(api): State<Api>,
    caller: Caller,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError::invalid(None, format!("bad query: {}", e.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            Some("limit".into()),
            format!("limit must be between 1 and {PAGE_LIMIT}"),
        ));
    }
    let rows = api
        .read_as(
            &caller,
            &LIST_SQL,
            &params![
                caller.account,
                query.status,
                query.batch_id,
                query.since,
                query.cursor,
                limit
            ],
            |e| match e.as_db_error().map(|d| d.code().code()) {
                // An unknown status or an unreadable time.
                Some("22P02") => {
                    ApiError::invalid(Some("status".into()), "not a status of smsbus.status")
                }
                Some("22007" | "22008") => ApiError::invalid(Some("since".into()), "not a time"),
                _ => ApiError::unavailable("cannot list messages", &e),
            },
        )
        .await?;
    let messages: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    let next_cursor = (messages.len() as i64 == limit)
        .then(|| messages.last().and_then(|m| m["id"].as_i64()))
        .flatten();
    Ok(Json(serde_json::json!({
        "messages": messages,
        "next_cursor": next_cursor,
    })))
}
