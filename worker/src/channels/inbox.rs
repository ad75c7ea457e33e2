//! The inbound side of a channel: delivery reports and received messages
//! are written in batches (`smsbus._apply_reports`, `_record_inbound`), and
//! each caller hears back only after its batch committed — the driver then
//! acknowledges to the peer, so nothing acknowledged can be lost. If the
//! write fails, every caller gets the error and answers the peer with a
//! temporary error, so the peer sends it again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use deadpool_postgres::Pool;

use super::outbox::Progress;
use super::state::{Count, StateHandle};
use super::ChannelContext;
use crate::statements::{self, params};

/// Most items one write carries.
const MAX_BATCH: usize = 1000;
/// Longest a report waits for the outcomes handed over before it.
const OUTCOMES_WAIT: Duration = Duration::from_secs(5);

/// A delivery report for one part.
#[derive(Clone, Debug)]
pub struct Report {
    pub reference: String,
    pub alternate: Option<String>,
    /// "delivered", "notdelivered" or "enroute".
    pub status: &'static str,
    pub detail: String,
}

/// A received message, or one part of a concatenated one.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub from: String,
    pub to: String,
    pub body: String,
    pub reference: Option<String>,
    pub custom: Option<serde_json::Value>,
    pub part: Option<Part>,
}

/// Where a part belongs: its set (the sender's reference and the number of
/// parts) and its place in it.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    pub reference: i32,
    pub total: i32,
    pub seq: i32,
}

/// Why a report or received message was not recorded. Surfaces to the
/// driver that handed it over, which leaves it unacknowledged (SMPP:
/// ESME_RX_T_APPN, so the provider sends it again; GSM: kept on the SIM).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The inbox's writer is gone: the channel is stopping.
    #[error("the channel is stopping")]
    Stopping,
    /// The database did not take the batch the item was written in.
    #[error("{0:#}")]
    Write(Arc<anyhow::Error>),
}

enum Item {
    /// A report, and the outcomes handed over before it arrived.
    Report(Report, u64, oneshot::Sender<Result<(), InboxError>>),
    Inbound(Inbound, oneshot::Sender<Result<Option<i64>, InboxError>>),
}

#[derive(Clone)]
pub struct Inbox {
    items: mpsc::UnboundedSender<Item>,
    outbox: Option<Progress>,
}

impl Inbox {
    /// Starts the writer. With the channel's outbox `progress`, a report is
    /// written only after the outcomes handed over before it arrived.
    pub fn start(ctx: &ChannelContext, progress: Option<Progress>) -> Inbox {
        let target = Target {
            pool: ctx.pool.clone(),
            channel: ctx.row.name.as_str().into(),
            state: Some(ctx.state.clone()),
        };
        Inbox::to(target, progress)
    }

    /// The writer for reports and messages that reach a channel outside
    /// its driver (a provider's webhooks, received by whichever worker
    /// serves the HTTP API): they are recorded alike, counted by the
    /// channel's owner in its own time.
    pub fn detached(pool: Pool, channel: &str) -> Inbox {
        let target = Target {
            pool,
            channel: channel.into(),
            state: None,
        };
        Inbox::to(target, None)
    }

    fn to(target: Target, progress: Option<Progress>) -> Inbox {
        let (items, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(target, rx, progress.clone()));
        Inbox {
            items,
            outbox: progress,
        }
    }

    /// Records a report; Ok once committed.
    pub async fn report(&self, report: Report) -> Result<(), InboxError> {
        let (tx, rx) = oneshot::channel();
        let mark = self.outbox.as_ref().map_or(0, Progress::mark);
        self.items
            .send(Item::Report(report, mark, tx))
            .map_err(|_| InboxError::Stopping)?;
        rx.await.map_err(|_| InboxError::Stopping)?
    }

    /// Records a received message (its id once committed) or a part (the
    /// id of the message it completed, else None).
    pub async fn inbound(&self, message: Inbound) -> Result<Option<i64>, InboxError> {
        let (tx, rx) = oneshot::channel();
        self.items
            .send(Item::Inbound(message, tx))
            .map_err(|_| InboxError::Stopping)?;
        rx.await.map_err(|_| InboxError::Stopping)?
    }
}

/// Where an inbox writes: the channel, and its state when the driver owns
/// the inbox.
struct Target {
    pool: Pool,
    channel: Arc<str>,
    state: Option<StateHandle>,
}

impl Target {
    fn count(&self, what: Count, n: u64) {
        if let Some(state) = &self.state {
            state.count(what, n);
        }
    }
}

async fn write_loop(
    ctx: Target,
    mut items: mpsc::UnboundedReceiver<Item>,
    outbox: Option<Progress>,
) {
    while let Some(first) = items.recv().await {
        let mut reports = Vec::new();
        let mut inbound = Vec::new();
        let mut mark = 0;
        let mut push = |item| match item {
            Item::Report(r, m, tx) => {
                mark = mark.max(m);
                reports.push((r, tx))
            }
            Item::Inbound(m, tx) => inbound.push((m, tx)),
        };
        push(first);
        for _ in 1..MAX_BATCH {
            match items.try_recv() {
                Ok(item) => push(item),
                Err(_) => break,
            }
        }
        if !reports.is_empty() {
            if let Some(outbox) = &outbox {
                // Bounded: with the database failing, the reports go on
                // and are parked if their parts are not there.
                outbox.written(mark, OUTCOMES_WAIT).await;
            }
            let result = write_reports(&ctx, reports.iter().map(|(r, _)| r)).await;
            if result.is_ok() {
                ctx.count(Count::Reports, reports.len() as u64);
                let delivered = reports.iter().filter(|(r, _)| r.status == "delivered");
                ctx.count(Count::Delivered, delivered.count() as u64);
                if let Some(state) = &ctx.state {
                    for (report, _) in &reports {
                        if report.status != "enroute" {
                            state.reported(&report.reference);
                        }
                    }
                }
            }
            let answer = result.map_err(|e| InboxError::Write(Arc::new(e)));
            for (_, tx) in reports {
                tell(tx, answer.clone());
            }
        }
        let (parts, whole): (Vec<_>, Vec<_>) =
            inbound.into_iter().partition(|(m, _)| m.part.is_some());
        if !whole.is_empty() {
            let written = write_inbound(&ctx, whole.iter().map(|(m, _)| m)).await;
            answer_inbound(
                &ctx,
                whole,
                written.map(|ids| ids.into_iter().map(Some).collect()),
            );
        }
        if !parts.is_empty() {
            let written = write_parts(&ctx, parts.iter().map(|(m, _)| m)).await;
            answer_inbound(&ctx, parts, written);
        }
    }
}

/// Answers the one waiting for an item. Nobody is left to tell when it
/// was dropped (its channel stopped or was aborted); what it never
/// acknowledged, the provider or the modem gives again.
fn tell<T>(waiting: oneshot::Sender<T>, answer: T) {
    let _ = waiting.send(answer);
}

type InboundItems = Vec<(Inbound, oneshot::Sender<Result<Option<i64>, InboxError>>)>;

fn answer_inbound(ctx: &Target, items: InboundItems, written: anyhow::Result<Vec<Option<i64>>>) {
    match written {
        Ok(ids) => {
            let messages = ids.iter().flatten().count();
            ctx.count(Count::Inbound, messages as u64);
            for ((_, tx), id) in items.into_iter().zip(ids) {
                tell(tx, Ok(id));
            }
        }
        Err(e) => {
            let error = InboxError::Write(Arc::new(e));
            for (_, tx) in items {
                tell(tx, Err(error.clone()));
            }
        }
    }
}

async fn write_parts<'a>(
    ctx: &Target,
    parts: impl Iterator<Item = &'a Inbound>,
) -> anyhow::Result<Vec<Option<i64>>> {
    let (mut from, mut to, mut references, mut totals, mut seqs, mut bodies, mut custom) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for m in parts {
        let part = m.part.expect("only parts here");
        from.push(m.from.as_str());
        to.push(m.to.as_str());
        references.push(part.reference);
        totals.push(part.total);
        seqs.push(part.seq);
        bodies.push(m.body.as_str());
        custom.push(m.custom.clone());
    }
    let client = ctx.pool.get().await?;
    let row = statements::query_one(
        &client,
        "SELECT smsbus._record_inbound_parts($1, $2, $3, $4, $5, $6, $7, $8)",
        &params![
            &*ctx.channel,
            from,
            to,
            references,
            totals,
            seqs,
            bodies,
            custom
        ],
    )
    .await?;
    let ids: Vec<Option<i64>> = row.get(0);
    anyhow::ensure!(
        ids.len() == bodies.len(),
        "recorded {} of {} inbound parts",
        ids.len(),
        bodies.len()
    );
    Ok(ids)
}

async fn write_reports<'a>(
    ctx: &Target,
    reports: impl Iterator<Item = &'a Report>,
) -> anyhow::Result<()> {
    let (mut references, mut statuses, mut details, mut alternates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in reports {
        references.push(r.reference.as_str());
        statuses.push(r.status);
        details.push(r.detail.as_str());
        alternates.push(r.alternate.as_deref());
    }
    let client = ctx.pool.get().await?;
    let matched: i32 = statements::query_one(
        &client,
        "SELECT smsbus._apply_reports($1, $2, $3, $4, $5)",
        &params![&*ctx.channel, references, statuses, details, alternates],
    )
    .await?
    .get(0);
    tracing::debug!(channel = %ctx.channel, reports = references.len(), matched, ?references, "reports recorded");
    Ok(())
}

async fn write_inbound<'a>(
    ctx: &Target,
    messages: impl Iterator<Item = &'a Inbound>,
) -> anyhow::Result<Vec<i64>> {
    let (mut from, mut to, mut bodies, mut references, mut custom) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in messages {
        from.push(m.from.as_str());
        to.push(m.to.as_str());
        bodies.push(m.body.as_str());
        references.push(m.reference.as_deref());
        custom.push(m.custom.clone());
    }
    let client = ctx.pool.get().await?;
    let row = statements::query_one(
        &client,
        "SELECT smsbus._record_inbound($1, $2, $3, $4, $5, NULL, $6)",
        &params![&*ctx.channel, from, to, bodies, references, custom],
    )
    .await?;
    let ids: Vec<i64> = row.get(0);
    anyhow::ensure!(
        ids.len() == bodies.len(),
        "recorded {} of {} inbound messages",
        ids.len(),
        bodies.len()
    );
    Ok(ids)
}
