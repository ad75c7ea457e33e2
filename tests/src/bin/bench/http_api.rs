//! smsbus's HTTP API and webhooks, with the release worker as a separate
//! process:
//!
//! - **single**: `POST /v1/messages` from `clients` keep-alive clients at
//!   once, against the same single-row INSERTs made over SQL by as many
//!   connections, in alternating rounds: the ratio is the HTTP layer's
//!   cost (key check, JSON, the answer). The worker gets as many
//!   connections as the SQL side.
//! - **batch**: `POST /v1/messages/batch` of 1,000 messages from 4
//!   clients.
//! - **webhooks**: messages of an account with a webhook to a local
//!   receiver (axum) that answers 204 at once; the rate at which the outbox
//!   empties, events included in every message's INSERT.
//! - **webhook latency**: 500 status changes a second (50 messages every
//!   100 ms) for 10 seconds; from each INSERT's return to its event's
//!   arrival at the receiver, p50 and p99.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use smsbus_tests::net::free_port;
use tokio_postgres::Client;

use crate::common::median_by;
use crate::end_to_end::WorkerProcess;

pub const MIN_RATIO: f64 = 0.6;
pub const MIN_BATCH_RATE: f64 = 30_000.0;
pub const MIN_WEBHOOK_RATE: f64 = 5_000.0;
pub const MAX_WEBHOOK_P99_MS: f64 = 100.0;
/// Status changes a second of the latency run.
const LATENCY_RATE: usize = 500;

const ACCOUNT: &str = "api";
const BATCH: usize = 1_000;

#[derive(Clone)]
pub struct Settings {
    pub messages: usize,
    pub clients: usize,
    pub rounds: usize,
}

pub struct Figures {
    pub single_rate: f64,
    pub sql_rate: f64,
    pub batch_rate: f64,
    pub webhook_rate: f64,
    pub webhook_p50_ms: f64,
    pub webhook_p99_ms: f64,
}

impl Figures {
    pub fn ratio(&self) -> f64 {
        self.single_rate / self.sql_rate
    }
    pub fn single_pass(&self) -> bool {
        self.ratio() >= MIN_RATIO
    }
    pub fn batch_pass(&self) -> bool {
        self.batch_rate >= MIN_BATCH_RATE
    }
    pub fn webhook_pass(&self) -> bool {
        self.webhook_rate >= MIN_WEBHOOK_RATE
    }
    pub fn latency_pass(&self) -> bool {
        self.webhook_p99_ms <= MAX_WEBHOOK_P99_MS
    }
    pub fn pass(&self) -> bool {
        self.single_pass() && self.batch_pass() && self.webhook_pass() && self.latency_pass()
    }

    pub fn to_json(&self, settings: &Settings) -> Value {
        json!({
            "messages": settings.messages,
            "clients": settings.clients,
            "rounds": settings.rounds,
            "single_post_per_s": self.single_rate,
            "sql_insert_per_s": self.sql_rate,
            "ratio": self.ratio(),
            "batch_messages_per_s": self.batch_rate,
            "webhook_events_per_s": self.webhook_rate,
            "webhook_latency_ms": { "rate_per_s": LATENCY_RATE, "p50": self.webhook_p50_ms,
                                    "p99": self.webhook_p99_ms },
            "targets": { "min_ratio": MIN_RATIO, "min_batch_per_s": MIN_BATCH_RATE,
                         "min_webhook_per_s": MIN_WEBHOOK_RATE, "max_webhook_p99_ms": MAX_WEBHOOK_P99_MS },
        })
    }
}

/// `clients` threads, each posting its share of `messages` over one
/// keep-alive connection; messages per second.
fn post_all(base: &str, key: &str, clients: usize, messages: usize) -> Result<f64> {
    let share = messages / clients;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let url = format!("{base}/v1/messages");
            let auth = format!("Bearer {key}");
            std::thread::spawn(move || -> Result<()> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for n in 0..share {
                    let body = format!(r#"{{"to": "+31612345678", "body": "bench {i} {n}"}}"#);
                    let answer = agent
                        .post(&url)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .send(body)?;
                    if answer.status() != 201 {
                        bail!("POST answered {}", answer.status());
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    Ok((share * clients) as f64 / started.elapsed().as_secs_f64())
}

/// The same messages as single-row INSERTs from `clients` connections.
async fn insert_all(conninfo: &str, clients: usize, messages: usize) -> Result<f64> {
    let share = messages / clients;
    let mut connections = Vec::new();
    for _ in 0..clients {
        let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        connections.push(client);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in connections.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare(
                    "INSERT INTO smsbus.message (account, to_address, body) VALUES ($1, $2, $3)",
                )
                .await?;
            for n in 0..share {
                client
                    .execute(
                        &insert,
                        &[&ACCOUNT, &"+31612345678", &format!("bench {i} {n}")],
                    )
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("a client panicked")??;
    }
    Ok((share * clients) as f64 / started.elapsed().as_secs_f64())
}

/// Batches of [`BATCH`] from 4 clients; messages per second.
fn post_batches(base: &str, key: &str, messages: usize) -> Result<f64> {
    let clients = 4;
    let batches = (messages / BATCH / clients).max(1);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let url = format!("{base}/v1/messages/batch");
            let auth = format!("Bearer {key}");
            std::thread::spawn(move || -> Result<()> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for b in 0..batches {
                    let items: Vec<Value> = (0..BATCH)
                        .map(
                            |n| json!({"to": "+31612345678", "body": format!("batch {i} {b} {n}")}),
                        )
                        .collect();
                    let mut answer = agent
                        .post(&url)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .send(json!({ "messages": items }).to_string())?;
                    let body: Value = serde_json::from_str(
                        &answer
                            .body_mut()
                            .with_config()
                            .limit(64 << 20)
                            .read_to_string()?,
                    )?;
                    if answer.status() != 200 || body["created"] != json!(BATCH) {
                        bail!("a batch answered {}: {}", answer.status(), body["refused"]);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    Ok((batches * BATCH * clients) as f64 / started.elapsed().as_secs_f64())
}

/// A receiver that answers 204 to everything (axum, on the bench's
/// runtime: a receiver slower than the worker would measure itself); how
/// many it took.
async fn receiver() -> Result<(String, Arc<AtomicU64>)> {
    let taken = Arc::new(AtomicU64::new(0));
    let counter = taken.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let url = serve(app, "events").await?;
    Ok((url, taken))
}

/// A receiver that notes when each message's event arrived.
type Arrivals = Arc<std::sync::Mutex<std::collections::HashMap<i64, Instant>>>;

async fn timed_receiver() -> Result<(String, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let noted = arrivals.clone();
    let app = axum::Router::new().route(
        "/timed",
        axum::routing::post(move |body: axum::body::Bytes| {
            let noted = noted.clone();
            async move {
                let at = Instant::now();
                let id = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["message"]["id"].as_i64());
                if let Some(id) = id {
                    noted.lock().unwrap().entry(id).or_insert(at);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let url = serve(app, "timed").await?;
    Ok((url, arrivals))
}

/// Serves `app` on a free local port for the rest of the run; its URL at
/// `path`.
async fn serve(app: axum::Router, path: &str) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/{path}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("receiver failed: {e}");
        }
    });
    Ok(url)
}

/// 500 status changes a second for ten seconds: p50 and p99 in ms from
/// each INSERT's return (its commit) to its event's arrival.
async fn webhook_latency(control: &Client) -> Result<(f64, f64)> {
    let (url, arrivals) = timed_receiver().await?;
    control
        .batch_execute("UPDATE smsbus.webhook SET enabled = false")
        .await?;
    control
        .execute(
            "INSERT INTO smsbus.webhook (account, url, secret, events, concurrency)
             VALUES ($1, $2, 'bench-webhook-secret', '{status}', 64)",
            &[&ACCOUNT, &url],
        )
        .await?;
    let per_tick = LATENCY_RATE / 10;
    let mut committed: Vec<(i64, Instant)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..100 {
        tick.tick().await;
        let rows = control
            .query(
                "INSERT INTO smsbus.message (account, to_address, body)
                 SELECT $1, '+31612345678', 'timed ' || n FROM generate_series(1, $2) n RETURNING id",
                &[&ACCOUNT, &(per_tick as i32)],
            )
            .await?;
        let at = Instant::now();
        committed.extend(rows.iter().map(|r| (r.get::<_, i64>(0), at)));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().unwrap().len() < committed.len() {
        if Instant::now() > deadline {
            bail!(
                "{} of {} timed events arrived",
                arrivals.lock().unwrap().len(),
                committed.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = committed
        .iter()
        .map(|(id, at)| {
            arrivals[id]
                .checked_duration_since(*at)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

async fn empty(control: &Client) -> Result<()> {
    control
        .batch_execute("TRUNCATE smsbus.message, smsbus.message_event, smsbus.webhook_outbox")
        .await
        .context("emptying the queue")
}

pub async fn run(control: &Client, conninfo: &str, settings: &Settings) -> Result<Figures> {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    control
        .batch_execute(&format!(
            "INSERT INTO smsbus.account (name) VALUES ('{ACCOUNT}')"
        ))
        .await?;
    let key: String = control
        .query_one(
            &format!("SELECT smsbus.create_api_key('{ACCOUNT}', '{{send,read}}')"),
            &[],
        )
        .await?
        .get(0);
    // As many database connections as the SQL side has clients.
    let pool = (settings.clients + 8).to_string();
    let _worker = WorkerProcess::start_with(
        conninfo,
        &[
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--pool-size",
            &pool,
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the HTTP API never listened on {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut single, mut sql) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        eprintln!(
            "  round {}/{}: {} POST /v1/messages and as many INSERTs, {} clients each ...",
            round + 1,
            settings.rounds,
            settings.messages,
            settings.clients
        );
        let post = || {
            let (base, key) = (base.clone(), key.clone());
            let (clients, messages) = (settings.clients, settings.messages);
            tokio::task::spawn_blocking(move || post_all(&base, &key, clients, messages))
        };
        if round % 2 == 0 {
            single.push(post().await??);
            empty(control).await?;
            sql.push(insert_all(conninfo, settings.clients, settings.messages).await?);
        } else {
            sql.push(insert_all(conninfo, settings.clients, settings.messages).await?);
            empty(control).await?;
            single.push(post().await??);
        }
        empty(control).await?;
    }
    let single_rate = *median_by(&mut single, |r| *r);
    let sql_rate = *median_by(&mut sql, |r| *r);
    eprintln!("  POST {single_rate:.0}/s, SQL {sql_rate:.0}/s");

    eprintln!("  batches of {BATCH} ...");
    let batch_messages = (settings.messages * 5).max(BATCH * 4);
    let batch_rate = {
        let (base, key) = (base.clone(), key.clone());
        tokio::task::spawn_blocking(move || post_batches(&base, &key, batch_messages)).await??
    };
    empty(control).await?;

    eprintln!("  webhook events ...");
    let (url, taken) = receiver().await?;
    control
        .execute(
            "INSERT INTO smsbus.webhook (account, url, secret, events, concurrency)
             VALUES ($1, $2, 'bench-webhook-secret', '{status}', 64)",
            &[&ACCOUNT, &url],
        )
        .await?;
    let events = settings.messages * 2;
    let started = Instant::now();
    for chunk in 0..events / BATCH {
        control
            .execute(
                "INSERT INTO smsbus.message (account, to_address, body)
                 SELECT $1, '+31612345678', 'hook ' || n FROM generate_series(1, $2) n",
                &[&ACCOUNT, &(BATCH as i32)],
            )
            .await
            .with_context(|| format!("inserting chunk {chunk}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left: i64 = control
            .query_one("SELECT count(*) FROM smsbus.webhook_outbox", &[])
            .await?
            .get(0);
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} webhook events still waiting after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let webhook_rate = (events / BATCH * BATCH) as f64 / started.elapsed().as_secs_f64();
    let received = taken.load(Ordering::Relaxed);
    if received < (events / BATCH * BATCH) as u64 {
        bail!("the receiver took {received} events of {events}");
    }
    empty(control).await?;
    eprintln!("  webhook latency at {LATENCY_RATE} status changes a second ...");
    let (webhook_p50_ms, webhook_p99_ms) = webhook_latency(control).await?;
    eprintln!("  webhook latency p50 {webhook_p50_ms:.1} ms, p99 {webhook_p99_ms:.1} ms");
    Ok(Figures {
        single_rate,
        sql_rate,
        batch_rate,
        webhook_rate,
        webhook_p50_ms,
        webhook_p99_ms,
    })
}
