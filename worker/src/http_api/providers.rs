//! Webhooks of HTTP channels' providers: `/v1/providers/{channel}/reports`
//! (delivery reports) and `/v1/providers/{channel}/inbound` (received
//! messages), by POST or, for providers that call with a query string, GET.
//!
//! Each request is checked as the channel's `signature` says (Twilio's
//! `X-Twilio-Signature`, Vonage's `sig`, or Basic credentials) and refused
//! with 401 otherwise; read by the channel's mapping (400 when it holds
//! nothing the mapping can use); and answered 2xx only once what it
//! carries is committed, so a provider whose request could not be stored
//! sends it again (503). What a provider sends twice is applied once: a
//! final report for a part already final is dropped, and a message with
//! the provider's id is stored once per channel.
//!
//! Any worker's API takes a channel's webhooks, whichever worker owns the
//! channel: the rows are the meeting point.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::listener::Peer;
use super::Api;
use crate::channels::http::config::{Answer, HttpConfig, Signature};
use crate::channels::http::reports::{as_json, form_urlencoded_pairs};
use crate::channels::http::signatures;
use crate::channels::inbox::{Inbox, Report};
use crate::channels::outbox;
use crate::statements::{self, params};

/// Longest a report waits for its channel's outcomes to be written.
const OUTCOMES_WAIT: Duration = Duration::from_secs(5);
/// How long a channel's config (or its absence) is used before it is read
/// again.
const FRESH: Duration = Duration::from_secs(1);
/// Most channels remembered: names that name no channel are remembered
/// too (so a flood of them costs no queries), and the memory stays bounded.
const REMEMBERED: usize = 1024;

/// A channel as its webhooks need it.
struct Hooked {
    config: HttpConfig,
    can_receive: bool,
    updated_at: SystemTime,
    inbox: Inbox,
}

/// A channel as last read (None: there is none of that name), and when.
type Remembered = (Instant, Option<Arc<Hooked>>);

/// The HTTP channels webhooks came for, read again once a second.
#[derive(Default)]
pub struct Hooks(Mutex<HashMap<String, Remembered>>);

/// What `smsbus.channel.name` allows: anything else names no channel and
/// costs no query.
fn is_channel_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Why a channel's webhook cannot be taken.
enum Lookup {
    Found(Arc<Hooked>),
    Missing,
    Invalid(String),
}

impl Hooks {
    async fn channel(&self, api: &Api, name: &str) -> Result<Lookup, ApiError> {
        if !is_channel_name(name) {
            return Ok(Lookup::Missing);
        }
        if let Some((read, hooked)) = self.0.lock().unwrap().get(name) {
            if read.elapsed() < FRESH {
                return Ok(match hooked {
                    Some(hooked) => Lookup::Found(hooked.clone()),
                    None => Lookup::Missing,
                });
            }
        }
        let client = api
            .pool
            .get()
            .await
            .map_err(|e| ApiError::unavailable("provider webhook", &e))?;
        let row = statements::query_opt(
            &client,
            "SELECT config, can_receive, updated_at FROM smsbus.channel WHERE name = $1 AND kind = 'http'",
            &params![name],
        )
        .await
        .map_err(|e| ApiError::unavailable("provider webhook", &e))?;
        let mut hooks = self.0.lock().unwrap();
        if hooks.len() >= REMEMBERED {
            hooks.clear();
        }
        let Some(row) = row else {
            hooks.insert(name.to_owned(), (Instant::now(), None));
            return Ok(Lookup::Missing);
        };
        let (config, can_receive, updated_at): (serde_json::Value, bool, SystemTime) =
            (row.get(0), row.get(1), row.get(2));
        if let Some((read, Some(hooked))) = hooks.get_mut(name) {
            if hooked.updated_at == updated_at && hooked.can_receive == can_receive {
                *read = Instant::now();
                return Ok(Lookup::Found(hooked.clone()));
            }
        }
        let config = match HttpConfig::parse(&config) {
            Ok(config) => config,
            Err(e) => return Ok(Lookup::Invalid(e.to_string())),
        };
        let hooked = Arc::new(Hooked {
            config,
            can_receive,
            updated_at,
            inbox: Inbox::detached(api.pool.clone(), name),
        });
        hooks.insert(name.to_owned(), (Instant::now(), Some(hooked.clone())));
        Ok(Lookup::Found(hooked))
    }
}

/// Which webhook.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Reports,
    Inbound,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Reports => "reports",
            Hook::Inbound => "inbound",
        }
    }
}

pub async fn reports(
    State(api): State<Api>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    take(api, Hook::Reports, channel, request).await
}

pub async fn inbound(
    State(api): State<Api>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    take(api, Hook::Inbound, channel, request).await
}

async fn take(api: Api, hook: Hook, channel: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, super::BODY_LIMIT).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the body is too large",
        )
        .into_response();
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(addr))| *addr);
    match handle(
        &api,
        hook,
        &channel,
        peer,
        &parts.uri,
        &parts.headers,
        &body,
    )
    .await
    {
        Ok(answer) => answer,
        Err(refusal) => refusal.into_response(),
    }
}

async fn handle(
    api: &Api,
    hook: Hook,
    channel: &str,
    peer: Option<std::net::SocketAddr>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let hooked = match api.hooks.channel(api, channel).await? {
        Lookup::Found(hooked) => hooked,
        Lookup::Missing => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no HTTP channel of that name",
            ))
        }
        Lookup::Invalid(reason) => {
            tracing::error!(%channel, "provider webhook refused: {reason}");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the channel's configuration is invalid; try again",
            ));
        }
    };
    let config = &hooked.config;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let query = uri.query();
    if !signed(config, uri, headers, content_type, body, query) {
        let from = peer.map(|addr| addr.to_string());
        tracing::warn!(%channel, hook = hook.as_str(), peer = from.as_deref().unwrap_or("?"),
            "provider webhook refused: its signature does not match");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the request's signature does not match",
        ));
    }
    let Some(json) = as_json(content_type, body, query) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body is not JSON",
        ));
    };
    let refused = |e: &dyn std::fmt::Display| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())
    };
    let unstored = |e: &dyn std::fmt::Display| {
        tracing::warn!(%channel, hook = hook.as_str(), "provider webhook not stored, the provider is asked to send it again: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not stored; send it again",
        )
    };
    let answer = match hook {
        Hook::Reports => {
            let reports = config.reports.reports(&json).map_err(|e| refused(&e))?;
            // The provider answered the send before it reported on it: with
            // the outcomes this process handed over by now written, the
            // report finds its part instead of being parked for later.
            if let Some(progress) = outbox::progress_of(channel) {
                progress.written(progress.mark(), OUTCOMES_WAIT).await;
            }
            let written = futures_util::future::join_all(reports.into_iter().map(|r| {
                hooked.inbox.report(Report {
                    reference: r.reference,
                    alternate: None,
                    status: r.status.as_str(),
                    detail: r.detail,
                })
            }))
            .await;
            if let Some(Err(e)) = written.into_iter().find(Result::is_err) {
                return Err(unstored(&e));
            }
            &config.reports_answer
        }
        Hook::Inbound => {
            if !hooked.can_receive {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this channel does not receive messages",
                ));
            }
            let messages = config.inbound.messages(&json).map_err(|e| refused(&e))?;
            let written = futures_util::future::join_all(
                messages.into_iter().map(|m| hooked.inbox.inbound(m)),
            )
            .await;
            if let Some(Err(e)) = written.into_iter().find(Result::is_err) {
                return Err(unstored(&e));
            }
            &config.inbound_answer
        }
    };
    Ok(answered(answer))
}

fn answered(answer: &Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    if answer.content_type.is_empty() {
        return (status, answer.body.clone()).into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, answer.content_type.clone())],
        answer.body.clone(),
    )
        .into_response()
}

/// Whether the request carries the proof the channel's `signature` asks.
fn signed(
    config: &HttpConfig,
    uri: &Uri,
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
    query: Option<&str>,
) -> bool {
    let secret = config.signature_secret.as_str();
    match config.signature {
        Signature::None => true,
        Signature::Basic => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            );
            headers
                .get(header::AUTHORIZATION)
                .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
        }
        Signature::Twilio => {
            let Some(given) = headers
                .get("x-twilio-signature")
                .and_then(|v| v.to_str().ok())
            else {
                return false;
            };
            // The URL Twilio called: the configured base, and the path
            // and query as they arrived.
            let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
            let url = format!("{}{path}", config.webhook_url);
            let is_form = content_type.is_some_and(|c| {
                c.split(';').next().is_some_and(|c| {
                    c.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
            let pairs: Vec<(String, String)> = if is_form {
                form_urlencoded_pairs(body).collect()
            } else {
                Vec::new()
            };
            let params: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            signatures::twilio_valid(secret, &url, &params, given)
        }
        Signature::Vonage => {
            // Vonage signs every parameter it sends: a query string's, a
            // form's, or a JSON body's top-level values.
            let mut pairs: Vec<(String, String)> = Vec::new();
            if let Some(query) = query {
                pairs.extend(form_urlencoded_pairs(query.as_bytes()));
            }
            match as_json(content_type, body, None) {
                Some(serde_json::Value::Object(fields)) if !body.is_empty() => {
                    for (name, value) in fields {
                        let text = match value {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Null => continue,
                            other => other.to_string(),
                        };
                        pairs.push((name, text));
                    }
                }
                _ => {}
            }
            let params: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            signatures::vonage_valid(secret, config.signature_method, &params)
        }
    }
}
