//! What every scenario shares: the database made for the run and the names
//! in it, connecting, settling the cluster between runs, the server facts
//! the figures depend on, the queue's LISTEN connection, and the median.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use smsbus_tests::db::TEMPLATE;

/// The database the run creates and drops.
pub const DATABASE: &str = "smsbus_bench";
/// The channel the queue's scenarios insert into and claim from.
pub const CHANNEL: &str = "bench";
/// The worker name the queue's scenarios claim as.
pub const WORKER: &str = "bench";
/// The notification channel the extension's insert trigger uses.
pub const QUEUE_NOTIFY: &str = "smsbus_queue";

/// Empties the queue's tables and the bare side's.
pub const TRUNCATE_ALL: &str = "
    TRUNCATE smsbus.message, smsbus.message_event, smsbus.message_part, smsbus.pending_report,
             smsbus.channel_wakeup, bench_bare.message, bench_bare.message_part";

/// Makes [`DATABASE`] afresh from the test template, dropping a previous
/// run's.
pub async fn create_database(admin: &Client) -> Result<()> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping the previous {DATABASE}"))?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE} TEMPLATE {TEMPLATE}"))
        .await
        .with_context(|| {
            format!(
                "creating {DATABASE} from {TEMPLATE} (does the template exist? \
                 `scripts/cluster.sh template` makes it)"
            )
        })?;
    Ok(())
}

/// Connects and drives the connection in the background.
pub async fn connect(config: &Config, role: &str) -> Result<Client> {
    let mut config = config.clone();
    config.application_name(format!("smsbus-bench {role}"));
    let (client, connection) = config.connect(NoTls).await.with_context(|| {
        format!(
            "cannot connect to {:?} (database {:?})",
            config.get_hosts(),
            config.get_dbname().unwrap_or("")
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench connection ended: {e}");
        }
    });
    Ok(client)
}

/// VACUUM ANALYZE and a CHECKPOINT, so that neither side pays for the
/// other's dead rows or dirty pages.
pub async fn settle(control: &Client) -> Result<()> {
    control
        .batch_execute("VACUUM ANALYZE")
        .await
        .context("VACUUM ANALYZE")?;
    control
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT")?;
    Ok(())
}

/// [`TRUNCATE_ALL`], then [`settle`]: a run from empty tables.
pub async fn empty(control: &Client) -> Result<()> {
    control
        .batch_execute(TRUNCATE_ALL)
        .await
        .context("emptying the tables")?;
    settle(control).await
}

/// What the figures depend on besides the code.
pub async fn server_facts(client: &Client) -> Result<Value> {
    let mut facts = serde_json::Map::new();
    for setting in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "shared_buffers",
        "max_wal_size",
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .with_context(|| format!("SHOW {setting}"))?;
        facts.insert(setting.into(), Value::String(row.try_get(0)?));
    }
    Ok(Value::Object(facts))
}

/// The run with the median `rate` (the upper one of an even count).
pub fn median_by<T>(runs: &mut [T], rate: impl Fn(&T) -> f64) -> &T {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    &runs[runs.len() / 2]
}

/// A LISTEN connection on the queue channel, as the worker keeps one: it
/// proves NOTIFY fires and makes the server deliver what it queues.
pub struct Listener {
    _client: Client,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Listener {
    pub async fn start(config: &Config) -> Result<Listener> {
        let mut config = config.clone();
        config.application_name("smsbus-bench listener");
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .context("connecting the listener")?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("listener connection ended: {e}");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {QUEUE_NOTIFY}"))
            .await
            .context("LISTEN")?;
        Ok(Listener {
            _client: client,
            received,
            task,
        })
    }

    /// How many notifications arrived, after waiting a little for the
    /// `expected` ones still in flight.
    pub async fn finish(self, expected: u64) -> u64 {
        let wait_until = Instant::now() + Duration::from_secs(5);
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        self.received.load(Ordering::Relaxed)
    }
}
