//! Crash safety (docs/ARCHITECTURE.md#never-losing-a-message): a flood of messages out through the SMSC
//! simulator and in from it, while something breaks again and again: the
//! worker is killed with SIGKILL and started again, the database drops
//! every connection of the worker, the database server crashes and
//! restarts (a cluster of the test's own), the simulator drops its
//! connections.
//! Afterwards:
//!
//! - every outbound message is delivered (nothing stuck, nothing lost);
//! - the parts the simulator got twice are at most what can have been in
//!   flight at the faults (window × sessions per fault), and each such
//!   message's trace says its outcome was unknown;
//! - every inbound message the simulator had acknowledged is a row.
//!
//! `make test` runs a short form; `make test-faults` the long one (the
//! sizes come from SMSBUS_FAULT_MESSAGES and SMSBUS_FAULT_ROUNDS).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use serde_json::json;
use smsbus_tests::cluster::OwnCluster;
use smsbus_tests::db::{connect_to, count, strings, TestDb};
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, worker_on};
use smsbus_tests::smsc::{Behaviour, InboundText, Smsc};
use smsbus_tests::worker::{eventually, Worker};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

const SESSIONS: usize = 2;
const WINDOW: usize = 10;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where the flood runs: a database of the shared test cluster, or a
/// cluster of its own that may be crashed.
enum Place {
    Shared(TestDb),
    Own(OwnCluster),
}

impl Place {
    fn conninfo(&self) -> String {
        match self {
            Place::Shared(db) => db.conninfo(),
            Place::Own(cluster) => cluster.conninfo(),
        }
    }
}

/// Outbound messages queued on one SMPP channel, inbound ones delivered
/// by the simulator meanwhile, and a worker running.
struct Flood {
    sim: Arc<Smsc>,
    place: Place,
    c: Client,
    messages: usize,
    worker: Worker,
    stop_inbound: Arc<AtomicBool>,
    inbound: JoinHandle<Vec<usize>>,
    started: Instant,
}

impl Flood {
    async fn start(behaviour: Behaviour) -> Flood {
        Flood::start_in(Place::Shared(TestDb::new().await), behaviour).await
    }

    async fn start_in(place: Place, behaviour: Behaviour) -> Flood {
        let messages = setting("SMSBUS_FAULT_MESSAGES", 5_000);
        let sim = Arc::new(smsc(behaviour).await);
        let c = connect_to(&place.conninfo()).await;
        add_channel(
            &c,
            "kpn",
            &smpp_config(&sim, json!({"sessions": SESSIONS, "window": WINDOW})),
        )
        .await;
        c.execute(
            "INSERT INTO smsbus.message (to_address, body, channel)
             SELECT '+3161' || lpad(g::text, 7, '0'), 'outbound ' || g, 'kpn'
             FROM generate_series(1, $1::int) g",
            &[&(messages as i32)],
        )
        .await
        .unwrap();
        let stop_inbound = Arc::new(AtomicBool::new(false));
        let inbound = deliver_inbound(sim.clone(), stop_inbound.clone());
        let worker = worker_on(&place.conninfo(), "w0");
        Flood {
            sim,
            place,
            c,
            messages,
            worker,
            stop_inbound,
            inbound,
            started: Instant::now(),
        }
    }

    /// Waits a random while, spreading `rounds` faults over the flood; false
    /// when the flood is over already.
    async fn pause(&self, rounds: usize) -> bool {
        // A debug build sends a few thousand a second.
        let longest = (self.messages / 2 / rounds.max(1)).max(300) as u64;
        let pause = rand::rng().random_range(100..longest);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        outbound_left(&self.c).await > 0
    }

    /// Waits for the end and checks what the module comment promises;
    /// `faults` is how many times in-flight work could be lost.
    async fn check(self, what: &str, faults: usize) {
        let Flood {
            sim,
            c,
            messages,
            worker,
            stop_inbound,
            inbound,
            started,
            ..
        } = self;
        let timeout = Duration::from_secs(120.max(messages as u64 / 200));
        let finished = eventually(timeout, || async { outbound_left(&c).await == 0 }).await;
        stop_inbound.store(true, Ordering::SeqCst);
        let acknowledged = inbound.await.unwrap();
        assert!(
            finished,
            "{what}: {} messages not delivered: {:?}\n{}",
            outbound_left(&c).await,
            strings(
                &c,
                "SELECT format('%s %s %s', id, status, last_error) FROM smsbus.message
                 WHERE direction = 'out' AND status <> 'delivered' ORDER BY id LIMIT 10",
                &[]
            )
            .await,
            worker.log()
        );
        assert!(faults > 0, "{what}: the flood ended before the first fault");

        let mut times: HashMap<String, usize> = HashMap::new();
        for part in sim.parts() {
            *times.entry(part.text).or_default() += 1;
        }
        let twice: Vec<String> = times
            .into_iter()
            .filter(|(text, n)| *n > 1 && text.starts_with("outbound "))
            .map(|(text, _)| text)
            .collect();
        let bound = faults * SESSIONS * WINDOW;
        assert!(
            twice.len() <= bound,
            "{what}: {} messages sent twice, more than {bound} ({faults} faults × {SESSIONS} sessions × window {WINDOW})",
            twice.len()
        );
        let unmarked = strings(
            &c,
            "SELECT m.body FROM smsbus.message m WHERE m.body = ANY($1) AND NOT EXISTS (
                 SELECT 1 FROM smsbus.message_event e
                 WHERE e.message_id = m.id AND e.detail LIKE '%outcome%unknown%')",
            &[&twice],
        )
        .await;
        assert!(
            unmarked.is_empty(),
            "{what}: sent twice without an unknown outcome in the trace: {unmarked:?}"
        );

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
            "{what}: acknowledged but not stored: {missing:?}"
        );
        eprintln!(
            "{what}: {messages} messages, {faults} faults in {:.1} s, {} sent twice (bound {bound}), \
             {} inbound acknowledged and stored",
            started.elapsed().as_secs_f64(),
            twice.len(),
            acknowledged.len()
        );
    }
}

/// Delivers inbound messages one after another, each until the worker
/// acknowledges it (as an SMSC does); the numbers acknowledged.
fn deliver_inbound(sim: Arc<Smsc>, stop: Arc<AtomicBool>) -> JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
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
    let rounds = setting("SMSBUS_FAULT_ROUNDS", 3);
    let mut flood = Flood::start(Behaviour::default()).await;
    let mut kills = 0;
    while kills < rounds && flood.pause(rounds).await {
        flood.worker.signal(Signal::SIGKILL);
        assert!(flood.worker.wait_exit(Duration::from_secs(5)).is_some());
        kills += 1;
        flood.worker = worker_on(&flood.place.conninfo(), &format!("w{kills}"));
    }
    flood.check("SIGKILL", kills).await;
}

#[tokio::test]
async fn lost_database_connections_lose_nothing() {
    let rounds = setting("SMSBUS_FAULT_ROUNDS", 3);
    let flood = Flood::start(Behaviour::default()).await;
    let mut cuts = 0;
    while cuts < rounds && flood.pause(rounds).await {
        // What a database restart does to the worker: every connection
        // gone at once (the test's own survives).
        flood
            .c
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name LIKE 'smsbus-worker%'",
                &[],
            )
            .await
            .unwrap();
        cuts += 1;
    }
    flood.check("connections cut", cuts).await;
}

#[tokio::test]
async fn database_crashes_lose_nothing() {
    let rounds = setting("SMSBUS_FAULT_ROUNDS", 3);
    let cluster = OwnCluster::start().await;
    let mut flood = Flood::start_in(Place::Own(cluster), Behaviour::default()).await;
    let mut crashes = 0;
    while crashes < rounds && flood.pause(rounds).await {
        let Place::Own(cluster) = &flood.place else {
            unreachable!()
        };
        // Every connection cut and every uncommitted transaction lost; the
        // worker reconnects by itself once the server is back.
        cluster.crash_and_restart();
        flood.c = connect_to(&flood.place.conninfo()).await;
        crashes += 1;
    }
    flood.check("database crashed", crashes).await;
}

#[tokio::test]
async fn connections_dropped_by_the_provider_lose_nothing() {
    let messages = setting("SMSBUS_FAULT_MESSAGES", 5_000);
    let rounds = setting("SMSBUS_FAULT_ROUNDS", 3);
    let every = (messages / (rounds + 1)).max(1) as u64;
    let flood = Flood::start(Behaviour {
        drop_connection_every: every,
        ..Behaviour::default()
    })
    .await;
    // The simulator drops a connection every `every` submit_sm; later
    // faults can land on what an earlier one sent again.
    let deadline = Instant::now() + Duration::from_secs(300);
    while outbound_left(&flood.c).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drops = (flood.sim.submit_count() / every) as usize;
    flood.check("connections dropped", drops).await;
}
