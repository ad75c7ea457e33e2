//! The trigger runner: inbound messages recorded in bulk and armed by the
//! extension while no worker runs, then the worker started and timed until
//! every chain has ended; executions per second, for a trivial SQL
//! trigger, a trivial Lua trigger, and a Lua trigger that sends a reply
//! with `smsbus.send` (an INSERT through the router per run).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::end_to_end::WorkerProcess;

/// (name in the results, language, script)
pub const SCENARIOS: [(&str, &str, &str); 3] = [
    ("sql_trivial", "sql", "SELECT $1"),
    ("lua_trivial", "lua", "function process(message) end"),
    (
        "lua_send",
        "lua",
        "function process(message)
             smsbus.send{to = message.from_address, body = 're: ' .. message.body, channel = 'bench'}
         end",
    ),
];

pub struct Figures {
    pub messages: usize,
    /// Runs per second, in the order of [`SCENARIOS`].
    pub rates: Vec<f64>,
}

impl Figures {
    pub fn to_json(&self) -> Value {
        let mut figures = json!({ "messages": self.messages });
        for ((name, _, _), rate) in SCENARIOS.iter().zip(&self.rates) {
            figures[format!("{name}_runs_per_s")] = json!(rate);
        }
        figures
    }
}

pub async fn run(control: &Client, conninfo: &str, messages: usize) -> Result<Figures> {
    let mut rates = Vec::new();
    for (name, language, script) in SCENARIOS {
        control.batch_execute(crate::common::TRUNCATE_ALL).await?;
        crate::common::settle(control).await?;
        eprintln!("  {name} ...");
        rates.push(one(control, conninfo, messages, language, script).await?);
    }
    Ok(Figures { messages, rates })
}

async fn one(
    control: &Client,
    conninfo: &str,
    messages: usize,
    language: &str,
    script: &str,
) -> Result<f64> {
    control
        .batch_execute("UPDATE smsbus.channel SET enabled = false")
        .await?;
    control
        .execute(
            "INSERT INTO smsbus.trigger (name, on_status, language, script)
             VALUES ('bench-trigger', '{received}', $1, $2)",
            &[&language, &script],
        )
        .await?;
    let record = control
        .prepare(
            "SELECT smsbus._record_inbound('bench', array_fill('+31687654321'::text, ARRAY[$1::int]),
                    array_fill('1234'::text, ARRAY[$1::int]),
                    (SELECT array_agg('inbound ' || g) FROM generate_series(1, $1::int) g),
                    array_fill(NULL::text, ARRAY[$1::int]))",
        )
        .await?;
    for start in (0..messages).step_by(1000) {
        let n = 1000.min(messages - start) as i32;
        control.execute(&record, &[&n]).await?;
    }
    let started = Instant::now();
    let worker = WorkerProcess::start(conninfo)?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let left: i64 = control
            .query_one(
                "SELECT count(*) FROM smsbus.message WHERE trigger_status IN ('pending', 'processing')",
                &[],
            )
            .await?
            .get(0);
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} of {messages} trigger chains not done in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    drop(worker);
    let unprocessed = control
        .query(
            "SELECT trigger_status::text, coalesce(last_error, ''), count(*) FROM smsbus.message
             WHERE trigger_status <> 'processed' AND direction = 'in' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 3",
            &[],
        )
        .await?;
    if let Some(row) = unprocessed.first() {
        let (status, error, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        bail!("{n} chains ended {status}, not processed: {error}");
    }
    control
        .batch_execute(
            "DELETE FROM smsbus.trigger WHERE name = 'bench-trigger';
             UPDATE smsbus.channel SET enabled = true;",
        )
        .await?;
    Ok(rate)
}
