//! `smsbus-worker` as a process: maintenance on its timer and on wake-ups,
//! a listener that survives losing its connection, clean exit on SIGTERM,
//! and clear failures on bad configuration.

use std::time::Duration;

use nix::sys::signal::Signal;
use smsbus_tests::db::{count, scalar, status_of, TestDb};
use smsbus_tests::worker::{eventually, Worker};

#[tokio::test]
async fn promotes_scheduled_messages_when_due() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    let mut worker = Worker::start(
        &db.conninfo(),
        &["--worker-id", "w-promote", "--maintenance-interval", "0.2"],
    );
    let id: i64 = scalar(&c, "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
             VALUES ('+31612345678', 'soon', 'kpn', now() + interval '500 milliseconds') RETURNING id",
            &[]).await;
    assert_eq!(status_of(&c, id).await, "scheduled");
    let c2 = &c;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            status_of(c2, id).await == "queued"
        })
        .await,
        "not promoted; worker log:\n{}",
        worker.log()
    );
    let actor: String = scalar(
        &c,
        "SELECT actor FROM smsbus.message_event WHERE message_id = $1 AND to_status = 'queued'",
        &[&id],
    )
    .await;
    assert_eq!(actor, "worker:w-promote");
    worker.signal(Signal::SIGTERM);
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("worker did not stop on SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        worker.log()
    );
    assert!(worker.log().contains("worker stopped"));
}

#[tokio::test]
async fn wakes_on_notification_and_survives_losing_its_listener() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    // A long timer: only a notification can make maintenance run soon.
    let worker = Worker::start(&db.conninfo(), &["--maintenance-interval", "3600"]);
    let c2 = &c;
    let listening = || async move {
        count(
            c2,
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name LIKE 'smsbus-worker listener %' AND datname = current_database()",
        )
        .await
            == 1
    };
    assert!(
        eventually(Duration::from_secs(10), listening).await,
        "{}",
        worker.log()
    );
    // The first pass runs at start; schedule something after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
             VALUES ('+31612345678', 'x', 'kpn', now() + interval '100 milliseconds') RETURNING id",
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_of(&c, id).await, "scheduled");
    c.batch_execute("NOTIFY smsbus_maintenance").await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async move {
            status_of(c2, id).await == "queued"
        })
        .await,
        "maintenance did not wake up; log:\n{}",
        worker.log()
    );

    // Kill the listener's backend: the worker reconnects and listens again.
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name LIKE 'smsbus-worker listener %' AND datname = current_database()",
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            worker.log().contains("reconnecting") && listening().await
        })
        .await,
        "listener did not reconnect; log:\n{}",
        worker.log()
    );
    let id2: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
             VALUES ('+31612345678', 'y', 'kpn', now() + interval '50 milliseconds') RETURNING id",
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.batch_execute("NOTIFY smsbus_maintenance").await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async move {
            status_of(c2, id2).await == "queued"
        })
        .await,
        "no wake-up after reconnect; log:\n{}",
        worker.log()
    );
}

#[tokio::test]
async fn hands_back_its_claims_on_sigterm() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'kpn');
         SELECT smsbus._claim('kpn', 'w-claims', 10, interval '1 hour');",
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'sending'"
        )
        .await,
        1
    );
    let mut worker = Worker::start(&db.conninfo(), &["--worker-id", "w-claims"]);
    let c2 = &c;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            count(c2, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'smsbus-worker listener %' AND datname = current_database()").await == 1
        })
        .await
    );
    worker.signal(Signal::SIGTERM);
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("worker did not stop");
    assert!(status.success(), "{}", worker.log());
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'queued'"
        )
        .await,
        1
    );
    let detail: String = scalar(
        &c,
        "SELECT detail FROM smsbus.message_event ORDER BY id DESC LIMIT 1",
        &[],
    )
    .await;
    assert_eq!(detail, "handed back by w-claims before submission");
}

#[tokio::test]
async fn refuses_to_start_without_the_extension() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("DROP EXTENSION smsbus CASCADE")
        .await
        .unwrap();
    let mut worker = Worker::start(&db.conninfo(), &[]);
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("worker kept running");
    assert_eq!(status.code(), Some(1));
    assert!(
        worker
            .log()
            .contains("extension smsbus is not installed in this database"),
        "{}",
        worker.log()
    );
}

/// After the worker is upgraded and before the database is, it runs and
/// says what to do.
#[tokio::test]
async fn an_older_extension_is_named_in_the_log() {
    let db = TestDb::empty().await;
    db.connect()
        .await
        .batch_execute("CREATE EXTENSION smsbus VERSION '0.1.0'")
        .await
        .unwrap();
    let mut worker = Worker::start(&db.conninfo(), &[]);
    let warned = eventually(Duration::from_secs(10), || async {
        worker.log().contains(&format!(
            "the database has smsbus 0.1.0 and this worker is {}: run ALTER EXTENSION smsbus UPDATE",
            env!("CARGO_PKG_VERSION")
        ))
    })
    .await;
    assert!(warned, "{}", worker.log());
    assert!(worker.wait_exit(Duration::from_millis(100)).is_none());
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

/// A restore's setting left on for the database is named at start.
#[tokio::test]
async fn a_restore_setting_left_on_is_named_in_the_log() {
    let db = TestDb::new().await;
    db.connect()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET smsbus.restoring = on",
            db.name
        ))
        .await
        .unwrap();
    let mut worker = Worker::start(&db.conninfo(), &[]);
    let warned = eventually(Duration::from_secs(10), || async {
        worker
            .log()
            .contains("smsbus.restoring is on: new messages are stored as given")
    })
    .await;
    assert!(warned, "{}", worker.log());
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[tokio::test]
async fn bad_configuration_fails_fast_and_names_the_flag() {
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "host=/nonexistent port=1 dbname=x",
            &[],
            "cannot connect to the database",
        ),
        (
            "not a connection string",
            &[],
            "--database-url / DATABASE_URL is not a PostgreSQL connection string",
        ),
        (
            "host=/tmp dbname=x",
            &["--maintenance-interval", "0"],
            "--maintenance-interval is out of range",
        ),
        (
            "host=/tmp dbname=x",
            &["--pool-size", "0"],
            "--pool-size must be between 1 and 256, not 0",
        ),
    ];
    for (url, args, want) in cases {
        let mut worker = Worker::start(url, args);
        let status = worker
            .wait_exit(Duration::from_secs(30))
            .expect("worker kept running");
        assert!(!status.success());
        assert!(
            worker.log().contains(want),
            "want {want:?} in:\n{}",
            worker.log()
        );
    }
}

#[tokio::test]
async fn archives_finished_messages_as_the_policy_says() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', false);
         UPDATE smsbus.archiving SET enabled = false, older_than = '0', every = '0', batch_size = 2;
         SELECT smsbus._record_inbound('kpn', array_fill('+31687654321'::text, ARRAY[5]),
                array_fill('1234'::text, ARRAY[5]), array_fill('hi'::text, ARRAY[5]),
                array_fill(NULL::text, ARRAY[5]));
         INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
         VALUES ('+31612345678', 'not finished', 'kpn', now() + interval '1 day');",
    )
    .await
    .unwrap();
    let w = Worker::start(
        &db.conninfo(),
        &["--worker-id", "w1", "--maintenance-interval", "0.2"],
    );
    // Disabled: nothing moves.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        0
    );
    c.batch_execute("UPDATE smsbus.archiving SET enabled = true")
        .await
        .unwrap();
    let archived = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await == 5
    })
    .await;
    assert!(archived, "{}", w.log());
    // In batches of two; the waiting message stays.
    let left: i64 = count(&c, "SELECT count(*) FROM smsbus.message").await;
    assert_eq!(left, 1);
    let (last_moved, ran): (i64, bool) = {
        let row = c
            .query_one(
                "SELECT last_moved, last_run IS NOT NULL FROM smsbus.archiving",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(ran && last_moved <= 2, "{last_moved}");
}
