//! The connection pool and the few queries the worker's core makes.

use anyhow::{bail, Context};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::Config;

/// The database connection settings with this worker's identity: the
/// application name shows in pg_stat_activity, the actor in the trace.
pub fn connection_config(config: &Config, role: &str) -> tokio_postgres::Config {
    let mut pg = config.database.clone();
    pg.application_name(format!("smsbus-worker {role}"));
    // The actor is a plain GUC; quote it for the server's options parser.
    let actor = format!("worker:{}", config.worker_id)
        .replace('\\', "\\\\")
        .replace(' ', "\\ ");
    pg.options(format!("-c smsbus.actor={actor}"));
    pg
}

pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        connection_config(config, "pool"),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .build()
        .context("building the pool")
}

/// Fails with a clear message when the database cannot be reached or does
/// not have the extension.
pub async fn check_extension(pool: &Pool) -> anyhow::Result<String> {
    let client = pool.get().await.context("cannot connect to the database")?;
    let row = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'smsbus'",
            &[],
        )
        .await
        .context("cannot read pg_extension")?;
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
    let row = client.query_one("SELECT smsbus._restoring()", &[]).await?;
    Ok(row.get(0))
}

/// What to tell an operator about it.
pub const RESTORING_LEFT_ON: &str = "smsbus.restoring is on: new messages are stored as given, \
     not checked or routed (turn it off once the restore is done: \
     ALTER DATABASE ... RESET smsbus.restoring)";

/// Hands back every message this worker claimed and did not submit.
pub async fn release_claims(pool: &Pool, worker_id: &str) -> anyhow::Result<i32> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT smsbus._release($1)", &[&worker_id])
        .await?;
    Ok(row.get(0))
}
