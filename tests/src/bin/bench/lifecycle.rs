//! The lifecycle: batched multi-row INSERTs, then per batch the worker's
//! steps `_claim` -> `_mark_sent` -> `_apply_reports` (queued -> sending ->
//! sent -> delivered). One statement, one round trip and one transaction per
//! step and batch on both sides; the time is the sum of the statements'.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config};

use crate::common::{connect, settle, Listener, CHANNEL, WORKER};
use crate::side::Side;

/// Target: smsbus's messages/s through the whole lifecycle.
pub const MIN_RATE: f64 = 10_000.0;
/// Target: smsbus's rate as a share of the bare side's.
pub const MIN_RATIO: f64 = 0.5;

/// One side of the lifecycle scenario.
pub struct LifecycleRun {
    side: Side,
    messages: usize,
    /// The multi-row INSERT statements, each of which may NOTIFY once.
    pub insert_statements: u64,
    /// insert, claim, mark sent, reports.
    phase_times: [Duration; 4],
    pub notifications: u64,
}

impl LifecycleRun {
    fn total(&self) -> Duration {
        self.phase_times.iter().sum()
    }

    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.total().as_secs_f64()
    }

    /// (JSON key, table label, time) of each step.
    pub fn phases(&self) -> [(&'static str, &'static str, Duration); 4] {
        let [insert, claim, sent, reports] = self.phase_times;
        [
            ("insert", "insert (batch)", insert),
            ("claim", "claim", claim),
            ("mark_sent", "mark sent", sent),
            ("reports", "delivery reports", reports),
        ]
    }

    pub fn phase_rate(&self, i: usize) -> f64 {
        self.messages as f64 / self.phase_times[i].as_secs_f64()
    }

    pub fn to_json(&self) -> Value {
        let phases: serde_json::Map<String, Value> = self
            .phases()
            .iter()
            .enumerate()
            .map(|(i, (key, _, t))| {
                (
                    key.to_string(),
                    json!({ "seconds": t.as_secs_f64(), "msg_per_s": self.phase_rate(i) }),
                )
            })
            .collect();
        let mut value = json!({
            "messages": self.messages,
            "seconds": self.total().as_secs_f64(),
            "msg_per_s": self.rate(),
            "phases": phases,
        });
        if self.side == Side::Smsbus {
            value["notifications"] = json!(self.notifications);
        }
        value
    }
}

/// Takes `messages` messages through the lifecycle on one side, `batch`
/// rows per INSERT and per claim, and checks every one was delivered.
pub async fn run(
    control: &Client,
    config: &Config,
    side: Side,
    messages: usize,
    batch: usize,
) -> Result<LifecycleRun> {
    let sql = side.sql();
    // The application and the worker are different sessions, as in production.
    let app = connect(config, "app").await?;
    let worker = connect(config, "worker").await?;
    worker
        .batch_execute(&format!("SET smsbus.actor = 'worker:{WORKER}'"))
        .await
        .context("setting smsbus.actor")?;
    if side == Side::Bare {
        // Every bare step is a key lookup; without this the planner, misled
        // by statistics taken on empty tables, hash-joins the claim against
        // a scan of the whole table and the ceiling would be set too low.
        worker
            .batch_execute("SET enable_seqscan = off")
            .await
            .context("setting enable_seqscan")?;
    }
    let listener = match side {
        Side::Smsbus => Some(Listener::start(config).await?),
        Side::Bare => None,
    };

    let mut times = [Duration::ZERO; 4];
    let full_insert = app
        .prepare(&insert_sql(sql.message, batch))
        .await
        .context("preparing the batch INSERT")?;
    let mut statements = 0u64;
    let mut next = 0usize;
    while next < messages {
        let n = batch.min(messages - next);
        let rows: Vec<(String, String)> = (next..next + n).map(message_values).collect();
        let params: Vec<&(dyn ToSql + Sync)> = rows
            .iter()
            .flat_map(|(to, body)| [to as &(dyn ToSql + Sync), body, &CHANNEL])
            .collect();
        let started = Instant::now();
        let inserted = if n == batch {
            app.execute(&full_insert, &params).await
        } else {
            // The last, shorter batch: an unprepared statement, once.
            app.execute(insert_sql(sql.message, n).as_str(), &params)
                .await
        }
        .with_context(|| format!("inserting messages {next}.. into {}", sql.message))?;
        times[0] += started.elapsed();
        ensure!(
            inserted == n as u64,
            "inserted {inserted} rows, expected {n}"
        );
        statements += 1;
        next += n;
    }
    // Fresh statistics for the worker's statements on both sides. They
    // describe an all-queued table, as statistics of a busy queue are always
    // somewhat behind it.
    settle(control).await?;

    let claim = worker
        .prepare(sql.claim)
        .await
        .context("preparing the claim")?;
    let mark_sent = worker
        .prepare(sql.mark_sent)
        .await
        .context("preparing mark sent")?;
    let reports = worker
        .prepare(sql.reports)
        .await
        .context("preparing the reports")?;
    let limit = i32::try_from(batch).context("--batch is too large")?;
    let mut done = 0usize;
    loop {
        let started = Instant::now();
        let claimed = worker
            .query(&claim, &[&CHANNEL, &WORKER, &limit])
            .await
            .with_context(|| format!("claiming on the {} side", side.name()))?;
        times[1] += started.elapsed();
        if claimed.is_empty() {
            break;
        }
        let (mut ids, mut parts, mut refs) = (Vec::new(), Vec::new(), Vec::new());
        for row in &claimed {
            let id: i64 = row.try_get("id").context("claimed row without id")?;
            let segments: i32 = row
                .try_get("segments")
                .context("claimed row without segments")?;
            for part in 1..=segments {
                ids.push(id);
                parts.push(part);
                // Provider references look like this: opaque, unique per part.
                refs.push(format!("{id:x}.{part}"));
            }
        }

        let started = Instant::now();
        let sent: i32 = worker
            .query_one(&mark_sent, &[&CHANNEL, &ids, &parts, &refs])
            .await
            .with_context(|| format!("marking sent on the {} side", side.name()))?
            .try_get(0)?;
        times[2] += started.elapsed();
        ensure!(
            sent as usize == claimed.len(),
            "{sent} marked sent of {} claimed",
            claimed.len()
        );

        let statuses = vec!["delivered"; refs.len()];
        let details: Vec<Option<&str>> = vec![None; refs.len()];
        let started = Instant::now();
        let matched: i32 = worker
            .query_one(&reports, &[&CHANNEL, &refs, &statuses, &details])
            .await
            .with_context(|| format!("applying reports on the {} side", side.name()))?
            .try_get(0)?;
        times[3] += started.elapsed();
        ensure!(
            matched as usize == refs.len(),
            "{matched} reports matched of {}",
            refs.len()
        );
        done += claimed.len();
    }

    // The figures count only if every message really made the whole trip.
    let delivered: i64 = control
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE status = 'delivered'",
                sql.message
            ),
            &[],
        )
        .await
        .context("counting delivered messages")?
        .try_get(0)?;
    ensure!(
        done == messages && delivered == messages as i64,
        "{} side: {done} messages went through, {delivered} delivered, of {}",
        side.name(),
        messages
    );
    let notifications = match listener {
        Some(l) => l.finish(statements).await,
        None => 0,
    };
    Ok(LifecycleRun {
        side,
        messages,
        insert_statements: statements,
        phase_times: times,
        notifications,
    })
}

/// `INSERT INTO table (to_address, body, channel) VALUES ($1, $2, $3), ...`
fn insert_sql(table: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
        .collect();
    format!(
        "INSERT INTO {table} (to_address, body, channel) VALUES {}",
        values.join(", ")
    )
}

/// Recipient and body of the i-th message: an international mobile number
/// and a one-segment GSM 03.38 text, so both sides store the same row.
pub fn message_values(i: usize) -> (String, String) {
    (
        format!("+4670{:07}", i % 10_000_000),
        format!("smsbus bench message {i}"),
    )
}
