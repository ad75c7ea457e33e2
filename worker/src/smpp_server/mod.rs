//! The SMPP server: applications bind to smsbus and submit messages over
//! SMPP, as they would to a provider. Every worker opens every enabled
//! `smsbus.smpp_server` row, so any worker may serve any account.
//!
//! - [`listener`]: one row's settings, its socket (shared by the workers
//!   of a host) and TLS.
//! - [`session`]: one client connection: bind, submissions, answers after
//!   commit, enquire_link and the timers.
//! - [`account`]: who may bind, checked against `smsbus.account`.
//! - [`binds`]: the binds open here, recorded in `smsbus.smpp_bind` so
//!   `max_binds` holds across workers; each account's rate.
//! - [`submission`]: a submit_sm or data_sm read as a message row, or
//!   refused with the status that says why.
//! - [`smpp_time`]: SMPP's absolute and relative times.
//! - [`concat`]: long messages sent in parts, put back together.
//! - [`accept`]: group commit of every session's submissions.
//! - [`deliveries`]: delivery receipts from `smsbus.smpp_outbox` to a
//!   receiver bind, each deleted when the client acknowledged it.
//! - [`receipt`]: a receipt as the deliver_sm a client expects.
//! - [`mo`]: an inbound message given to an account, as its deliver_sm.
//! - [`queries`]: query_sm, the state of one of the account's messages.
//!
//! [`run`] follows the table live (`smsbus_config` notifications and a
//! rescan every [`RESCAN`]), restarting a listener whose row changed or
//! whose socket failed, until shutdown.

pub mod accept;
pub mod account;
pub mod binds;
pub mod concat;
pub mod deliveries;
pub mod listener;
pub mod mo;
pub mod queries;
pub mod receipt;
pub mod session;
pub mod smpp_time;
pub mod submission;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::listener::Wakeups;
use crate::statements;
use crate::Config;
use accept::Accepter;
use binds::Binds;
use listener::Settings;
use session::Context;

/// How often the table is read without a notification.
const RESCAN: Duration = Duration::from_secs(2);
/// How long a listener that failed waits before it is opened again.
const RETRY: Duration = Duration::from_secs(5);

struct Running {
    settings: Settings,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Runs the listeners until `shutdown`.
pub async fn run(config: Config, pool: Pool, wakeups: Wakeups, shutdown: CancellationToken) {
    let binds = Binds::new(config.worker_id.clone(), pool.clone());
    match binds.forget_previous().await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!("smpp server: removed {n} binds a previous run of this worker left")
        }
        // They expire on their own; nothing else depends on it.
        Err(e) => tracing::warn!("smpp server: cannot remove the binds of a previous run: {e}"),
    }
    let accepter = Accepter::start(pool.clone());
    let shared = Shared {
        pool: pool.clone(),
        binds: binds.clone(),
        accepter,
        worker: config.worker_id.clone(),
        receipts: wakeups.smpp_outbox.clone(),
    };
    let keeper = tokio::spawn(binds.clone().keep_loop(shutdown.clone()));
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut failed: HashMap<String, Instant> = HashMap::new();
    loop {
        let config_changed = wakeups.config.notified();
        match read_settings(&pool).await {
            Ok(wanted) => {
                reconcile(&mut running, &mut failed, wanted, &shared).await;
            }
            Err(e) => tracing::warn!("smpp server: cannot read smsbus.smpp_server: {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = config_changed => {}
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
    for (_, r) in running.drain() {
        stop(r).await;
    }
    if let Err(e) = keeper.await {
        tracing::error!("smpp server: the bind keeper panicked: {e}");
    }
}

async fn read_settings(pool: &Pool) -> anyhow::Result<Vec<Settings>> {
    let client = pool.get().await?;
    let rows = statements::query(&client, listener::SETTINGS, &[]).await?;
    Ok(rows.iter().map(Settings::from_row).collect())
}

/// What every listener's sessions share.
struct Shared {
    pool: Pool,
    binds: Arc<Binds>,
    accepter: Accepter,
    worker: String,
    receipts: tokio::sync::broadcast::Sender<Arc<str>>,
}

async fn reconcile(
    running: &mut HashMap<String, Running>,
    failed: &mut HashMap<String, Instant>,
    wanted: Vec<Settings>,
    shared: &Shared,
) {
    let names: Vec<String> = running.keys().cloned().collect();
    for name in names {
        let keep = wanted.iter().any(|w| running[&name].settings == *w);
        if !keep {
            tracing::info!(server = %name, "smpp server: the listener's row changed or went: closing it");
            stop(running.remove(&name).expect("a running listener")).await;
        } else if running[&name].task.is_finished() {
            let r = running.remove(&name).expect("a running listener");
            match r.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(server = %name, "smpp server: listener failed: {e:#}")
                }
                Err(e) => tracing::error!(server = %name, "smpp server: listener panicked: {e}"),
            }
            failed.insert(name, Instant::now());
        }
    }
    for settings in wanted {
        if running.contains_key(&settings.name) {
            continue;
        }
        if failed
            .get(&settings.name)
            .is_some_and(|at| at.elapsed() < RETRY)
        {
            continue;
        }
        failed.remove(&settings.name);
        let ctx = Arc::new(Context {
            settings: Arc::new(settings.clone()),
            pool: shared.pool.clone(),
            binds: shared.binds.clone(),
            accepter: shared.accepter.clone(),
            worker: shared.worker.clone(),
            receipts: shared.receipts.clone(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener::run(ctx, stop.clone()));
        running.insert(
            settings.name.clone(),
            Running {
                settings,
                stop,
                task,
            },
        );
    }
}

async fn stop(r: Running) {
    r.stop.cancel();
    match r.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(server = %r.settings.name, "smpp server: listener failed: {e:#}")
        }
        Err(e) => tracing::error!(server = %r.settings.name, "smpp server: listener panicked: {e}"),
    }
}
