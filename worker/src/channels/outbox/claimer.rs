//! Claiming: queued messages taken for the channel while it is active,
//! never more than the driver's windows can take (a permit per message),
//! and nothing new while the writer's gate says outcomes cannot be
//! written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Claimed, Held};
use crate::backoff::Backoff;
use crate::channels::{client_parts, ChannelContext, OutMessage};
use crate::statements::{self, params};

/// Most messages one claim takes.
const MAX_CLAIM: usize = 1000;
/// Longest a busy claimer waits for a chunk's worth of free permits.
const CHUNK_WAIT: Duration = Duration::from_millis(5);
/// How often an idle claimer looks at the queue without a wake-up.
const POLL: Duration = Duration::from_secs(1);

/// What the claimer may do, as the outcome writer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Outcomes are written: claim freely.
    Open,
    /// Outcomes cannot be written: claim nothing.
    Paused,
    /// Past the retry horizon: claim one message, whose outcome tells
    /// whether writes work again.
    Probe,
}

/// Takes queued messages for the channel while it is active.
pub(super) struct Claimer {
    pub(super) ctx: ChannelContext,
    pub(super) held: Held,
    pub(super) capacity: usize,
    pub(super) permits: Arc<Semaphore>,
    pub(super) lease: Duration,
    pub(super) ready: mpsc::Sender<Claimed>,
    pub(super) stop: CancellationToken,
    /// Whether outcomes are written (the writer's word).
    pub(super) gate: Arc<watch::Sender<Gate>>,
}

impl Claimer {
    pub(super) async fn run(self, mut active: watch::Receiver<bool>) {
        let Claimer {
            ctx,
            held: held_ids,
            capacity,
            permits,
            lease,
            ready,
            stop,
            gate,
        } = self;
        let channel = ctx.row.name.clone();
        let mut writes = gate.subscribe();
        // One probe per retry horizon, however fast each one fails.
        let mut last_probe: Option<Instant> = None;
        let mut wakeups = ctx.wakeups.queue.subscribe();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                result = active.wait_for(|a| *a) => if result.is_err() { return },
            }
            // A channel that cannot record what it sends takes nothing new.
            tokio::select! {
                _ = stop.cancelled() => return,
                result = writes.wait_for(|g| *g != Gate::Paused) => if result.is_err() { return },
            }
            // Under load, claim in chunks of a quarter of the capacity (or what
            // frees up within CHUNK_WAIT): one claim of hundreds of rows costs
            // little more than a claim of one.
            let chunk = (capacity / 4).clamp(1, MAX_CLAIM) as u32;
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            if permits.available_permits() + 1 < chunk as usize {
                // Running out of CHUNK_WAIT is expected: then what is free
                // is claimed.
                let _ = tokio::time::timeout(CHUNK_WAIT, async {
                    while permits.available_permits() + 1 < chunk as usize {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
            }
            let mut held = vec![first];
            while held.len() < MAX_CLAIM {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            // Probing whether outcomes are written again: one message.
            let probing = *writes.borrow() == Gate::Probe;
            let horizon = ctx.claims.outcome_retry_horizon;
            if let Some(wait) = last_probe
                .filter(|_| probing)
                .and_then(|at| horizon.checked_sub(at.elapsed()))
            {
                drop(held);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            if *writes.borrow() == Gate::Paused {
                continue;
            }
            if probing {
                held.truncate(1);
            }
            let wanted = held.len();
            let rows = match claim(&ctx, wanted, lease).await {
                Ok(rows) => {
                    backoff.reset();
                    rows
                }
                Err(e) => {
                    drop(held);
                    let delay = backoff.next_delay();
                    tracing::warn!(channel = %channel, "cannot claim messages: {e:#}; again in {delay:?}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let drained = rows.len() < wanted;
            if probing && !rows.is_empty() {
                last_probe = Some(Instant::now());
                // The probe is out: nothing more until its outcome is written.
                gate.send_if_modified(|g| {
                    let was_probe = *g == Gate::Probe;
                    if was_probe {
                        *g = Gate::Paused;
                    }
                    was_probe
                });
            }
            let now = Instant::now();
            held_ids.0.lock().unwrap().extend(rows.iter().map(|m| m.id));
            for message in rows {
                let permit = held.pop().expect("one permit per claimed row");
                let claimed = Claimed {
                    message,
                    claimed_at: now,
                    _permit: permit,
                };
                if ready.send(claimed).await.is_err() {
                    return;
                }
            }
            drop(held);
            if drained {
                // The queue is empty (and _claim armed our wake-up): wait.
                let woken = wait_for_work(&channel, &mut wakeups);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = woken => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }
}

/// Resolves on a queue notification for `channel`.
async fn wait_for_work(channel: &str, wakeups: &mut broadcast::Receiver<Arc<str>>) {
    loop {
        match wakeups.recv().await {
            Ok(name) if &*name == channel || &*name == crate::listener::ALL => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

async fn claim(
    ctx: &ChannelContext,
    limit: usize,
    lease: Duration,
) -> anyhow::Result<Vec<OutMessage>> {
    let client = ctx.pool.get().await?;
    let rows = statements::query(
        &client,
        "SELECT id, to_address, from_address, body, encoding, segments, priority,
                request_report, valid_until, to_ton, to_npi, from_ton, from_npi, client_parts,
                custom, greatest(created_at, scheduled_at) AS due_at
         FROM smsbus._claim($1, $2, $3, make_interval(secs => $4))",
        &params![
            ctx.row.name,
            &*ctx.worker_id,
            limit as i32,
            lease.as_secs_f64()
        ],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let encoding: Option<String> = r.try_get("encoding")?;
            let body: String = r.try_get("body")?;
            Ok(OutMessage {
                id: r.try_get("id")?,
                to_address: r
                    .try_get::<_, Option<String>>("to_address")?
                    .unwrap_or_default(),
                from_address: r.try_get("from_address")?,
                encoding: encoding
                    .and_then(|e| e.parse().ok())
                    .unwrap_or_else(|| smsbus_core::text::detect(&body)),
                body,
                segments: r.try_get("segments")?,
                priority: r.try_get("priority")?,
                request_report: r.try_get("request_report")?,
                valid_until: r.try_get("valid_until")?,
                due_at: r.try_get("due_at")?,
                to_ton: r.try_get("to_ton")?,
                to_npi: r.try_get("to_npi")?,
                from_ton: r.try_get("from_ton")?,
                from_npi: r.try_get("from_npi")?,
                client_parts: r
                    .try_get::<_, Option<serde_json::Value>>("client_parts")?
                    .as_ref()
                    .and_then(client_parts::from_json),
                custom: r.try_get("custom")?,
            })
        })
        .collect()
}
