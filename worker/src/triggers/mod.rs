//! The trigger runner (DESIGN.md §6): takes messages the extension armed
//! (`trigger_status = 'pending'`, woken by NOTIFY `smsbus_triggers` and a
//! timer) and runs each one's chain.
//!
//! - [`catalog`]: the enabled triggers, read afresh for every batch, so a
//!   changed row counts from the next batch on.
//! - [`chain`]: one message's chain, in one transaction.
//! - [`lua`]: Lua scripts, each in a state of its own.
//!
//! Different messages run concurrently, a few at a time. Every statement
//! of a group's transaction is bounded by the trigger time limit.

pub mod catalog;
pub mod chain;
pub mod lua;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::listener::Wakeups;

/// Messages taken at once.
const BATCH: i32 = 100;
/// Groups run at once, each on its own connection; one message's triggers
/// never run concurrently.
pub(crate) const PARALLEL: usize = 4;
/// Messages whose chains share a transaction (each in a savepoint): one
/// commit, and its flush to disk, for several.
const GROUP: usize = 25;
/// How often the runner looks for armed messages without a wake-up.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(
    pool: Pool,
    settings: lua::Settings,
    wakeups: Wakeups,
    shutdown: CancellationToken,
) {
    let lua = Arc::new(lua::LuaTriggers::new(settings));
    crate::polling::run_passes("trigger runner", POLL, &wakeups.triggers, &shutdown, || {
        batch(&pool, &lua, &shutdown)
    })
    .await
}

/// Takes a batch and runs its chains in groups of [`GROUP`], [`PARALLEL`]
/// groups at a time; returns whether it was full.
async fn batch(
    pool: &Pool,
    lua: &Arc<lua::LuaTriggers>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT smsbus._claim_triggers($1)")
        .await?;
    let ids: Vec<i64> = client
        .query(&statement, &[&BATCH])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(false);
    }
    let triggers = Arc::new(catalog::load(&client).await?);
    lua.retain(&triggers);
    drop(client);
    let statement_timeout = format!(
        "SET LOCAL statement_timeout = {}",
        lua.settings().time_limit.as_millis()
    );
    let mut running = JoinSet::new();
    let mut failure = None;
    for (done, group) in ids.chunks(GROUP).enumerate() {
        while running.len() >= PARALLEL {
            if let Some(Ok(Err(e))) = running.join_next().await {
                failure.get_or_insert(e);
            }
        }
        if shutdown.is_cancelled() || failure.is_some() {
            // The rest go back to pending at once rather than after the
            // resume timeout.
            let rest = &ids[done * GROUP..];
            pool.get()
                .await?
                .execute(
                    "UPDATE smsbus.message SET trigger_status = 'pending'
                     WHERE id = ANY($1) AND trigger_status = 'processing'",
                    &[&rest],
                )
                .await?;
            break;
        }
        let (pool, triggers, group) = (pool.clone(), triggers.clone(), group.to_vec());
        let (lua, statement_timeout) = (lua.clone(), statement_timeout.clone());
        running.spawn(async move {
            let mut client = pool.get().await?;
            let mut tx = client.transaction().await?;
            tx.batch_execute(&statement_timeout).await?;
            for id in group {
                chain::run(&mut tx, &triggers, &lua, id).await?;
            }
            tx.commit().await?;
            anyhow::Ok(())
        });
    }
    while let Some(joined) = running.join_next().await {
        if let Ok(Err(e)) = joined {
            failure.get_or_insert(e);
        }
    }
    match failure {
        // A message whose chain could not be recorded stays processing
        // until maintenance arms it again.
        Some(e) => Err(e),
        None => Ok(ids.len() == BATCH as usize && !shutdown.is_cancelled()),
    }
}
