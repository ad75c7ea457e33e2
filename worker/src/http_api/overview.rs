//! What a key may see of the gateway: the channels with their link state
//! (never their configuration) and the queue's depth, the account's own
//! messages only unless the key has the admin scope.

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use super::auth::{Caller, Scope};
use super::error::ApiError;
use super::Api;
use crate::statements::params;

/// The channels with their link state (`smsbus.channel_overview`, which
/// senders read in SQL too); never their configuration.
#[utoipa::path(get, path = "/v1/channels", tag = "gateway",
    responses((status = 200, description = "{channels: [...]}", body = Object)),
    security(("bearer" = [])))]
pub async fn channels(State(api): State<Api>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let row = api
        .read_one_as(
            &caller,
            "cannot read the channels",
            "SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'name', c.name, 'kind', c.kind, 'enabled', c.enabled, 'can_send', c.can_send,
                        'can_receive', c.can_receive, 'link', c.link, 'since', c.since,
                        'last_error', c.last_error, 'queued', c.queued, 'sending', c.sending)
                    ORDER BY c.name), '[]'::jsonb)
             FROM smsbus.channel_overview c",
            &[],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(
        serde_json::json!({"channels": row.get::<_, Value>(0)}),
    ))
}

/// Messages waiting or in flight, per channel and status: the account's,
/// or everyone's for an admin key.
#[utoipa::path(get, path = "/v1/queue", tag = "gateway",
    responses((status = 200, description = "{queue: [...]}", body = Object)),
    security(("bearer" = [])))]
pub async fn queue(State(api): State<Api>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let everyone = caller.require(Scope::Admin).is_ok();
    let row = api
        .read_one_as(
            &caller,
            "cannot read the queue",
            "SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'channel', q.channel, 'status', q.status, 'messages', q.messages,
                        'oldest', q.oldest) ORDER BY q.channel, q.status), '[]'::jsonb)
             FROM (SELECT m.channel, m.status, count(*) AS messages, min(m.created_at) AS oldest
                   FROM smsbus.message m
                   WHERE m.status IN ('scheduled', 'queued', 'sending') AND ($2 OR m.account = $1)
                   GROUP BY m.channel, m.status) q",
            &params![caller.account, everyone],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(serde_json::json!({"queue": row.get::<_, Value>(0)})))
}
