//! Renewing the leases of the messages an outbox holds, so that nothing
//! it has claimed returns to the queue while it still has it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Held;
use crate::channels::ChannelContext;
use crate::statements::{self, params};

/// Renews the leases of held messages at a third of the lease.
pub(super) async fn renew_loop(
    ctx: ChannelContext,
    held: Held,
    lease: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ids: Vec<i64> = held.0.lock().unwrap().iter().copied().collect();
        if ids.is_empty() {
            continue;
        }
        let renewed = async {
            let client = ctx.pool.get().await?;
            statements::execute(
                &client,
                "SELECT smsbus._renew_leases($1, $2, make_interval(secs => $3))",
                &params![&*ctx.worker_id, ids, lease.as_secs_f64()],
            )
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = renewed.await {
            tracing::warn!(channel = %ctx.row.name, "cannot renew leases: {e:#}");
        }
    }
}
