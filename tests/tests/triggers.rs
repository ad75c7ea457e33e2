//! Trigger rows (README.md#triggers) through plain SQL: checked when written
//! (conditions and SQL scripts refused with the position of the mistake),
//! and messages armed (`trigger_status` pending) when they reach a status
//! an enabled trigger is for, with one NOTIFY smsbus_triggers per statement.
//! The worker runs the chains (trigger_runner.rs, lua_triggers.rs).

use std::time::Duration;

use smsbus_tests::db::{
    count, expect_error, listen, refused_at, scalar, trigger_status_of, TestDb,
};
use tokio_postgres::Client;

async fn setup(db: &TestDb) -> Client {
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    c
}

fn trigger(condition: &str, language: &str, script: &str) -> String {
    format!(
        "INSERT INTO smsbus.trigger (name, condition, language, script)
         VALUES ('t', $c${condition}$c$, '{language}', $s${script}$s$)"
    )
}

#[tokio::test]
async fn bad_trigger_rows_are_refused_where_the_mistake_is() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute("CREATE TABLE public.optout (number text PRIMARY KEY)")
        .await
        .unwrap();
    // (condition, language, script, SQLSTATE, message, position)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, Option<u32>);
    let cases: &[Case] = &[
        // A condition, as routing conditions are checked.
        ("to_addres = '1'", "sql", "SELECT 1", "42703", "column \"to_addres\" does not exist", Some(1)),
        ("body", "sql", "SELECT 1", "42804", "a condition must be of type boolean, not text", Some(1)),
        // SQL scripts: syntax, unknown tables and columns, $1 as bigint.
        ("true", "sql", "INSERT INTO optout VALUES ($1::text;", "42601", "syntax error at or near \";\"", Some(36)),
        ("true", "sql", "DELETE FROM optouts WHERE number = 'x'", "42P01", "relation \"optouts\" does not exist", Some(13)),
        (
            "true",
            "sql",
            "INSERT INTO optout SELECT from_address FROM smsbus.message WHERE id = $1;\nUPDATE optout SET numbr = ''",
            "42703",
            "column \"numbr\" of relation \"optout\" does not exist",
            Some(93),
        ),
        ("true", "sql", "SELECT $1 + 'abc'::text", "42883", "operator does not exist: bigint + text", Some(11)),
        ("true", "sql", "COMMIT", "2D000", "transaction control is not allowed in a trigger script", Some(1)),
        ("true", "sql", "  ", "42601", "script is empty", None),
    ];
    for (condition, language, script, code, message, position) in cases {
        let got = refused_at(&c, &trigger(condition, language, script)).await;
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.2),
            (*code, *message, *position),
            "{condition} / {script}"
        );
    }
    // The table's own checks.
    for (sql, code) in [
        (trigger("true", "python", "pass"), "23514"),
        (
            "INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES ('q', '{queued}', 'sql', 'SELECT 1')".into(),
            "23514",
        ),
        (
            "INSERT INTO smsbus.trigger (name, direction, language, script) VALUES ('d', 'both', 'sql', 'SELECT 1')".into(),
            "23514",
        ),
        (
            "INSERT INTO smsbus.trigger (name, language, script) VALUES ('bad name!', 'sql', 'SELECT 1')".into(),
            "23514",
        ),
    ] {
        assert_eq!(expect_error(&c, &sql).await.0, code, "{sql}");
    }
    // Lua is compiled, not run, when written: the line of the mistake.
    let (code, message, _) = refused_at(
        &c,
        "INSERT INTO smsbus.trigger (name, language, script)
         VALUES ('t', 'lua', E'function process(m)\n  if m.body = ''x'' then end\nend')",
    )
    .await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "42601",
            "Lua syntax error in trigger t, line 2: 'then' expected near '='"
        )
    );
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.trigger").await, 0);
    // A good one goes in; a trigger broken later (its table dropped) can
    // still be disabled, and is checked again when enabled.
    c.batch_execute(&trigger(
        "direction = 'in' AND upper(body) = 'STOP'",
        "sql",
        "INSERT INTO optout SELECT from_address FROM smsbus.message WHERE id = $1 ON CONFLICT DO NOTHING",
    ))
    .await
    .unwrap();
    c.batch_execute("DROP TABLE public.optout").await.unwrap();
    c.batch_execute("UPDATE smsbus.trigger SET enabled = false WHERE name = 't'")
        .await
        .unwrap();
    let (code, _, _) = refused_at(
        &c,
        "UPDATE smsbus.trigger SET enabled = true WHERE name = 't'",
    )
    .await;
    assert_eq!(code, "42P01");
}

#[tokio::test]
async fn senders_cannot_see_or_write_triggers() {
    let db = TestDb::new().await;
    let _ = setup(&db).await;
    let sender = db.connect_as("smsbus_sender").await;
    for sql in [
        "SELECT script FROM smsbus.trigger",
        "INSERT INTO smsbus.trigger (name, language, script) VALUES ('x', 'sql', 'SELECT 1')",
    ] {
        let (code, _) = expect_error(&sender, sql).await;
        assert_eq!(code, "42501", "{sql}");
    }
    let admin = db.connect_as("smsbus_admin").await;
    admin
        .batch_execute(
            "INSERT INTO smsbus.trigger (name, language, script) VALUES ('x', 'sql', 'SELECT $1')",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn messages_are_armed_for_the_triggers_that_apply() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let insert = |to: &'static str, channel: Option<&'static str>| {
        let c = &c;
        async move {
            let id: i64 = scalar(
                c,
                "INSERT INTO smsbus.message (to_address, body, channel) VALUES ($1, 'x', $2) RETURNING id",
                &[&to, &channel],
            )
            .await;
            id
        }
    };
    // No triggers: a permanent status is notriggers, an active one none.
    c.batch_execute("INSERT INTO smsbus.block (condition, reason) VALUES ('to_address = ''+31600000000''', 'opt-out')")
        .await
        .unwrap();
    let blocked = insert("+31600000000", None).await;
    let queued = insert("+31612345678", Some("kpn")).await;
    assert_eq!(trigger_status_of(&c, blocked).await, "notriggers");
    assert_eq!(trigger_status_of(&c, queued).await, "none");

    // A trigger for delivered outbound messages, one for anything inbound,
    // and a disabled one for blocked messages.
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, direction, language, script) VALUES
             ('on-delivered', '{delivered}', 'out', 'sql', 'SELECT $1'),
             ('on-inbound', NULL, 'in', 'lua', 'function process(m) end');
         INSERT INTO smsbus.trigger (name, on_status, enabled, language, script) VALUES
             ('off', '{blocked}', false, 'sql', 'SELECT $1');",
    )
    .await
    .unwrap();
    let blocked_again = insert("+31600000000", None).await;
    assert_eq!(trigger_status_of(&c, blocked_again).await, "notriggers");

    let (_listener, mut notified) = listen(&db, "smsbus_triggers").await;
    // Through the worker's functions: claimed, sent, then one delivered
    // and one not.
    let other = insert("+31612345679", Some("kpn")).await;
    c.batch_execute("SET smsbus.actor = 'worker:w'")
        .await
        .unwrap();
    let claimed = count(
        &c,
        "SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '1 minute')",
    )
    .await;
    assert_eq!(claimed, 2);
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&vec![queued, other], &vec![1i32, 1], &vec!["r1", "r2"]],
    )
    .await
    .unwrap();
    assert_eq!(
        trigger_status_of(&c, queued).await,
        "notriggers",
        "sent has no trigger"
    );
    let applied: i32 = scalar(
        &c,
        "SELECT smsbus._apply_reports('kpn', ARRAY['r1', 'r2'], ARRAY['delivered', 'notdelivered'], ARRAY['', ''])",
        &[],
    )
    .await;
    assert_eq!(applied, 2);
    assert_eq!(trigger_status_of(&c, queued).await, "pending");
    assert_eq!(trigger_status_of(&c, other).await, "notriggers");
    // One statement armed a message: one notification.
    let first = tokio::time::timeout(Duration::from_secs(2), notified.recv()).await;
    assert_eq!(first.unwrap().unwrap().0, "smsbus_triggers");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notified.recv())
            .await
            .is_err()
    );

    // Inbound messages, of any status, for the inbound trigger.
    let ids: Vec<i64> = scalar(
        &c,
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31687654321'], ARRAY['1234'], ARRAY['STOP'], ARRAY[NULL])",
        &[],
    )
    .await;
    assert_eq!(trigger_status_of(&c, ids[0]).await, "pending");
    // Disabling the triggers stops the arming at the next statement.
    c.batch_execute("UPDATE smsbus.trigger SET enabled = false")
        .await
        .unwrap();
    let ids: Vec<i64> = scalar(
        &c,
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31687654321'], ARRAY['1234'], ARRAY['again'], ARRAY[NULL])",
        &[],
    )
    .await;
    assert_eq!(trigger_status_of(&c, ids[0]).await, "notriggers");
}

/// A worker that dies mid-chain leaves messages `processing`; maintenance
/// arms them again after five minutes, and no sooner.
#[tokio::test]
async fn chains_a_dead_worker_left_are_armed_again() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script)
         VALUES ('t', '{received}', 'sql', 'SELECT $1')",
    )
    .await
    .unwrap();
    let ids: Vec<i64> = scalar(
        &c,
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31687654321', '+31687654322'], ARRAY['1234', '1234'],
                ARRAY['a', 'b'], ARRAY[NULL, NULL])",
        &[],
    )
    .await;
    let taken = count(&c, "SELECT count(*) FROM smsbus._claim_triggers(10)").await;
    assert_eq!(taken, 2);
    // The first was taken long ago, the second just now (updated_at is
    // the system's: set here with its row trigger off).
    c.batch_execute(&format!(
        "ALTER TABLE smsbus.message DISABLE TRIGGER message_before_update;
         UPDATE smsbus.message SET updated_at = now() - interval '6 minutes' WHERE id = {};
         ALTER TABLE smsbus.message ENABLE TRIGGER message_before_update;",
        ids[0]
    ))
    .await
    .unwrap();
    let done: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(done["triggers_resumed"], 1, "{done}");
    assert_eq!(trigger_status_of(&c, ids[0]).await, "pending");
    assert_eq!(trigger_status_of(&c, ids[1]).await, "processing");
}

/// What the runner does, done as the worker's role.
#[tokio::test]
async fn the_worker_role_can_run_triggers() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script)
         VALUES ('t', '{received}', 'sql', 'SELECT $1; SELECT 2')",
    )
    .await
    .unwrap();
    let worker = db.connect_as("smsbus_worker").await;
    let ids: Vec<i64> = scalar(
        &worker,
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31687654321'], ARRAY['1234'], ARRAY['hi'], ARRAY[NULL])",
        &[],
    )
    .await;
    assert_eq!(trigger_status_of(&c, ids[0]).await, "pending");
    let claimed = count(&worker, "SELECT count(*) FROM smsbus._claim_triggers(10)").await;
    assert_eq!(claimed, 1);
    let statements: Vec<String> = scalar(
        &worker,
        "SELECT smsbus._split_sql_script(script) FROM smsbus.trigger WHERE name = 't'",
        &[],
    )
    .await;
    assert_eq!(statements, ["SELECT $1", "SELECT 2"]);
    worker
        .execute(
            "UPDATE smsbus.message SET trigger_status = 'processed' WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    worker
        .execute(
            "INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, detail)
             VALUES ($1, 'received', 'received', 'worker:w', 'triggers failed: test')",
            &[&ids[0]],
        )
        .await
        .unwrap();
    let resumed: i32 = scalar(&worker, "SELECT smsbus._resume_triggers()", &[]).await;
    assert_eq!(resumed, 0);
    assert_eq!(trigger_status_of(&c, ids[0]).await, "processed");
}
