//! Concurrent insert: clients doing single-row autocommit INSERTs; on the
//! smsbus side every commit also NOTIFYs the channel, which a listener
//! connection consumes as the worker would. Run once without and once with a
//! consumer claiming the queue meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tokio_postgres::Config;

use crate::common::{connect, Listener, CHANNEL, WORKER};
use crate::lifecycle::message_values;
use crate::side::Side;

/// Target: smsbus's rate as a share of the bare side's (without a consumer).
pub const MIN_RATIO: f64 = 0.7;

/// Rows a consumer claims at a time, like a channel with a window of 100.
pub const CONSUMER_BATCH: i32 = 100;

/// The load of one side: how many clients, and for how long.
pub struct Settings {
    pub clients: usize,
    /// Seconds each side runs, unless `per_client` is set.
    pub seconds: f64,
    /// Rows each client inserts instead of running for `seconds`.
    pub per_client: Option<u64>,
}

/// One side of the concurrent insert scenario.
pub struct InsertRun {
    side: Side,
    clients: usize,
    pub inserts: u64,
    elapsed: Duration,
    pub notifications: u64,
}

impl InsertRun {
    pub fn rate(&self) -> f64 {
        self.inserts as f64 / self.elapsed.as_secs_f64()
    }

    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "clients": self.clients,
            "inserts": self.inserts,
            "seconds": self.elapsed.as_secs_f64(),
            "msg_per_s": self.rate(),
        });
        if self.side == Side::Smsbus {
            value["notifications"] = json!(self.notifications);
        }
        value
    }
}

/// Claims the channel's queue in a loop, as a channel task would, until
/// `stop`; a short claim means the queue is drained, so it pauses 5 ms (on
/// the smsbus side that short claim also arms the channel's wake-up, which
/// is what makes the next INSERT notify).
async fn consume(config: Config, side: Side, stop: Arc<AtomicBool>) -> Result<u64> {
    let client = connect(&config, "consumer").await?;
    let claim = client
        .prepare(side.sql().claim)
        .await
        .context("preparing the claim")?;
    let mut claimed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let rows = client
            .query(&claim, &[&CHANNEL, &WORKER, &CONSUMER_BATCH])
            .await
            .context("consumer claim")?;
        claimed += rows.len() as u64;
        if rows.len() < CONSUMER_BATCH as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(claimed)
}

/// One side: the clients connect and prepare, start together, and insert
/// until the time or the count is up; the rate is committed rows / wall time.
pub async fn run(
    config: &Config,
    side: Side,
    settings: &Settings,
    with_consumer: bool,
) -> Result<InsertRun> {
    let listener = match side {
        Side::Smsbus => Some(Listener::start(config).await?),
        Side::Bare => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = with_consumer.then(|| tokio::spawn(consume(config.clone(), side, stop.clone())));
    let sql = format!(
        "INSERT INTO {} (to_address, body, channel) VALUES ($1, $2, $3)",
        side.sql().message
    );
    // Connect and prepare before the clock starts; start together.
    let barrier = Arc::new(Barrier::new(settings.clients + 1));
    let mut tasks: Vec<JoinHandle<Result<u64>>> = Vec::new();
    for c in 0..settings.clients {
        let client = connect(config, &format!("insert {c}")).await?;
        let statement = client.prepare(&sql).await.context("preparing the INSERT")?;
        let barrier = barrier.clone();
        let fixed = settings.per_client;
        let duration = Duration::from_secs_f64(settings.seconds);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut n = 0u64;
            loop {
                let done = match fixed {
                    Some(count) => n >= count,
                    None => Instant::now() >= deadline,
                };
                if done {
                    return Ok(n);
                }
                // Distinct numbers per client, like distinct senders.
                let (to, body) = message_values(c * 1_000_000 + n as usize);
                client
                    .execute(&statement, &[&to, &body, &CHANNEL])
                    .await
                    .with_context(|| format!("client {c}: insert {n}"))?;
                n += 1;
            }
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut inserts = 0;
    for task in tasks {
        inserts += task.await.context("an insert client panicked")??;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(consumer) = consumer {
        consumer.await.context("the consumer panicked")??;
    }
    let notifications = match listener {
        Some(l) => l.finish(inserts).await,
        None => 0,
    };
    Ok(InsertRun {
        side,
        clients: settings.clients,
        inserts,
        elapsed,
        notifications,
    })
}
