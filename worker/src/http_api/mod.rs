//! The HTTP API (`--http-addr`): applications that do not sit next to the
//! database send and follow messages over HTTP, as the accounts of their
//! API keys (README: The HTTP API).
//!
//! - [`auth`]: `Authorization: Bearer` keys checked against
//!   `smsbus.api_key` (`smsbus._verify_api_key`), their scopes and address
//!   ranges.
//! - [`messages`]: `POST /v1/messages` (answered 201 once the row is
//!   committed), `GET /v1/messages` (keyset pages), `GET` and `DELETE
//!   /v1/messages/{id}` (cancel), for the key's account only.
//! - [`batch`]: `POST /v1/messages/batch`, up to 10,000 in one
//!   transaction, a result per item.
//! - [`compat`]: Kannel's `/cgi-bin/sendsms` and Jasmin's `/send`, with
//!   their answers and their `dlr-url` callbacks.
//! - [`overview`]: `GET /v1/channels` (link states, no configuration) and
//!   `GET /v1/queue` (depth per channel and status).
//! - [`providers`]: webhooks of HTTP channels' providers,
//!   `/v1/providers/{channel}/reports` and `/inbound`, signature checked,
//!   answered once committed.
//! - [`health`]: `/healthz` (the process answers) and `/readyz` (the
//!   database answers and has this worker's version of the extension).
//! - `/v1/openapi.json`: the OpenAPI 3 document, made by utoipa from the
//!   handlers the router holds, so it lists exactly the routes served.
//! - [`status_page`]: `/`, the gateway at work in a browser, for admin
//!   keys (or loopback peers with `--status-page-local`).
//! - [`listener`]: the socket, plain or TLS (rustls).
//! - [`log`]: a line per request with the key's id, never the key.
//! - [`error`]: every refusal as JSON with a status that says why; a
//!   database error's text only where it is the extension's refusal of
//!   the request.
//!
//! Requests run on the worker's pool, and every statement names the key's
//! account in its WHERE clause or its row: a key reaches nothing of
//! another account's. Reads of an account with a `db_role` run as that
//! role ([`reads`]), under its grants and row security.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use listener::{Peer, TlsListener};

pub mod auth;
pub mod batch;
pub mod compat;
pub mod error;
pub mod health;
pub mod listener;
pub mod log;
pub mod messages;
pub mod overview;
pub mod providers;
pub mod reads;
pub mod status_page;

/// The largest request body taken (413 beyond it), and a batch's.
const BODY_LIMIT: usize = 256 * 1024;
const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// How the API is served (`--http-addr` and the flags beside it).
#[derive(Clone, Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    /// A certificate chain and its key, PEM files: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether loopback peers see the status page without a key.
    pub status_page_local: bool,
}

/// What every request handler may use.
#[derive(Clone)]
pub struct Api {
    pub pool: Pool,
    pub rates: Arc<auth::Rates>,
    pub keys: Arc<auth::Keys>,
    pub status: Arc<status_page::Board>,
    /// The compatibility endpoints' password checks and account rates.
    pub passwords: Arc<compat::Passwords>,
    pub account_rates: Arc<auth::Rates<String>>,
    /// HTTP channels whose providers' webhooks came in.
    pub hooks: Arc<providers::Hooks>,
}

impl Api {
    pub fn new(pool: Pool, status_page_local: bool) -> Api {
        Api {
            pool,
            rates: Arc::default(),
            keys: Arc::default(),
            status: Arc::new(status_page::Board::new(status_page_local)),
            passwords: Arc::default(),
            account_rates: Arc::default(),
            hooks: Arc::default(),
        }
    }
}

/// The API's listening socket and its routes, bound and ready to serve.
pub struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
}

/// Binds the address and reads the TLS files (so a taken port or a bad
/// certificate is an error at start), and builds the routes.
pub async fn bind(settings: &Settings, pool: Pool) -> anyhow::Result<Bound> {
    let tls = match &settings.tls {
        Some((cert, key)) => Some(crate::server_tls::acceptor(
            ("--http-tls-cert", &cert.to_string_lossy()),
            ("--http-tls-key", &key.to_string_lossy()),
        )?),
        None => None,
    };
    let listener = TcpListener::bind(settings.addr).await?;
    Ok(Bound {
        listener,
        tls,
        router: router(Api::new(pool, settings.status_page_local)),
    })
}

/// The OpenAPI document's frame; the paths come from the handlers routed.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "smsbus HTTP API", description = "Send and follow SMS as the account of an API key."),
    modifiers(&BearerKeys),
    tags((name = "messages"), (name = "gateway"), (name = "health"))
)]
struct Document;

/// `Authorization: Bearer <key>`, the keys of `smsbus.create_api_key`.
struct BearerKeys;

impl utoipa::Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The routes, and the OpenAPI document made from the same list.
pub fn router(api: Api) -> Router {
    let (router, document) = OpenApiRouter::with_openapi(Document::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(messages::create, messages::list))
        .routes(routes!(messages::show, messages::cancel))
        .routes(routes!(batch::create).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)))
        .routes(routes!(overview::channels))
        .routes(routes!(overview::queue))
        .split_for_parts();
    let document = Arc::new(document);
    router
        .merge(status_page::routes())
        .route(
            "/cgi-bin/sendsms",
            get(compat::kannel::sendsms).post(compat::kannel::sendsms),
        )
        .route(
            "/send",
            get(compat::jasmin::send_message).post(compat::jasmin::send_message),
        )
        .route(
            "/v1/providers/{channel}/reports",
            get(providers::reports).post(providers::reports),
        )
        .route(
            "/v1/providers/{channel}/inbound",
            get(providers::inbound).post(providers::inbound),
        )
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(log::requests))
        .with_state(api)
}

impl Bound {
    /// Serves until `shutdown`, then lets the requests in progress finish.
    pub async fn serve(self, shutdown: CancellationToken) {
        let addr = self.listener.local_addr().ok();
        tracing::info!(?addr, tls = self.tls.is_some(), "http api: listening");
        let service = self.router.into_make_service_with_connect_info::<Peer>();
        let served = match self.tls {
            None => {
                axum::serve(self.listener, service)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
            Some(tls) => match TlsListener::new(self.listener, tls) {
                Ok(listener) => {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = served {
            tracing::error!("http api: the listener failed: {e}");
        }
    }
}
