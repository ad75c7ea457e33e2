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
//! outcomes cannot be written" in [`writer`].
//!
//! - this file: the public API ([`Outbox`], [`Claimed`], [`Outcome`],
//!   [`Progress`], [`ClaimSettings`], [`OutboxError`]) and the outcome
//!   queue between drivers and the writer.
//! - [`claimer`]: claiming, never more than the window can take, and the
//!   gate by which the writer pauses it.
//! - [`writer`]: the outcome writer: batches, settling them, and what
//!   happens when outcomes cannot be written.
//! - [`leases`]: renewing held messages' leases.
//! - [`batch`]: outcomes grouped by the SQL function that records them.

mod batch;
mod claimer;
mod leases;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ChannelContext, OutMessage};
use claimer::{Claimer, Gate};
use leases::renew_loop;
use writer::write_loop;

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

impl Outcome {
    /// The error it records, if it records one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Failed { error } | Outcome::Retry { error, .. } => Some(error),
            Outcome::Sent { .. } | Outcome::Release => None,
        }
    }
}

pub struct Outbox {
    channel: String,
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
        let issued: Arc<AtomicU64> = Arc::default();
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
        let progress = Progress {
            issued: issued.clone(),
            written: written.clone(),
        };
        OWN.lock().unwrap().insert(ctx.row.name.clone(), progress);
        Arc::new(Outbox {
            channel: ctx.row.name.clone(),
            ready: tokio::sync::Mutex::new(ready_rx),
            outcomes: std::sync::Mutex::new(outcomes_tx),
            issued,
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
        {
            // Only this outbox's entry: a successor may have taken its place.
            let mut own = OWN.lock().unwrap();
            if own
                .get(&self.channel)
                .is_some_and(|p| Arc::ptr_eq(&p.issued, &self.issued))
            {
                own.remove(&self.channel);
            }
        }
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

/// The outboxes of the channels this process runs, by channel: a delivery
/// report that reaches the HTTP API (a provider's webhook) waits for the
/// outcomes its channel had handed over, as a driver's own reports do.
static OWN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Progress>>> =
    std::sync::LazyLock::new(Default::default);

/// The progress of `channel`'s outbox, when this process runs it.
pub fn progress_of(channel: &str) -> Option<Progress> {
    OWN.lock().unwrap().get(channel).cloned()
}

/// Outcome id that stops the writer (message ids start at 1).
const STOP: i64 = -1;

/// The ids an outbox holds.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<std::collections::HashSet<i64>>>);

/// An outcome on its way to the database, with the claim's permit.
struct Finished {
    id: i64,
    seq: u64,
    outcome: Outcome,
    _permit: Option<OwnedSemaphorePermit>,
}
