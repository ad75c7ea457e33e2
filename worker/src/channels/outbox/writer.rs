//! The outcome writer: outcomes written in order, in batches, each batch
//! settled before the next; and what happens when they cannot be written
//! (the comment "When outcomes cannot be written" below).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::batch::{Batch, Committed};
use super::claimer::Gate;
use super::{Finished, Held, Outcome, STOP};
use crate::backoff::Backoff;
use crate::channels::state::Count;
use crate::channels::ChannelContext;
use crate::statements::{self, params};

/// Most outcomes one write carries.
const MAX_WRITE: usize = 2000;

/// Writes outcomes in order, in batches, until the stop marker.
pub(super) async fn write_loop(
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

/// The outcome writer's state across batches.
struct Writer {
    ctx: ChannelContext,
    held: Held,
    gate: Arc<watch::Sender<Gate>>,
    horizon: Duration,
    /// When outcome writes started failing, until one works again.
    failing_since: Option<Instant>,
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
            let done: i32 = statements::query_one(
                &client,
                "SELECT smsbus._mark_failed($1, $2)",
                &params![ids, errors],
            )
            .await?
            .get(0);
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
