//! Bad input at every entry point of the extension: each case is refused
//! with its exact SQLSTATE and message, and leaves the database as it was.

use smsbus_tests::db::{count, expect_error, scalar, TestDb};
use tokio_postgres::Client;

struct Case {
    sql: String,
    code: &'static str,
    message: String,
}

fn case(sql: impl Into<String>, code: &'static str, message: impl Into<String>) -> Case {
    Case {
        sql: sql.into(),
        code,
        message: message.into(),
    }
}

fn insert(to: &str, from: &str, body: &str, extra_cols: &str, extra_vals: &str) -> String {
    format!(
        "INSERT INTO smsbus.message (to_address, from_address, body, channel{extra_cols}) \
         VALUES ({to}, {from}, {body}, 'kpn'{extra_vals})"
    )
}

async fn fixture(db: &TestDb) -> Client {
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, config) VALUES ('kpn', 'smpp', '{\"password\": \"secret\"}');
         INSERT INTO smsbus.message (to_address, body, channel, idempotency_key)
             VALUES ('+31612345678', 'first', 'kpn', 'dup');",
    )
    .await
    .unwrap();
    c
}

/// Counts that must not move when a statement is refused.
async fn snapshot(c: &Client) -> (i64, i64, i64, i64) {
    (
        count(c, "SELECT count(*) FROM smsbus.message").await,
        count(c, "SELECT count(*) FROM smsbus.message_event").await,
        count(c, "SELECT count(*) FROM smsbus.channel").await,
        count(c, "SELECT count(*) FROM smsbus.message_part").await,
    )
}

async fn check_all(db: &TestDb, role: Option<&str>, cases: Vec<Case>) {
    let admin = db.connect().await;
    let client = match role {
        Some(r) => db.connect_as(r).await,
        None => db.connect().await,
    };
    for case in cases {
        let before = snapshot(&admin).await;
        let (code, message) = expect_error(&client, &case.sql).await;
        assert_eq!(
            (code.as_str(), message.as_str()),
            (case.code, case.message.as_str()),
            "for: {}",
            case.sql
        );
        assert_eq!(
            snapshot(&admin).await,
            before,
            "database changed after: {}",
            case.sql
        );
    }
    // Every message still has its trace.
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM smsbus.message m
             WHERE NOT EXISTS (SELECT 1 FROM smsbus.message_event e WHERE e.message_id = m.id)"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn bad_destinations() {
    let db = TestDb::new().await;
    let _c = fixture(&db).await;
    let e = |to: &str| insert(to, "NULL", "'x'", "", "");
    check_all(
        &db,
        None,
        vec![
            case(e("NULL"), "23502", "to_address is required"),
            case(
                "UPDATE smsbus.message SET to_address = NULL WHERE idempotency_key = 'dup'",
                "23502",
                "to_address is required",
            ),
            case(
                insert("'+31612345678'", "NULL", "'x'", ", direction", ", 'sideways'"),
                "23514",
                "direction must be 'out' or 'in', not \"sideways\"",
            ),
            case(e("''"), "22023", "to_address is empty"),
            case(e("'   '"), "22023", "to_address is empty"),
            case(
                e("'call me'"),
                "22023",
                "to_address \"call me\" is not a phone number: use digits with an optional leading + (spaces, dashes, dots and parentheses are ignored)",
            ),
            case(
                e("'+12'"),
                "22023",
                "to_address \"+12\" has 2 digits after the country code prefix; an international number has 7 to 15",
            ),
            case(
                e("'+3161234567890123'"),
                "22023",
                "to_address \"+3161234567890123\" has 16 digits after the country code prefix; an international number has 7 to 15",
            ),
            case(e("'+0612345678'"), "22023", "to_address \"+0612345678\": a country code never starts with 0"),
            case(
                e("'12'"),
                "22023",
                "to_address \"12\" has 2 digits; a short code has 3 to 6 and a national number 7 to 15",
            ),
            case(
                e("'0123'"),
                "22023",
                "to_address \"0123\" has 4 digits; a short code has 3 to 6 and a national number 7 to 15",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_senders() {
    let db = TestDb::new().await;
    let _c = fixture(&db).await;
    let e = |from: &str| insert("'+31612345678'", from, "'x'", "", "");
    check_all(
        &db,
        None,
        vec![
            case(e("''"), "22023", "from_address is empty"),
            case(
                e("'TwelveCharsX'"),
                "22023",
                "from_address \"TwelveCharsX\" is 12 GSM characters long; an alphanumeric sender holds at most 11",
            ),
            case(
                e("'Shop€€€€€'"),
                "22023",
                "from_address \"Shop€€€€€\" is 14 GSM characters long; an alphanumeric sender holds at most 11",
            ),
            case(
                e("'Магазин'"),
                "22023",
                "from_address \"Магазин\": an alphanumeric sender must use the GSM 03.38 alphabet, 'М' is not in it",
            ),
            case(
                e("'+12'"),
                "22023",
                "from_address \"+12\" has 2 digits after the country code prefix; an international number has 7 to 15",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_bodies_and_encodings() {
    let db = TestDb::new().await;
    let _c = fixture(&db).await;
    let to = "'+31612345678'";
    check_all(
        &db,
        None,
        vec![
            case(
                insert(to, "NULL", "NULL", "", ""),
                "23502",
                "body is required",
            ),
            case(
                insert(to, "NULL", "repeat('a', 1531)", "", ""),
                "22023",
                "body needs 11 gsm7 segments, more than smsbus.max_segments (10)",
            ),
            case(
                insert(to, "NULL", "repeat('ж', 671)", "", ""),
                "22023",
                "body needs 11 ucs2 segments, more than smsbus.max_segments (10)",
            ),
            case(
                insert(to, "NULL", "'x'", ", encoding", ", 'utf8'"),
                "22023",
                "unknown encoding \"utf8\" (expected gsm7, ucs2, latin1 or binary)",
            ),
            case(
                insert(to, "NULL", "'Hi Жанна'", ", encoding", ", 'gsm7'"),
                "22023",
                "body cannot be encoded in gsm7: character 'Ж' (U+0416) at position 4",
            ),
            case(
                insert(to, "NULL", "'5 €'", ", encoding", ", 'latin1'"),
                "22023",
                "body cannot be encoded in latin1: character '€' (U+20AC) at position 3",
            ),
            case(
                insert(to, "NULL", "'CAFE0'", ", encoding", ", 'binary'"),
                "22023",
                "a binary body is hexadecimal digits, two an octet: 5 digits is not a whole number of octets",
            ),
            case(
                insert(to, "NULL", "'0x12'", ", encoding", ", 'binary'"),
                "22023",
                "body cannot be encoded in binary: character 'x' (U+0078) at position 2",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_schedules_channels_and_keys() {
    let db = TestDb::new().await;
    let c = fixture(&db).await;
    let first: i64 = scalar(
        &c,
        "SELECT id FROM smsbus.message WHERE idempotency_key = 'dup'",
        &[],
    )
    .await;
    let to = "'+31612345678'";
    check_all(
        &db,
        None,
        vec![
            case(
                insert(to, "NULL", "'x'", ", scheduled_at, valid_until",
                       ", '2030-01-02 00:00+00', '2030-01-01 00:00+00'"),
                "22023",
                "valid_until (2030-01-01 00:00:00+00) must be later than scheduled_at (2030-01-02 00:00:00+00)",
            ),
            case(
                insert(to, "NULL", "'x'", ", scheduled_at, valid_until",
                       ", '2030-01-01 00:00+00', '2030-01-01 00:00+00'"),
                "22023",
                "valid_until (2030-01-01 00:00:00+00) must be later than scheduled_at (2030-01-01 00:00:00+00)",
            ),
            case(
                "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'nope')",
                "23503",
                "unknown channel \"nope\"",
            ),
            case(
                insert(to, "NULL", "'x'", ", idempotency_key", ", 'dup'"),
                "23505",
                format!("idempotency_key \"dup\" was already used by message {first}"),
            ),
            case(
                insert(to, "NULL", "'x'", ", scheduled_at", ", NULL"),
                "23502",
                "null value in column \"scheduled_at\" of relation \"message\" violates not-null constraint",
            ),
            case(
                insert(to, "NULL", "'x'", ", priority", ", 40000"),
                "22003",
                "smallint out of range",
            ),
            case(
                "INSERT INTO smsbus.channel (name, kind) VALUES ('bad name', 'smpp')",
                "23514",
                "new row for relation \"channel\" violates check constraint \"channel_name_format\"",
            ),
            case(
                "INSERT INTO smsbus.channel (name, kind) VALUES ('carrier-pigeon', 'pigeon')",
                "23514",
                "new row for relation \"channel\" violates check constraint \"channel_kind\"",
            ),
            case(
                "INSERT INTO smsbus.channel (name, kind, config) VALUES ('x', 'smpp', '[1]')",
                "23514",
                "new row for relation \"channel\" violates check constraint \"channel_config_object\"",
            ),
            case(
                "SELECT smsbus.archive(interval '-1 day')",
                "22023",
                "older_than must be a positive interval, not -1 days",
            ),
            case("SELECT smsbus.archive(interval '1 day', 0)", "22023", "batch_size must be at least 1, not 0"),
        ],
    )
    .await;
}

#[tokio::test]
async fn illegal_transitions() {
    let db = TestDb::new().await;
    let c = fixture(&db).await;
    let queued: i64 = scalar(
        &c,
        "SELECT id FROM smsbus.message WHERE idempotency_key = 'dup'",
        &[],
    )
    .await;
    let inbound: i64 = scalar(&c, "SELECT (smsbus._record_inbound('kpn', ARRAY['+31600000000'], ARRAY['1234'], ARRAY['hi'], ARRAY['r']))[1]",
            &[]).await;
    let upd =
        |id: i64, to: &str| format!("UPDATE smsbus.message SET status = '{to}' WHERE id = {id}");
    check_all(
        &db,
        None,
        vec![
            case(
                upd(queued, "delivered"),
                "23514",
                format!("illegal status transition from queued to delivered (message {queued})"),
            ),
            case(
                upd(queued, "sent"),
                "23514",
                format!("illegal status transition from queued to sent (message {queued})"),
            ),
            case(
                upd(queued, "received"),
                "23514",
                format!("illegal status transition from queued to received (message {queued})"),
            ),
            case(
                upd(inbound, "sent"),
                "23514",
                format!("illegal status transition from received to sent (message {inbound})"),
            ),
            case(
                upd(inbound, "scheduled"),
                "23514",
                format!("illegal status transition from received to scheduled (message {inbound})"),
            ),
        ],
    )
    .await;
    // The hint tells the operator where the message may go.
    let err = c
        .batch_execute(&upd(queued, "delivered"))
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().hint(),
        Some("from queued a message may move to: sending, expired, cancelled")
    );
}

#[tokio::test]
async fn senders_cannot_touch_what_is_not_theirs() {
    let db = TestDb::new().await;
    let c = fixture(&db).await;
    let id: i64 = scalar(&c, "SELECT id FROM smsbus.message LIMIT 1", &[]).await;
    check_all(
        &db,
        Some("smsbus_sender"),
        vec![
            case("SELECT config FROM smsbus.channel", "42501", "permission denied for table channel"),
            case("SELECT * FROM smsbus.channel", "42501", "permission denied for table channel"),
            case(
                "INSERT INTO smsbus.channel (name, kind) VALUES ('mine', 'smpp')",
                "42501",
                "permission denied for table channel",
            ),
            case(
                format!("UPDATE smsbus.message SET status = 'sending' WHERE id = {id}"),
                "42501",
                "permission denied for table message",
            ),
            case(
                "INSERT INTO smsbus.message (to_address, body, status) VALUES ('+31612345678', 'x', 'sent')",
                "42501",
                "permission denied for table message",
            ),
            case(
                "INSERT INTO smsbus.message (to_address, body, direction) VALUES ('+31612345678', 'x', 'in')",
                "42501",
                "permission denied for table message",
            ),
            case(format!("DELETE FROM smsbus.message WHERE id = {id}"), "42501", "permission denied for table message"),
            case(
                "SELECT * FROM smsbus._claim('kpn', 'me', 10, interval '1 minute')",
                "42501",
                "permission denied for function _claim",
            ),
            case(
                "SELECT smsbus._record_inbound('kpn', ARRAY['+1'], ARRAY['+2'], ARRAY['forged'], ARRAY['r'])",
                "42501",
                "permission denied for function _record_inbound",
            ),
            case("SELECT smsbus.archive(interval '1 day')", "42501", "permission denied for function archive"),
            case(
                "INSERT INTO smsbus.message_event (message_id, to_status, actor) VALUES (1, 'sent', 'me')",
                "42501",
                "permission denied for table message_event",
            ),
            // Trigger scripts are code the worker runs: senders cannot attach any.
            case(
                "CREATE TRIGGER evil BEFORE INSERT ON smsbus.message FOR EACH ROW EXECUTE FUNCTION smsbus._channel_touch()",
                "42501",
                "permission denied for table message",
            ),
        ],
    )
    .await;
}

/// Errors hold no secrets and no novels: outside input is quoted cut
/// short, smsbus's own failures are internal errors (XX000), and no Rust
/// backtrace reaches the client, whatever the server's RUST_BACKTRACE.
#[tokio::test]
async fn errors_quote_input_short_and_never_carry_a_backtrace() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, daily_limit) VALUES ('kpn', 'smpp', 5);
         CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
         CREATE TRIGGER boom BEFORE INSERT ON smsbus.channel_usage FOR EACH ROW EXECUTE FUNCTION boom();",
    )
    .await
    .unwrap();
    let long = format!("+31{}", "6".repeat(100_000));
    let e = c
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ($1, 'x', 'kpn')",
            &[&long],
        )
        .await
        .unwrap_err();
    let db_e = e.as_db_error().unwrap();
    assert_eq!(db_e.code().code(), "22023");
    assert!(db_e.message().len() < 300, "{}", db_e.message());
    assert!(
        db_e.message().contains("(100003 characters)"),
        "{}",
        db_e.message()
    );
    // An error raised inside smsbus's own statements (an operator's trigger
    // on the daily counts) comes through as it was, without a backtrace.
    let e = c
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'kpn')",
            &[],
        )
        .await
        .unwrap_err();
    let db_e = e.as_db_error().unwrap();
    assert_eq!((db_e.code().code(), db_e.message()), ("P0001", "boom"));
    assert!(
        db_e.detail().is_none_or(|d| !d.contains("pgrx")),
        "{:?}",
        db_e.detail()
    );
    // smsbus missing a table of its own is an internal error.
    c.batch_execute(
        "DROP TRIGGER boom ON smsbus.channel_usage;
         ALTER TABLE smsbus.channel_wakeup RENAME TO channel_wakeup_away;",
    )
    .await
    .unwrap();
    let e = c
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'kpn')",
            &[],
        )
        .await
        .unwrap_err();
    let db_e = e.as_db_error().unwrap();
    assert_eq!(
        (db_e.code().code(), db_e.message()),
        (
            "XX000",
            "smsbus.channel_wakeup is missing: reinstall the extension"
        )
    );
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 0);
}
