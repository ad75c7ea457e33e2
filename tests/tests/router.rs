//! The router through plain SQL: blocking rules, routes by position,
//! weights, failover, daily limits, round robin, function routes, routing
//! when a scheduled message comes due, reroute(), explain_route(), and the
//! examples in sql/examples/.

use smsbus_tests::db::{count, db_error, expect_error, scalar, status_of, TestDb};
use tokio_postgres::Client;

async fn setup(db: &TestDb) -> Client {
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp'), ('vodafone', 'smpp'), ('fast', 'smpp');",
    )
    .await
    .unwrap();
    c
}

/// Inserts one message and returns (status, channel, routed_by, last_error).
async fn send(
    c: &Client,
    columns: &str,
    values: &str,
) -> (String, Option<String>, Option<String>, Option<String>) {
    // A body unless the caller gives one.
    let (body, x) = if columns.contains("body") {
        ("request_report", "true")
    } else {
        ("body", "'x'")
    };
    let row = c
        .query_one(
            &format!(
                "INSERT INTO smsbus.message ({body}{columns}) VALUES ({x}{values})
                 RETURNING status::text, channel, routed_by, last_error"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

async fn send_to(c: &Client, to: &str) -> (String, Option<String>, Option<String>, Option<String>) {
    send(c, ", to_address", &format!(", '{to}'")).await
}

/// The source of the compiled router.
async fn compiled_router(c: &Client) -> String {
    scalar(
        c,
        "SELECT prosrc FROM pg_proc WHERE oid = 'smsbus._router(smsbus.message)'::regprocedure",
        &[],
    )
    .await
}

fn queued(channel: &str, by: &str) -> (String, Option<String>, Option<String>, Option<String>) {
    ("queued".into(), Some(channel.into()), Some(by.into()), None)
}

#[tokio::test]
async fn blocks_first_then_routes_by_position() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (1, 20, 'to_address LIKE ''+31%''', 'kpn'),
            (2, 10, 'to_address LIKE ''+316%'' AND priority > 0', 'fast'),
            (3, 30, 'true', 'vodafone');
         INSERT INTO smsbus.block (id, condition, reason) VALUES
            (7, 'to_address = ''+31600000000''', 'opted out'),
            (8, 'body LIKE ''%casino%''', 'no gambling');",
    )
    .await
    .unwrap();
    assert_eq!(send_to(&c, "+31612345678").await, queued("kpn", "route 1"));
    assert_eq!(
        send(&c, ", to_address, priority", ", '+31612345678', 1").await,
        queued("fast", "route 2")
    );
    assert_eq!(
        send_to(&c, "+4412345678").await,
        queued("vodafone", "route 3")
    );
    assert_eq!(
        send_to(&c, "+31600000000").await,
        (
            "blocked".into(),
            None,
            Some("block 7".into()),
            Some("opted out".into())
        )
    );
    // An explicit channel skips the routes, not the blocking rules.
    assert_eq!(
        send(&c, ", to_address, channel", ", '+31612345678', 'vodafone'").await,
        queued("vodafone", "channel given")
    );
    let (status, _, by, _) = send(
        &c,
        ", to_address, channel, body",
        ", '+31612345678', 'kpn', 'casino night'",
    )
    .await;
    assert_eq!(
        (status.as_str(), by.as_deref()),
        ("blocked", Some("block 8"))
    );
    // The trace names the rule that decided.
    let details: Vec<Option<String>> = c
        .query("SELECT detail FROM smsbus.message_event ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        details,
        [
            Some("route 1"),
            Some("route 2"),
            Some("route 3"),
            Some("block 7: opted out"),
            Some("channel given"),
            Some("block 8: no gambling"),
        ]
        .map(|d| d.map(str::to_owned))
    );
}

/// Rules whose conditions are simple expressions are compiled in runs, one
/// CASE each; a rule with a subquery stands alone between them. Order,
/// failover inside a run and NULL conditions behave as rule by rule.
#[tokio::test]
async fn runs_of_simple_rules_keep_order_and_failover() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('off', 'smpp', false);
         INSERT INTO smsbus.block (id, condition, reason) VALUES
            (1, 'to_address = ''+31600000001''', 'one'),
            (2, 'EXISTS (SELECT 1 FROM smsbus.channel ch WHERE ch.name = body)', 'names a channel'),
            (3, 'to_address = ''+31600000003''', 'three'),
            (4, 'to_address = ''+31600000004''', 'four');
         INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (6, 5, 'from_address LIKE ''Shop%''', 'vodafone'),
            (1, 10, 'to_address LIKE ''+31%''', 'off'),
            (2, 20, 'priority > 5', 'fast'),
            (3, 30, 'to_address LIKE ''+31%''', 'kpn'),
            (4, 40, 'EXISTS (SELECT 1 FROM smsbus.channel ch WHERE ch.name = body || ''fone'')', 'vodafone'),
            (5, 50, 'true', 'fast');",
    )
    .await
    .unwrap();
    let source = compiled_router(&c).await;
    let runs: Vec<&str> = source
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("-- block") || l.starts_with("-- route"))
        .collect();
    assert_eq!(
        runs,
        [
            "-- block 1",
            "-- block 2",
            "-- blocks 3, 4",
            "-- routes 6, 1, 2, 3",
            "-- route 4 (position 40)",
            "-- route 5"
        ]
    );
    let blocked = |by: &str, reason: &str| {
        (
            "blocked".to_owned(),
            None,
            Some(by.to_owned()),
            Some(reason.to_owned()),
        )
    };
    // The first matching blocking rule wins, across runs.
    assert_eq!(
        send(&c, ", to_address, body", ", '+31600000001', 'kpn'").await,
        blocked("block 1", "one")
    );
    assert_eq!(
        send(&c, ", to_address, body", ", '+31600000003', 'kpn'").await,
        blocked("block 2", "names a channel")
    );
    assert_eq!(
        send_to(&c, "+31600000004").await,
        blocked("block 4", "four")
    );
    // Route 6's condition is NULL (no sender): no match. Route 1 matches
    // but its channel is disabled; route 3, later in the same run, takes it.
    assert_eq!(send_to(&c, "+31612345678").await, queued("kpn", "route 3"));
    assert_eq!(
        send(&c, ", to_address, priority", ", '+31612345678', 9").await,
        queued("fast", "route 2")
    );
    assert_eq!(
        send(
            &c,
            ", to_address, from_address",
            ", '+31612345678', 'ShopNL'"
        )
        .await,
        queued("vodafone", "route 6")
    );
    assert_eq!(
        send(&c, ", to_address, body", ", '+4412345678', 'voda'").await,
        queued("vodafone", "route 4")
    );
    assert_eq!(send_to(&c, "+4412345678").await, queued("fast", "route 5"));
    // Every match of the run skipped: the rule after it.
    c.batch_execute("UPDATE smsbus.channel SET enabled = false WHERE name = 'kpn'")
        .await
        .unwrap();
    assert_eq!(send_to(&c, "+31612345678").await, queued("fast", "route 5"));
    c.batch_execute("UPDATE smsbus.route SET enabled = false WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(
        send_to(&c, "+31612345678").await,
        (
            "nochannel".into(),
            None,
            None,
            Some(
                "route 1: channel \"off\" is disabled; route 3: channel \"kpn\" is disabled".into()
            )
        )
    );
    // A daily limit inside a run: taken once, then dailylimit.
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, daily_limit) VALUES ('capped', 'smpp', 1);
         UPDATE smsbus.route SET channel = 'capped' WHERE id = 3;",
    )
    .await
    .unwrap();
    assert_eq!(
        send_to(&c, "+31612345678").await,
        queued("capped", "route 3")
    );
    assert_eq!(
        send_to(&c, "+31612345678").await,
        (
            "dailylimit".into(),
            None,
            None,
            Some(
                "route 1: channel \"off\" is disabled; route 3: channel \"capped\" reached its daily limit"
                    .into()
            )
        )
    );
}

/// Runs of conditions built only from PostgreSQL's own functions and
/// operators are evaluated in Rust (smsbus._route_first); runs calling a user's
/// function stay in PL/pgSQL, which follows a change to that function. An
/// error in a condition fails the INSERT and leaves later ones unharmed.
#[tokio::test]
async fn condition_kinds_and_errors() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE FUNCTION public.premium(number text) RETURNS boolean
             LANGUAGE sql AS $$ SELECT number LIKE '+3170%' $$;
         INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (1, 10, 'premium(to_address)', 'fast'),
            (2, 20, 'premium(from_address)', 'fast'),
            (3, 30, 'to_address LIKE ''+31%'' AND 10 / (priority - 5) > 0', 'kpn'),
            (4, 40, 'length(body) > 3', 'vodafone');",
    )
    .await
    .unwrap();
    let source = compiled_router(&c).await;
    let run_of = |first: &str| {
        let start = source.find(first).expect("the run is compiled");
        let end = source[start + 1..]
            .find("    -- route")
            .map_or(source.len(), |i| start + 1 + i);
        source[start..end].to_owned()
    };
    let user = run_of("-- routes 1, 2");
    assert!(user.contains("_r_hit := CASE") && !user.contains("_first_match"));
    let builtin = run_of("-- routes 3, 4");
    assert!(builtin.contains("smsbus._route_first(") && !builtin.contains("_r_hit := CASE"));

    assert_eq!(send_to(&c, "+31701234567").await, queued("fast", "route 1"));
    assert_eq!(
        send(&c, ", to_address, priority", ", '+31612345678', 6").await,
        queued("kpn", "route 3")
    );
    assert_eq!(
        send(&c, ", to_address, body", ", '+4412345678', 'hello'").await,
        queued("vodafone", "route 4")
    );
    // No condition of the run holds: round robin.
    assert_eq!(
        send(&c, ", to_address, body", ", '+4412345678', 'hi'")
            .await
            .2
            .as_deref(),
        Some("round robin")
    );
    // A user's function changed: the next message sees the new one.
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION public.premium(number text) RETURNS boolean
             LANGUAGE sql AS $$ SELECT number LIKE '+44%' $$",
    )
    .await
    .unwrap();
    assert_eq!(send_to(&c, "+4412345678").await, queued("fast", "route 1"));
    // priority 5: the condition divides by zero; the INSERT fails with
    // PostgreSQL's error, and nothing is stored.
    let error = expect_error(
        &c,
        "INSERT INTO smsbus.message (to_address, body, priority) VALUES ('+31612345678', 'x', 5)",
    )
    .await;
    assert_eq!(error.0, "22012");
    assert_eq!(error.1, "division by zero");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message WHERE priority = 5").await,
        0
    );
    assert_eq!(
        send(&c, ", to_address, priority", ", '+31612345678', 6").await,
        queued("kpn", "route 3")
    );
}

/// Blocking rules that are one run evaluated in Rust, followed by a run of
/// routes, are evaluated in one call; what they decide is the same.
#[tokio::test]
async fn blocks_and_first_routes_in_one_call() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('off', 'smpp', false);
         INSERT INTO smsbus.block (id, condition, reason) VALUES
            (1, 'to_address = ''+31600000001''', 'one'), (2, 'body = ''spam''', 'spam');
         INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (1, 10, 'to_address LIKE ''+31%''', 'off'),
            (2, 20, 'to_address LIKE ''+316%''', 'kpn'),
            (3, 30, 'priority > 5', 'fast');",
    )
    .await
    .unwrap();
    let source = compiled_router(&c).await;
    assert!(
        source.contains("-- blocks 1, 2, then routes 1, 2, 3"),
        "{source}"
    );
    let blocked = |by: &str, reason: &str| {
        (
            "blocked".to_owned(),
            None,
            Some(by.to_owned()),
            Some(reason.to_owned()),
        )
    };
    assert_eq!(send_to(&c, "+31600000001").await, blocked("block 1", "one"));
    assert_eq!(
        send(&c, ", to_address, body", ", '+31612345678', 'spam'").await,
        blocked("block 2", "spam")
    );
    assert_eq!(send_to(&c, "+31612345678").await, queued("kpn", "route 2"));
    assert_eq!(
        send(&c, ", to_address, priority", ", '+4412345678', 9").await,
        queued("fast", "route 3")
    );
    // No route matched: round robin.
    assert_eq!(
        send_to(&c, "+4412345678").await.2.as_deref(),
        Some("round robin")
    );
    // Only matches whose channels cannot take it: nochannel, with why.
    assert_eq!(
        send_to(&c, "+31712345678").await,
        (
            "nochannel".into(),
            None,
            None,
            Some("route 1: channel \"off\" is disabled".into())
        )
    );
    // A message naming its channel meets the blocking rules alone (and
    // keeps the channel it named).
    let (status, channel, by, _) =
        send(&c, ", to_address, channel", ", '+31600000001', 'fast'").await;
    assert_eq!(
        (status.as_str(), channel.as_deref(), by.as_deref()),
        ("blocked", Some("fast"), Some("block 1"))
    );
}

#[tokio::test]
async fn routes_at_one_position_share_by_weight() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.route (position, condition, channel, weight) VALUES
            (10, 'true', 'kpn', 3), (10, 'true', 'vodafone', 1);
         INSERT INTO smsbus.message (to_address, body)
            SELECT '+3161234' || lpad(g::text, 4, '0'), 'x' FROM generate_series(1, 4000) g;",
    )
    .await
    .unwrap();
    let kpn = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE channel = 'kpn'",
    )
    .await;
    let vodafone = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE channel = 'vodafone'",
    )
    .await;
    assert_eq!(kpn + vodafone, 4000);
    // 3:1 is 3000:1000; six standard deviations (27 each) either side.
    assert!((2840..=3160).contains(&kpn), "kpn got {kpn} of 4000");
}

#[tokio::test]
async fn unusable_channels_are_skipped_and_daily_limits_counted() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, daily_limit) VALUES ('capped', 'smpp', 2);
         INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (1, 10, 'to_address LIKE ''+31%''', 'capped'),
            (2, 20, 'to_address LIKE ''+31%''', 'kpn'),
            (3, 10, 'to_address LIKE ''+44%''', 'capped');",
    )
    .await
    .unwrap();
    assert_eq!(
        send_to(&c, "+31612345678").await,
        queued("capped", "route 1")
    );
    assert_eq!(
        send_to(&c, "+31612345679").await,
        queued("capped", "route 1")
    );
    // The limit is reached: failover to the next route.
    assert_eq!(send_to(&c, "+31612345670").await, queued("kpn", "route 2"));
    // The only match is over its limit: dailylimit.
    assert_eq!(
        send_to(&c, "+441234567890").await,
        (
            "dailylimit".into(),
            None,
            None,
            Some("route 3: channel \"capped\" reached its daily limit".into())
        )
    );
    let routed: i64 = scalar(
        &c,
        "SELECT routed FROM smsbus.channel_usage WHERE channel = 'capped'",
        &[],
    )
    .await;
    assert_eq!(routed, 2);
    // Disabled and cannot-send channels are skipped too.
    c.batch_execute(
        "UPDATE smsbus.channel SET enabled = false WHERE name = 'kpn';
         UPDATE smsbus.channel SET can_send = false WHERE name = 'capped';",
    )
    .await
    .unwrap();
    assert_eq!(
        send_to(&c, "+31612345671").await,
        (
            "nochannel".into(),
            None,
            None,
            Some(
                "route 1: channel \"capped\" cannot send; route 2: channel \"kpn\" is disabled"
                    .into()
            )
        )
    );
    // A rolled-back insert gives its quota back.
    c.batch_execute(
        "UPDATE smsbus.channel SET can_send = true, daily_limit = 3 WHERE name = 'capped'",
    )
    .await
    .unwrap();
    c.batch_execute(
        "BEGIN; INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345672', 'x'); ROLLBACK;",
    )
    .await
    .unwrap();
    assert_eq!(
        send_to(&c, "+31612345673").await,
        queued("capped", "route 1")
    );
    assert_eq!(
        send_to(&c, "+31612345674").await.0,
        "dailylimit",
        "capped is full (3), kpn disabled: a limit stopped it"
    );
}

#[tokio::test]
async fn round_robin_when_no_route_matches() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.route (condition, channel) VALUES ('to_address LIKE ''+31%''', 'kpn');
         UPDATE smsbus.channel SET can_send = false WHERE name = 'vodafone';
         INSERT INTO smsbus.message (to_address, body)
            SELECT '+4412345' || lpad(g::text, 4, '0'), 'x' FROM generate_series(1, 10) g;",
    )
    .await
    .unwrap();
    let channels: Vec<String> = c
        .query(
            "SELECT channel FROM smsbus.message WHERE routed_by = 'round robin' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(channels.len(), 10);
    // Turns between the two channels that can send.
    for pair in channels.windows(2) {
        assert_ne!(pair[0], pair[1], "{channels:?}");
        assert!(pair.iter().all(|c| c == "kpn" || c == "fast"));
    }
    c.batch_execute("UPDATE smsbus.channel SET enabled = false")
        .await
        .unwrap();
    assert_eq!(
        send_to(&c, "+4412345678").await,
        (
            "nochannel".into(),
            None,
            None,
            Some("no route matched and no channel can send".into())
        )
    );
}

#[tokio::test]
async fn function_routes() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE FUNCTION pick(m smsbus.message) RETURNS text LANGUAGE sql AS
            $$ SELECT CASE WHEN m.priority > 0 THEN 'fast' WHEN m.body = 'bad' THEN 'ghost' END $$;
         CREATE FUNCTION fragile(m smsbus.message) RETURNS text LANGUAGE plpgsql AS
            $$ BEGIN IF m.body = 'boom' THEN RAISE EXCEPTION 'lookup service down'; END IF; RETURN NULL; END $$;
         INSERT INTO smsbus.route (id, position, function) VALUES (1, 10, 'pick'), (2, 20, 'public.fragile');
         INSERT INTO smsbus.route (id, position, condition, channel) VALUES (3, 30, 'true', 'kpn');",
    )
    .await
    .unwrap();
    assert_eq!(
        send(&c, ", to_address, priority", ", '+31612345678', 2").await,
        queued("fast", "route 1")
    );
    // Null from a function: no match, the next route decides.
    assert_eq!(send_to(&c, "+31612345678").await, queued("kpn", "route 3"));
    // A channel that does not exist is skipped like an unusable one.
    assert_eq!(
        send(&c, ", to_address, body", ", '+31612345678', 'bad'").await,
        queued("kpn", "route 3")
    );
    // A function that raises fails its message alone; the rest of the
    // statement goes through.
    let rows = c
        .query(
            "INSERT INTO smsbus.message (to_address, body) VALUES
                ('+31612345678', 'fine'), ('+31612345678', 'boom'), ('+31612345678', 'fine too')
             RETURNING status::text, routed_by, last_error",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got[0].0, "queued");
    assert_eq!(got[2].0, "queued");
    assert_eq!(
        got[1],
        (
            "failed".into(),
            Some("route 2".into()),
            Some("route 2: public.fragile failed: lookup service down".into())
        )
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE trigger_status = 'notriggers' AND status = 'failed'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn scheduled_messages_are_routed_when_due_with_the_rules_of_then() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, scheduled_at)
         VALUES ('+31612345678', 'later', now() + interval '1 hour') RETURNING id",
        &[],
    )
    .await;
    c.batch_execute(
        "INSERT INTO smsbus.route (id, condition, channel) VALUES (5, 'body = ''later''', 'vodafone');
         UPDATE smsbus.message SET scheduled_at = now() - interval '1 second';
         SET smsbus.actor = 'worker:test';",
    )
    .await
    .unwrap();
    // The worker's role promotes; the rules run with the admin's rights.
    let worker = db.connect_as("smsbus_worker").await;
    let promoted: i32 = scalar(&worker, "SELECT smsbus._promote_scheduled()", &[]).await;
    assert_eq!(promoted, 1);
    let row = c
        .query_one(
            "SELECT m.status::text, m.channel, e.from_status::text, e.detail
             FROM smsbus.message m JOIN smsbus.message_event e ON e.message_id = m.id
             WHERE m.id = $1 ORDER BY e.id DESC LIMIT 1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<String>>(3)
        ),
        (
            "queued".into(),
            Some("vodafone".into()),
            Some("scheduled".into()),
            Some("route 5".into())
        )
    );
}

#[tokio::test]
async fn a_retry_is_routed_afresh_but_a_given_channel_is_kept() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (1, 10, 'true', 'kpn'), (2, 20, 'true', 'vodafone');",
    )
    .await
    .unwrap();
    let routed: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'r') RETURNING id",
        &[],
    )
    .await;
    let given: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'g', 'kpn') RETURNING id",
        &[],
    )
    .await;
    c.batch_execute(&format!(
        "UPDATE smsbus.message SET status = 'sending' WHERE id IN ({routed}, {given});
         UPDATE smsbus.message SET status = 'failed', last_error = 'kpn down' WHERE id IN ({routed}, {given});
         UPDATE smsbus.channel SET enabled = false WHERE name = 'kpn';
         UPDATE smsbus.message SET status = 'scheduled' WHERE id IN ({routed}, {given});
         UPDATE smsbus.message SET status = 'queued' WHERE id IN ({routed}, {given});"
    ))
    .await
    .unwrap();
    let row = |id: i64| {
        let c = &c;
        async move {
            let r = c
                .query_one(
                    "SELECT status::text, channel, last_error FROM smsbus.message WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2),
            )
        }
    };
    assert_eq!(
        row(routed).await,
        ("queued".into(), Some("vodafone".into()), None)
    );
    assert_eq!(
        row(given).await,
        (
            "nochannel".into(),
            Some("kpn".into()),
            Some("channel \"kpn\" is disabled".into())
        )
    );
}

#[tokio::test]
async fn reroute_sends_waiting_messages_through_the_router_again() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "UPDATE smsbus.channel SET enabled = false;
         INSERT INTO smsbus.message (to_address, body)
            SELECT '+3161234567' || g, 'x' FROM generate_series(0, 4) g;
         INSERT INTO smsbus.block (condition, reason) VALUES ('to_address LIKE ''%0''', 'stop');",
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'nochannel'"
        )
        .await,
        5
    );
    c.batch_execute("UPDATE smsbus.channel SET enabled = true WHERE name = 'fast'")
        .await
        .unwrap();
    let first: i64 = scalar(&c, "SELECT min(id) FROM smsbus.message", &[]).await;
    let n: i64 = scalar(&c, "SELECT smsbus.reroute(ARRAY[$1::bigint])", &[&first]).await;
    assert_eq!(n, 1);
    let n: i64 = scalar(&c, "SELECT smsbus.reroute()", &[]).await;
    assert_eq!(n, 4);
    let statuses: Vec<(String, Option<String>)> = c
        .query(
            "SELECT status::text, channel FROM smsbus.message ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(statuses[0], ("blocked".into(), None));
    for s in &statuses[1..] {
        assert_eq!(s, &("queued".into(), Some("fast".into())));
    }
    let trace: Vec<String> = c
        .query(
            "SELECT coalesce(from_status::text, '') || '>' || to_status || ' ' || coalesce(detail, '')
             FROM smsbus.message_event WHERE message_id = $1 ORDER BY id",
            &[&(first + 1)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        trace,
        [
            ">nochannel no route matched and no channel can send",
            "nochannel>scheduled rerouted",
            "scheduled>queued round robin"
        ]
    );
    // Nothing left to reroute; an empty status list is refused.
    let n: i64 = scalar(&c, "SELECT smsbus.reroute()", &[]).await;
    assert_eq!(n, 0);
    let e = c
        .batch_execute("SELECT smsbus.reroute(NULL, '{}')")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "22023".into(),
            "statuses must name at least one status".into()
        )
    );
}

async fn explain(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?} {}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<bool>>(2),
                r.get::<_, String>(3)
            )
        })
        .collect()
}

#[tokio::test]
async fn explain_route_shows_each_rule() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('off', 'smpp', false);
         INSERT INTO smsbus.block (id, condition, reason) VALUES (1, 'to_address LIKE ''+1%''', 'no US');
         INSERT INTO smsbus.route (id, position, condition, channel) VALUES
            (1, 10, 'priority > 5', 'fast'),
            (2, 20, 'to_address LIKE ''+31%''', 'off'),
            (3, 30, 'to_address LIKE ''+31%''', 'kpn');",
    )
    .await
    .unwrap();
    assert_eq!(
        explain(
            &c,
            r#"SELECT * FROM smsbus.explain_route('{"to_address": "+31612345678"}'::jsonb)"#
        )
        .await,
        [
            "1 block 1 Some(false) no match",
            "2 route 1 (position 10) Some(false) no match",
            "3 route 2 (position 20) Some(true) match, skipped: channel \"off\" is disabled",
            "4 route 3 (position 30) Some(true) match: kpn can take it",
            "5 decision None queued on kpn (route 3)",
        ]
    );
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body) VALUES ('+12025550123', 'x') RETURNING id",
        &[],
    )
    .await;
    let rows = explain(
        &c,
        &format!("SELECT * FROM smsbus.explain_route({id}::bigint)"),
    )
    .await;
    assert_eq!(rows[0], "1 block 1 Some(true) blocked: no US");
    assert_eq!(
        rows.last().unwrap(),
        "5 decision None blocked by block 1: no US"
    );
    // Explaining takes no quota and changes nothing.
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.channel_usage").await,
        0
    );
    assert_eq!(status_of(&c, id).await, "blocked");
    let e = c
        .batch_execute("SELECT * FROM smsbus.explain_route(999999::bigint)")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("P0002".into(), "message 999999 does not exist".into())
    );
}

#[tokio::test]
async fn rule_changes_apply_to_the_next_statement_even_concurrently() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let other = db.connect().await;
    // Two transactions adding rules at once: both end up compiled.
    c.batch_execute(
        "BEGIN; INSERT INTO smsbus.route (id, position, condition, channel) VALUES (1, 10, 'to_address LIKE ''+31%''', 'kpn');",
    )
    .await
    .unwrap();
    let second = tokio::spawn(async move {
        other
            .batch_execute(
                "INSERT INTO smsbus.route (id, position, condition, channel) VALUES (2, 10, 'to_address LIKE ''+44%''', 'vodafone')",
            )
            .await
            .unwrap();
        other
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second compilation waits for the first"
    );
    c.batch_execute("COMMIT").await.unwrap();
    let other = second.await.unwrap();
    assert_eq!(send_to(&c, "+31612345678").await, queued("kpn", "route 1"));
    assert_eq!(
        send_to(&c, "+441234567890").await,
        queued("vodafone", "route 2")
    );
    // Disabling and deleting rules take effect at once.
    c.batch_execute("UPDATE smsbus.route SET enabled = false WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        send_to(&c, "+31612345678").await.2.as_deref(),
        Some("round robin")
    );
    c.batch_execute("DELETE FROM smsbus.route").await.unwrap();
    assert_eq!(
        send_to(&c, "+441234567890").await.2.as_deref(),
        Some("round robin")
    );
    // Messages that name their channel meet a new blocking rule at once,
    // and are free again when it goes.
    let given = || send(&c, ", to_address, channel", ", '+31612345678', 'kpn'");
    c.batch_execute("INSERT INTO smsbus.block (id, condition) VALUES (4, 'true')")
        .await
        .unwrap();
    assert_eq!(given().await.2.as_deref(), Some("block 4"));
    c.batch_execute("DELETE FROM smsbus.block").await.unwrap();
    assert_eq!(given().await, queued("kpn", "channel given"));
    // The same when another session adds the rule, and inside a
    // transaction that adds one and rolls back.
    other
        .batch_execute("INSERT INTO smsbus.block (id, condition) VALUES (5, 'true')")
        .await
        .unwrap();
    assert_eq!(given().await.2.as_deref(), Some("block 5"));
    other
        .batch_execute("DELETE FROM smsbus.block")
        .await
        .unwrap();
    assert_eq!(given().await, queued("kpn", "channel given"));
    c.batch_execute("BEGIN; INSERT INTO smsbus.block (id, condition) VALUES (6, 'true')")
        .await
        .unwrap();
    assert_eq!(given().await.2.as_deref(), Some("block 6"));
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(given().await, queued("kpn", "channel given"));
}

#[tokio::test]
async fn rules_run_as_admin_and_message_text_is_data() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE private_opt_out (number text PRIMARY KEY);
         INSERT INTO private_opt_out VALUES ('+31600000000');
         GRANT SELECT ON private_opt_out TO smsbus_admin;
         INSERT INTO smsbus.block (id, condition, reason) VALUES
            (1, 'EXISTS (SELECT 1 FROM private_opt_out o WHERE o.number = to_address)', 'opted out');
         INSERT INTO smsbus.route (id, condition, channel) VALUES (1, 'body LIKE ''%''''%''', 'fast');",
    )
    .await
    .unwrap();
    // A sender cannot read the opt-out table, yet the rule applies to its messages.
    let sender = db.connect_as("smsbus_sender").await;
    let e = sender
        .batch_execute("SELECT * FROM private_opt_out")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    let status: String = scalar(
        &sender,
        "INSERT INTO smsbus.message (to_address, body) VALUES ('+31600000000', 'x') RETURNING status::text",
        &[],
    )
    .await;
    assert_eq!(status, "blocked");
    // Quotes and SQL in a message's fields are values, never code.
    let nasty = "'); DROP TABLE smsbus.route; --";
    let row = sender
        .query_one(
            "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', $1)
             RETURNING status::text, channel",
            &[&nasty],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("queued".into(), Some("fast".into()))
    );
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.route").await, 1);
    // Senders cannot write rules.
    let e = sender
        .batch_execute("INSERT INTO smsbus.route (condition, channel) VALUES ('true', 'kpn')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
}

#[tokio::test]
async fn the_examples_run() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/examples");
    for file in ["routes.sql", "route_function.sql"] {
        let sql = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    c.batch_execute(
        "INSERT INTO opt_out VALUES ('+31600000000');
         INSERT INTO premium_customer VALUES ('acme');
         INSERT INTO ported_number VALUES ('+31611111111', 'vodafone');",
    )
    .await
    .unwrap();
    let routes = [
        (", to_address", ", '+31600000000'", "blocked "),
        (
            ", to_address, batch_id",
            ", '+31612345678', 'acme'",
            "queued fast",
        ),
        (", to_address", ", '+31611111111'", "queued vodafone"),
        (
            ", to_address, priority",
            ", '+31612345678', 1",
            "queued fast",
        ),
        (", to_address", ", '+31612345678'", "queued kpn"),
    ];
    for (columns, values, want) in routes {
        let (status, channel, _, _) = send(&c, columns, values).await;
        assert_eq!(
            format!("{status} {}", channel.unwrap_or_default()),
            want,
            "{values}"
        );
    }
    let (_, europe, by, _) = send_to(&c, "+4915112345678").await;
    assert!(
        matches!(europe.as_deref(), Some("vodafone" | "kpn")),
        "{europe:?}"
    );
    assert!(by.is_some_and(|b| b.starts_with("route ")));
}

#[tokio::test]
async fn an_admin_who_is_not_superuser_writes_rules() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let admin = db.connect_as("smsbus_admin").await;
    admin
        .batch_execute(
            "INSERT INTO smsbus.block (id, condition, reason) VALUES (1, 'body = ''stop''', 'stop word');
             INSERT INTO smsbus.route (id, condition, channel) VALUES (1, 'to_address LIKE ''+31%''', 'kpn');
             UPDATE smsbus.route SET channel = 'fast' WHERE id = 1;",
        )
        .await
        .unwrap();
    let explained = explain(
        &admin,
        r#"SELECT * FROM smsbus.explain_route('{"to_address": "+31612345678"}'::jsonb)"#,
    )
    .await;
    assert_eq!(
        explained.last().map(String::as_str),
        Some("3 decision None queued on fast (route 1)")
    );
    assert_eq!(send_to(&c, "+31612345678").await, queued("fast", "route 1"));
    let rerouted: i64 = scalar(&admin, "SELECT smsbus.reroute()", &[]).await;
    assert_eq!(rerouted, 0);
    admin
        .batch_execute("DELETE FROM smsbus.block; DELETE FROM smsbus.route;")
        .await
        .unwrap();
    assert_eq!(
        send_to(&c, "+31612345678").await.2.as_deref(),
        Some("round robin")
    );
}
