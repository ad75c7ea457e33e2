//! The outbound side of a channel: a claimer that takes queued messages
//! from the database (`smsbus._claim`, priority then age, with a lease) and
//! a writer that records their outcomes in batches (`_mark_sent`,
//! `_mark_failed`, `_mark_retry`, `_release`).
//!
//! A semaphore of `capacity` permits bounds what is claimed and not yet
//! finished, so the claimer never takes more than the driver's windows can
//! work on; a permit returns when the outcome is handed to the writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::state::Count;
use super::{ChannelContext, OutMessage};
use crate::backoff::Backoff;

/// Most messages one claim takes.
const MAX_CLAIM: usize = 1000;
/// Most outcomes one write carries.
const MAX_WRITE: usize = 2000;
/// Longest a busy claimer waits for a chunk's worth of free permits.
const CHUNK_WAIT: Duration = Duration::from_millis(5);
/// How often an idle claimer looks at the queue without a wake-up.
const POLL: Duration = Duration::from_secs(1);

/// A message this channel holds a lease on.
pub struct Claimed {
    pub message: OutMessage,
    pub claimed_at: Instant,
    _permit: OwnedSemaphorePermit,
}

/// What became of a claimed message.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted by the provider: one reference per part, in order.
    Sent { references: Vec<String> },
    /// Refused for good.
    Failed { error: String },
    /// Back to the queue, to be tried again after `delay`.
    Retry { error: String, delay: Duration },
    /// Never handed to the provider: back to the queue at once.
    Release,
}

pub struct Outbox {
    ready: tokio::sync::Mutex<mpsc::Receiver<Claimed>>,
    /// The outcome queue. Outcomes are numbered and sent under its lock,
    /// so they arrive in the order of their numbers.
    outcomes: std::sync::Mutex<mpsc::UnboundedSender<Finished>>,
    /// The number of the last outcome handed over.
    issued: Arc<AtomicU64>,
    /// The number of the last outcome written (with all before it).
    written: watch::Receiver<u64>,
    active: watch::Sender<bool>,
    stop_claiming: CancellationToken,
    claimer: std::sync::Mutex<Option<JoinHandle<()>>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Outbox {
    /// Starts claiming for the channel of `ctx` (once [`Outbox::set_active`])
    /// with at most `capacity` messages held at once, each leased for `lease`.
    pub fn start(ctx: &ChannelContext, capacity: usize, lease: Duration) -> Arc<Outbox> {
        let capacity = capacity.max(1);
        let (ready_tx, ready_rx) = mpsc::channel(capacity);
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let (active, active_rx) = watch::channel(false);
        let stop_claiming = ctx.stop.child_token();
        let held = Held::default();
        let claimer = tokio::spawn(
            Claimer {
                ctx: ctx.clone(),
                held: held.clone(),
                capacity,
                permits: Arc::new(Semaphore::new(capacity)),
                lease,
                ready: ready_tx,
                stop: stop_claiming.clone(),
            }
            .run(active_rx),
        );
        let (written_tx, written) = watch::channel(0);
        let writer = tokio::spawn(write_loop(
            ctx.clone(),
            held.clone(),
            outcomes_rx,
            written_tx,
        ));
        tokio::spawn(renew_loop(
            ctx.clone(),
            held.clone(),
            lease,
            stop_claiming.clone(),
        ));
        Arc::new(Outbox {
            ready: tokio::sync::Mutex::new(ready_rx),
            outcomes: std::sync::Mutex::new(outcomes_tx),
            issued: Arc::default(),
            written,
            active,
            stop_claiming,
            claimer: std::sync::Mutex::new(Some(claimer)),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Claim only while some session can submit.
    pub fn set_active(&self, active: bool) {
        self.active.send_replace(active);
    }

    /// The next claimed message, waiting for one; None once claiming has
    /// stopped and nothing is left.
    pub async fn next(&self) -> Option<Claimed> {
        self.ready.lock().await.recv().await
    }

    /// A claimed message without waiting, if one is ready.
    pub fn try_next(&self) -> Option<Claimed> {
        self.ready.try_lock().ok()?.try_recv().ok()
    }

    /// Records what became of `claimed`. Its permit returns to the claimer
    /// once the outcome is written, so what is held in memory, sent or not,
    /// never exceeds the capacity, however slow the database.
    /// Returns the outcome's number: it is committed once
    /// [`Outbox::written`] reaches it.
    pub fn finish(&self, claimed: Claimed, outcome: Outcome) -> u64 {
        let id = claimed.message.id;
        match self.send(id, outcome, Some(claimed._permit)) {
            Ok(seq) => seq,
            Err(()) => {
                tracing::error!(
                    message = id,
                    "outcome writer has stopped; the lease will return the message"
                );
                0
            }
        }
    }

    /// The number of the last outcome committed (with all before it).
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.clone()
    }

    /// Stops claiming, hands back what was claimed and not taken, writes
    /// every outcome, and returns when all is committed.
    pub async fn shut_down(&self) {
        self.stop_claiming.cancel();
        let claimer = self.claimer.lock().unwrap().take();
        if let Some(claimer) = claimer {
            let _ = claimer.await;
        }
        {
            let mut ready = self.ready.lock().await;
            ready.close();
            while let Some(claimed) = ready.recv().await {
                self.finish(claimed, Outcome::Release);
            }
        }
        // Outcomes are written in order: this marker comes after all of them.
        let _ = self.send(STOP, Outcome::Release, None);
        let writer = self.writer.lock().unwrap().take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

impl Outbox {
    fn send(
        &self,
        id: i64,
        outcome: Outcome,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<u64, ()> {
        let queue = self.outcomes.lock().unwrap();
        let seq = self.issued.load(Ordering::SeqCst) + 1;
        self.issued.store(seq, Ordering::SeqCst);
        let finished = Finished {
            id,
            seq,
            outcome,
            _permit: permit,
        };
        queue.send(finished).map(|()| seq).map_err(|_| ())
    }

    /// How far outcomes have been handed over and written.
    pub fn progress(&self) -> Progress {
        Progress {
            issued: self.issued.clone(),
            written: self.written.clone(),
        }
    }
}

/// Lets a delivery report wait for the outcomes handed over before it
/// arrived: the provider answers a submission before it reports on it, so
/// once those are written the report finds its part instead of racing its
/// `_mark_sent` (and being parked, or matched in the other base to another
/// message).
#[derive(Clone)]
pub struct Progress {
    issued: Arc<AtomicU64>,
    written: watch::Receiver<u64>,
}

impl Progress {
    /// The outcomes handed over so far.
    pub fn mark(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    /// Waits, at most `limit`, until the outcomes up to `mark` are written.
    pub async fn written(&self, mark: u64, limit: Duration) {
        let mut written = self.written.clone();
        let _ = tokio::time::timeout(limit, written.wait_for(|w| *w >= mark)).await;
    }
}

/// Outcome id that stops the writer (message ids start at 1).
const STOP: i64 = -1;

/// The ids an outbox holds.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<std::collections::HashSet<i64>>>);

/// Renews the leases of held messages at a third of the lease.
async fn renew_loop(ctx: ChannelContext, held: Held, lease: Duration, stop: CancellationToken) {
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
            let s = client
                .prepare_cached("SELECT smsbus._renew_leases($1, $2, make_interval(secs => $3))")
                .await?;
            client
                .execute(&s, &[&&*ctx.worker_id, &ids, &lease.as_secs_f64()])
                .await?;
            anyhow::Ok(())
        };
        if let Err(e) = renewed.await {
            tracing::warn!(channel = %ctx.row.name, "cannot renew leases: {e:#}");
        }
    }
}

/// Takes queued messages for the channel while it is active.
struct Claimer {
    ctx: ChannelContext,
    held: Held,
    capacity: usize,
    permits: Arc<Semaphore>,
    lease: Duration,
    ready: mpsc::Sender<Claimed>,
    stop: CancellationToken,
}

impl Claimer {
    async fn run(self, mut active: watch::Receiver<bool>) {
        let Claimer {
            ctx,
            held: held_ids,
            capacity,
            permits,
            lease,
            ready,
            stop,
        } = self;
        let channel = ctx.row.name.clone();
        let mut wakeups = ctx.wakeups.queue.subscribe();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                result = active.wait_for(|a| *a) => if result.is_err() { return },
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
            Ok(name) if &*name == channel => return,
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
    let statement = client
        .prepare_cached(
            "SELECT id, to_address, from_address, body, encoding, segments, priority,
                    request_report, valid_until, to_ton, to_npi, from_ton, from_npi,
                    greatest(created_at, scheduled_at) AS due_at
             FROM smsbus._claim($1, $2, $3, make_interval(secs => $4))",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &ctx.row.name,
                &&*ctx.worker_id,
                &(limit as i32),
                &lease.as_secs_f64(),
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
            })
        })
        .collect()
}

/// An outcome on its way to the database, with the claim's permit.
struct Finished {
    id: i64,
    seq: u64,
    outcome: Outcome,
    _permit: Option<OwnedSemaphorePermit>,
}

async fn write_loop(
    ctx: ChannelContext,
    held: Held,
    mut outcomes: mpsc::UnboundedReceiver<Finished>,
    written: watch::Sender<u64>,
) {
    let mut stopping = false;
    while !stopping {
        let Some(first) = outcomes.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_WRITE {
            match outcomes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        stopping = batch.iter().any(|f| f.id == STOP);
        let last = batch.iter().map(|f| f.seq).max().unwrap_or(0);
        batch.retain(|f| f.id > 0);
        let outcomes = Batch::take(&mut batch);
        ctx.state
            .accepted(outcomes.part_references.iter().map(String::as_str));
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match outcomes.write(&ctx).await {
                Ok(()) => break,
                // The leases bring the messages back if this never works.
                Err(e) if started.elapsed() > Duration::from_secs(120) => {
                    tracing::error!(channel = %ctx.row.name, "giving up writing outcomes: {e:#}");
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(channel = %ctx.row.name, "cannot write outcomes: {e:#}; again in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        {
            let mut held = held.0.lock().unwrap();
            for f in &batch {
                held.remove(&f.id);
            }
        }
        // The permits go back with the batch.
        drop(batch);
        written.send_replace(last);
        ctx.state.count(Count::Sent, outcomes.sent_ids.len() as u64);
        ctx.state
            .count(Count::Failed, outcomes.failed_ids.len() as u64);
    }
}

/// Outcomes grouped by the function that records them.
#[derive(Default)]
struct Batch {
    sent_ids: Vec<i64>,
    part_ids: Vec<i64>,
    part_numbers: Vec<i32>,
    part_references: Vec<String>,
    failed_ids: Vec<i64>,
    failed_errors: Vec<String>,
    retry_ids: Vec<i64>,
    retry_errors: Vec<String>,
    retry_delays: Vec<f64>,
    released: Vec<i64>,
}

impl Batch {
    /// Groups the outcomes of `finished`, taking them out.
    fn take(finished: &mut [Finished]) -> Batch {
        let mut b = Batch::default();
        for f in finished {
            let id = f.id;
            match std::mem::replace(&mut f.outcome, Outcome::Release) {
                Outcome::Sent { references } => {
                    b.sent_ids.push(id);
                    for (i, reference) in references.into_iter().enumerate() {
                        b.part_ids.push(id);
                        b.part_numbers.push(i as i32 + 1);
                        b.part_references.push(reference);
                    }
                }
                Outcome::Failed { error } => {
                    b.failed_ids.push(id);
                    b.failed_errors.push(error);
                }
                Outcome::Retry { error, delay } => {
                    b.retry_ids.push(id);
                    b.retry_errors.push(error);
                    b.retry_delays.push(delay.as_secs_f64());
                }
                Outcome::Release => b.released.push(id),
            }
        }
        b
    }

    async fn write(&self, ctx: &ChannelContext) -> anyhow::Result<()> {
        let client = ctx.pool.get().await?;
        tracing::debug!(channel = %ctx.row.name, sent = ?self.sent_ids, references = ?self.part_references, "writing outcomes");
        if !self.part_ids.is_empty() {
            let s = client
                .prepare_cached("SELECT smsbus._mark_sent($1, $2, $3, $4)")
                .await?;
            client
                .execute(
                    &s,
                    &[
                        &ctx.row.name,
                        &self.part_ids,
                        &self.part_numbers,
                        &self.part_references,
                    ],
                )
                .await?;
        }
        if !self.failed_ids.is_empty() {
            let s = client
                .prepare_cached("SELECT smsbus._mark_failed($1, $2)")
                .await?;
            client
                .execute(&s, &[&self.failed_ids, &self.failed_errors])
                .await?;
        }
        if !self.retry_ids.is_empty() {
            let s = client
                .prepare_cached("SELECT smsbus._mark_retry($1, $2, $3)")
                .await?;
            client
                .execute(
                    &s,
                    &[&self.retry_ids, &self.retry_errors, &self.retry_delays],
                )
                .await?;
        }
        if !self.released.is_empty() {
            let s = client
                .prepare_cached("SELECT smsbus._release($1, $2)")
                .await?;
            client
                .execute(&s, &[&&*ctx.worker_id, &self.released])
                .await?;
        }
        Ok(())
    }
}
