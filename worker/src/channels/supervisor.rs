//! The channel supervisor: follows `smsbus.channel` (on `smsbus_config`
//! notifications and every second) and runs one task per enabled channel
//! this worker owns.
//!
//! Ownership is an advisory lock per channel, all held on one dedicated
//! connection (to --listen-url): when a worker dies, PostgreSQL drops its
//! connection and its locks, and another worker's next pass takes them,
//! with the messages the dead one left in flight (`smsbus._take_over`).
//! If that connection is lost, this worker may no longer own anything, so
//! every channel stops before it reconnects. Where sessions are not kept
//! ([`crate::sessions`]), the locks are transaction locks in one
//! transaction held open for the connection's life (a pooler keeps it on
//! one server connection), and a channel's lock is only let go with the
//! connection; session and transaction locks on one key exclude each
//! other, so workers of both kinds share channels safely.
//!
//! Each channel task restarts its driver with backoff when it fails,
//! panics (the driver runs as its own tokio task) or hangs (its heartbeat
//! stops), writing the reason to `channel_state`; other channels never
//! notice. A changed row restarts only that channel.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::state::{LinkStatus, StateHandle};
use super::{run_driver, ChannelContext, ChannelRow, Heartbeat};
use crate::backoff::Backoff;
use crate::listener::Wakeups;
use crate::sessions::Sessions;
use crate::statements::{self, params};
use crate::{db, Config};

/// How often the channel table is read without a notification.
const RESCAN: Duration = Duration::from_secs(1);
/// How long a stopping channel may take to finish its in-flight work.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Key space of the channel ownership locks: pg_try_advisory_lock(int, int)
/// with this first key and hashtext(name) as the second.
const LOCK_SPACE: i32 = 0x534D_5342; // "SMSB"

struct Running {
    row: ChannelRow,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub async fn run(
    config: Config,
    pool: Pool,
    wakeups: Wakeups,
    sessions: Sessions,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let result = supervise(&config, &pool, &wakeups, &sessions, &shutdown, &mut backoff).await;
        if shutdown.is_cancelled() {
            return;
        }
        let delay = backoff.next_delay();
        if let Err(e) = result {
            tracing::warn!("channel supervisor: {e:#}; every channel stopped; again in {delay:?}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The connection that holds this worker's ownership locks.
struct Ownership {
    client: tokio_postgres::Client,
    /// Locks are transaction locks in a transaction held open.
    held_transaction: bool,
}

impl Ownership {
    async fn open(
        config: &Config,
        sessions: &Sessions,
    ) -> anyhow::Result<(Ownership, JoinHandle<Result<(), tokio_postgres::Error>>)> {
        let (client, connection) = db::session_config(config, "owner")
            .connect(NoTls)
            .await
            .context("cannot open the channel ownership connection")?;
        let connection = tokio::spawn(connection);
        let held_transaction = matches!(sessions, Sessions::PollOnly(_));
        if held_transaction {
            // Idle in this transaction on purpose: a timeout would end the
            // ownership of every channel.
            client
                .batch_execute("BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0")
                .await
                .context("cannot open the ownership transaction")?;
        }
        Ok((
            Ownership {
                client,
                held_transaction,
            },
            connection,
        ))
    }

    async fn writable(&self) -> Result<bool, tokio_postgres::Error> {
        Ok(statements::query_one(&self.client, db::WRITABLE, &[])
            .await?
            .get(0))
    }

    async fn try_take(&self, channel: &str) -> Result<bool, tokio_postgres::Error> {
        let sql = if self.held_transaction {
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))"
        } else {
            "SELECT pg_try_advisory_lock($1, hashtext($2))"
        };
        Ok(
            statements::query_one(&self.client, sql, &params![LOCK_SPACE, channel])
                .await?
                .get(0),
        )
    }

    /// Lets go of `channel`; a transaction lock stays until the
    /// connection ends (this worker takes the channel again if it comes
    /// back, no other worker can).
    async fn release(&self, channel: &str) {
        if self.held_transaction {
            return;
        }
        if let Err(e) = statements::query_one(
            &self.client,
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &params![LOCK_SPACE, channel],
        )
        .await
        {
            tracing::warn!(%channel, "cannot release ownership: {e}");
        }
    }
}

/// One life of the ownership connection.
async fn supervise(
    config: &Config,
    pool: &Pool,
    wakeups: &Wakeups,
    sessions: &Sessions,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let (locks, mut connection) = Ownership::open(config, sessions).await?;
    backoff.reset();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut tick = tokio::time::interval(RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            ended = &mut connection => break Err(match ended {
                Ok(Err(e)) => anyhow::Error::from(e).context("ownership connection lost"),
                _ => anyhow::anyhow!("ownership connection closed"),
            }),
            _ = tick.tick() => {}
            _ = wakeups.config.notified() => {}
        }
        // Ownership is held on the primary: on a server that took writes
        // and takes none now (a switchover left it up as a standby, or
        // read-only), every channel stops and the connections follow the
        // primary.
        match locks.writable().await {
            Ok(false) => {
                wakeups.primary.lost();
                break Err(anyhow::anyhow!(
                    "the database no longer takes writes (no longer the primary)"
                ));
            }
            Ok(true) => {}
            Err(e) => break Err(anyhow::Error::from(e).context("ownership connection lost")),
        }
        if let Err(e) = reconcile(config, pool, wakeups, &locks, &mut running).await {
            tracing::warn!("cannot follow the channel table: {e:#}");
        }
    };
    stop_all(&locks, running).await;
    outcome
}

async fn reconcile(
    config: &Config,
    pool: &Pool,
    wakeups: &Wakeups,
    locks: &Ownership,
    running: &mut HashMap<String, Running>,
) -> anyhow::Result<()> {
    // Read through the pool: a table read in the held ownership
    // transaction would lock smsbus.channel against DDL for its life.
    let rows = read_channels(&**pool.get().await?).await?;
    let wanted: HashMap<&str, &ChannelRow> = rows
        .iter()
        .filter(|r| r.enabled)
        .map(|r| (r.name.as_str(), r))
        .collect();

    // Stop what is gone, disabled or changed.
    let stale: Vec<String> = running
        .iter()
        .filter(|(name, run)| {
            wanted.get(name.as_str()) != Some(&&run.row) || run.task.is_finished()
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(run) = running.remove(&name) {
            let changed = wanted.contains_key(name.as_str());
            tracing::info!(channel = %name, "{}", if changed { "channel changed: restarting" } else { "channel stopped" });
            stop_one(locks, &name, run).await;
        }
    }

    // Start what this worker can own.
    for (name, row) in wanted {
        if running.contains_key(name) {
            continue;
        }
        if !locks.try_take(name).await? {
            continue;
        }
        // What a dead owner left in flight goes back to the queue now,
        // not when its leases run out.
        let orphans: i32 = statements::query_one(
            &pool.get().await?,
            "SELECT smsbus._take_over($1, $2)",
            &params![name, config.worker_id],
        )
        .await?
        .get(0);
        tracing::info!(channel = %name, kind = %row.kind, orphans, "owning channel");
        let stop = CancellationToken::new();
        let task = tokio::spawn(channel_task(
            config.clone(),
            pool.clone(),
            wakeups.clone(),
            (*row).clone(),
            stop.clone(),
        ));
        running.insert(
            name.to_owned(),
            Running {
                row: (*row).clone(),
                stop,
                task,
            },
        );
    }
    Ok(())
}

async fn read_channels(client: &tokio_postgres::Client) -> anyhow::Result<Vec<ChannelRow>> {
    let rows = client
        .query_typed(
            "SELECT name, kind, enabled, can_send, can_receive, config, updated_at FROM smsbus.channel",
            &[],
        )
        .await
        .context("cannot read smsbus.channel")?;
    rows.iter()
        .map(|r| {
            Ok(ChannelRow {
                name: r.try_get(0)?,
                kind: r.try_get(1)?,
                enabled: r.try_get(2)?,
                can_send: r.try_get(3)?,
                can_receive: r.try_get(4)?,
                config: r.try_get(5)?,
                updated_at: r.try_get(6)?,
            })
        })
        .collect()
}

async fn stop_one(locks: &Ownership, name: &str, run: Running) {
    run.stop.cancel();
    let mut task = run.task;
    if tokio::time::timeout(STOP_GRACE + Duration::from_secs(5), &mut task)
        .await
        .is_err()
    {
        tracing::warn!(channel = %name, "channel did not stop in time; aborting it");
        task.abort();
    }
    locks.release(name).await;
}

async fn stop_all(locks: &Ownership, running: HashMap<String, Running>) {
    for run in running.values() {
        run.stop.cancel();
    }
    for (name, run) in running {
        stop_one(locks, &name, run).await;
    }
}

/// Runs one channel until `stop` with the driver of its kind.
async fn channel_task(
    config: Config,
    pool: Pool,
    wakeups: Wakeups,
    row: ChannelRow,
    stop: CancellationToken,
) {
    supervise_driver(config, pool, wakeups, row, stop, run_driver).await
}

/// Runs `driver` for a channel until `stop`, each run in its own task,
/// restarted with backoff when it fails, panics or hangs (no heartbeat for
/// `config.hang_timeout`), the reason written to `channel_state`.
pub async fn supervise_driver<F, Fut>(
    config: Config,
    pool: Pool,
    wakeups: Wakeups,
    row: ChannelRow,
    stop: CancellationToken,
    driver: F,
) where
    F: Fn(ChannelContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let hang_timeout = config.hang_timeout;
    let name = row.name.clone();
    let state = StateHandle::new(pool.clone(), &name, &config.worker_id);
    let flusher = tokio::spawn(flush_loop(state.clone(), stop.clone()));
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let row = std::sync::Arc::new(row);
    while !stop.is_cancelled() {
        state.set(LinkStatus::Connecting, None).await;
        let heartbeat = Heartbeat::default();
        heartbeat.beat();
        let run_stop = stop.child_token();
        let ctx = ChannelContext {
            row: row.clone(),
            worker_id: config.worker_id.as_str().into(),
            pool: pool.clone(),
            wakeups: wakeups.clone(),
            state: state.clone(),
            heartbeat: heartbeat.clone(),
            claims: config.claims,
            stop: run_stop.clone(),
        };
        let started = std::time::Instant::now();
        let mut running = tokio::spawn(driver(ctx));
        let mut watchdog = tokio::time::interval((hang_timeout / 4).min(Duration::from_secs(1)));
        let failure = loop {
            tokio::select! {
                result = &mut running => break match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(e) if e.is_panic() => Some(format!("driver panicked: {}", panic_text(e))),
                    Err(e) => Some(format!("driver task ended: {e}")),
                },
                _ = watchdog.tick() => {
                    if heartbeat.silence() > hang_timeout {
                        running.abort();
                        // Cancelled as asked, unless it panicked or ended
                        // just before: the hang is the failure either way.
                        if let Err(e) = (&mut running).await {
                            if e.is_panic() {
                                tracing::error!(channel = %name, "hung driver panicked: {}", panic_text(e));
                            }
                        }
                        break Some(format!("driver hung: no progress for {}s", hang_timeout.as_secs_f64()));
                    }
                }
            }
        };
        run_stop.cancel();
        match failure {
            None if stop.is_cancelled() => break,
            None => {}
            Some(reason) => {
                tracing::warn!(channel = %name, "channel failed: {reason}");
                state.set(LinkStatus::Error, Some(&reason)).await;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    if let Err(e) = state.flush().await {
        // The counters since the last flush are lost; the channel stops
        // either way.
        tracing::warn!(channel = %name, "cannot write the channel's last counters: {e:#}");
    }
    state.set(LinkStatus::Disconnected, None).await;
    flusher.abort();
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

async fn flush_loop(state: StateHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = state.flush().await {
            tracing::debug!("cannot write channel counters: {e:#}");
        }
    }
}
