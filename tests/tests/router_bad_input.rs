//! Bad rules are refused when written, with PostgreSQL's message and the
//! position of the mistake within the condition; nothing changes.

use smsbus_tests::db::{count, refused_at, scalar, TestDb};

/// The compiled router's source, which a refused rule must leave alone.
const ROUTER_SOURCE: &str =
    "SELECT prosrc FROM pg_proc WHERE oid = 'smsbus._router(smsbus.message)'::regprocedure";

fn route(condition: &str) -> String {
    format!(
        "INSERT INTO smsbus.route (id, condition, channel) VALUES (9, $c${condition}$c$, 'kpn')"
    )
}

#[tokio::test]
async fn bad_conditions_are_refused_with_their_position() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         INSERT INTO smsbus.route (id, condition, channel) VALUES (1, 'true', 'kpn');",
    )
    .await
    .unwrap();
    let router_before: String = scalar(&c, ROUTER_SOURCE, &[]).await;
    let cases: &[(&str, &str, &str, Option<u32>)] = &[
        (
            "to_addres LIKE '+31%'",
            "42703",
            "column \"to_addres\" does not exist",
            Some(1),
        ),
        (
            "to_address LIKE '+31%' ANDD priority > 0",
            "42601",
            "syntax error at or near \"priority\"",
            Some(29),
        ),
        (
            "true; DROP TABLE smsbus.message",
            "42601",
            "syntax error at or near \";\"",
            Some(5),
        ),
        (
            "true) OR (true",
            "42601",
            "syntax error at or near \")\"",
            Some(5),
        ),
        (
            "priority + 1",
            "42804",
            "a condition must be of type boolean, not integer",
            Some(1),
        ),
        (
            "to_address",
            "42804",
            "a condition must be of type boolean, not text",
            Some(1),
        ),
        (
            "true FROM smsbus.channel",
            "42601",
            "FROM is not allowed in a condition",
            Some(11),
        ),
        (
            "true WHERE false",
            "42601",
            "WHERE is not allowed in a condition",
            Some(12),
        ),
        (
            "true, false",
            "42601",
            "a condition is one boolean expression",
            Some(7),
        ),
        (
            "true AS x",
            "42601",
            "AS is not allowed in a condition",
            None,
        ),
        (
            "count(*) > 1",
            "42803",
            "aggregate, window and set-returning functions are not allowed in a condition",
            None,
        ),
        ("   ", "42601", "condition is empty", None),
        (
            "no_such_fn(body)",
            "42883",
            "function no_such_fn(text) does not exist",
            Some(1),
        ),
        (
            "EXISTS (SELECT 1 FROM no_such_table)",
            "42P01",
            "relation \"no_such_table\" does not exist",
            Some(23),
        ),
        (
            "'abc' = 1",
            "22P02",
            "invalid input syntax for type integer: \"abc\"",
            Some(1),
        ),
    ];
    for (condition, code, message, position) in cases {
        assert_eq!(
            refused_at(&c, &route(condition)).await,
            (code.to_string(), message.to_string(), *position),
            "{condition}"
        );
    }
    // The same checks guard blocking rules and updates.
    assert_eq!(
        refused_at(
            &c,
            "INSERT INTO smsbus.block (condition, reason) VALUES ('body ~ 1', 'x')"
        )
        .await
        .0,
        "42883"
    );
    assert_eq!(
        refused_at(
            &c,
            "UPDATE smsbus.route SET condition = 'prio > 1' WHERE id = 1"
        )
        .await
        .1,
        "column \"prio\" does not exist"
    );
    // Nothing changed: the rules and the compiled router are as they were.
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.route").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.block").await, 0);
    let router_after: String = scalar(&c, ROUTER_SOURCE, &[]).await;
    assert_eq!(router_before, router_after);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 0);
}

#[tokio::test]
async fn bad_targets_are_refused() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         CREATE FUNCTION returns_int(m smsbus.message) RETURNS integer LANGUAGE sql AS 'SELECT 1';
         CREATE FUNCTION takes_text(t text) RETURNS text LANGUAGE sql AS 'SELECT t';
         CREATE FUNCTION returns_set(m smsbus.message) RETURNS SETOF text LANGUAGE sql AS $$SELECT 'kpn'$$;",
    )
    .await
    .unwrap();
    let cases = [
        (
            "INSERT INTO smsbus.route (id, channel) VALUES (1, 'nope')",
            "23503",
            "route 1: unknown channel \"nope\"",
        ),
        (
            "INSERT INTO smsbus.route (id) VALUES (1)",
            "23514",
            "route 1 needs either a channel or a function, not neither",
        ),
        (
            "INSERT INTO smsbus.route (id, channel, function) VALUES (1, 'kpn', 'returns_int')",
            "23514",
            "route 1 needs either a channel or a function, not both",
        ),
        (
            "INSERT INTO smsbus.route (id, function) VALUES (1, 'no_such_function')",
            "42883",
            "route 1: function no_such_function(smsbus.message) does not exist",
        ),
        (
            "INSERT INTO smsbus.route (id, function) VALUES (1, 'takes_text')",
            "42883",
            "route 1: function takes_text(smsbus.message) does not exist",
        ),
        (
            "INSERT INTO smsbus.route (id, function) VALUES (1, 'returns_int')",
            "42804",
            "route 1: returns_int(smsbus.message) must be a function returning text, not integer",
        ),
        (
            "INSERT INTO smsbus.route (id, function) VALUES (1, 'returns_set')",
            "42804",
            "route 1: returns_set(smsbus.message) must be a function returning text, not setof text",
        ),
        (
            "INSERT INTO smsbus.route (id, function) VALUES (1, 'x); DROP TABLE smsbus.message; --')",
            "42602",
            "invalid name syntax",
        ),
        (
            "INSERT INTO smsbus.route (id, channel, weight) VALUES (1, 'kpn', 0)",
            "23514",
            "new row for relation \"route\" violates check constraint \"route_weight\"",
        ),
    ];
    for (sql, code, message) in cases {
        let (got_code, got_message, _) = refused_at(&c, sql).await;
        assert_eq!(
            (got_code.as_str(), got_message.as_str()),
            (code, message),
            "{sql}"
        );
    }
    // A channel a route uses cannot be deleted from under it.
    c.batch_execute("INSERT INTO smsbus.route (id, channel) VALUES (1, 'kpn')")
        .await
        .unwrap();
    assert_eq!(
        refused_at(&c, "DELETE FROM smsbus.channel WHERE name = 'kpn'")
            .await
            .0,
        "23503"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.route").await, 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        0
    );
    assert!(c.batch_execute("SELECT 1").await.is_ok());
}

#[tokio::test]
async fn a_rule_broken_later_fails_loudly_and_can_be_disabled() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         CREATE TABLE opt_out (number text PRIMARY KEY);
         GRANT SELECT ON opt_out TO smsbus_admin;
         INSERT INTO smsbus.block (id, condition, reason)
             VALUES (1, 'EXISTS (SELECT 1 FROM public.opt_out o WHERE o.number = to_address)', 'opted out');
         DROP TABLE opt_out;",
    )
    .await
    .unwrap();
    // An opt-out list that is gone must not let messages through unchecked.
    let (code, message, _) = refused_at(
        &c,
        "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'x')",
    )
    .await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("42P01", "relation \"public.opt_out\" does not exist")
    );
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 0);
    // Disabling the rule is not refused for what it reads; then mail flows.
    c.batch_execute("UPDATE smsbus.block SET enabled = false WHERE id = 1")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'x')")
        .await
        .unwrap();
    // Switching it back on checks it again.
    assert_eq!(
        refused_at(&c, "UPDATE smsbus.block SET enabled = true WHERE id = 1")
            .await
            .1,
        "relation \"public.opt_out\" does not exist"
    );
}

/// A rule of 100,000 characters is refused with an error of a few: the
/// condition quoted around the mistake, names cut short.
#[tokio::test]
async fn long_rules_are_quoted_short() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    let padding = "x".repeat(100_000);
    let condition = format!("to_address = '{padding}' AND nonsense_column = 1");
    let e = c
        .execute(
            "INSERT INTO smsbus.block (condition) VALUES ($1)",
            &[&condition],
        )
        .await
        .unwrap_err();
    let db_e = e.as_db_error().unwrap();
    assert_eq!(db_e.code().code(), "42703");
    assert_eq!(db_e.message(), "column \"nonsense_column\" does not exist");
    let (at, quoted) = match db_e.position() {
        Some(tokio_postgres::error::ErrorPosition::Internal { position, query }) => {
            (*position as usize, query.clone())
        }
        other => panic!("{other:?}"),
    };
    assert!(
        quoted.chars().count() <= 1002,
        "{} characters",
        quoted.len()
    );
    // The position still points at the mistake within what is quoted.
    let from_mistake: String = quoted.chars().skip(at - 1).take(15).collect();
    assert_eq!(from_mistake, "nonsense_column");
    for sql in [
        format!("INSERT INTO smsbus.route (function) VALUES ('{padding}')"),
        format!("INSERT INTO smsbus.route (condition, channel) VALUES ('true', '{padding}')"),
    ] {
        let e = c.batch_execute(&sql).await.unwrap_err();
        let message = e.as_db_error().unwrap().message().to_owned();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("(100000 characters)"), "{message}");
    }
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.route").await, 0);
}
