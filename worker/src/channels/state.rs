//! `smsbus.channel_state`: what operators see of a channel. Status changes
//! are written at once; counters are kept in memory and added to the row
//! once a second, so the hot path never waits for them.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::metrics;
use crate::statements::{self, params};

/// `channel_state.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    Disconnected,
    Connecting,
    Connected,
    Disconnecting,
    Error,
}

impl LinkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Disconnected => "disconnected",
            LinkStatus::Connecting => "connecting",
            LinkStatus::Connected => "connected",
            LinkStatus::Disconnecting => "disconnecting",
            LinkStatus::Error => "error",
        }
    }
}

/// What a channel counts: into `channel_state` (the first five) and the
/// Prometheus metrics.
#[derive(Clone, Copy, Debug)]
pub enum Count {
    Submitted,
    Sent,
    Failed,
    Reports,
    Inbound,
    Delivered,
    Throttled,
    Reconnects,
    /// Marked failed because their real outcome could not be written
    /// (into `channel_state.failed`, which counts failed rows).
    Unrecorded,
}

/// When each recently accepted part was accepted, by reference, for the
/// submit → report histogram; the oldest are forgotten past [`Self::MAX`].
#[derive(Default)]
struct Accepted {
    at: std::collections::HashMap<String, Instant>,
    order: std::collections::VecDeque<String>,
}

impl Accepted {
    const MAX: usize = 50_000;

    fn insert(&mut self, reference: String, at: Instant) {
        if self.at.insert(reference.clone(), at).is_none() {
            self.order.push_back(reference);
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub submitted: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub reports: AtomicU64,
    pub inbound: AtomicU64,
    pub window_in_use: AtomicI64,
}

/// Cheap to clone; one per channel run.
#[derive(Clone)]
pub struct StateHandle {
    inner: Arc<Inner>,
}

struct Inner {
    channel: String,
    owner: String,
    pool: Pool,
    counters: Counters,
    sessions_up: AtomicUsize,
    flushed: Mutex<Flushed>,
    accepted: Mutex<Accepted>,
}

struct Flushed {
    submitted: u64,
    sent: u64,
    failed: u64,
    reports: u64,
    inbound: u64,
    at: Instant,
}

impl StateHandle {
    pub fn new(pool: Pool, channel: &str, owner: &str) -> StateHandle {
        StateHandle {
            inner: Arc::new(Inner {
                channel: channel.to_owned(),
                owner: owner.to_owned(),
                pool,
                counters: Counters::default(),
                sessions_up: AtomicUsize::new(0),
                flushed: Mutex::new(Flushed {
                    submitted: 0,
                    sent: 0,
                    failed: 0,
                    reports: 0,
                    inbound: 0,
                    at: Instant::now(),
                }),
                accepted: Mutex::default(),
            }),
        }
    }

    /// Adds `n` to a count, in `channel_state` (at the next flush) and in
    /// the metrics.
    pub fn count(&self, what: Count, n: u64) {
        if n == 0 {
            return;
        }
        let c = &self.inner.counters;
        let (row, metric) = match what {
            Count::Submitted => (Some(&c.submitted), metrics::SUBMITTED),
            Count::Sent => (Some(&c.sent), metrics::SENT),
            Count::Failed => (Some(&c.failed), metrics::FAILED),
            Count::Reports => (Some(&c.reports), metrics::REPORTS),
            Count::Inbound => (Some(&c.inbound), metrics::INBOUND),
            Count::Delivered => (None, metrics::DELIVERED),
            Count::Throttled => (None, metrics::THROTTLED),
            Count::Reconnects => (None, metrics::RECONNECTS),
            Count::Unrecorded => (Some(&c.failed), metrics::UNRECORDED),
        };
        if let Some(row) = row {
            row.fetch_add(n, Ordering::Relaxed);
        }
        if !metrics::enabled() {
            return;
        }
        ::metrics::counter!(metric, "channel" => self.inner.channel.clone()).increment(n);
    }

    /// Changes the number of submissions in flight by `delta`.
    pub fn window_change(&self, delta: i64) {
        let now = self
            .inner
            .counters
            .window_in_use
            .fetch_add(delta, Ordering::Relaxed)
            + delta;
        if !metrics::enabled() {
            return;
        }
        ::metrics::gauge!(metrics::WINDOW, "channel" => self.inner.channel.clone()).set(now as f64);
    }

    /// A message came due at `due` and its first part is on the wire now.
    pub fn first_submit(&self, due: std::time::SystemTime) {
        if !metrics::enabled() {
            return;
        }
        let waited = due.elapsed().unwrap_or_default().as_secs_f64();
        ::metrics::histogram!(metrics::DUE_TO_SUBMIT, "channel" => self.inner.channel.clone())
            .record(waited);
    }

    /// The provider accepted parts with these references now.
    pub fn accepted<'a>(&self, references: impl IntoIterator<Item = &'a str>) {
        if !metrics::enabled() {
            return;
        }
        let now = Instant::now();
        let mut accepted = self.inner.accepted.lock().unwrap();
        for reference in references {
            accepted.insert(reference.to_owned(), now);
        }
    }

    /// A delivery report for `reference` was recorded.
    pub fn reported(&self, reference: &str) {
        if !metrics::enabled() {
            return;
        }
        let at = self.inner.accepted.lock().unwrap().at.remove(reference);
        if let Some(at) = at {
            ::metrics::histogram!(metrics::SUBMIT_TO_REPORT, "channel" => self.inner.channel.clone())
                .record(at.elapsed().as_secs_f64());
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Records a status (and, for errors, the reason). A failure to write
    /// is logged: the channel goes on.
    pub async fn set(&self, status: LinkStatus, error: Option<&str>) {
        if let Err(e) = self.write_status(status, error).await {
            tracing::warn!(channel = %self.inner.channel, "cannot write channel_state: {e:#}");
        }
    }

    async fn write_status(&self, status: LinkStatus, error: Option<&str>) -> anyhow::Result<()> {
        let client = self.inner.pool.get().await?;
        statements::execute(
            &client,
            "INSERT INTO smsbus.channel_state AS s (channel, status, owner, last_error)
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM smsbus.channel WHERE name = $1)
             ON CONFLICT (channel) DO UPDATE SET
                 since = CASE WHEN s.status = EXCLUDED.status AND s.owner IS NOT DISTINCT FROM EXCLUDED.owner
                              THEN s.since ELSE now() END,
                 status = EXCLUDED.status, owner = EXCLUDED.owner,
                 last_error = coalesce(EXCLUDED.last_error, s.last_error),
                 window_in_use = CASE WHEN EXCLUDED.status = 'connected' THEN s.window_in_use ELSE 0 END,
                 updated_at = now()",
            &params![
                self.inner.channel,
                status.as_str(),
                self.inner.owner,
                error
            ],
        )
        .await?;
        Ok(())
    }

    /// Replaces `last_error` alone, keeping the status: what an operator
    /// should know about a channel that is up (claiming paused because
    /// outcomes cannot be written, and resumed). A failure to write is
    /// logged: the channel goes on.
    pub async fn note(&self, text: &str) {
        let written = async {
            let client = self.inner.pool.get().await?;
            statements::execute(
                &client,
                "UPDATE smsbus.channel_state SET last_error = $2, updated_at = now()
                 WHERE channel = $1 AND owner = $3",
                &params![self.inner.channel, text, self.inner.owner],
            )
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = written.await {
            tracing::warn!(channel = %self.inner.channel, "cannot write channel_state: {e:#}");
        }
    }

    /// Replaces the driver's own facts in the row (a modem's signal and
    /// registration). A failure to write is logged: the channel goes on.
    pub async fn set_detail(&self, detail: serde_json::Value) {
        let written = async {
            let client = self.inner.pool.get().await?;
            statements::execute(
                &client,
                "UPDATE smsbus.channel_state SET detail = $2, updated_at = now()
                 WHERE channel = $1 AND owner = $3",
                &params![self.inner.channel, detail, self.inner.owner],
            )
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = written.await {
            tracing::warn!(channel = %self.inner.channel, "cannot write channel_state: {e:#}");
        }
    }

    /// A session is bound: the channel is connected.
    pub async fn session_up(&self) {
        if self.inner.sessions_up.fetch_add(1, Ordering::SeqCst) == 0 {
            self.set(LinkStatus::Connected, None).await;
        }
    }

    /// A session was lost; with none left the channel is reconnecting.
    pub async fn session_down(&self, reason: &str) {
        if self.inner.sessions_up.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.set(LinkStatus::Connecting, Some(reason)).await;
        }
    }

    pub fn sessions_up(&self) -> usize {
        self.inner.sessions_up.load(Ordering::SeqCst)
    }

    /// Adds what the counters gained since the last flush to the row, with
    /// the submission rate over that time.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let c = &self.inner.counters;
        let now = (
            c.submitted.load(Ordering::Relaxed),
            c.sent.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.reports.load(Ordering::Relaxed),
            c.inbound.load(Ordering::Relaxed),
        );
        let (deltas, rate) = {
            let f = self.inner.flushed.lock().unwrap();
            let elapsed = f.at.elapsed().max(Duration::from_millis(1)).as_secs_f64();
            let deltas = [
                now.0 - f.submitted,
                now.1 - f.sent,
                now.2 - f.failed,
                now.3 - f.reports,
                now.4 - f.inbound,
            ];
            (deltas, deltas[0] as f64 / elapsed)
        };
        let client = self.inner.pool.get().await?;
        let d: Vec<i64> = deltas.iter().map(|&d| d as i64).collect();
        let window = c.window_in_use.load(Ordering::Relaxed).max(0) as i32;
        statements::execute(
            &client,
            "UPDATE smsbus.channel_state SET
                 submitted = submitted + $2, sent = sent + $3, failed = failed + $4,
                 reports = reports + $5, inbound = inbound + $6,
                 window_in_use = $7, rate = $8, updated_at = now()
             WHERE channel = $1 AND owner = $9",
            &params![
                self.inner.channel,
                d[0],
                d[1],
                d[2],
                d[3],
                d[4],
                window,
                rate as f32,
                self.inner.owner
            ],
        )
        .await?;
        let mut f = self.inner.flushed.lock().unwrap();
        (f.submitted, f.sent, f.failed, f.reports, f.inbound) = now;
        f.at = Instant::now();
        Ok(())
    }
}
