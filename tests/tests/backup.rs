//! Backups: pg_dump carries everything smsbus holds, and pg_restore with
//! smsbus.restoring brings it back as it was, with nothing routed or sent
//! again; without the setting the restore refuses the queue's rows.

use std::path::PathBuf;
use std::process::{Command, Output};

use smsbus_tests::db::{count, scalar, status_of, TestDb};
use tokio_postgres::Client;

/// Every table a dump must carry, compared row for row.
const TABLES: [&str; 13] = [
    "channel",
    "route",
    "block",
    "trigger",
    "archiving",
    "channel_usage",
    "message",
    "message_event",
    "message_part",
    "pending_report",
    "inbound_part",
    "message_archive",
    "message_part_archive",
];

const SEQUENCES: [&str; 5] = [
    "message_id_seq",
    "message_event_id_seq",
    "route_id_seq",
    "block_id_seq",
    "trigger_id_seq",
];

fn pg_bin(program: &str) -> PathBuf {
    let pg_config = std::env::var("PG_CONFIG")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
    let out = Command::new(&pg_config)
        .arg("--bindir")
        .output()
        .unwrap_or_else(|e| panic!("{pg_config}: {e}"));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join(program)
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// A database with configuration, messages in every stage, an inbound
/// message, an archived one and rules that read a table of the user's.
async fn fill(c: &Client) {
    c.batch_execute(
        "CREATE TABLE public.optout (number text PRIMARY KEY);
         INSERT INTO public.optout VALUES ('+31600000666');
         GRANT SELECT ON public.optout TO smsbus_admin;
         CREATE FUNCTION public.premium(m smsbus.message) RETURNS text
         LANGUAGE sql AS $$ SELECT CASE WHEN m.priority > 5 THEN 'fast' END $$;
         INSERT INTO smsbus.channel (name, kind, config, daily_limit) VALUES
             ('kpn', 'smpp', '{\"host\": \"127.0.0.1\", \"port\": 2775, \"password\": \"secret\"}', NULL),
             ('fast', 'smpp', '{}', 1000);
         INSERT INTO smsbus.block (condition, reason)
             VALUES ('EXISTS (SELECT 1 FROM optout o WHERE o.number = to_address)', 'opted out');
         INSERT INTO smsbus.route (position, function) VALUES (1, 'premium');
         INSERT INTO smsbus.route (position, condition, channel) VALUES (2, 'to_address LIKE ''+31%''', 'kpn');
         UPDATE smsbus.archiving SET older_than = interval '7 days', batch_size = 500;

         INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345600', 'delivered, archived');
         SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[max(id)], ARRAY[1], ARRAY['r0']) FROM smsbus.message;
         SELECT smsbus._apply_reports('kpn', ARRAY['r0'], ARRAY['delivered'], ARRAY['stat:DELIVRD']);",
    )
    .await
    .unwrap();
    // Its own transaction: archive() takes what finished before now().
    c.batch_execute("SELECT smsbus.archive(interval '0', 100)")
        .await
        .unwrap();
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script)
             VALUES ('seen', '{delivered}', 'sql',
                     'UPDATE smsbus.message SET custom = ''{\"seen\": true}'' WHERE id = $1');
         INSERT INTO smsbus.message (to_address, body, idempotency_key)
             SELECT '+3161234567' || g, 'message ' || g, 'key-' || g FROM generate_series(1, 3) g;
         INSERT INTO smsbus.message (to_address, body, priority) VALUES ('+31612340000', 'premium', 9);
         INSERT INTO smsbus.message (to_address, body) VALUES ('+31600000666', 'blocked');
         INSERT INTO smsbus.message (to_address, body, scheduled_at)
             VALUES ('+31612349999', 'tomorrow', now() + interval '1 day');
         SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[m.ids[1], m.ids[2]], ARRAY[1, 1], ARRAY['r1', 'r2'])
             FROM (SELECT array_agg(id ORDER BY id) AS ids FROM smsbus.message WHERE channel = 'kpn') m;
         SELECT smsbus._apply_reports('kpn', ARRAY['r1', 'early'], ARRAY['delivered', 'delivered'],
                                      ARRAY['stat:DELIVRD', 'stat:DELIVRD']);
         SELECT smsbus._record_inbound('kpn', ARRAY['+31612345678'], ARRAY['4455'], ARRAY['STOP'],
                                       ARRAY['in-1'], NULL, ARRAY[NULL::jsonb]);
         SELECT smsbus._record_inbound_parts('kpn', ARRAY['+31612345678'], ARRAY['4455'], ARRAY[7],
                                             ARRAY[2], ARRAY[1], ARRAY['first half'], ARRAY[NULL::jsonb]);",
    )
    .await
    .unwrap();
}

/// Every row of every smsbus table, as text, and the identity counters.
async fn contents(c: &Client) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for table in TABLES {
        let rows: Option<String> = scalar(
            c,
            &format!("SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM smsbus.{table} t"),
            &[],
        )
        .await;
        all.push((table.to_string(), rows.unwrap_or_default()));
    }
    for sequence in SEQUENCES {
        let value: String = scalar(
            c,
            &format!("SELECT last_value || ' ' || is_called FROM smsbus.{sequence}"),
            &[],
        )
        .await;
        all.push((sequence.to_string(), value));
    }
    all
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
    // Before the library is loaded the setting is a placeholder, which
    // loading it drops for a role that may not set it...
    c.batch_execute("SET smsbus.restoring = on").await.unwrap();
    let restoring: bool = scalar(&c, "SELECT smsbus._restoring()", &[]).await;
    assert!(!restoring);
    // ... and after, setting it is refused outright.
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
