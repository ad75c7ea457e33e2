//! smsbus's SMPP server, driven by the project's own client
//! (`smsbus_tests::smpp_client`), with the release worker as a separate
//! process:
//!
//! - **accept**: submit_sm from `binds` transceivers with `window`
//!   unanswered each, every submit_sm_resp sent after its row committed;
//!   the same client against the SMSC simulator, which commits nothing,
//!   in alternating rounds: the ratio is the cost of durability.
//! - **full loop**: client -> smsbus -> SMPP channel -> simulator ->
//!   receipt -> smsbus -> the client's deliver_sm, until every receipt
//!   came back.
//! - **latency**: one client paced at 1,000 submit_sm/s; from each
//!   submit_sm written to its submit_sm_resp read.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use smsbus_tests::net::free_port;
use smsbus_tests::smpp_client::{text_submit, BindKind, Client as SmppClient, Run};
use smsbus_tests::smsc::{Behaviour, Smsc};
use tokio_postgres::Client;

use crate::common::median_by;
use crate::end_to_end::{wait_connected, WorkerProcess};

pub const MIN_ACCEPT_RATE: f64 = 10_000.0;
pub const MIN_ACCEPT_RATIO: f64 = 0.7;
pub const MIN_LOOP_RATE: f64 = 5_000.0;
pub const MAX_P99_MS: f64 = 20.0;
const PACED_RATE: f64 = 1_000.0;

const ACCOUNT: &str = "bench";
const PASSWORD: &str = "bench1";
const SIMULATOR_ID: &str = "bench";

#[derive(Clone)]
pub struct Settings {
    pub messages: usize,
    pub loop_messages: usize,
    pub binds: usize,
    pub window: usize,
    pub latency_seconds: f64,
    pub rounds: usize,
}

pub struct Figures {
    pub accept_rate: f64,
    pub simulator_rate: f64,
    pub loop_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub paced_rate: f64,
}

impl Figures {
    pub fn ratio(&self) -> f64 {
        self.accept_rate / self.simulator_rate
    }
    pub fn accept_pass(&self) -> bool {
        self.accept_rate >= MIN_ACCEPT_RATE && self.ratio() >= MIN_ACCEPT_RATIO
    }
    pub fn loop_pass(&self) -> bool {
        self.loop_rate >= MIN_LOOP_RATE
    }
    pub fn latency_pass(&self) -> bool {
        self.p99_ms <= MAX_P99_MS
    }
    pub fn pass(&self) -> bool {
        self.accept_pass() && self.loop_pass() && self.latency_pass()
    }

    pub fn to_json(&self, settings: &Settings) -> Value {
        json!({
            "messages": settings.messages,
            "binds": settings.binds,
            "window": settings.window,
            "rounds": settings.rounds,
            "accepted_submit_sm_per_s": self.accept_rate,
            "simulator_submit_sm_per_s": self.simulator_rate,
            "ratio": self.ratio(),
            "full_loop": { "messages": settings.loop_messages, "msg_per_s": self.loop_rate },
            "latency_ms": { "p50": self.p50_ms, "p99": self.p99_ms, "paced_per_s": PACED_RATE,
                            "achieved_per_s": self.paced_rate, "seconds": settings.latency_seconds },
            "targets": { "min_accept_per_s": MIN_ACCEPT_RATE, "min_ratio": MIN_ACCEPT_RATIO,
                         "min_loop_per_s": MIN_LOOP_RATE, "max_p99_ms": MAX_P99_MS },
        })
    }
}

/// `binds` clients, each bound and submitting its share with `window` in
/// flight, all at once; the rate over the slowest, and the runs. With
/// `receipts`, each asks for them and binds as a transmitter: the
/// account's receipts go to whichever of its receiver binds is open, so
/// one receiver takes them all ([`take_receipts`]).
async fn submit_from(
    addr: &str,
    system_id: &str,
    password: &str,
    settings: &Settings,
    messages: usize,
    receipts: bool,
) -> Result<(f64, Vec<Run>)> {
    let kind = if receipts {
        BindKind::Transmitter
    } else {
        BindKind::Transceiver
    };
    let mut clients = Vec::new();
    for _ in 0..settings.binds {
        let mut client = SmppClient::connect(addr).await?;
        client.bind(kind, system_id, password).await?;
        clients.push(client);
    }
    let share = messages / settings.binds;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let pdus = (0..share)
            .map(|n| text_submit("BENCH", "+31612345678", &format!("bench {i} {n}"), receipts))
            .collect::<Result<Vec<_>>>()?;
        let window = settings.window;
        tasks.push(tokio::spawn(async move {
            let run = client.run(pdus, window, None, 0).await?;
            client.unbind().await?;
            Ok::<_, anyhow::Error>(run)
        }));
    }
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(task.await.context("a client panicked")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for run in &runs {
        if !run.refused.is_empty() {
            bail!("submissions refused: {:?}", run.refused);
        }
    }
    Ok(((share * settings.binds) as f64 / elapsed, runs))
}

async fn wait_listening(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("the SMPP server never listened on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn run(control: &Client, conninfo: &str, settings: &Settings) -> Result<Figures> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let smsc = Smsc::start(
        SIMULATOR_ID,
        PASSWORD,
        Behaviour {
            report_delay: Duration::from_millis(5),
            ..Behaviour::default()
        },
    )
    .await;
    control
        .batch_execute(&format!(
            "INSERT INTO smsbus.account (name, deliver_window, max_binds) VALUES ('{ACCOUNT}', 100, 16);
             SELECT smsbus.set_password('{ACCOUNT}', '{PASSWORD}');
             INSERT INTO smsbus.smpp_server (name, listen, submit_window)
             VALUES ('bench', '{addr}', {});",
            settings.window * 2
        ))
        .await
        .context("creating the account and the listener")?;
    let _worker = WorkerProcess::start(conninfo)?;
    wait_listening(&addr).await?;

    // Accept, against the simulator, in alternating rounds.
    let (mut accepted, mut simulated) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        eprintln!(
            "  round {}/{}: {} submit_sm to smsbus and to the simulator ...",
            round + 1,
            settings.rounds,
            settings.messages
        );
        let to_smsbus =
            || submit_from(&addr, ACCOUNT, PASSWORD, settings, settings.messages, false);
        let smsc_addr = smsc.addr().to_string();
        let to_simulator = || {
            submit_from(
                &smsc_addr,
                SIMULATOR_ID,
                PASSWORD,
                settings,
                settings.messages,
                false,
            )
        };
        if round % 2 == 0 {
            accepted.push(to_smsbus().await?.0);
            simulated.push(to_simulator().await?.0);
        } else {
            simulated.push(to_simulator().await?.0);
            accepted.push(to_smsbus().await?.0);
        }
        control
            .batch_execute("TRUNCATE smsbus.message, smsbus.message_event, smsbus.smpp_outbox")
            .await
            .context("emptying the queue")?;
    }
    let accept_rate = *median_by(&mut accepted, |r| *r);
    let simulator_rate = *median_by(&mut simulated, |r| *r);
    eprintln!("  accepted {accept_rate:.0}/s, simulator {simulator_rate:.0}/s");

    // The full loop, through an SMPP channel to the simulator and back.
    control
        .batch_execute(&format!(
            "INSERT INTO smsbus.channel (name, kind, config) VALUES ('loop', 'smpp', '{}');
             UPDATE smsbus.account SET channel = 'loop' WHERE name = '{ACCOUNT}';",
            json!({"host": "127.0.0.1", "port": smsc.port(), "system_id": SIMULATOR_ID,
                   "password": PASSWORD, "sessions": 2, "window": 200})
        ))
        .await
        .context("creating the loop's channel")?;
    wait_connected(control, "loop").await?;
    eprintln!(
        "  full loop: {} messages with receipts ...",
        settings.loop_messages
    );
    let loop_messages = settings.loop_messages / settings.binds * settings.binds;
    let mut receiver = SmppClient::connect(&addr).await?;
    receiver.bind(BindKind::Receiver, ACCOUNT, PASSWORD).await?;
    let started = Instant::now();
    let receiving = tokio::spawn(async move {
        let run = receiver.run([], 0, None, loop_messages).await?;
        receiver.unbind().await?;
        Ok::<_, anyhow::Error>(run)
    });
    let (_, runs) = submit_from(&addr, ACCOUNT, PASSWORD, settings, loop_messages, true).await?;
    let received = receiving.await.context("the receiver panicked")??;
    let loop_rate = loop_messages as f64 / started.elapsed().as_secs_f64();
    let submitted: std::collections::HashSet<&str> = runs
        .iter()
        .flat_map(|r| r.accepted.iter().flatten())
        .map(String::as_str)
        .collect();
    let receipted: std::collections::HashSet<&str> = received
        .receipts
        .iter()
        .map(|r| r.message_id.as_str())
        .collect();
    if submitted != receipted || received.receipts.len() != loop_messages {
        bail!(
            "receipts do not match the submissions: {} submitted, {} receipts ({} distinct)",
            submitted.len(),
            received.receipts.len(),
            receipted.len()
        );
    }

    // Latency, paced.
    eprintln!(
        "  latency at {PACED_RATE:.0}/s for {} s ...",
        settings.latency_seconds
    );
    control
        .batch_execute(&format!(
            "UPDATE smsbus.account SET channel = NULL WHERE name = '{ACCOUNT}'"
        ))
        .await?;
    let mut client = SmppClient::connect(&addr).await?;
    client
        .bind(BindKind::Transceiver, ACCOUNT, PASSWORD)
        .await?;
    let count = (PACED_RATE * settings.latency_seconds) as usize;
    let pdus = (0..count)
        .map(|n| text_submit("BENCH", "+31612345678", &format!("paced {n}"), false))
        .collect::<Result<Vec<_>>>()?;
    let run = client
        .run(pdus, settings.window, Some(PACED_RATE), 0)
        .await?;
    client.unbind().await?;
    let mut latencies: Vec<f64> = run
        .latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Ok(Figures {
        accept_rate,
        simulator_rate,
        loop_rate,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        paced_rate: count as f64 / run.elapsed.as_secs_f64(),
    })
}
