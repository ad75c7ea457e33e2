//! The LISTEN connection: one dedicated connection (a pooled one cannot
//! hold a LISTEN), reconnecting with backoff, turning notifications into
//! wake-ups for the tasks that wait on them.
//!
//! Notification channels (sent by the extension):
//! - `smsbus_queue`, payload a channel name: that channel has queued work.
//! - `smsbus_config`: channel rows changed.
//! - `smsbus_maintenance`: run maintenance now (operators may send it too).
//! - `smsbus_triggers`: messages were armed for their triggers.
//! - `smsbus_smpp_outbox`, payload an account name: delivery receipts
//!   wait for that account's receiver binds.
//! - `smsbus_webhooks`: events wait in `smsbus.webhook_outbox`.
//!
//! Poll-only ([`crate::sessions`]), [`poll_only`] takes its place: every
//! [`POLL_ONLY_TICK`] it wakes every task that waits on the database.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::{broadcast, Notify};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::{db, Config};

pub const QUEUE: &str = "smsbus_queue";
pub const CONFIG: &str = "smsbus_config";
pub const MAINTENANCE: &str = "smsbus_maintenance";
pub const TRIGGERS: &str = "smsbus_triggers";
pub const SMPP_OUTBOX: &str = "smsbus_smpp_outbox";
pub const WEBHOOKS: &str = "smsbus_webhooks";

/// How often poll-only wakes everyone: the latency a notification would
/// have saved, at a query per channel and task each time.
pub const POLL_ONLY_TICK: Duration = Duration::from_millis(200);

/// How many queue wake-ups may wait for slow receivers; a receiver that
/// falls behind sees `Lagged` and polls its queue, which is what a wake-up
/// would have made it do anyway.
const QUEUE_BACKLOG: usize = 1024;

/// What the listener hands out. Cheap to clone.
#[derive(Clone)]
pub struct Wakeups {
    /// Channel names with new queued messages.
    pub queue: broadcast::Sender<Arc<str>>,
    pub config: Arc<Notify>,
    pub maintenance: Arc<Notify>,
    pub triggers: Arc<Notify>,
    /// Accounts with new receipts in `smsbus.smpp_outbox`.
    pub smpp_outbox: broadcast::Sender<Arc<str>>,
    /// Events in `smsbus.webhook_outbox`.
    pub webhooks: Arc<Notify>,
    /// Whether connections are still on the primary (not a wake-up from
    /// the database, but one every connection holder follows).
    pub primary: Arc<crate::db::Primary>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            queue: broadcast::channel(QUEUE_BACKLOG).0,
            config: Arc::new(Notify::new()),
            maintenance: Arc::new(Notify::new()),
            triggers: Arc::new(Notify::new()),
            smpp_outbox: broadcast::channel(QUEUE_BACKLOG).0,
            webhooks: Arc::new(Notify::new()),
            primary: Arc::default(),
        }
    }
}

impl Wakeups {
    fn dispatch(&self, channel: &str, payload: &str) {
        match channel {
            QUEUE => {
                // No receiver yet is fine: the channel polls when it starts.
                let _unheard = self.queue.send(Arc::from(payload));
            }
            CONFIG => self.config.notify_waiters(),
            MAINTENANCE => self.maintenance.notify_one(),
            TRIGGERS => self.triggers.notify_one(),
            SMPP_OUTBOX => {
                // No bind listening is fine: a bind looks when it opens.
                let _unheard = self.smpp_outbox.send(Arc::from(payload));
            }
            WEBHOOKS => self.webhooks.notify_one(),
            other => tracing::debug!(channel = other, "ignoring notification"),
        }
    }

    /// After a reconnect notifications may have been missed: wake everyone.
    fn everyone(&self) {
        self.maintenance.notify_one();
        self.every_waiter();
    }

    /// Every task that waits for work to appear (maintenance keeps its own
    /// timer).
    fn every_waiter(&self) {
        self.config.notify_waiters();
        self.triggers.notify_one();
        self.webhooks.notify_one();
        // An empty name wakes every channel and every bind; none listening
        // is fine.
        let _unheard = self.queue.send(Arc::from(ALL));
        let _unheard = self.smpp_outbox.send(Arc::from(ALL));
    }
}

/// The channel or account name of a wake-up for every one of them.
pub const ALL: &str = "";

/// Runs in the listener's place when sessions are not kept, until
/// `shutdown`.
pub async fn poll_only(wakeups: Wakeups, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(POLL_ONLY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => wakeups.every_waiter(),
        }
    }
}

/// Runs the listener until `shutdown`.
pub async fn run(config: Config, wakeups: Wakeups, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = listen(&config, &wakeups, &mut backoff) => outcome,
        };
        let delay = backoff.next_delay();
        match outcome {
            Ok(()) => tracing::warn!("listener connection closed; reconnecting in {delay:?}"),
            Err(e) => tracing::warn!("listener: {e:#}; reconnecting in {delay:?}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection's life: connect, LISTEN, forward until it ends.
async fn listen(config: &Config, wakeups: &Wakeups, backoff: &mut Backoff) -> anyhow::Result<()> {
    let (client, mut connection) = db::session_config(config, "listener")
        .connect(NoTls)
        .await?;
    let wake = wakeups.clone();
    // The connection must be polled for the client's statements to run, and
    // it is where notifications come out.
    let pump = async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => wake.dispatch(n.channel(), n.payload()),
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    tracing::debug!("listener notice: {}", notice.message())
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::from(e)),
                None => return Ok(()),
            }
        }
    };
    tokio::pin!(pump);
    let subscribe =
        format!("LISTEN {QUEUE}; LISTEN {CONFIG}; LISTEN {MAINTENANCE}; LISTEN {TRIGGERS}; LISTEN {SMPP_OUTBOX}; LISTEN {WEBHOOKS};");
    tokio::select! {
        result = &mut pump => return result,
        subscribed = client.batch_execute(&subscribe) => subscribed?,
    }
    tracing::info!("listening for notifications");
    backoff.reset();
    wakeups.everyone();
    let result = tokio::select! {
        result = pump => result,
        _ = wakeups.primary.moved() => Err(anyhow::anyhow!(
            "the server no longer takes writes: following the primary"
        )),
    };
    drop(client);
    result
}
