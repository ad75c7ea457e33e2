//! The status page (`GET /`): the gateway at work, for an operator's
//! browser. Channels with their link state, owner, rate and errors; the
//! queue per channel and status; messages a second over the last hour;
//! the last messages with their trace; webhook outboxes; SMPP binds.
//!
//! - [`snapshot`]: one read of the tables the page shows.
//! - [`throughput`]: the last hour of `message_event`, counted in ten
//!   second buckets and kept between refreshes, so a refresh reads only
//!   the newest events.
//! - [`render`]: the HTML, escaped as maud builds it.
//!
//! The page is HTML from the server; its small script (`status.js`)
//! fetches `/status/sections` every few seconds and puts it in place.
//! No inline script or style, and a Content-Security-Policy that allows
//! none. Who may look ([`Viewer`]): a key with the `admin` scope, as a
//! Bearer key or as the password of Basic authentication (so a browser
//! asks for it), or, with `--status-page-local`, anyone connecting from a
//! loopback address.

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;

use super::auth::{self, Scope};
use super::error::ApiError;
use super::Api;

pub mod render;
pub mod snapshot;
pub mod throughput;

/// What the page keeps between requests.
pub struct Board {
    /// Whether loopback peers may look without a key.
    pub local: bool,
    pub throughput: throughput::Series,
}

impl Board {
    pub fn new(local: bool) -> Board {
        Board {
            local,
            throughput: throughput::Series::default(),
        }
    }
}

/// The page's routes; they are not part of the OpenAPI document.
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(page))
        .route("/status/sections", get(sections))
        .route("/status/status.js", get(script))
        .route("/status/status.css", get(style))
}

/// Everything the page may load: its own script, style and fetches.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn html(markup: maud::Markup) -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(markup.into_string()),
    )
        .into_response()
}

async fn page(State(api): State<Api>, _: Viewer) -> Result<Response, ApiError> {
    let (snapshot, series) = read(&api).await?;
    Ok(html(render::page(&snapshot, &series)))
}

async fn sections(State(api): State<Api>, _: Viewer) -> Result<Response, ApiError> {
    let (snapshot, series) = read(&api).await?;
    Ok(html(render::sections(&snapshot, &series)))
}

async fn read(api: &Api) -> Result<(snapshot::Snapshot, Vec<throughput::Bucket>), ApiError> {
    let client = api.pool.get().await?;
    let snapshot = snapshot::read(&client)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the status page", &e))?;
    let series = api
        .status
        .throughput
        .refresh(&client)
        .await
        .map_err(|e| ApiError::unavailable("cannot count the last hour", &e))?;
    Ok((snapshot, series))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("status.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("status.css"),
    )
}

/// Someone allowed to see the page.
pub struct Viewer;

impl<S> FromRequestParts<S> for Viewer
where
    Api: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Viewer, Response> {
        let api = Api::from_ref(state);
        let key = auth::bearer(parts)
            .map(str::to_owned)
            .or_else(|| basic_password(parts));
        let Some(key) = key else {
            let local = auth::peer(parts).is_some_and(|addr| addr.ip().is_loopback());
            if api.status.local && local {
                return Ok(Viewer);
            }
            return Err(ask_for_key(auth::unauthorized()));
        };
        let caller = auth::authenticate(&api, parts, &key)
            .await
            .map_err(ask_for_key)?;
        caller.require(Scope::Admin).map_err(ask_for_key)?;
        Ok(Viewer)
    }
}

/// The password of `Authorization: Basic`, whatever the user name: a
/// browser asks for both, and the key is the password.
fn basic_password(parts: &Parts) -> Option<String> {
    let encoded = parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_, password) = decoded.split_once(':')?;
    auth::plausible(password).then(|| password.to_owned())
}

/// A refusal that makes a browser ask for the key (401 only: a key
/// without the admin scope is 403, and asking again would not help).
fn ask_for_key(error: ApiError) -> Response {
    let unauthorized = error.status == StatusCode::UNAUTHORIZED;
    let mut response = error.into_response();
    if unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"smsbus status\", charset=\"UTF-8\""),
        );
    }
    response
}
