//! The loop that maintenance and the trigger runner share: a pass on a
//! timer and on every wake-up, passes back to back while one reports a
//! full batch, a failed pass logged and tried again at the next tick.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Runs `pass` until `shutdown`. `pass` returns whether it hit its batch
/// limit (there is more to do at once).
pub async fn run_passes<F, Fut>(
    what: &str,
    period: Duration,
    wake: &Notify,
    shutdown: &CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        loop {
            match pass().await {
                Ok(full) if full && !shutdown.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("{what} failed: {e:#}");
                    break;
                }
            }
        }
    }
}
