//! The outbound side of a channel: a claimer that takes queued messages
//! from the database (`smsbus._claim`, priority then age, with a lease) and
//! a writer that records their outcomes in batches (`_mark_sent`,
//! `_mark_failed`, `_mark_retry`, `_release`).
//!
//! A semaphore of `capacity` permits bounds what is claimed and not yet
//! finished, so the claimer never takes more than the driver's windows can
//! work on; a permit returns when the outcome is written.
//!
//! An outcome that cannot be written is never forgotten: see "When
//! outcomes cannot be written" below.

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

/// How channels hold their claims: the worker's settings.
#[derive(Clone, Copy, Debug)]
pub struct ClaimSettings {
    /// The shortest lease on a claimed message.
    pub min_lease: Duration,
    /// How long failing outcome writes are tried again before each
    /// message is settled on its own (see "When outcomes cannot be
    /// written").
    pub outcome_retry_horizon: Duration,
}

/// Why [`Outbox::shut_down`] could not promise that every outcome is
/// committed. Surfaces as the channel driver's error, so the supervisor
/// logs it and writes it to `channel_state.last_error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The claimer task panicked (or was cancelled); what it had claimed
    /// and not handed over returns when its lease expires.
    #[error("the claimer failed: {0}")]
    Claimer(#[source] tokio::task::JoinError),
    /// The outcome writer panicked (or was cancelled): outcomes it had not
    /// committed are lost, their messages return when their leases expire.
    #[error("the outcome writer failed, unwritten outcomes are left to their leases: {0}")]
    Writer(#[source] tokio::task::JoinError),
}

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
        let gate = Arc::new(watch::channel(Gate::Open).0);
        let claimer = tokio::spawn(
            Claimer {
                ctx: ctx.clone(),
                held: held.clone(),
                capacity,
                permits: Arc::new(Semaphore::new(capacity)),
                lease,
                ready: ready_tx,
                stop: stop_claiming.clone(),
                gate: gate.clone(),
            }
            .run(active_rx),
        );
        let (written_tx, written) = watch::channel(0);
        let writer = tokio::spawn(write_loop(
            ctx.clone(),
            held.clone(),
            outcomes_rx,
            written_tx,
            gate,
            ctx.claims.outcome_retry_horizon,
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
    /// once the outcome is written (or settled otherwise, see "When
    /// outcomes cannot be written"), so what is held in memory, sent or
    /// not, never exceeds the capacity, however slow the database.
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
    /// every outcome, and returns when all is committed (or settled as
    /// "When outcomes cannot be written" says). An error when a task of
    /// the outbox died, so that promise does not hold; the claimer's
    /// error is reported once the writer has finished.
    pub async fn shut_down(&self) -> Result<(), OutboxError> {
        self.stop_claiming.cancel();
        let claimer = self.claimer.lock().unwrap().take();
        let claimed = match claimer {
            Some(claimer) => claimer.await.map_err(OutboxError::Claimer),
            None => Ok(()),
        };
        {
            let mut ready = self.ready.lock().await;
            ready.close();
            while let Some(claimed) = ready.recv().await {
                self.finish(claimed, Outcome::Release);
            }
        }
        // Outcomes are written in order: this marker comes after all of
        // them. It cannot be sent only when the writer is gone, and
        // awaiting the writer below says why.
        let _ = self.send(STOP, Outcome::Release, None);
        let writer = self.writer.lock().unwrap().take();
        if let Some(writer) = writer {
            writer.await.map_err(OutboxError::Writer)?;
        }
        claimed
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
        // Bounded by design: past `limit`, or with the writer gone (the
        // watch closed), the report goes on without them.
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
    /// Whether outcomes are written (the writer's word).
    gate: Arc<watch::Sender<Gate>>,
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

/// Writes outcomes in order, in batches, until the stop marker.
async fn write_loop(
    ctx: ChannelContext,
    held: Held,
    mut outcomes: mpsc::UnboundedReceiver<Finished>,
    written: watch::Sender<u64>,
    gate: Arc<watch::Sender<Gate>>,
    horizon: Duration,
) {
    let mut writer = Writer {
        ctx,
        held,
        gate,
        horizon,
        failing_since: None,
    };
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
        writer.ctx.state.accepted(
            batch
                .iter()
                .flat_map(|f| match &f.outcome {
                    Outcome::Sent { references } => references.as_slice(),
                    _ => &[],
                })
                .map(String::as_str),
        );
        writer.settle(batch).await;
        // Every outcome up to `last` is settled; the permits went back
        // with them.
        written.send_replace(last);
    }
}

// When outcomes cannot be written
//
// Forgetting an outcome that was not written is what sends a message
// again: the message stays `sending`, its lease runs out, maintenance
// queues it, and it goes out once more, once per lease for as long as
// the error lasts (an operator's trigger on message_event that raises, a
// full disk). So a batch whose write fails keeps everything it had:
// - its messages stay held: their leases are renewed and never run out,
//   so nothing brings them back to the queue;
// - its submissions stay counted in the sessions' windows (`written`
//   does not pass them), so a crash now sends twice at most what a crash
//   always can, a window per session;
// - the claimer takes no new work (a channel that cannot record what it
//   sends must not send more); channel_state.last_error says why.
//
// The write is tried again with backoff. Once writes have failed for the
// retry horizon, the writer stops waiting for the real outcomes and
// settles each message of the batch on its own: its real outcome written
// alone (one row that breaks a batch, say a trigger raising for one
// message, no longer holds back the others), else, when the database
// refused it (a trigger, a constraint: not a connection cut, a shutdown or
// a deadlock, which say nothing of the outcome and are tried again),
// `failed` with last_error "outcome not recorded: <error>" and a trace
// entry saying so, which an operator can query and which is never sent
// again by itself.
// A message for which neither can be written stays held and is tried
// again: sending it again would send it twice and dropping it would lose
// it. Only a message that was never handed to the provider (`Release`)
// is let go after the horizon: its lease brings it back to the queue,
// from which it is sent once.
//
// After the horizon the channel claims one message at a time, as a
// probe: when its outcome is written for real, writes work again and
// claiming resumes; while they do not, one message per horizon goes out
// and ends "outcome not recorded".
//
// When the channel stops while outcomes cannot be written, each message
// is settled at once as after the horizon, and what still cannot be
// written is left as a crash would leave it, to be queued again by its
// lease (or the worker's final `_release`) and maybe sent twice: a stop
// must end, and these are at most the windows.

/// What the claimer may do, as the outcome writer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Outcomes are written: claim freely.
    Open,
    /// Outcomes cannot be written: claim nothing.
    Paused,
    /// Past the retry horizon: claim one message, whose outcome tells
    /// whether writes work again.
    Probe,
}

/// The outcome writer's state across batches.
struct Writer {
    ctx: ChannelContext,
    held: Held,
    gate: Arc<watch::Sender<Gate>>,
    horizon: Duration,
    /// When outcome writes started failing, until one works again.
    failing_since: Option<Instant>,
}

/// What a write committed, as the functions counted it.
#[derive(Default)]
struct Committed {
    sent: u64,
    failed: u64,
    unrecorded: u64,
}

/// Longest reason kept in last_error.
const MAX_REASON: usize = 500;

impl Writer {
    /// Writes `batch`, returning once every message in it is settled (see
    /// above).
    async fn settle(&mut self, mut batch: Vec<Finished>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // When this batch's messages were last written one by one.
        let mut isolated: Option<Instant> = None;
        loop {
            let (error, refused) = match Batch::of(&batch).write(&self.ctx).await {
                Ok(committed) => {
                    self.count(&committed);
                    let proves_writes_work =
                        batch.iter().any(|f| !matches!(f.outcome, Outcome::Release));
                    self.let_go(&batch);
                    if proves_writes_work {
                        self.writes_work().await;
                    } else if self.given_up() {
                        // A probe handed back unsent proves nothing: probe
                        // with another.
                        self.gate.send_replace(Gate::Probe);
                    }
                    return;
                }
                Err(e) => (reason(&e), refused_by_the_database(&e)),
            };
            self.writes_fail(&error).await;
            let stopping = self.ctx.stop.is_cancelled();
            if stopping || self.given_up() {
                let (never_sent, kept): (Vec<Finished>, Vec<Finished>) = batch
                    .into_iter()
                    .partition(|f| matches!(f.outcome, Outcome::Release));
                // Never submitted: the lease sends it once, later.
                self.let_go(&never_sent);
                batch = kept;
                if stopping || isolated.is_none_or(|at| at.elapsed() >= self.horizon) {
                    batch = self.settle_each(batch, &error).await;
                    isolated = Some(Instant::now());
                } else if refused && self.mark_unrecorded(&batch, &error).await {
                    batch.clear();
                }
                if batch.is_empty() {
                    self.gate.send_replace(Gate::Probe);
                    return;
                }
                if stopping {
                    tracing::error!(
                        channel = %self.ctx.row.name,
                        messages = ?batch.iter().map(|f| f.id).collect::<Vec<_>>(),
                        "stopping with outcomes that cannot be written ({error}): \
                         their leases will queue them again, and they may be sent twice"
                    );
                    self.let_go(&batch);
                    return;
                }
            }
            let delay = backoff.next_delay();
            tracing::warn!(channel = %self.ctx.row.name, "cannot write outcomes: {error}; again in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.ctx.stop.cancelled() => {}
            }
        }
    }

    /// Writes each message's outcome alone, else, when the database refused
    /// it, marks it "outcome not recorded"; returns those for which neither
    /// could be written.
    async fn settle_each(&mut self, batch: Vec<Finished>, error: &str) -> Vec<Finished> {
        let mut unsettled = Vec::new();
        for finished in batch {
            let one = std::slice::from_ref(&finished);
            match Batch::of(one).write(&self.ctx).await {
                Ok(committed) => self.count(&committed),
                Err(e) => {
                    let own_error = reason(&e);
                    // A write lost on the way (a connection cut) says
                    // nothing about the outcome: it is tried again.
                    if !refused_by_the_database(&e) || !self.mark_unrecorded(one, &own_error).await
                    {
                        unsettled.push(finished);
                        continue;
                    }
                }
            }
            self.let_go(one);
        }
        if !unsettled.is_empty() {
            tracing::error!(channel = %self.ctx.row.name, count = unsettled.len(),
                "outcomes cannot be written, nor marked unrecorded ({error}): the messages stay held");
        }
        unsettled
    }

    /// Marks `batch` failed with "outcome not recorded: `error`" and
    /// what its outcome was; true once committed.
    async fn mark_unrecorded(&mut self, batch: &[Finished], error: &str) -> bool {
        let ids: Vec<i64> = batch.iter().map(|f| f.id).collect();
        let errors: Vec<String> = batch
            .iter()
            .map(|f| format!("outcome not recorded: {error}; {}", was(&f.outcome)))
            .collect();
        let marked = async {
            let client = self.ctx.pool.get().await?;
            let s = client
                .prepare_cached("SELECT smsbus._mark_failed($1, $2)")
                .await?;
            let done: i32 = client.query_one(&s, &[&ids, &errors]).await?.get(0);
            anyhow::Ok(done)
        };
        match marked.await {
            Ok(done) => {
                tracing::error!(channel = %self.ctx.row.name, messages = ?ids,
                    "outcomes not recorded ({error}): marked failed, not to be sent again");
                self.count(&Committed {
                    unrecorded: done.max(0) as u64,
                    ..Committed::default()
                });
                true
            }
            Err(e) => {
                tracing::warn!(channel = %self.ctx.row.name, "cannot mark outcomes unrecorded: {}", reason(&e));
                false
            }
        }
    }

    /// Whether writes have failed for the retry horizon.
    fn given_up(&self) -> bool {
        self.failing_since
            .is_some_and(|since| since.elapsed() >= self.horizon)
    }

    /// The messages of `batch` are no longer this outbox's to renew.
    fn let_go(&self, batch: &[Finished]) {
        let mut held = self.held.0.lock().unwrap();
        for f in batch {
            held.remove(&f.id);
        }
    }

    fn count(&self, committed: &Committed) {
        self.ctx.state.count(Count::Sent, committed.sent);
        self.ctx.state.count(Count::Failed, committed.failed);
        self.ctx
            .state
            .count(Count::Unrecorded, committed.unrecorded);
    }

    /// A write failed: claiming pauses (unless it is probing already past
    /// the horizon) and channel_state says why, once per spell.
    async fn writes_fail(&mut self, error: &str) {
        if self.failing_since.is_some() {
            // Paused already, or probing: a failed probe pauses again.
            self.gate.send_if_modified(|g| {
                let probing = *g == Gate::Probe;
                if probing {
                    *g = Gate::Paused;
                }
                probing
            });
            return;
        }
        self.failing_since = Some(Instant::now());
        self.gate.send_replace(Gate::Paused);
        let note = format!("claiming paused: outcomes cannot be written: {error}");
        tracing::error!(channel = %self.ctx.row.name, "{note}");
        self.ctx.state.note(&note).await;
    }

    /// A real outcome was written: claiming resumes.
    async fn writes_work(&mut self) {
        if self.failing_since.take().is_none() {
            return;
        }
        self.gate.send_replace(Gate::Open);
        let note = "claiming resumed: outcomes are written again";
        tracing::info!(channel = %self.ctx.row.name, "{note}");
        self.ctx.state.note(note).await;
    }
}

/// What an outcome that could not be recorded was, for last_error.
fn was(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Sent { references } => format!(
            "the provider accepted it (reference {})",
            references.join(", ")
        ),
        Outcome::Failed { error } => format!("it had failed: {error}"),
        Outcome::Retry { error, .. } => format!("it was to be tried again: {error}"),
        Outcome::Release => "it was never submitted".to_owned(),
    }
}

/// Whether the database refused a write for what it wrote (an operator's
/// trigger, a constraint), rather than the write being lost on the way
/// (a connection cut, the server shutting down or out of resources, a
/// deadlock): only then is "outcome not recorded" the truth; otherwise
/// the write is tried again.
fn refused_by_the_database(e: &anyhow::Error) -> bool {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::as_db_error)
        .is_some_and(|db| {
            // 08 connection, 40 transaction rollback, 53 insufficient
            // resources, 57 operator intervention, 58 system error.
            !matches!(
                db.code().code().get(..2),
                Some("08" | "40" | "53" | "57" | "58")
            )
        })
}

/// A failed write's reason, as the database gave it, cut to [`MAX_REASON`].
fn reason(e: &anyhow::Error) -> String {
    let text = match e.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => pg
            .as_db_error()
            .map_or_else(|| pg.to_string(), |db| db.message().to_owned()),
        None => format!("{e:#}"),
    };
    cut(&text, MAX_REASON)
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Outcomes grouped by the function that records them, borrowed from the
/// batch.
#[derive(Default)]
struct Batch<'a> {
    sent_ids: Vec<i64>,
    part_ids: Vec<i64>,
    part_numbers: Vec<i32>,
    part_references: Vec<&'a str>,
    failed_ids: Vec<i64>,
    failed_errors: Vec<&'a str>,
    retry_ids: Vec<i64>,
    retry_errors: Vec<&'a str>,
    retry_delays: Vec<f64>,
    released: Vec<i64>,
}

impl<'a> Batch<'a> {
    fn of(finished: &'a [Finished]) -> Batch<'a> {
        let mut b = Batch::default();
        for f in finished {
            let id = f.id;
            match &f.outcome {
                Outcome::Sent { references } => {
                    b.sent_ids.push(id);
                    for (i, reference) in references.iter().enumerate() {
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

    /// Writes every group, all or nothing: a batch written again after a
    /// failure never writes a group twice.
    async fn write(&self, ctx: &ChannelContext) -> anyhow::Result<Committed> {
        let groups = [
            !self.part_ids.is_empty(),
            !self.failed_ids.is_empty(),
            !self.retry_ids.is_empty(),
            !self.released.is_empty(),
        ];
        let mut client = ctx.pool.get().await?;
        // One statement is all or nothing by itself; more need a
        // transaction (its BEGIN and COMMIT cost two round trips).
        if groups.iter().filter(|g| **g).count() > 1 {
            let tx = client.transaction().await?;
            let committed = self.statements(&tx, ctx).await?;
            tx.commit().await?;
            Ok(committed)
        } else {
            self.statements(&client, ctx).await
        }
    }

    async fn statements(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        ctx: &ChannelContext,
    ) -> anyhow::Result<Committed> {
        tracing::debug!(channel = %ctx.row.name, sent = ?self.sent_ids, references = ?self.part_references, "writing outcomes");
        let mut committed = Committed::default();
        if !self.part_ids.is_empty() {
            let s = client
                .prepare_cached("SELECT smsbus._mark_sent($1, $2, $3, $4)")
                .await?;
            let done: i32 = client
                .query_one(
                    &s,
                    &[
                        &ctx.row.name,
                        &self.part_ids,
                        &self.part_numbers,
                        &self.part_references,
                    ],
                )
                .await?
                .get(0);
            committed.sent = done.max(0) as u64;
        }
        if !self.failed_ids.is_empty() {
            let s = client
                .prepare_cached("SELECT smsbus._mark_failed($1, $2)")
                .await?;
            let done: i32 = client
                .query_one(&s, &[&self.failed_ids, &self.failed_errors])
                .await?
                .get(0);
            committed.failed = done.max(0) as u64;
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
        Ok(committed)
    }
}
