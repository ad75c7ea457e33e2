//! The HTTP channel end to end against the provider simulator (Twilio's
//! API, in this process, over loopback TCP): N messages inserted in bulk,
//! timed until every one is `delivered`, each by a report the simulator
//! posts, signed, to the worker's webhook endpoint. The SMPP channel runs
//! the same in the same rounds against the SMSC simulator, and the HTTP
//! figure is reported as a ratio to it (medians of the rounds, the two
//! alternating which goes first).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use smsbus_tests::net::free_port;
use smsbus_tests::providers::{Preset, Provider};
use smsbus_tests::smsc::{Behaviour, Smsc};
use tokio_postgres::Client;

use crate::end_to_end::{wait_connected, WorkerProcess};
use crate::report::Row;

pub const MIN_RATE: f64 = 3_000.0;
pub const CONCURRENCY: u32 = 64;
const HTTP: &str = "bench_http";
const SMPP: &str = "bench_smpp";

#[derive(Clone)]
pub struct Settings {
    pub messages: usize,
    pub rounds: usize,
    /// The SMPP channel's sessions and window.
    pub sessions: u32,
    pub window: u32,
}

pub struct Figures {
    http: Vec<f64>,
    smpp: Vec<f64>,
    reports_refused: usize,
}

impl Figures {
    pub fn http_rate(&self) -> f64 {
        median(&self.http)
    }

    pub fn smpp_rate(&self) -> f64 {
        median(&self.smpp)
    }

    pub fn pass(&self) -> bool {
        self.http_rate() >= MIN_RATE && self.reports_refused == 0
    }

    /// One line: the HTTP channel, with the SMPP channel of the same
    /// rounds in the "bare" column, so the ratio is HTTP / SMPP.
    pub fn rows(&self) -> Vec<Row> {
        vec![Row {
            scenario: format!("HTTP channel e2e (c={CONCURRENCY}) vs SMPP"),
            smsbus: self.http_rate(),
            bare: self.smpp_rate(),
            target: format!(">= {MIN_RATE:.0} msg/s"),
            pass: Some(self.pass()),
        }]
    }

    pub fn to_json(&self, settings: &Settings) -> Value {
        json!({
            "messages": settings.messages,
            "concurrency": CONCURRENCY,
            "provider": "twilio (simulator), reports by signed webhook",
            "http_delivered_msg_per_s": self.http_rate(),
            "http_rounds_msg_per_s": self.http,
            "smpp_delivered_msg_per_s": self.smpp_rate(),
            "smpp_rounds_msg_per_s": self.smpp,
            "smpp_sessions": settings.sessions,
            "smpp_window": settings.window,
            "ratio_http_to_smpp": self.http_rate() / self.smpp_rate(),
            "reports_refused": self.reports_refused,
            "target_min_msg_per_s": MIN_RATE,
        })
    }
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

pub async fn run(control: &Client, conninfo: &str, settings: &Settings) -> Result<Figures> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let api = format!("http://{addr}");
    let worker = WorkerProcess::start_with(conninfo, &["--http-addr", &addr])?;
    let provider = Provider::start(Preset::Twilio).await;
    let config = provider.channel_config(
        &api,
        json!({"concurrency": CONCURRENCY, "request_timeout_s": 10}),
    );
    let smsc = Smsc::start(
        "bench",
        "bench",
        Behaviour {
            report_delay: Duration::from_millis(5),
            ..Behaviour::default()
        },
    )
    .await;
    let smpp = json!({"host": "127.0.0.1", "port": smsc.port(), "system_id": "bench",
                      "password": "bench", "sessions": settings.sessions,
                      "window": settings.window});
    control
        .execute(
            "INSERT INTO smsbus.channel (name, kind, config) VALUES ($1, 'http', $2), ($3, 'smpp', $4)",
            &[&HTTP, &config, &SMPP, &smpp],
        )
        .await
        .context("creating the HTTP and SMPP channels")?;
    wait_connected(control, HTTP).await?;
    wait_connected(control, SMPP).await?;
    // A first small run warms both paths (connections, plans).
    through(control, HTTP, 500).await?;
    through(control, SMPP, 500).await?;
    let (mut http, mut smpp) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let order = if round % 2 == 0 {
            [HTTP, SMPP]
        } else {
            [SMPP, HTTP]
        };
        for channel in order {
            let rate = through(control, channel, settings.messages).await?;
            eprintln!("  round {}: {channel} {rate:.0} msg/s", round + 1);
            if channel == HTTP {
                http.push(rate);
            } else {
                smpp.push(rate);
            }
        }
    }
    let reports_refused = provider
        .hook_answers()
        .iter()
        .filter(|s| !(200..300).contains(*s))
        .count();
    drop(worker);
    Ok(Figures {
        http,
        smpp,
        reports_refused,
    })
}

/// Inserts `messages` for `channel` and waits until each is delivered;
/// the rate.
async fn through(control: &Client, channel: &str, messages: usize) -> Result<f64> {
    let insert = control
        .prepare(
            "INSERT INTO smsbus.message (to_address, body, channel)
             SELECT '+3161' || lpad(($1::int + g)::text, 7, '0'), 'http bench ' || g, $3
             FROM generate_series(1, $2::int) g",
        )
        .await?;
    let active = control
        .prepare(
            "SELECT EXISTS (SELECT 1 FROM smsbus.message WHERE status = 'queued' AND channel = $1)
                 OR EXISTS (SELECT 1 FROM smsbus.message WHERE status = 'sending' AND channel = $1)
                 OR EXISTS (SELECT 1 FROM smsbus.message WHERE status = 'sent' AND channel = $1)",
        )
        .await?;
    let started = Instant::now();
    for start in (0..messages).step_by(1000) {
        let n = 1000.min(messages - start) as i32;
        control
            .execute(&insert, &[&(start as i32), &n, &channel])
            .await?;
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        let busy: bool = control.query_one(&active, &[&channel]).await?.get(0);
        if !busy {
            break;
        }
        if Instant::now() > deadline {
            bail!("{messages} messages through {channel} not delivered in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    let undelivered: i64 = control
        .query_one(
            "SELECT count(*) FROM smsbus.message WHERE channel = $1 AND status <> 'delivered'",
            &[&channel],
        )
        .await?
        .get(0);
    if undelivered > 0 {
        bail!("{undelivered} messages through {channel} not delivered");
    }
    Ok(rate)
}
