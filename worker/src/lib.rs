//! # smsbus-worker
//!
//! The process that runs beside an smsbus database and does what SQL cannot:
//! hold connections to the outside world, run trigger scripts and keep time.
//!
//! ## Layout
//!
//! - [`backoff`]: reconnect delays with jitter.
//! - [`check`]: `smsbus-worker check`, the operator's health check.
//! - [`channels`]: the channel supervisor, each channel's outbox and inbox,
//!   and the drivers (SMPP, GSM).
//! - [`config`]: the worker's settings (from flags and the environment).
//! - [`db`]: the connection pool; every connection names its worker in its
//!   application name, the actor of the changes it makes, so the trace
//!   says who.
//! - [`fuzzing`]: entry points for the fuzz targets in `fuzz/`.
//! - [`http_api`]: the HTTP API (`--http-addr`): messages for API keys'
//!   accounts, the Kannel and Jasmin endpoints, health and readiness, and
//!   the status page.
//! - [`listener`]: one dedicated connection that LISTENs for the database's
//!   wake-ups and reconnects on its own; a missed notification only delays
//!   work, because every loop also polls on a timer.
//! - [`maintenance`]: due scheduled messages, expired leases, overdue
//!   delivery reports, archiving (docs/ARCHITECTURE.md#the-worker).
//! - [`metrics`]: the Prometheus endpoint (`--metrics-addr`) and the
//!   names of what it serves.
//! - [`polling`]: the timer-and-wake-up loop maintenance and the trigger
//!   runner share.
//! - [`rate`]: token buckets for SMPP accounts' throughput and API keys'
//!   rate limits.
//! - [`smpp_server`]: the SMPP server applications bind to: listeners,
//!   sessions, binds across workers, group commit of submissions.
//! - [`server_tls`]: certificates and keys for the TLS of smsbus's own
//!   listeners (SMPP server, HTTP API).
//! - [`sessions`]: whether LISTEN and session locks work on the
//!   connections the worker has (a pooler in transaction mode keeps no
//!   session), else poll-only.
//! - [`shutdown`]: SIGTERM/SIGINT become one cancellation every task races
//!   against.
//! - [`statements`]: statements sent unnamed with typed parameters, one
//!   round trip each, so that they work through PgBouncer in transaction
//!   mode.
//! - [`triggers`]: the trigger runner: chains of SQL and Lua scripts for
//!   messages that reached a permanent status.
//! - [`webhooks`]: accounts' events from `smsbus.webhook_outbox`, posted
//!   signed, in order per message, with backoff.
//!
//! [`run`] wires them: it starts the listener and maintenance, waits for the
//! shutdown signal, lets every task finish, hands back whatever this worker
//! still had claimed, and returns.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod channels;
pub mod check;
pub mod config;
pub mod db;
pub mod fuzzing;
pub mod http_api;
pub mod listener;
pub mod maintenance;
pub mod metrics;
pub mod polling;
pub mod rate;
pub mod server_tls;
pub mod sessions;
pub mod shutdown;
pub mod smpp_server;
pub mod statements;
pub mod triggers;
pub mod webhooks;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sessions::Sessions;

pub use config::Config;

/// Runs the worker until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_addr {
        metrics::serve(addr)?;
    }
    let wakeups = listener::Wakeups::default();
    let pool =
        db::pool(&config, wakeups.primary.clone()).context("cannot set up the database pool")?;
    let extension = db::check_extension(&pool)
        .await
        .context("cannot start: the database is not ready for smsbus")?;
    tracing::info!(worker = %config.worker_id, extension = %extension, "worker started");
    if db::restoring(&*pool.get().await?).await? {
        tracing::warn!("{}", db::RESTORING_LEFT_ON);
    }
    let own = env!("CARGO_PKG_VERSION");
    if extension != own {
        tracing::warn!(
            "the database has smsbus {extension} and this worker is {own}: \
             run ALTER EXTENSION smsbus UPDATE once the new version is installed"
        );
    }

    let sessions = sessions::probe(&config, &*pool.get().await?)
        .await
        .context("cannot start")?;
    match &sessions {
        Sessions::Kept => tracing::info!("{sessions}"),
        Sessions::PollOnly(_) => tracing::warn!("{sessions}"),
    }

    let tasks = TaskTracker::new();
    match sessions {
        Sessions::Kept => tasks.spawn(listener::run(
            config.clone(),
            wakeups.clone(),
            shutdown.clone(),
        )),
        Sessions::PollOnly(_) => {
            tasks.spawn(listener::poll_only(wakeups.clone(), shutdown.clone()))
        }
    };
    tasks.spawn(maintenance::run(
        config.clone(),
        pool.clone(),
        wakeups.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(triggers::run(
        pool.clone(),
        config.lua,
        wakeups.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(channels::supervisor::run(
        config.clone(),
        pool.clone(),
        wakeups.clone(),
        sessions,
        shutdown.clone(),
    ));
    tasks.spawn(smpp_server::run(
        config.clone(),
        pool.clone(),
        wakeups.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(webhooks::run(
        config.worker_id.clone(),
        pool.clone(),
        wakeups.clone(),
        shutdown.clone(),
    ));
    if let Some(http) = &config.http {
        // Bound before the worker goes on, so a taken port or a bad
        // certificate stops it at once.
        let api = http_api::bind(http, pool.clone())
            .await
            .with_context(|| format!("cannot serve the HTTP API on {}", http.addr))?;
        tasks.spawn(api.serve(shutdown.clone()));
    }
    tasks.close();

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    tasks.wait().await;

    let released = db::release_claims(&pool, &config.worker_id)
        .await
        .context("cannot hand back claimed messages")?;
    if released > 0 {
        tracing::info!(released, "handed back claimed messages");
    }
    tracing::info!("worker stopped");
    Ok(())
}
