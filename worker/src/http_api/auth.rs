//! Who is calling: the `Authorization: Bearer <key>` of a request, looked
//! up with `smsbus._verify_api_key` (the database keeps only the key's
//! SHA-256), and what the key may do. An unknown, disabled or malformed
//! key, or one of a disabled account, is 401 alike; a key used outside
//! its address ranges or beyond its scopes is 403, and beyond its
//! `rate_limit` 429 with `Retry-After`. The key never reaches the log,
//! only its id. A check is reused for a second ([`Keys`]), so changes to
//! a key or its account take effect within one.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiError;
use super::listener::Peer;
use super::Api;
use crate::statements::{self, params};

/// What a key may do (`api_key.scopes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Send,
    Read,
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// The account a request acts for, and its key.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: i64,
    pub account: String,
    /// The role the account's reads run as (`account.db_role`).
    pub db_role: Option<String>,
    scopes: Vec<String>,
}

impl Caller {
    /// Refuses (403) what the key's scopes do not allow.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope.as_str()) {
            Ok(())
        } else {
            tracing::info!(
                key = self.key_id,
                scope = scope.as_str(),
                "http api: scope refused"
            );
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key may not {}", scope.as_str()),
            ))
        }
    }
}

/// The longest key looked up: ours are 68 characters; anything much
/// longer is refused without a query.
const LONGEST_KEY: usize = 128;

pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid API key is required (Authorization: Bearer <key>)",
    )
}

impl<S> FromRequestParts<S> for Caller
where
    Api: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        let api = Api::from_ref(state);
        let key = bearer(parts).ok_or_else(unauthorized)?.to_owned();
        authenticate(&api, parts, &key).await
    }
}

/// The key of an `Authorization: Bearer <key>` header, if it has one of a
/// length worth looking up.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| plausible(k))
}

/// Whether `key` is worth a query: not empty, and not much longer than ours.
pub fn plausible(key: &str) -> bool {
    !key.is_empty() && key.len() <= LONGEST_KEY
}

/// The address a request came from.
pub fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(addr))| *addr)
}

/// The caller of `key`, checked against its account, address ranges and
/// request rate; the key's id goes into the request's log line.
pub async fn authenticate(api: &Api, parts: &Parts, key: &str) -> Result<Caller, ApiError> {
    let peer = peer(parts).map(|addr| addr.ip().to_string());
    let known = match api.keys.get(key, peer.as_deref()) {
        Some(known) => known,
        None => {
            let client = api.pool.get().await?;
            let row = statements::query_opt(
                &client,
                "SELECT k.key_id, k.account, k.scopes,
                        k.allowed_ips IS NULL OR $2::text::inet <<= ANY (k.allowed_ips) AS here,
                        k.rate_limit, k.db_role
                 FROM smsbus._verify_api_key($1) k",
                &params![key, peer],
            )
            .await
            .map_err(|e| ApiError::unavailable("cannot check an API key", &e))?
            .ok_or_else(unauthorized)?;
            let known = Known {
                caller: Caller {
                    key_id: row.get(0),
                    account: row.get(1),
                    db_role: row.get(5),
                    scopes: row.get(2),
                },
                // A key with address ranges is refused when the peer is unknown.
                here: row.get::<_, Option<bool>>(3) == Some(true),
                rate: row.get::<_, Option<f32>>(4),
            };
            api.keys.put(key, peer.as_deref(), known.clone());
            known
        }
    };
    let caller = known.caller;
    if let Some(slot) = parts.extensions.get::<super::log::KeySlot>() {
        slot.set(caller.key_id);
    }
    let rate = known.rate;
    if !api.rates.allow(&caller.key_id, rate.map(f64::from)) {
        let per_second = f64::from(rate.unwrap_or(1.0));
        return Err(ApiError {
            retry_after: Some((1.0 / per_second).ceil().max(1.0) as u64),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("this key may make {per_second} requests a second"),
            )
        });
    }
    if !known.here {
        tracing::info!(
            key = caller.key_id,
            ?peer,
            "http api: key used from outside its ranges"
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key may not be used from this address",
        ));
    }
    Ok(caller)
}

/// Each caller's request rate on this worker: a token bucket per key id
/// (or account, for the compatibility endpoints), holding a second's
/// worth and following its `rate_limit` (or `throughput`).
pub struct Rates<K = i64> {
    buckets: std::sync::Mutex<std::collections::HashMap<K, crate::rate::Rate>>,
}

impl<K> Default for Rates<K> {
    fn default() -> Self {
        Rates {
            buckets: std::sync::Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Rates<K> {
    /// Whether `id` may make a request now, at `per_second` (None: no
    /// limit).
    pub fn allow(&self, id: &K, per_second: Option<f64>) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(per_second) = per_second else {
            buckets.remove(id);
            return true;
        };
        let bucket = buckets
            .entry(id.clone())
            .or_insert_with(|| crate::rate::Rate::new(Some(per_second)));
        bucket.set(Some(per_second));
        bucket.take(std::time::Instant::now())
    }
}

/// What a key check found, for one key from one address.
#[derive(Clone)]
pub struct Known {
    caller: Caller,
    here: bool,
    rate: Option<f32>,
}

/// How long a key check is reused: a disabled key, an account disabled,
/// new scopes, ranges or rate take effect on every worker within it.
const KEY_CHECK_KEPT: std::time::Duration = std::time::Duration::from_secs(1);
/// Most checks kept; beyond, the cache starts afresh.
const KEY_CHECKS: usize = 10_000;

/// Recent key checks, so a client's requests do not each cost a query.
/// Only keys that exist are kept: a wrong key is looked up every time.
#[derive(Default)]
pub struct Keys {
    checks: std::sync::Mutex<std::collections::HashMap<KeyFrom, (std::time::Instant, Known)>>,
}

/// A key, and the address it was used from.
type KeyFrom = (String, Option<String>);

impl Keys {
    fn get(&self, key: &str, peer: Option<&str>) -> Option<Known> {
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let (at, known) = checks.get(&(key.to_owned(), peer.map(str::to_owned)))?;
        (at.elapsed() < KEY_CHECK_KEPT).then(|| known.clone())
    }

    fn put(&self, key: &str, peer: Option<&str>, known: Known) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        if checks.len() >= KEY_CHECKS {
            checks.clear();
        }
        checks.insert(
            (key.to_owned(), peer.map(str::to_owned)),
            (std::time::Instant::now(), known),
        );
    }
}
