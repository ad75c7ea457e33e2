//! The connection pool and the few queries the worker's core makes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres::NoTls;

use crate::statements::{self, params};
use crate::Config;

/// The database connection settings with this worker's identity, in the
/// application name: it shows in pg_stat_activity, and the extension
/// names the worker as the actor of its changes in the trace
/// (smsbus_core::actor says why not a startup option).
pub fn connection_config(config: &Config, role: &str) -> tokio_postgres::Config {
    named(config.database.clone(), config, role)
}

/// The same for a connection that must keep its server session (LISTEN,
/// the ownership locks): to --listen-url.
pub fn session_config(config: &Config, role: &str) -> tokio_postgres::Config {
    named(config.listen.clone(), config, role)
}

fn named(mut pg: tokio_postgres::Config, config: &Config, role: &str) -> tokio_postgres::Config {
    pg.application_name(smsbus_core::actor::application_name(
        role,
        &config.worker_id,
    ));
    pg
}

/// Whether the worker's connections are still on the primary. A failover
/// that stops the old primary cuts its connections, and new ones find the
/// promoted standby (with `target_session_attrs=read-write`). One that
/// leaves it up, read-only, does not: the channel supervisor asks its
/// server every second whether it still takes writes ([`WRITABLE`]), and
/// when it does not, [`Primary::lost`] retires every pooled connection
/// made before (a pre-recycle hook) and reconnects the listener, so that
/// new connections go to the primary.
#[derive(Default)]
pub struct Primary {
    lost_at: Mutex<Option<Instant>>,
    moved: Notify,
}

impl Primary {
    /// The server connections were made to takes no writes any more.
    pub fn lost(&self) {
        *self.lost_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.moved.notify_waiters();
    }

    /// Whether a connection made at `created` is to a server known to have
    /// stopped taking writes.
    fn outdated(&self, created: Instant) -> bool {
        self.lost_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|lost| created <= lost)
    }

    /// Waits until [`Primary::lost`] is next called.
    pub async fn moved(&self) {
        self.moved.notified().await
    }
}

/// Whether the server takes writes: not a standby, not read-only (the
/// default too, for a transaction held open since before it changed).
pub const WRITABLE: &str = "SELECT NOT pg_is_in_recovery() \
     AND NOT current_setting('transaction_read_only')::bool \
     AND NOT current_setting('default_transaction_read_only')::bool";

pub fn pool(config: &Config, primary: Arc<Primary>) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        connection_config(config, "pool"),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if primary.outdated(metrics.created) {
                Err(HookError::Message(
                    "connected to a server that no longer takes writes".into(),
                ))
            } else {
                Ok(())
            }
        }))
        .build()
        .context("building the pool")
}

/// Fails with a clear message when the database cannot be reached or does
/// not have the extension.
pub async fn check_extension(pool: &Pool) -> anyhow::Result<String> {
    let client = pool.get().await.context("cannot connect to the database")?;
    let row = client
        .query_typed(
            "SELECT extversion FROM pg_extension WHERE extname = 'smsbus'",
            &[],
        )
        .await
        .context("cannot read pg_extension")?
        .into_iter()
        .next();
    match row {
        Some(row) => Ok(row.get(0)),
        None => {
            bail!("extension smsbus is not installed in this database (CREATE EXTENSION smsbus)")
        }
    }
}

/// Whether `smsbus.restoring` is on for this session: left on (say with
/// ALTER DATABASE) after a restore, it would keep every new message as
/// given, unchecked and unrouted.
pub async fn restoring(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let rows = client
        .query_typed("SELECT smsbus._restoring()", &[])
        .await?;
    Ok(rows[0].get(0))
}

/// What to tell an operator about it.
pub const RESTORING_LEFT_ON: &str = "smsbus.restoring is on: new messages are stored as given, \
     not checked or routed (turn it off once the restore is done: \
     ALTER DATABASE ... RESET smsbus.restoring)";

/// Hands back every message this worker claimed and did not submit.
pub async fn release_claims(pool: &Pool, worker_id: &str) -> anyhow::Result<i32> {
    let client = pool.get().await?;
    Ok(
        statements::query_one(&client, "SELECT smsbus._release($1)", &params![worker_id])
            .await?
            .get(0),
    )
}
