//! The trigger runner (DESIGN.md §6): takes messages the extension armed
//! (`trigger_status = 'pending'`, woken by NOTIFY `smsbus_triggers` and a
//! timer) and runs each one's chain.
//!
//! - [`catalog`]: the enabled triggers, read afresh for every batch, so a
//!   changed row counts from the next batch on.
//! - [`chain`]: one message's chain, in one transaction.
//!
//! Messages run one after another; Lua scripts are not run yet (such a
//! trigger fails its message with a clear error).

pub mod catalog;
pub mod chain;

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::listener::Wakeups;

/// Messages taken at once.
const BATCH: i32 = 100;
/// How often the runner looks for armed messages without a wake-up.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(pool: Pool, wakeups: Wakeups, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = wakeups.triggers.notified() => {}
        }
        loop {
            match batch(&pool, &shutdown).await {
                Ok(full) if full && !shutdown.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("trigger runner: {e:#}");
                    break;
                }
            }
        }
    }
}

/// Takes a batch and runs its chains; returns whether it was full.
async fn batch(pool: &Pool, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    let mut client = pool.get().await?;
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
    let triggers = catalog::load(&client).await?;
    for (done, &id) in ids.iter().enumerate() {
        if shutdown.is_cancelled() {
            // The rest go back to pending at once rather than after the
            // resume timeout.
            let rest = &ids[done..];
            client
                .execute(
                    "UPDATE smsbus.message SET trigger_status = 'pending'
                     WHERE id = ANY($1) AND trigger_status = 'processing'",
                    &[&rest],
                )
                .await?;
            return Ok(false);
        }
        chain::run(&mut client, &triggers, id).await?;
    }
    Ok(ids.len() == BATCH as usize)
}
