//! The trigger runner: trivial SQL triggers over many inbound messages,
//! recorded in bulk and armed by the extension; executions per second
//! until every chain has ended. (The issue also asks for Lua figures,
//! once the runner runs Lua.)

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::end_to_end::WorkerProcess;

pub struct Figures {
    pub messages: usize,
    pub rate: f64,
}

impl Figures {
    pub fn to_json(&self) -> Value {
        json!({ "messages": self.messages, "sql_trigger_runs_per_s": self.rate })
    }
}

pub async fn run(control: &Client, conninfo: &str, messages: usize) -> Result<Figures> {
    control
        .batch_execute(
            "UPDATE smsbus.channel SET enabled = false;
             INSERT INTO smsbus.trigger (name, on_status, language, script)
             VALUES ('bench-trivial', '{received}', 'sql', 'SELECT $1');",
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
    // Armed while no worker runs: then the runner alone is timed.
    for start in (0..messages).step_by(1000) {
        let n = 1000.min(messages - start) as i32;
        control.execute(&record, &[&n]).await?;
    }
    let started = Instant::now();
    let _worker = WorkerProcess::start(conninfo)?;
    let deadline = started + Duration::from_secs(300);
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
            bail!("{left} of {messages} trigger chains not done in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    control
        .batch_execute(
            "DELETE FROM smsbus.trigger WHERE name = 'bench-trivial';
             UPDATE smsbus.channel SET enabled = true;",
        )
        .await?;
    Ok(Figures { messages, rate })
}
