//! Backups: pg_dump carries everything smsbus holds, and pg_restore with
//! smsbus.restoring brings it back as it was, with nothing routed or sent
//! again; without the setting the restore refuses the queue's rows.

use std::process::{Command, Output};

use smsbus_tests::cluster::pg_bin;
use smsbus_tests::db::{count, scalar, status_of, TestDb};
use smsbus_tests::fixtures::{contents, fill};

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn dump(db: &TestDb, file: &std::path::Path) {
    let out = run(Command::new(pg_bin("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(file)
        .args(["--dbname", &db.conninfo()]));
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore(db: &TestDb, file: &std::path::Path, options: Option<&str>) -> Output {
    let mut command = Command::new(pg_bin("pg_restore"));
    command.args(["--dbname", &db.conninfo()]).arg(file);
    if let Some(options) = options {
        command.env("PGOPTIONS", options);
    }
    run(&mut command)
}

#[tokio::test]
async fn a_dump_restores_as_it_was() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    fill(&c).await;
    let before = contents(&c).await;
    // The fill reached every table worth comparing.
    for (table, rows) in &before {
        assert!(!rows.is_empty(), "{table} is empty before the dump");
    }
    let statuses: Vec<String> = c
        .query("SELECT status::text FROM smsbus.message ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        statuses,
        [
            "delivered",
            "sent",
            "sending",
            "queued",
            "blocked",
            "scheduled",
            "received"
        ]
    );

    let file = std::env::temp_dir().join(format!("{}.dump", db.name));
    dump(&db, &file);
    let restored = TestDb::empty().await;
    let out = restore(&restored, &file, Some("-c smsbus.restoring=on"));
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = restored.connect().await;
    let after = contents(&r).await;
    for ((table, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "smsbus.{table} differs after the restore");
    }
    // The archive's months come back as months, the trace's too.
    let archive = "SELECT string_agg(p.tableoid::regclass || ' ' || p, E'\\n' ORDER BY p::text)
                   FROM smsbus.message_event_archive p";
    let archived_trace: String = scalar(&c, archive, &[]).await;
    assert!(
        archived_trace.contains("message_event_archive_y"),
        "{archived_trace}"
    );
    assert_eq!(scalar::<String>(&r, archive, &[]).await, archived_trace);
    // What the worker writes about its links starts afresh.
    assert_eq!(
        count(&r, "SELECT count(*) FROM smsbus.channel_state").await,
        0
    );

    // The restored rules route new messages (reading the user's table and
    // function as before), and new ids follow the old ones.
    let old_max: i64 = scalar(&c, "SELECT max(id) FROM smsbus.message", &[]).await;
    let rows = r
        .query(
            "INSERT INTO smsbus.message (to_address, body, priority) VALUES
                 ('+31612345670', 'routed', 0), ('+31600000666', 'still blocked', 0),
                 ('+31612345671', 'premium', 9)
             RETURNING id, status::text, coalesce(channel, '-'), routed_by",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| {
            assert!(
                row.get::<_, i64>(0) > old_max,
                "a new id repeats an old one"
            );
            (row.get(1), row.get(2), row.get(3))
        })
        .collect();
    let route = |position: i32| {
        let r = &r;
        async move {
            let id: i64 = scalar(
                r,
                "SELECT id FROM smsbus.route WHERE position = $1",
                &[&position],
            )
            .await;
            format!("route {id}")
        }
    };
    let block: i64 = scalar(&r, "SELECT id FROM smsbus.block", &[]).await;
    assert_eq!(
        got,
        [
            ("queued".into(), "kpn".into(), route(2).await),
            ("blocked".into(), "-".into(), format!("block {block}")),
            ("queued".into(), "fast".into(), route(1).await),
        ]
    );
    // The restored message waiting for its report gets it.
    let sent: i64 = scalar(
        &r,
        "SELECT id FROM smsbus.message WHERE status = 'sent'",
        &[],
    )
    .await;
    r.execute(
        "SELECT smsbus._apply_reports('kpn', ARRAY['r2'], ARRAY['delivered'], ARRAY['stat:DELIVRD'])",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status_of(&r, sent).await, "delivered");
    std::fs::remove_file(&file).ok();
}

#[tokio::test]
async fn a_restore_without_the_setting_sends_nothing_again() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    fill(&c).await;
    let file = std::env::temp_dir().join(format!("{}.dump", db.name));
    dump(&db, &file);
    let restored = TestDb::empty().await;
    let out = restore(&restored, &file, None);
    std::fs::remove_file(&file).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pg_restore succeeded: {stderr}");
    assert!(
        stderr.contains("column \"status\" is set by smsbus, not by INSERT")
            && stderr.contains("smsbus.restoring=on"),
        "{stderr}"
    );
    // The queue's rows were refused as a whole: nothing became queued.
    let r = restored.connect().await;
    assert_eq!(count(&r, "SELECT count(*) FROM smsbus.message").await, 0);
    // What has no triggers of its own came back.
    assert_eq!(count(&r, "SELECT count(*) FROM smsbus.channel").await, 2);
}

#[tokio::test]
async fn only_superusers_restore() {
    let db = TestDb::new().await;
    let c = db.connect_as("smsbus_admin").await;
    // Before the library is loaded, SET only records a placeholder; loading
    // the library drops it, since this role may not set the parameter.
    c.batch_execute("SET smsbus.restoring = on").await.unwrap();
    let restoring: bool = scalar(&c, "SELECT smsbus._restoring()", &[]).await;
    assert!(!restoring);
    // Once the library is loaded, SET is refused outright.
    let err = c
        .batch_execute("SET smsbus.restoring = on")
        .await
        .unwrap_err();
    let (code, message) = smsbus_tests::db::db_error(&err);
    assert_eq!(code, "42501");
    assert_eq!(
        message,
        "permission denied to set parameter \"smsbus.restoring\""
    );
    // An INSERT that names its status is refused, for admins as well.
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    let (code, message) = smsbus_tests::db::expect_error(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel, status)
         VALUES ('+31612345678', 'x', 'kpn', 'delivered')",
    )
    .await;
    assert_eq!(code, "428C9");
    assert_eq!(message, "column \"status\" is set by smsbus, not by INSERT");
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 0);
}
