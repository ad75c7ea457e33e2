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
//! - [`overview`]: `GET /v1/channels` (link states, no configuration) and
//!   `GET /v1/queue` (depth per channel and status).
//! - [`health`]: `/healthz` (the process answers) and `/readyz` (the
//!   database answers and has this worker's version of the extension).
//! - [`error`]: every refusal as JSON with a status that says why; a
//!   database error's text only where it is the extension's refusal of
//!   the request.
//!
//! Requests run on the worker's pool, and every statement names the key's
//! account in its WHERE clause or its row: a key reaches nothing of
//! another account's.

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod auth;
pub mod batch;
pub mod error;
pub mod health;
pub mod messages;
pub mod overview;

/// The largest request body taken (413 beyond it), and a batch's.
const BODY_LIMIT: usize = 256 * 1024;
const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What every request handler may use.
#[derive(Clone)]
pub struct Api {
    pub pool: Pool,
}

/// The API's listening socket and its routes, bound and ready to serve.
pub struct Bound {
    listener: TcpListener,
    router: Router,
}

/// Binds `addr` (so a taken port is an error at start) and builds the
/// routes.
pub async fn bind(addr: SocketAddr, pool: Pool) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(addr).await?;
    Ok(Bound {
        listener,
        router: router(Api { pool }),
    })
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/messages", post(messages::create).get(messages::list))
        .route(
            "/v1/messages/{id}",
            get(messages::show).delete(messages::cancel),
        )
        .route(
            "/v1/messages/batch",
            post(batch::create).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/v1/channels", get(overview::channels))
        .route("/v1/queue", get(overview::queue))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

impl Bound {
    /// Serves until `shutdown`, then lets the requests in progress finish.
    pub async fn serve(self, shutdown: CancellationToken) {
        let addr = self.listener.local_addr().ok();
        tracing::info!(?addr, "http api: listening");
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!("http api: the listener failed: {e}");
        }
    }
}
