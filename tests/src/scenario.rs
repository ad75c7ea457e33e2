//! Pieces the end-to-end tests share: a channel pointed at a simulator, a
//! worker started on the test database, and waiting for messages to get
//! where they are going.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::db::TestDb;
use crate::smsc::{Behaviour, Smsc};
use crate::worker::{eventually, Worker};

pub const SYSTEM_ID: &str = "smsbus";
pub const PASSWORD: &str = "secret";

/// A simulator accepting [`SYSTEM_ID`] / [`PASSWORD`].
pub async fn smsc(behaviour: Behaviour) -> Smsc {
    Smsc::start(SYSTEM_ID, PASSWORD, behaviour).await
}

/// The config of an SMPP channel bound to `smsc`, with `extra` settings
/// merged in; short timers so tests run fast.
pub fn smpp_config(smsc: &Smsc, extra: Value) -> Value {
    let mut config = json!({
        "host": "127.0.0.1",
        "port": smsc.port(),
        "system_id": SYSTEM_ID,
        "password": PASSWORD,
        "window": 10,
        "enquire_link_s": 5,
        "response_timeout_s": 2,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1,
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
}

pub async fn add_channel(client: &Client, name: &str, config: &Value) {
    add_channel_of_kind(client, name, "smpp", config).await;
}

pub async fn add_channel_of_kind(client: &Client, name: &str, kind: &str, config: &Value) {
    client
        .execute(
            "INSERT INTO smsbus.channel (name, kind, config) VALUES ($1, $2, $3)",
            &[&name, &kind, config],
        )
        .await
        .unwrap_or_else(|e| panic!("insert channel {name}: {e}"));
}

/// The config of a GSM channel on `device`, with `extra` settings merged
/// in; short timers so tests run fast.
pub fn gsm_config(device: &std::path::Path, extra: Value) -> Value {
    let mut config = json!({
        "device": device.to_string_lossy(),
        "poll_interval_s": 1,
        "command_timeout_s": 2,
        "send_timeout_s": 3,
        "retry_delay_s": 1,
        "number": "+31600000001",
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
}

/// A worker with a fast maintenance timer.
pub fn worker(db: &TestDb, id: &str) -> Worker {
    worker_on(&db.conninfo(), id)
}

/// The same on any database.
pub fn worker_on(conninfo: &str, id: &str) -> Worker {
    Worker::start(
        conninfo,
        &["--worker-id", id, "--maintenance-interval", "0.2"],
    )
}

/// Bodies every channel must carry intact: plain GSM, the extension table,
/// UCS-2, an emoji (a surrogate pair) at the 67-unit part boundary, and
/// long GSM and long UCS-2 texts.
pub fn sample_bodies() -> Vec<String> {
    vec![
        "Hello from smsbus".to_owned(),
        "Extension: €[]{}^~|\\".to_owned(),
        "Привет, мир".to_owned(),
        format!("{}😀 tail", "ж".repeat(66)),
        "Long GSM text. ".repeat(25),
        "Длинный текст. ".repeat(12),
    ]
}

/// Inserts a message for `channel` and returns its id.
pub async fn send(client: &Client, channel: &str, to: &str, body: &str) -> i64 {
    client
        .query_one(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ($1, $2, $3) RETURNING id",
            &[&to, &body, &channel],
        )
        .await
        .unwrap_or_else(|e| panic!("insert message: {e}"))
        .get(0)
}

/// Waits until every message in `ids` has one of `statuses`; on timeout
/// panics with the stragglers and the worker's log.
pub async fn wait_for(
    client: &Client,
    ids: &[i64],
    statuses: &[&str],
    timeout: Duration,
    worker: &Worker,
) {
    let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
    let done = eventually(timeout, || async {
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM smsbus.message WHERE id = ANY($1) AND NOT (status::text = ANY($2))",
                &[&ids, &statuses],
            )
            .await
            .unwrap()
            .get(0);
        pending == 0
    })
    .await;
    if !done {
        let rows = client
            .query(
                "SELECT id, status::text, last_error FROM smsbus.message WHERE id = ANY($1) AND NOT (status::text = ANY($2)) ORDER BY id LIMIT 10",
                &[&ids, &statuses],
            )
            .await
            .unwrap();
        let stragglers: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, Option<String>>(2)
                )
            })
            .collect();
        let parts: Vec<String> = client
            .query(
                "SELECT format('%s/%s %s %s', message_id, part, reference, status) FROM smsbus.message_part
                 WHERE message_id = ANY($1) ORDER BY 1 LIMIT 20",
                &[&ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let parked: Vec<String> = client
            .query("SELECT format('%s %s %s', channel, reference, status) FROM smsbus.pending_report LIMIT 20", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        panic!(
            "messages not {statuses:?} in time: {stragglers:#?}\nparts: {parts:#?}\nparked reports: {parked:#?}\nworker log:\n{}",
            worker.log()
        );
    }
}

/// `channel_state` of a channel: (status, last_error).
pub async fn link_state(client: &Client, channel: &str) -> Option<(String, Option<String>)> {
    client
        .query_opt(
            "SELECT status, last_error FROM smsbus.channel_state WHERE channel = $1",
            &[&channel],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

/// Waits for a channel's link status.
pub async fn wait_link(client: &Client, channel: &str, status: &str, worker: &Worker) {
    let ok = eventually(Duration::from_secs(15), || async {
        link_state(client, channel).await.map(|s| s.0).as_deref() == Some(status)
    })
    .await;
    assert!(
        ok,
        "channel {channel} not {status}: {:?}\nworker log:\n{}",
        link_state(client, channel).await,
        worker.log()
    );
}

/// A simulator, a fresh database with one SMPP channel `kpn` bound to it
/// (`extra` merged into its config), and a worker `w1` running on it.
/// Fields drop in order: the worker stops before its database goes.
pub struct OneChannel {
    pub worker: Worker,
    pub client: Client,
    pub sim: Smsc,
    pub db: TestDb,
}

pub async fn one_channel(behaviour: Behaviour, extra: Value) -> OneChannel {
    let sim = smsc(behaviour).await;
    let db = TestDb::new().await;
    let client = db.connect().await;
    add_channel(&client, "kpn", &smpp_config(&sim, extra)).await;
    let worker = worker(&db, "w1");
    OneChannel {
        worker,
        client,
        sim,
        db,
    }
}
