//! Crash safety (DESIGN.md §8): a flood of messages out through the SMSC
//! simulator and in from it, while the worker is killed with SIGKILL at
//! random moments and started again. Afterwards:
//!
//! - every outbound message is delivered (nothing stuck, nothing lost);
//! - the parts the simulator got twice are at most what can have been in
//!   flight at the kills (window × sessions per kill), and each such
//!   message's trace says its outcome was unknown;
//! - every inbound message the simulator had acknowledged is a row.
//!
//! `make test` runs a short form; `make test-faults` the long one (the
//! sizes come from SMSBUS_FAULT_MESSAGES and SMSBUS_FAULT_KILLS).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use serde_json::json;
use smsbus_tests::db::{count, strings, TestDb};
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, worker};
use smsbus_tests::smsc::{Behaviour, InboundText, Smsc};
use smsbus_tests::worker::{eventually, Worker};
use tokio_postgres::Client;

const SESSIONS: usize = 2;
const WINDOW: usize = 10;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Delivers inbound messages one after another, each until the worker
/// acknowledges it (as an SMSC does); the numbers acknowledged.
fn inbound_flood(sim: Arc<Smsc>, stop: Arc<Mutex<bool>>) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut n = 0;
        while !*stop.lock().unwrap() {
            let text = InboundText::new("+31687654321", "1234", &format!("inbound {n}"));
            match sim.deliver(&text, Duration::from_secs(5)).await {
                Ok(statuses)
                    if statuses
                        .iter()
                        .all(|s| *s == rusmpp::CommandStatus::EsmeRok) =>
                {
                    acknowledged.push(n);
                    n += 1;
                }
                // Refused, unanswered or no receiver: the same message again.
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        acknowledged
    })
}

async fn outbound_left(c: &Client) -> i64 {
    count(
        c,
        "SELECT count(*) FROM smsbus.message WHERE direction = 'out' AND status <> 'delivered'",
    )
    .await
}

#[tokio::test]
async fn killed_workers_lose_nothing_and_resend_only_what_was_in_flight() {
    let messages = setting("SMSBUS_FAULT_MESSAGES", 5_000);
    let kills = setting("SMSBUS_FAULT_KILLS", 3);
    let sim = Arc::new(smsc(Behaviour::default()).await);
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(
        &c,
        "kpn",
        &smpp_config(&sim, json!({"sessions": SESSIONS, "window": WINDOW})),
    )
    .await;
    c.execute(
        "INSERT INTO smsbus.message (to_address, body, channel)
         SELECT '+3161' || lpad(g::text, 7, '0'), 'outbound ' || g, 'kpn' FROM generate_series(1, $1::int) g",
        &[&(messages as i32)],
    )
    .await
    .unwrap();

    let stop = Arc::new(Mutex::new(false));
    let inbound = inbound_flood(sim.clone(), stop.clone());
    let started = Instant::now();
    let mut w: Worker = worker(&db, "w0");
    let mut killed = 0;
    // Kills spread over the flood (a debug build sends a few thousand a
    // second); the first may come before the channel is even up.
    let longest = (messages / 2 / kills.max(1)).max(300) as u64;
    while killed < kills {
        let pause = rand::rng().random_range(100..longest);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if outbound_left(&c).await == 0 {
            break; // done before every kill came: the flood was too small
        }
        w.signal(Signal::SIGKILL);
        assert!(w.wait_exit(Duration::from_secs(5)).is_some());
        killed += 1;
        w = worker(&db, &format!("w{killed}"));
    }
    let finished = eventually(
        Duration::from_secs(120.max(messages as u64 / 200)),
        || async { outbound_left(&c).await == 0 },
    )
    .await;
    *stop.lock().unwrap() = true;
    let acknowledged = inbound.await.unwrap();
    assert!(
        finished,
        "{} messages not delivered: {:?}\n{}",
        outbound_left(&c).await,
        strings(
            &c,
            "SELECT format('%s %s %s', id, status, last_error) FROM smsbus.message
             WHERE direction = 'out' AND status <> 'delivered' ORDER BY id LIMIT 10",
            &[]
        )
        .await,
        w.log()
    );
    assert!(killed > 0, "the flood ended before the first kill");

    // Parts the simulator got more than once.
    let mut times: HashMap<String, usize> = HashMap::new();
    for part in sim.parts() {
        *times.entry(part.text).or_default() += 1;
    }
    let twice: Vec<String> = times
        .into_iter()
        .filter(|(text, n)| *n > 1 && text.starts_with("outbound "))
        .map(|(text, _)| text)
        .collect();
    let bound = killed * SESSIONS * WINDOW;
    assert!(
        twice.len() <= bound,
        "{} messages sent twice, more than {bound} ({killed} kills × {SESSIONS} sessions × window {WINDOW})",
        twice.len()
    );
    let unmarked = strings(
        &c,
        "SELECT m.body FROM smsbus.message m WHERE m.body = ANY($1) AND NOT EXISTS (
             SELECT 1 FROM smsbus.message_event e
             WHERE e.message_id = m.id AND e.detail LIKE '%outcome of the submission unknown%')",
        &[&twice],
    )
    .await;
    assert!(
        unmarked.is_empty(),
        "sent twice without an unknown outcome in the trace: {unmarked:?}"
    );

    // Every acknowledged inbound message is a row.
    let stored = strings(
        &c,
        "SELECT body FROM smsbus.message WHERE direction = 'in'",
        &[],
    )
    .await;
    let missing: Vec<usize> = acknowledged
        .iter()
        .filter(|n| !stored.contains(&format!("inbound {n}")))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    eprintln!(
        "crash safety: {messages} messages, {killed} kills in {:.1} s, {} sent twice (bound {bound}), \
         {} inbound acknowledged and stored",
        started.elapsed().as_secs_f64(),
        twice.len(),
        acknowledged.len()
    );
}
