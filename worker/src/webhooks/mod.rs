//! Webhooks: the worker delivers what waits in `smsbus.webhook_outbox`
//! (sql/webhooks.sql). It takes due events under a lease, never more for
//! one endpoint than its `concurrency` less what any worker has in flight
//! to it, and for each message only the oldest waiting event, so a
//! message's events arrive in order. Each goes out as a signed POST
//! ([`signature`]); a 2xx deletes it, anything else (or no answer within
//! the webhook's timeout) sends it back with a backoff, until its retry
//! horizon makes it dead. At least once: an event whose answer was lost
//! with a worker goes again when its lease ends.
//!
//! - [`signature`]: `X-Smsbus-Signature`, HMAC-SHA256 over time and body.
//! - [`callbacks`]: the dlr-urls of the Kannel and Jasmin endpoints,
//!   called as those gateways call them (their calls are not signed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::listener::Wakeups;
use crate::statements::{self, params};

pub mod callbacks;
pub mod signature;

/// Events in flight from this worker at most.
const IN_FLIGHT: usize = 128;
/// How long a taken event is this worker's: past its longest timeout.
const LEASE: &str = "3 minutes";
/// Looked for at least this often, wake-up or not.
const POLL: Duration = Duration::from_secs(1);
/// After a database error, wait this long.
const RETRY: Duration = Duration::from_secs(2);
/// How often the callbacks of finished messages are dropped.
const PRUNE: Duration = Duration::from_secs(30);

/// One event to send. No Debug: it holds the webhook's secret.
struct Event {
    id: i64,
    url: String,
    /// smsbus-style webhooks only: compatibility callbacks are not signed.
    secret: Option<String>,
    timeout: Duration,
    name: String,
    payload: String,
    attempts: i32,
    style: Style,
    /// POST or GET (Jasmin callbacks choose).
    post: bool,
}

/// How a call is made (`webhook.style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Smsbus,
    Kannel,
    Jasmin,
}

/// How one call went: None delivered, else why not.
type Outcome = (i64, Option<String>);

/// Runs until `shutdown`: what this worker held when it stopped goes back
/// at once.
pub async fn run(worker: String, pool: Pool, wakeups: Wakeups, shutdown: CancellationToken) {
    release(&pool, &worker).await;
    // Keep-alive connections for every call in flight, to one endpoint or
    // many: without, most calls would open a connection of their own.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("smsbus/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections(IN_FLIGHT * 4)
        .max_idle_connections_per_host(IN_FLIGHT)
        .build()
        .into();
    let mut calls: JoinSet<Outcome> = JoinSet::new();
    let mut done: Vec<Outcome> = Vec::new();
    let mut pruned = std::time::Instant::now();
    loop {
        if pruned.elapsed() >= PRUNE {
            pruned = std::time::Instant::now();
            prune(&pool).await;
        }
        // Outcomes are written, and events taken, a quarter of the room at
        // a time: a claim reads the outbox, so not one per finished call.
        let room = IN_FLIGHT - calls.len();
        let refill = calls.is_empty() || room >= IN_FLIGHT / 4;
        if refill && !done.is_empty() {
            if let Err(e) = record(&pool, &done).await {
                // Their leases run out and they go again: at least once.
                tracing::warn!("webhooks: cannot record {} outcomes: {e}", done.len());
            }
            done.clear();
        }
        let mut took_all = false;
        if refill {
            match claim(&pool, &worker, room).await {
                Ok(events) => {
                    took_all = events.len() == room;
                    for event in events {
                        let agent = agent.clone();
                        calls.spawn_blocking(move || (event.id, deliver(&agent, &event)));
                    }
                }
                Err(e) => {
                    tracing::warn!("webhooks: cannot take events: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            }
        }
        let wake = wakeups.webhooks.notified();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(finished) = calls.join_next(), if !calls.is_empty() => {
                match finished {
                    Ok(outcome) => done.push(outcome),
                    Err(e) => tracing::error!("webhooks: a call panicked: {e}"),
                }
                while let Some(finished) = calls.try_join_next() {
                    match finished {
                        Ok(outcome) => done.push(outcome),
                        Err(e) => tracing::error!("webhooks: a call panicked: {e}"),
                    }
                }
            }
            _ = wake, if refill && !took_all => {}
            _ = tokio::time::sleep(POLL), if refill && !took_all => {}
        }
    }
    // Calls in flight are given up: their events go again (at least once).
    calls.abort_all();
    if !done.is_empty() {
        if let Err(e) = record(&pool, &done).await {
            tracing::warn!("webhooks: cannot record {} outcomes: {e}", done.len());
        }
    }
    release(&pool, &worker).await;
}

/// Drops the dlr-url callbacks of messages that are done.
async fn prune(pool: &Pool) {
    let pruned = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        statements::query_one(&client, "SELECT smsbus._prune_callbacks()", &[])
            .await
            .map(|row| row.get::<_, i32>(0))
            .map_err(|e| e.to_string())
    };
    match pruned.await {
        Ok(0) => {}
        Ok(n) => tracing::debug!("webhooks: dropped {n} callbacks of finished messages"),
        // Tried again at the next round; a callback kept longer harms nothing.
        Err(e) => tracing::warn!("webhooks: cannot drop finished callbacks: {e}"),
    }
}

async fn release(pool: &Pool, worker: &str) {
    let released = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        statements::query_one(
            &client,
            "SELECT smsbus._release_webhooks($1)",
            &params![worker],
        )
        .await
        .map(|r| r.get::<_, i32>(0))
        .map_err(|e| e.to_string())
    }
    .await;
    match released {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            events = n,
            "webhooks: gave back the events this worker held"
        ),
        Err(e) => tracing::warn!("webhooks: cannot give back held events (their leases end): {e}"),
    }
}

/// The outbox's own writes (claims, outcomes) commit without waiting for
/// the WAL flush: a claim lost in a crash of the database is taken again,
/// an outcome lost is a call made again, both within at least once, and
/// no message's state depends on them. Each would otherwise cost a flush.
const UNFLUSHED: &str = "SET LOCAL synchronous_commit = off";

async fn claim(pool: &Pool, worker: &str, room: usize) -> anyhow::Result<Vec<Event>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(UNFLUSHED).await?;
    let rows = statements::query(
        &tx,
        &format!("SELECT * FROM smsbus._claim_webhooks($1, $2, interval '{LEASE}')"),
        &params![worker, room as i32],
    )
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Event {
                id: r.try_get("id")?,
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
                timeout: Duration::from_secs_f32(r.try_get::<_, f32>("timeout_s")?),
                name: r.try_get("event")?,
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
                style: match r.try_get::<_, &str>("style")? {
                    "kannel" => Style::Kannel,
                    "jasmin" => Style::Jasmin,
                    _ => Style::Smsbus,
                },
                post: r.try_get::<_, &str>("method")? == "POST",
            })
        })
        .collect()
}

/// Deletes the delivered events and backs off the others, in one
/// transaction.
async fn record(pool: &Pool, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let delivered: Vec<i64> = outcomes
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(id, _)| *id)
        .collect();
    let (failed, errors): (Vec<i64>, Vec<String>) = outcomes
        .iter()
        .filter_map(|(id, e)| e.clone().map(|e| (*id, e)))
        .unzip();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(UNFLUSHED).await?;
    if !delivered.is_empty() {
        statements::execute(
            &tx,
            "SELECT smsbus._webhooks_delivered($1)",
            &params![delivered],
        )
        .await?;
    }
    if !failed.is_empty() {
        statements::execute(
            &tx,
            "SELECT smsbus._webhooks_failed($1, $2)",
            &params![failed, errors],
        )
        .await?;
    }
    tx.commit().await?;
    metrics::counter!(crate::metrics::WEBHOOKS_DELIVERED).increment(delivered.len() as u64);
    metrics::counter!(crate::metrics::WEBHOOKS_FAILED).increment(failed.len() as u64);
    Ok(())
}

/// Makes one event's call; None when the endpoint took it (a 2xx; for
/// Jasmin callbacks a 2xx answering `ACK/Jasmin`), else why not (kept as
/// the event's last_error, so never the secret).
fn deliver(agent: &ureq::Agent, event: &Event) -> Option<String> {
    let request = match build(event) {
        Ok(r) => r,
        Err(e) => return Some(format!("not a request: {e}")),
    };
    let request = agent
        .configure_request(request)
        .timeout_global(Some(event.timeout))
        .build();
    let mut response = match agent.run(request) {
        Ok(response) => response,
        Err(e) => return Some(format!("no answer: {e}")),
    };
    let status = response.status();
    let wants_body = event.style == Style::Jasmin || !status.is_success();
    let text = if wants_body {
        response
            .body_mut()
            .with_config()
            .limit(512)
            .read_to_string()
            .unwrap_or_default()
    } else {
        String::new()
    };
    if status.is_success()
        && (event.style != Style::Jasmin || callbacks::jasmin_acknowledged(&text))
    {
        return None;
    }
    Some(format!(
        "HTTP {}: {}",
        status.as_u16(),
        text.chars().take(200).collect::<String>()
    ))
}

/// The request of an event, in its webhook's style.
fn build(event: &Event) -> Result<ureq::http::Request<String>, String> {
    let payload = || -> Result<serde_json::Value, String> {
        serde_json::from_str(&event.payload).map_err(|e| format!("payload: {e}"))
    };
    let request = match event.style {
        Style::Smsbus => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let secret = event
                .secret
                .as_deref()
                .ok_or("a webhook without its secret")?;
            ureq::http::Request::post(&event.url)
                .header("content-type", "application/json")
                .header("x-smsbus-event", &event.name)
                .header("x-smsbus-delivery", event.id.to_string())
                .header("x-smsbus-attempt", event.attempts.to_string())
                .header(
                    "x-smsbus-signature",
                    signature::sign(secret, now, &event.payload),
                )
                .body(event.payload.clone())
        }
        Style::Kannel => ureq::http::Request::get(callbacks::kannel_url(&event.url, &payload()?))
            .body(String::new()),
        Style::Jasmin => {
            let form = callbacks::form(&callbacks::jasmin_fields(&payload()?));
            if event.post {
                ureq::http::Request::post(&event.url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "text/plain")
                    .body(form)
            } else {
                let joint = if event.url.contains('?') { '&' } else { '?' };
                ureq::http::Request::get(format!("{}{joint}{form}", event.url))
                    .header("accept", "text/plain")
                    .body(String::new())
            }
        }
    };
    request.map_err(|e| e.to_string())
}
