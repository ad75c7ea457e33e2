//! Scale: the end-to-end throughput on empty tables, then again with many
//! finished messages in `smsbus.message` and many more in the archive (a
//! queue table of millions must stay as fast: partial indexes); then a
//! long run, and the queue table's dead tuples and size after it
//! (autovacuum keeps the bloat bounded).

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::end_to_end::{self, Settings};

pub struct Figures {
    pub finished: usize,
    pub archived: usize,
    /// Each round's rate; the median is the figure.
    pub empty_rates: Vec<f64>,
    pub filled_rates: Vec<f64>,
    pub long_run: usize,
    pub long_rate: f64,
    /// The most dead tuples and the largest size seen during the long run
    /// (live tuples unused), and the table after it.
    pub peak: QueueTable,
    pub last: QueueTable,
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

impl Figures {
    pub fn empty_rate(&self) -> f64 {
        median(&self.empty_rates)
    }

    pub fn filled_rate(&self) -> f64 {
        median(&self.filled_rates)
    }

    pub fn ratio(&self) -> f64 {
        self.filled_rate() / self.empty_rate()
    }

    /// Within 10 % of the empty-table run.
    pub fn pass(&self) -> bool {
        self.ratio() >= 0.9
    }

    pub fn to_json(&self) -> Value {
        json!({
            "finished_messages": self.finished,
            "archived_messages": self.archived,
            "empty_msg_per_s": self.empty_rate(),
            "filled_msg_per_s": self.filled_rate(),
            "empty_rounds_msg_per_s": self.empty_rates,
            "filled_rounds_msg_per_s": self.filled_rates,
            "ratio": self.ratio(),
            "long_run_messages": self.long_run,
            "long_run_msg_per_s": self.long_rate,
            "queue_dead_tuples_peak": self.peak.dead_tuples,
            "queue_table_mib_peak": self.peak.mib,
            "queue_dead_tuples_after": self.last.dead_tuples,
            "queue_live_tuples_after": self.last.live_tuples,
            "queue_table_mib_after": self.last.mib,
        })
    }
}

/// Only the throughput part of the end-to-end run matters here.
fn throughput_only(messages: usize, base: &Settings) -> Settings {
    Settings {
        messages,
        latency_seconds: 0.5,
        throttle_seconds: 0.5,
        ..base.clone()
    }
}

pub async fn run(
    control: &Client,
    conninfo: &str,
    base: &Settings,
    rounds: usize,
    finished: usize,
    archived: usize,
    long_run: usize,
) -> Result<Figures> {
    let settings = throughput_only(base.messages, base);
    // Each run makes its own channel; the messages of earlier runs stay.
    let forget_channels =
        "DELETE FROM smsbus.channel_state; DELETE FROM smsbus.channel WHERE name <> 'old'";
    let mut empty_rates = Vec::new();
    for round in 1..=rounds {
        eprintln!("  empty tables, round {round} of {rounds} ...");
        empty_rates.push(end_to_end::run(control, conninfo, &settings).await?.rate);
        control.batch_execute(crate::common::TRUNCATE_ALL).await?;
        control.batch_execute(forget_channels).await?;
        crate::common::settle(control).await?;
    }

    eprintln!("  filling: {finished} finished messages, {archived} archived ...");
    fill(control, finished, archived).await?;
    crate::common::settle(control).await?;
    let mut filled_rates = Vec::new();
    for round in 1..=rounds {
        eprintln!("  filled tables, round {round} of {rounds} ...");
        filled_rates.push(end_to_end::run(control, conninfo, &settings).await?.rate);
        control.batch_execute(forget_channels).await?;
        crate::common::settle(control).await?;
    }

    eprintln!("  long run: {long_run} messages ...");
    let long = throughput_only(long_run, base);
    // The queue table sampled every few seconds meanwhile, on a connection
    // of its own: bounded bloat means a bounded peak, not a good last look.
    let (sampler, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let run = end_to_end::run(control, conninfo, &long);
    tokio::pin!(run);
    let mut peak = QueueTable::default();
    let long_rate = loop {
        tokio::select! {
            result = &mut run => break result?.rate,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                let now = QueueTable::measure(&sampler).await?;
                peak.dead_tuples = peak.dead_tuples.max(now.dead_tuples);
                peak.mib = peak.mib.max(now.mib);
            }
        }
    };
    let last = QueueTable::measure(control).await?;
    Ok(Figures {
        finished,
        archived,
        empty_rates,
        filled_rates,
        long_run,
        long_rate,
        peak,
        last,
    })
}

/// The queue table's tuples and size (with its indexes and TOAST).
#[derive(Default)]
pub struct QueueTable {
    pub live_tuples: i64,
    pub dead_tuples: i64,
    pub mib: f64,
}

impl QueueTable {
    async fn measure(client: &Client) -> Result<QueueTable> {
        let row = client
            .query_one(
                "SELECT n_live_tup, n_dead_tup, pg_total_relation_size('smsbus.message')::float8 / 1048576
                 FROM pg_stat_user_tables WHERE relid = 'smsbus.message'::regclass",
                &[],
            )
            .await?;
        Ok(QueueTable {
            live_tuples: row.get(0),
            dead_tuples: row.get(1),
            mib: row.get(2),
        })
    }
}

/// Finished messages (with their parts) and archived ones as the system
/// leaves them, written in bulk with the row triggers off (the path of
/// each was measured elsewhere); ids far above what the runs use.
async fn fill(control: &Client, finished: usize, archived: usize) -> Result<()> {
    control
        .batch_execute(
            "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('old', 'smpp', false);
             INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'template', 'old');
             CREATE TEMP TABLE template AS SELECT * FROM smsbus.message;",
        )
        .await?;
    control.batch_execute(crate::common::TRUNCATE_ALL).await?;
    // The archive's month for them (the worker's maintenance would make it).
    control
        .batch_execute("SELECT smsbus._archive_partitions(now() - interval '2 days', now())")
        .await?;
    control
        .batch_execute("SET session_replication_role = replica")
        .await?;
    // Finished within the archiving age (30 days by default): the table a
    // month of traffic leaves, which the worker's archiving leaves alone.
    let columns = "status = 'delivered', trigger_status = 'notriggers', attempts = 1,
                   created_at = now() - interval '2 days', updated_at = now() - interval '1 day',
                   sent_at = now() - interval '2 days', delivered_at = now() - interval '1 day'";
    control
        .batch_execute(&format!("UPDATE template SET {columns}"))
        .await?;
    for (table, base, count) in [
        ("smsbus.message", 1_000_000_000_i64, finished),
        ("smsbus.message_archive", 2_000_000_000_i64, archived),
    ] {
        for start in (0..count).step_by(1_000_000) {
            let n = 1_000_000.min(count - start) as i64;
            control
                .execute(
                    &format!(
                        "INSERT INTO {table} OVERRIDING SYSTEM VALUE
                         SELECT r.*
                         FROM template t, generate_series(1::bigint, $2::bigint) g,
                              LATERAL jsonb_populate_record(t, jsonb_build_object(
                                  'id', $1::bigint + g,
                                  'to_address', '+3162' || lpad((g % 10000000)::text, 7, '0'),
                                  'body', 'finished ' || g)) r"
                    ),
                    &[&(base + start as i64), &n],
                )
                .await?;
        }
    }
    // Their parts, with the references the delivery reports were matched by.
    for start in (0..finished).step_by(1_000_000) {
        let n = 1_000_000.min(finished - start) as i64;
        control
            .execute(
                "INSERT INTO smsbus.message_part (message_id, part, channel, reference, status,
                                                  submitted_at, reported_at)
                 SELECT 1000000000 + g, 1, 'old', 'old-' || g, 'delivered',
                        now() - interval '2 days', now() - interval '1 day'
                 FROM generate_series($1::bigint, $2::bigint) g",
                &[&(start as i64 + 1), &(start as i64 + n)],
            )
            .await?;
    }
    control
        .batch_execute("RESET session_replication_role; DROP TABLE template;")
        .await?;
    Ok(())
}
