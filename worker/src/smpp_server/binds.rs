//! The binds open on this worker, as `smsbus.smpp_bind` shows them to
//! everyone: [`Binds::open`] records a bind (refused past the account's
//! `max_binds`, counted across workers), [`Binds::keep`] renews them every
//! [`KEEP_EVERY`] with their counters, and a bind closes with its session.
//!
//! Keeping is also how a bind learns what changed: an account that was
//! disabled or deleted ends its binds, and an account's `throughput` is
//! shared among the workers that serve it, each taking the part its binds
//! are of all the account's live binds.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use super::account::{Account, BindType};
use crate::rate::Rate;
use crate::statements::{self, params};

/// How often open binds are renewed.
pub const KEEP_EVERY: Duration = Duration::from_secs(5);
/// How long a bind stays counted without being renewed: a worker that
/// died frees its binds' places after this.
const ALIVE: &str = "20 seconds";

/// What a session counts, written to its row at every keep.
#[derive(Default)]
pub struct Counters {
    pub submitted: AtomicI64,
    pub refused: AtomicI64,
    pub throttled: AtomicI64,
    pub delivered: AtomicI64,
    pub window: AtomicI32,
}

/// One open bind.
pub struct Bind {
    pub id: i64,
    pub account: Arc<Account>,
    pub counters: Counters,
    /// The account's rate on this worker, shared by its binds here.
    pub rate: Arc<Rate>,
    /// Cancelled when the bind must end (account disabled or deleted).
    pub ended: CancellationToken,
}

pub struct Binds {
    worker: String,
    pool: Pool,
    open: Mutex<HashMap<i64, Arc<Bind>>>,
    rates: Mutex<HashMap<String, Arc<Rate>>>,
}

/// A bind the database did not record.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("account {0} has max_binds binds open")]
    TooMany(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl Binds {
    pub fn new(worker: String, pool: Pool) -> Arc<Binds> {
        Arc::new(Binds {
            worker,
            pool,
            open: Mutex::default(),
            rates: Mutex::default(),
        })
    }

    /// Forgets the binds a previous run of this worker left behind, and
    /// gives back the receipts they had taken.
    pub async fn forget_previous(&self) -> Result<u64, OpenError> {
        let client = self.pool.get().await?;
        let gone: i32 = statements::query_one(
            &client,
            "SELECT smsbus._close_binds($1, NULL)",
            &params![self.worker],
        )
        .await?
        .get(0);
        statements::execute(
            &client,
            "SELECT smsbus._release_outbox($1)",
            &params![self.worker],
        )
        .await?;
        Ok(gone as u64)
    }

    pub async fn open(
        &self,
        account: Account,
        server: &str,
        bind_type: BindType,
        interface_version: &str,
        peer: SocketAddr,
    ) -> Result<Arc<Bind>, OpenError> {
        let client = self.pool.get().await?;
        let id: Option<i64> = statements::query_one(
            &client,
            &format!("SELECT smsbus._open_bind($1, $2, $3, $4, $5, $6, $7, interval '{ALIVE}')"),
            &params![
                account.name,
                server,
                self.worker,
                bind_type.as_str(),
                interface_version,
                peer.ip(),
                i32::from(peer.port())
            ],
        )
        .await?
        .get(0);
        let Some(id) = id else {
            return Err(OpenError::TooMany(account.name));
        };
        let rate = self
            .rates
            .lock()
            .unwrap()
            .entry(account.name.clone())
            .or_insert_with(|| Arc::new(Rate::new(account.throughput)))
            .clone();
        let bind = Arc::new(Bind {
            id,
            account: Arc::new(account),
            counters: Counters::default(),
            rate,
            ended: CancellationToken::new(),
        });
        self.open.lock().unwrap().insert(id, bind.clone());
        metrics::gauge!(crate::metrics::SMPP_SERVER_BINDS).increment(1.0);
        Ok(bind)
    }

    /// Removes a bind whose session ended; its row goes at once, or, if
    /// the database cannot be reached, when its alive_until passes.
    pub async fn close(&self, bind: &Bind) {
        let was_open = self.open.lock().unwrap().remove(&bind.id).is_some();
        if was_open {
            metrics::gauge!(crate::metrics::SMPP_SERVER_BINDS).decrement(1.0);
        }
        let closed = async {
            let client = self.pool.get().await?;
            statements::execute(
                &client,
                "SELECT smsbus._close_binds($1, ARRAY[$2::bigint])",
                &params![self.worker, bind.id],
            )
            .await?;
            Ok::<_, OpenError>(())
        }
        .await;
        if let Err(e) = closed {
            tracing::warn!(
                bind = bind.id,
                "smpp server: cannot remove the closed bind's row (it expires): {e}"
            );
        }
    }

    /// Renews every open bind and writes its counters; ends binds whose
    /// account is gone or disabled and shares each account's throughput.
    pub async fn keep(&self) -> Result<(), OpenError> {
        let open: Vec<Arc<Bind>> = self.open.lock().unwrap().values().cloned().collect();
        if open.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = open.iter().map(|b| b.id).collect();
        let read =
            |f: fn(&Counters) -> i64| open.iter().map(|b| f(&b.counters)).collect::<Vec<i64>>();
        let submitted = read(|c| c.submitted.load(Ordering::Relaxed));
        let refused = read(|c| c.refused.load(Ordering::Relaxed));
        let throttled = read(|c| c.throttled.load(Ordering::Relaxed));
        let delivered = read(|c| c.delivered.load(Ordering::Relaxed));
        let window: Vec<i32> = open
            .iter()
            .map(|b| b.counters.window.load(Ordering::Relaxed))
            .collect();
        let client = self.pool.get().await?;
        let rows = statements::query(
            &client,
            &format!(
                "SELECT k.account, k.here, k.total, a.enabled, a.throughput
                 FROM smsbus._keep_binds($1, $2, $3, $4, $5, $6, $7, interval '{ALIVE}') k
                 JOIN smsbus.account a ON a.name = k.account"
            ),
            &params![
                self.worker,
                ids,
                submitted,
                refused,
                throttled,
                delivered,
                window
            ],
        )
        .await?;
        let mut live = HashMap::new();
        for row in rows {
            let account: String = row.get(0);
            let (here, total): (i32, i32) = (row.get(1), row.get(2));
            let enabled: bool = row.get(3);
            let throughput: Option<f32> = row.get(4);
            if enabled {
                let share = f64::from(here) / f64::from(total.max(here).max(1));
                live.insert(account, throughput.map(|t| f64::from(t) * share));
            }
        }
        for bind in &open {
            match live.get(&bind.account.name) {
                Some(rate) => bind.rate.set(*rate),
                None => {
                    tracing::info!(account = %bind.account.name, bind = bind.id,
                        "smpp server: the account was disabled or deleted: ending its bind");
                    bind.ended.cancel();
                }
            }
        }
        Ok(())
    }

    /// Keeps the binds every [`KEEP_EVERY`] until `shutdown`, and with
    /// metrics on, measures the outbox.
    pub async fn keep_loop(self: Arc<Binds>, shutdown: CancellationToken) {
        let mut waiting = HashSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(KEEP_EVERY) => {}
            }
            if let Err(e) = self.keep().await {
                tracing::warn!("smpp server: cannot renew the open binds: {e}");
            }
            if crate::metrics::enabled() {
                if let Err(e) = self.measure_outbox(&mut waiting).await {
                    tracing::warn!("smpp server: cannot measure the outbox: {e}");
                }
            }
        }
    }

    /// Sets the outbox depth of every account with rows waiting, bound or
    /// not, and 0 for the accounts `waiting` had that have none now.
    async fn measure_outbox(&self, waiting: &mut HashSet<String>) -> Result<(), OpenError> {
        let client = self.pool.get().await?;
        let rows = statements::query(
            &client,
            "SELECT account, count(*) FROM smsbus.smpp_outbox GROUP BY account",
            &[],
        )
        .await?;
        let mut now = HashSet::with_capacity(rows.len());
        for row in rows {
            let (account, depth): (String, i64) = (row.get(0), row.get(1));
            metrics::gauge!(crate::metrics::SMPP_SERVER_OUTBOX, "account" => account.clone())
                .set(depth as f64);
            now.insert(account);
        }
        for emptied in waiting.difference(&now) {
            metrics::gauge!(crate::metrics::SMPP_SERVER_OUTBOX, "account" => emptied.clone())
                .set(0.0);
        }
        *waiting = now;
        Ok(())
    }
}
