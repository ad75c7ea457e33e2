//! Webhooks: an account's events reach its endpoint over real HTTP,
//! signed, in order per message, again and again while the endpoint
//! fails, and kept as dead past the retry horizon until retried in SQL.
//! Attacks: what senders and admins can reach of webhooks and their
//! outbox.

use std::time::Duration;

use serde_json::{json, Value};
use smsbus_tests::db::{count, db_error, scalar, wait_until_blocked, TestDb};
use smsbus_tests::http::{HttpServer, Seen};
use smsbus_tests::roles::LoginRoles;
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, wait_for};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};
use smsbus_worker::webhooks::signature;

const SECRET: &str = "whsec_0123456789abcdef";

fn event(seen: &Seen) -> Value {
    serde_json::from_str(&seen.body).unwrap_or_else(|e| panic!("{e}: {}", seen.body))
}

#[tokio::test]
async fn events_arrive_signed_in_order_per_message_and_failures_go_again() {
    let sim = smsc(Behaviour::default()).await;
    let hook = HttpServer::start();
    hook.answer_with(500);
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    c.execute(
        "INSERT INTO smsbus.account (name, channel) VALUES ('acme', 'kpn');",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO smsbus.webhook (account, url, secret, events) VALUES ('acme', $1, $2, '{status,report,inbound}')",
        &[&format!("{}/hooks/acme", hook.url), &SECRET],
    )
    .await
    .unwrap();
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, direction, language, script)
         VALUES ('to-acme', '{received}', 'in', 'sql',
                 $$UPDATE smsbus.message SET account = 'acme' WHERE id = $1$$)",
    )
    .await
    .unwrap();
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let ids: Vec<i64> = c
        .query(
            "INSERT INTO smsbus.message (to_address, body, account, channel)
             SELECT '+3161234567' || n, 'hello ' || n, 'acme', 'kpn' FROM generate_series(0, 2) n
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // A message of no account's has no webhook.
    c.batch_execute("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31600000000', 'none', 'kpn')")
        .await
        .unwrap();
    wait_for(&c, &ids, &["delivered"], Duration::from_secs(20), &worker).await;

    // The endpoint refuses: events wait, each message's first one tried.
    let tried = eventually(Duration::from_secs(15), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.webhook_outbox WHERE attempts >= 2",
        )
        .await
            >= 3
    })
    .await;
    assert!(tried, "refused events are tried again");
    let error: String = scalar(
        &c,
        "SELECT last_error FROM smsbus.webhook_outbox WHERE last_error IS NOT NULL LIMIT 1",
        &[],
    )
    .await;
    assert!(error.starts_with("HTTP 500"), "{error}");
    assert!(!error.contains(SECRET));
    // Only the first event of each message went out while it was refused.
    assert!(hook
        .seen()
        .iter()
        .all(|s| event(s)["message"]["status"] == "queued"));

    hook.answer_with(204);
    // Progress needs no wake-up: the backoff ends and they go.
    let emptied = eventually(Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await == 0
    })
    .await;
    assert!(emptied, "every event delivered: {:?}", hook.seen().len());

    let seen = hook.seen();
    for s in &seen {
        assert_eq!((s.method.as_str(), s.url.as_str()), ("POST", "/hooks/acme"));
        let header = s.header("x-smsbus-signature").expect("signed");
        let t: u64 = header
            .strip_prefix("t=")
            .and_then(|h| h.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("a timestamp");
        assert_eq!(header, signature::sign(SECRET, t, &s.body));
        assert_eq!(s.header("x-smsbus-event"), event(s)["event"].as_str());
    }
    assert!(seen
        .iter()
        .all(|s| event(s)["message"]["id"] != json!(ids[0] + 3)));
    for id in &ids {
        // In order per message: each status once it was taken (2xx),
        // never a later one before.
        let statuses: Vec<(String, u16)> = seen
            .iter()
            .filter(|s| event(s)["message"]["id"] == json!(id))
            .map(|s| {
                (
                    event(s)["message"]["status"].as_str().unwrap().to_owned(),
                    s.answered,
                )
            })
            .collect();
        let taken: Vec<&str> = statuses
            .iter()
            .filter(|(_, answered)| *answered == 204)
            .map(|(status, _)| status.as_str())
            .collect();
        assert_eq!(
            taken,
            ["queued", "sending", "sent", "delivered"],
            "{statuses:?}"
        );
        let last = seen
            .iter()
            .rfind(|s| event(s)["message"]["id"] == json!(id))
            .unwrap();
        assert_eq!(event(last)["event"], "message.report");
    }

    // An inbound message a trigger gives to the account reaches it too.
    c.batch_execute(
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31611111111'], ARRAY['1234'], ARRAY['STOP'], ARRAY['r1'])",
    )
    .await
    .unwrap();
    let inbound = eventually(Duration::from_secs(20), || async {
        hook.seen()
            .iter()
            .any(|s| event(s)["event"] == "message.inbound")
    })
    .await;
    assert!(inbound, "the inbound message's event arrived");
    let seen = hook.seen();
    let inbound = seen
        .iter()
        .find(|s| event(s)["event"] == "message.inbound")
        .unwrap();
    assert_eq!(event(inbound)["message"]["body"], "STOP");
    assert_eq!(event(inbound)["message"]["from"], "+31611111111");
}

#[tokio::test]
async fn events_past_the_horizon_are_kept_dead_until_retried() {
    let hook = HttpServer::start();
    hook.answer_with(503);
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.execute("INSERT INTO smsbus.account (name) VALUES ('acme')", &[])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO smsbus.webhook (account, url, secret, events, retry_horizon)
         VALUES ('acme', $1, $2, '{status}', '2 seconds')",
        &[&hook.url, &SECRET],
    )
    .await
    .unwrap();
    let mut roles = LoginRoles::default();
    let (_, admin) = roles.login(&db, "admin", "smsbus_admin").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    // No channel: the message is nochannel at once, one status event.
    c.batch_execute("INSERT INTO smsbus.message (to_address, body, account) VALUES ('+31612345678', 'x', 'acme')")
        .await
        .unwrap();
    let died = eventually(Duration::from_secs(20), || async {
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox WHERE dead").await == 1
    })
    .await;
    assert!(died, "the event died past its horizon");
    let calls = hook.seen().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.seen().len(), calls, "a dead event is not tried");
    let last_error: String =
        scalar(&admin, "SELECT last_error FROM smsbus.webhook_outbox", &[]).await;
    assert!(last_error.starts_with("HTTP 503"), "{last_error}");

    hook.answer_with(200);
    let revived: i64 = scalar(&admin, "SELECT smsbus.retry_webhooks()", &[]).await;
    assert_eq!(revived, 1);
    let delivered = eventually(Duration::from_secs(20), || async {
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await == 0
    })
    .await;
    assert!(delivered, "the retried event was delivered");
    assert_eq!(hook.seen().last().unwrap().answered, 200);
    roles.remove(db).await;
}

/// A dlr-url callback outlives the events taken so far while its message
/// waits for its report (which may come hours later), and goes once the
/// report's event is taken too.
#[tokio::test]
async fn a_callback_waits_for_its_messages_report() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         INSERT INTO smsbus.account (name) VALUES ('acme');",
    )
    .await
    .unwrap();
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, account, channel)
         VALUES ('+31612345678', 'x', 'acme', 'kpn') RETURNING id",
        &[],
    )
    .await;
    c.execute(
        "SELECT smsbus._add_callback($1, 'acme', 'kannel', 'http://127.0.0.1:9/dlr?type=%d', 'GET', 31)",
        &[&id],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT id FROM smsbus._claim('kpn', 'w', 10, interval '1 minute')",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT smsbus._mark_sent('kpn', ARRAY[$1::bigint], ARRAY[1], ARRAY['ref-1'])",
        &[&id],
    )
    .await
    .unwrap();
    let taken = "DELETE FROM smsbus.webhook_outbox";
    let callbacks = "SELECT count(*) FROM smsbus.webhook";
    // Queued and sent taken: the message waits for its report.
    c.batch_execute(taken).await.unwrap();
    let pruned: i32 = scalar(&c, "SELECT smsbus._prune_callbacks()", &[]).await;
    assert_eq!(pruned, 0);
    assert_eq!(count(&c, callbacks).await, 1);
    c.batch_execute(
        "SELECT smsbus._apply_reports('kpn', ARRAY['ref-1'], ARRAY['delivered'], ARRAY['DELIVRD'])",
    )
    .await
    .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await,
        1,
        "the report's event"
    );
    c.batch_execute(taken).await.unwrap();
    let pruned: i32 = scalar(&c, "SELECT smsbus._prune_callbacks()", &[]).await;
    assert_eq!(pruned, 1);
    assert_eq!(count(&c, callbacks).await, 0);
}

/// Workers woken by one notification claim at once: they take turns, so
/// the second sees what the first took. No event goes to both, and the
/// webhook's concurrency holds across them.
#[tokio::test]
async fn claims_at_once_take_turns_and_keep_the_concurrency() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.account (name) VALUES ('acme');
         INSERT INTO smsbus.webhook (account, url, secret, concurrency)
         VALUES ('acme', 'http://127.0.0.1:9/', 'whsec_0123456789abcdef', 2);
         INSERT INTO smsbus.message (to_address, body, account)
         SELECT '+3161234567' || g, 'x', 'acme' FROM generate_series(1, 3) g;",
    )
    .await
    .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await,
        3
    );
    let claim = "SELECT id FROM smsbus._claim_webhooks($1, $2, interval '1 hour')";
    let first = db.connect().await;
    first.batch_execute("BEGIN").await.unwrap();
    let one: Vec<i64> = first
        .query(claim, &[&"w1", &1i32])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(one.len(), 1);
    let second = db.connect().await;
    let second_pid: i32 = scalar(&second, "SELECT pg_backend_pid()", &[]).await;
    let claiming = tokio::spawn(async move {
        second
            .query(claim, &[&"w2", &10i32])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<Vec<i64>>()
    });
    wait_until_blocked(&c, second_pid).await;
    first.batch_execute("COMMIT").await.unwrap();
    let other = claiming.await.unwrap();
    assert_eq!(
        other.len(),
        1,
        "the concurrency of 2 less the one in flight"
    );
    assert!(!other.contains(&one[0]), "{one:?} went to both workers");
    let claimed: Vec<String> = c
        .query(
            "SELECT claimed_by FROM smsbus.webhook_outbox WHERE claimed_by IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(claimed, ["w1", "w2"]);
}

#[tokio::test]
async fn webhooks_are_out_of_reach_of_senders_and_their_outbox_of_admins_hands() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.execute("INSERT INTO smsbus.account (name) VALUES ('acme')", &[])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO smsbus.webhook (account, url, secret) VALUES ('acme', 'http://127.0.0.1:9/', $1)",
        &[&SECRET],
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO smsbus.message (to_address, body, account) VALUES ('+31612345678', 'x', 'acme')")
        .await
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await,
        1
    );
    let mut roles = LoginRoles::default();
    let (_, admin) = roles.login(&db, "admin", "smsbus_admin").await;
    let (_, sender) = roles.login(&db, "sender", "smsbus_sender").await;
    for sql in [
        "SELECT secret FROM smsbus.webhook",
        "SELECT * FROM smsbus.webhook_outbox",
        "INSERT INTO smsbus.webhook (account, url, secret) VALUES ('acme', 'http://x/', '0123456789abcdef')",
        "SELECT smsbus.retry_webhooks()",
        "SELECT * FROM smsbus._claim_webhooks('me', 10, interval '1 hour')",
        "SELECT smsbus._queue_webhooks(ARRAY[1::bigint])",
    ] {
        let e = sender.batch_execute(sql).await.expect_err(sql);
        assert_eq!(db_error(&e).0, "42501", "sender: {sql}: {e}");
    }
    for sql in [
        "SELECT * FROM smsbus._claim_webhooks('me', 10, interval '1 hour')",
        "SELECT smsbus._webhooks_delivered(ARRAY[1::bigint])",
        "SELECT smsbus._queue_webhooks(ARRAY[1::bigint])",
        "UPDATE smsbus.webhook_outbox SET payload = '{}'",
        "INSERT INTO smsbus.webhook_outbox (webhook_id, message_id, event, payload, expires_at)
         VALUES (1, 1, 'message.status', '{}', now())",
    ] {
        let e = admin.batch_execute(sql).await.expect_err(sql);
        assert_eq!(db_error(&e).0, "42501", "admin: {sql}: {e}");
    }
    // What admins may: configure webhooks, read and clear the outbox.
    admin
        .batch_execute(
            "UPDATE smsbus.webhook SET enabled = false; DELETE FROM smsbus.webhook_outbox",
        )
        .await
        .unwrap();
    // Bad configuration is refused where it is written.
    for (sql, state) in [
        ("INSERT INTO smsbus.webhook (account, url, secret) VALUES ('acme', 'ftp://x/', '0123456789abcdef')", "23514"),
        ("INSERT INTO smsbus.webhook (account, url, secret) VALUES ('acme', 'http://x/', 'short')", "23514"),
        ("INSERT INTO smsbus.webhook (account, url, secret, events) VALUES ('acme', 'http://x/', '0123456789abcdef', '{all}')", "23514"),
    ] {
        let e = admin.batch_execute(sql).await.expect_err(sql);
        assert_eq!(db_error(&e).0, state, "{sql}: {e}");
    }
    roles.remove(db).await;
}

#[tokio::test]
async fn a_worker_killed_while_delivering_loses_no_event() {
    let hook = HttpServer::start();
    hook.answer_with(200);
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.execute("INSERT INTO smsbus.account (name) VALUES ('acme')", &[])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO smsbus.webhook (account, url, secret, events, concurrency)
         VALUES ('acme', $1, $2, '{status}', 1)",
        &[&hook.url, &SECRET],
    )
    .await
    .unwrap();
    // No channel: each message becomes nochannel at once, one event each;
    // one call at a time, so the kill lands in the middle.
    c.batch_execute(
        "INSERT INTO smsbus.message (to_address, body, account)
         SELECT '+31612345678', 'm' || n, 'acme' FROM generate_series(1, 400) n",
    )
    .await
    .unwrap();
    let expected: Vec<i64> = c
        .query("SELECT id FROM smsbus.webhook_outbox ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(expected.len(), 400);
    let mut first = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let started = eventually(Duration::from_secs(15), || async {
        !hook.seen().is_empty()
    })
    .await;
    assert!(started, "delivery began");
    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());
    let left = count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await;
    assert!(left > 0, "the kill came before the end");
    // The same worker id again: it gives back what the killed run held.
    let _second = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let emptied = eventually(Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM smsbus.webhook_outbox").await == 0
    })
    .await;
    assert!(emptied, "every event delivered after the kill");
    let delivered: std::collections::BTreeSet<i64> = hook
        .seen()
        .iter()
        .filter_map(|s| s.header("x-smsbus-delivery")?.parse().ok())
        .collect();
    let missing: Vec<&i64> = expected
        .iter()
        .filter(|id| !delivered.contains(id))
        .collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
}
