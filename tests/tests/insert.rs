//! What an INSERT into smsbus.message does: normalisation, encoding, segments,
//! the first status, the trace, and the notifications.

use std::time::Duration;

use smsbus_tests::db::{connect_keeping_notices, count, listen, scalar, TestDb};

async fn setup(db: &TestDb) -> tokio_postgres::Client {
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp'), ('modem', 'gsm');
         INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('off', 'smpp', false);
         INSERT INTO smsbus.channel (name, kind, can_send) VALUES ('rx', 'smpp', false);",
    )
    .await
    .unwrap();
    c
}

#[tokio::test]
async fn addresses_are_normalised_with_ton_npi() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let cases = [
        ("+31 6 1234-5678", None, "+31612345678", 1, 1),
        ("0031612345678", None, "+31612345678", 1, 1),
        ("06 1234 5678", None, "0612345678", 2, 1),
        ("1234", None, "1234", 3, 0),
        ("+1 (555) 010-9999", Some("MyShop"), "+15550109999", 1, 1),
    ];
    for (to, from, want, ton, npi) in cases {
        let row = c
            .query_one(
                "INSERT INTO smsbus.message (to_address, from_address, body, channel)
                 VALUES ($1, $2, 'x', 'kpn') RETURNING to_address, to_ton, to_npi",
                &[&to, &from],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), want, "{to}");
        assert_eq!(row.get::<_, i16>(1), ton, "{to}");
        assert_eq!(row.get::<_, i16>(2), npi, "{to}");
    }
    let senders = [
        (" MyShop ", "MyShop", 5, 0),
        ("+44 20 7946 0958", "+442079460958", 1, 1),
        ("4455", "4455", 3, 0),
    ];
    for (from, want, ton, npi) in senders {
        let row = c
            .query_one(
                "INSERT INTO smsbus.message (to_address, from_address, body, channel)
                 VALUES ('+31612345678', $1, 'x', 'kpn') RETURNING from_address, from_ton, from_npi",
                &[&from],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                row.get::<_, String>(0),
                row.get::<_, i16>(1),
                row.get::<_, i16>(2)
            ),
            (want.to_owned(), ton, npi)
        );
    }
}

#[tokio::test]
async fn encoding_and_segments_are_computed() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let cases: [(String, Option<&str>, &str, i32); 5] = [
        ("Hello".into(), None, "gsm7", 1),
        ("€".repeat(81), None, "gsm7", 2),
        ("Привет".into(), None, "ucs2", 1),
        ("a".repeat(71), Some("ucs2"), "ucs2", 2),
        ("é".repeat(100), Some("latin1"), "latin1", 1),
    ];
    for (body, asked, want, parts) in cases {
        let row = c
            .query_one(
                "INSERT INTO smsbus.message (to_address, body, encoding, channel)
                 VALUES ('+31612345678', $1, $2, 'kpn') RETURNING encoding, segments",
                &[&body, &asked],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0).as_str(), row.get::<_, i32>(1)),
            (want, parts)
        );
    }
}

#[tokio::test]
async fn first_status_depends_on_channel_and_schedule() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let cases = [
        ("'kpn'", "now()", "queued", None),
        // No rules: round robin over the channels that can send (kpn).
        ("NULL", "now()", "queued", None),
        (
            "'off'",
            "now()",
            "nochannel",
            Some("channel \"off\" is disabled"),
        ),
        (
            "'rx'",
            "now()",
            "nochannel",
            Some("channel \"rx\" cannot send"),
        ),
        ("'kpn'", "now() + interval '1 hour'", "scheduled", None),
        ("NULL", "now() + interval '1 hour'", "scheduled", None),
    ];
    for (channel, at, want, error) in cases {
        let row = c
            .query_one(
                &format!(
                    "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
                     VALUES ('+31612345678', 'x', {channel}, {at})
                     RETURNING status::text, trigger_status::text, last_error"
                ),
                &[],
            )
            .await
            .unwrap();
        let status: String = row.get(0);
        assert_eq!(status, want, "{channel} {at}");
        let trigger_status: String = row.get(1);
        // Permanent statuses are ready for triggers (none defined yet).
        let permanent = want == "nochannel";
        assert_eq!(
            trigger_status,
            if permanent { "notriggers" } else { "none" }
        );
        assert_eq!(row.get::<_, Option<String>>(2).as_deref(), error);
    }
}

#[tokio::test]
async fn system_columns_cannot_be_forged() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let row = c
        .query_one(
            "INSERT INTO smsbus.message (to_address, body, channel, trigger_status, attempts,
                 sent_at, delivered_at, claimed_by, segments, reference, last_error, created_at)
             VALUES ('+31612345678', 'x', 'kpn', 'processed', 7, now(), now(), 'me', 99,
                 'ref', 'err', '2000-01-01')
             RETURNING status::text, trigger_status::text, attempts, sent_at IS NULL, delivered_at IS NULL,
                 claimed_by IS NULL, segments, reference IS NULL, last_error IS NULL, created_at > '2020-01-01'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    assert_eq!(row.get::<_, String>(1), "none");
    assert_eq!(row.get::<_, i32>(2), 0);
    for i in [3, 4, 5, 7, 8, 9] {
        assert!(row.get::<_, bool>(i), "column {i}");
    }
    assert_eq!(row.get::<_, i32>(6), 1);
}

#[tokio::test]
async fn every_insert_is_traced() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "SET smsbus.actor = 'test-suite';
         INSERT INTO smsbus.message (to_address, body, channel) VALUES
            ('+31612345678', 'a', 'kpn'), ('+31612345679', 'b', NULL);",
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT e.message_id, e.from_status::text, e.to_status::text, e.actor, e.detail
             FROM smsbus.message_event e ORDER BY e.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, Option<String>>(1), None);
    assert_eq!(rows[0].get::<_, String>(2), "queued");
    assert_eq!(rows[0].get::<_, String>(3), "test-suite");
    assert_eq!(
        rows[0].get::<_, Option<String>>(4).as_deref(),
        Some("channel given")
    );
    assert_eq!(rows[1].get::<_, String>(2), "queued");
    assert_eq!(
        rows[1].get::<_, Option<String>>(4).as_deref(),
        Some("round robin")
    );
}

/// The trace is written without an SQL statement, but what an operator adds
/// to `smsbus.message_event` still applies: row triggers (BEFORE and AFTER),
/// CHECK constraints and indexes of their own.
#[tokio::test]
async fn the_trace_keeps_what_operators_add_to_its_table() {
    let db = TestDb::new().await;
    drop(setup(&db).await);
    // Firing them must leak nothing (PostgreSQL warns of a relcache
    // reference leak when a trigger's relation is left open).
    let (c, notices) = connect_keeping_notices(&db.conninfo()).await;
    c.batch_execute(
        "CREATE TABLE event_copy (message_id bigint, to_status text, detail text);
         CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN NEW.detail := upper(NEW.detail); RETURN NEW; END $$;
         CREATE FUNCTION copy_event() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO event_copy VALUES (NEW.message_id, NEW.to_status, NEW.detail); RETURN NULL; END $$;
         CREATE TRIGGER shout BEFORE INSERT ON smsbus.message_event FOR EACH ROW EXECUTE FUNCTION shout();
         CREATE TRIGGER copy_event AFTER INSERT ON smsbus.message_event FOR EACH ROW EXECUTE FUNCTION copy_event();
         CREATE INDEX event_detail ON smsbus.message_event (lower(detail)) WHERE detail IS NOT NULL;
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'a', 'kpn');
         INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345679', 'b'), ('+31612345670', 'c');",
    )
    .await
    .unwrap();
    let copied = c
        .query(
            "SELECT message_id, to_status, detail FROM event_copy ORDER BY message_id",
            &[],
        )
        .await
        .unwrap();
    let copied: Vec<(i64, String, String)> = copied
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        copied,
        [
            (1, "queued".into(), "CHANNEL GIVEN".into()),
            (2, "queued".into(), "ROUND ROBIN".into()),
            (3, "queued".into(), "ROUND ROBIN".into()),
        ]
    );
    let indexed = count(
        &c,
        "SELECT count(*) FROM smsbus.message_event WHERE lower(detail) = 'round robin'",
    )
    .await;
    assert_eq!(indexed, 2);
    assert_eq!(*notices.lock().unwrap(), Vec::<String>::new());

    // A constraint of the operator's refuses the event, and with it the
    // message: nothing is stored untraced.
    c.batch_execute(
        "ALTER TABLE smsbus.message_event ADD CONSTRAINT no_kpn CHECK (detail <> 'CHANNEL GIVEN') NOT VALID",
    )
    .await
    .unwrap();
    let err = c
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'd', 'kpn')",
            &[],
        )
        .await
        .unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some("new row for relation \"message_event\" violates check constraint \"no_kpn\"")
    );
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 3);
    assert_eq!(count(&c, "SELECT count(*) FROM event_copy").await, 3);
}

#[tokio::test]
async fn send_function_and_idempotency() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let first: i64 = scalar(&c, "SELECT smsbus.send('+31612345678', 'hello', channel => 'kpn', idempotency_key => 'order-1')",
            &[]).await;
    let again: i64 = scalar(&c, "SELECT smsbus.send('+31612345678', 'hello again', channel => 'kpn', idempotency_key => 'order-1')",
            &[]).await;
    assert_eq!(first, again);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 1);
    // Still true once the first message is archived.
    c.batch_execute(&format!(
        "UPDATE smsbus.message SET status = 'sending' WHERE id = {first};
         UPDATE smsbus.message SET status = 'failed' WHERE id = {first};"
    ))
    .await
    .unwrap();
    let moved: i64 = scalar(&c, "SELECT smsbus.archive(interval '0')", &[]).await;
    assert_eq!(moved, 1);
    let after_archive: i64 = scalar(
        &c,
        "SELECT smsbus.send('+31612345678', 'x', idempotency_key => 'order-1')",
        &[],
    )
    .await;
    assert_eq!(after_archive, first);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 0);
    // Without a key every call is a message.
    let plain: i64 = scalar(
        &c,
        "SELECT smsbus.send('+31612345678', 'x', channel => 'kpn')",
        &[],
    )
    .await;
    assert!(plain > first);
}

#[tokio::test]
async fn concurrent_sends_with_one_key_make_one_message() {
    let db = TestDb::new().await;
    let _setup = setup(&db).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conninfo = db.conninfo();
        tasks.push(tokio::spawn(async move {
            let c = smsbus_tests::db::connect_to(&conninfo).await;
            c.query_one(
                "SELECT smsbus.send('+31612345678', 'once', channel => 'kpn', idempotency_key => 'race')",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 1);
}

async fn listener(
    db: &TestDb,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    listen(db, "smsbus_queue").await
}

async fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some((channel, payload))) =
        tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
    {
        assert_eq!(channel, "smsbus_queue");
        got.push(payload);
    }
    got.sort();
    got
}

async fn claim(c: &tokio_postgres::Client, channel: &str, limit: i32) -> usize {
    c.query(
        "SELECT id FROM smsbus._claim($1, 'w', $2, interval '1 minute')",
        &[&channel, &limit],
    )
    .await
    .unwrap()
    .len()
}

#[tokio::test]
async fn waiting_channels_are_woken_once_per_statement() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let (_l, mut rx) = listener(&db).await;
    // Nobody waits yet: inserts notify nobody.
    c.batch_execute("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'kpn')")
        .await
        .unwrap();
    assert!(drain(&mut rx).await.is_empty());
    // Both owners drain their queues and wait.
    assert_eq!(claim(&c, "kpn", 10).await, 1);
    assert_eq!(claim(&c, "modem", 10).await, 0);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.channel_wakeup").await,
        2
    );
    // 100 rows for two channels, and some that are not queued: one
    // notification per channel.
    c.batch_execute(
        "INSERT INTO smsbus.message (to_address, body, channel)
         SELECT '+31612345678', 'x', CASE WHEN g % 2 = 0 THEN 'kpn' ELSE 'modem' END
         FROM generate_series(1, 100) g;
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'off');
         INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
             VALUES ('+31612345678', 'x', 'kpn', now() + interval '1 day');",
    )
    .await
    .unwrap();
    assert_eq!(drain(&mut rx).await, ["kpn", "modem"]);
    // The wake-up was taken: until the owner waits again, no more NOTIFY.
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.channel_wakeup").await,
        0
    );
    c.batch_execute("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'y', 'kpn')")
        .await
        .unwrap();
    assert!(drain(&mut rx).await.is_empty());
    // A busy owner (a full batch) does not arm; one that drains its queue does.
    assert_eq!(claim(&c, "kpn", 10).await, 10);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.channel_wakeup").await,
        0
    );
    assert_eq!(claim(&c, "kpn", 1000).await, 41);
    c.batch_execute("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'z', 'kpn')")
        .await
        .unwrap();
    assert_eq!(drain(&mut rx).await, ["kpn"]);
    // Messages that come back to the queue wake their owner too.
    assert_eq!(claim(&c, "kpn", 1000).await, 1);
    c.batch_execute(
        "UPDATE smsbus.message SET status = 'queued' WHERE status = 'sending' AND channel = 'kpn'",
    )
    .await
    .unwrap();
    assert_eq!(drain(&mut rx).await, ["kpn"]);
}

#[tokio::test]
async fn max_segments_is_configurable() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute("SET smsbus.max_segments = 2")
        .await
        .unwrap();
    let body = "a".repeat(306);
    c.execute(
        "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', $1, 'kpn')",
        &[&body],
    )
    .await
    .unwrap();
    let err = c
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', $1, 'kpn')",
            &[&"a".repeat(307)],
        )
        .await
        .unwrap_err();
    assert_eq!(
        smsbus_tests::db::db_error(&err).1,
        "body needs 3 gsm7 segments, more than smsbus.max_segments (2)"
    );
}

#[tokio::test]
async fn channel_changes_count_from_the_next_statement() {
    let db = TestDb::new().await;
    let mut c = setup(&db).await;
    // One transaction, so only the statement boundary separates the lookups.
    let tx = c.transaction().await.unwrap();
    let insert = "INSERT INTO smsbus.message (to_address, body, channel)
                  SELECT '+31612345678', 'x', 'kpn' FROM generate_series(1, 3) RETURNING status::text";
    let first: Vec<String> = tx
        .query(insert, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(first, ["queued", "queued", "queued"]);
    tx.batch_execute("UPDATE smsbus.channel SET enabled = false WHERE name = 'kpn'")
        .await
        .unwrap();
    let second: Vec<String> = tx
        .query(insert, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(second, ["nochannel", "nochannel", "nochannel"]);
    tx.batch_execute("DELETE FROM smsbus.channel WHERE name = 'kpn'")
        .await
        .unwrap();
    let err = tx.query(insert, &[]).await.unwrap_err();
    assert_eq!(
        smsbus_tests::db::db_error(&err).1,
        "unknown channel \"kpn\""
    );
}
