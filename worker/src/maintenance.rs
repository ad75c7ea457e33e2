//! Maintenance: on a timer and on wake-ups, one call of
//! `smsbus._maintain()` moves due scheduled messages on, sends expired
//! leases back to the queue, marks overdue reports `noreport` and archives
//! finished messages as `smsbus.archiving` says. Each step runs in its own
//! subtransaction, so a failing one is logged and the others still run; a
//! failed pass is logged and tried again at the next tick.

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::MAINTENANCE_BATCH;
use crate::listener::Wakeups;
use crate::statements::{self, params};
use crate::Config;

pub async fn run(config: Config, pool: Pool, wakeups: Wakeups, shutdown: CancellationToken) {
    crate::polling::run_passes(
        "maintenance pass",
        config.maintenance_interval,
        &wakeups.maintenance,
        &shutdown,
        || pass(&pool, &config),
    )
    .await
}

/// One pass; returns whether any step hit its batch limit.
async fn pass(pool: &Pool, config: &Config) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let row = statements::query_one(
        &client,
        "SELECT smsbus._maintain(make_interval(secs => $1), $2, make_interval(secs => $3))",
        &params![
            config.report_timeout.as_secs_f64(),
            MAINTENANCE_BATCH,
            config.inbound_part_timeout.as_secs_f64()
        ],
    )
    .await?;
    let done: serde_json::Value = row.get(0);
    let mut full = false;
    if let Some(steps) = done.as_object() {
        // Archiving goes on at once while a backlog lasts.
        full |= steps.get("archive_more") == Some(&serde_json::Value::Bool(true));
        // A step that failed ran in its own subtransaction; the others ran.
        if let Some(errors) = steps.get("errors").and_then(|e| e.as_object()) {
            for (step, error) in errors {
                tracing::warn!(step = %step, error = %error, "maintenance step failed");
            }
        }
        for (step, count) in steps {
            let count = count.as_i64().unwrap_or(0);
            if count > 0 {
                tracing::info!(step = %step, count, "maintenance");
            }
            full |= count >= i64::from(MAINTENANCE_BATCH);
        }
    }
    Ok(full)
}
