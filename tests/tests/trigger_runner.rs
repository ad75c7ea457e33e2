//! The worker's trigger runner end to end: real database, the worker as a
//! process. Inbound messages recorded through the worker's own function
//! are armed by the extension and run by the worker; what the scripts did
//! is read back from the database.

use std::time::Duration;

use smsbus_tests::db::{count, scalar, status_of, strings, trigger_status_of, TestDb};
use smsbus_tests::scenario::worker;
use smsbus_tests::triggers::{log_of, outcome, receive, receive_many, setup};
use smsbus_tests::worker::eventually;

#[tokio::test]
async fn chains_run_in_order_see_earlier_changes_and_stop_where_told() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, position, on_status, condition, language, script, final) VALUES
            ('mark', 1, '{received}', 'body <> ''ignore''', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('mark', $1);
               UPDATE smsbus.message SET custom = coalesce(custom, '{}') || '{"seen": true}' WHERE id = $1$$, false),
            ('stop', 2, '{received}', 'custom ? ''seen'' AND body = ''stop here''', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('stop', $1)$$, true),
            ('last', 3, NULL, 'custom ? ''seen''', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('last', $1)$$, false),
            ('outbound-only', 4, '{delivered}', 'true', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('outbound-only', $1)$$, false);"#,
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let hello = receive(&c, "hello").await;
    let stop = receive(&c, "stop here").await;
    let ignored = receive(&c, "ignore").await;
    assert_eq!(outcome(&c, hello, &w).await, ("processed".into(), None));
    // The second trigger's condition saw what the first one wrote.
    assert_eq!(log_of(&c, hello).await, ["mark", "last"]);
    assert_eq!(outcome(&c, stop, &w).await.0, "processed");
    assert_eq!(log_of(&c, stop).await, ["mark", "stop"]);
    assert_eq!(outcome(&c, ignored, &w).await.0, "nomatch");
    assert!(log_of(&c, ignored).await.is_empty());
}

#[tokio::test]
async fn a_failing_script_fails_its_message_alone_and_takes_back_only_its_own_changes() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, position, on_status, condition, language, script) VALUES
            ('first', 1, '{received}', 'true', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('first', $1)$$),
            ('boom', 2, '{received}', 'body = ''boom''', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('boom', $1); SELECT 1 / 0$$),
            ('decide', 3, '{received}', 'body = ''decide''', 'sql',
             $$UPDATE smsbus.message SET trigger_status = 'processed' WHERE id = $1$$),
            ('lua', 4, '{received}', 'body = ''lua''', 'lua', 'function process(m) error("no such customer") end'),
            ('after', 5, '{received}', 'true', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('after', $1)$$);"#,
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let boom = receive(&c, "boom").await;
    let decide = receive(&c, "decide").await;
    let lua = receive(&c, "lua").await;
    let fine = receive(&c, "fine").await;
    assert_eq!(
        outcome(&c, boom, &w).await,
        (
            "failed".into(),
            Some("trigger boom: division by zero".into())
        )
    );
    // The failing trigger's insert is gone; the one before it stays; the
    // chain stopped.
    assert_eq!(log_of(&c, boom).await, ["first"]);
    // A script that decides stops the chain.
    assert_eq!(outcome(&c, decide, &w).await.0, "processed");
    assert_eq!(log_of(&c, decide).await, ["first"]);
    assert_eq!(
        outcome(&c, lua, &w).await,
        (
            "failed".into(),
            Some("trigger lua: lua:1: no such customer".into())
        )
    );
    // The worker goes on with the next message.
    assert_eq!(outcome(&c, fine, &w).await.0, "processed");
    assert_eq!(log_of(&c, fine).await, ["first", "after"]);
}

#[tokio::test]
async fn a_trigger_that_moves_the_message_on_runs_the_next_status_chain() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, position, on_status, language, script) VALUES
            ('promote', 1, '{sent}', 'sql', $$UPDATE smsbus.message SET status = 'delivered' WHERE id = $1$$),
            ('on-delivered', 2, '{delivered}', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('on-delivered', $1)$$);
           UPDATE smsbus.trigger SET condition = $$body <> 'quiet'$$ WHERE name = 'on-delivered';"#,
    )
    .await
    .unwrap();
    // Enabled, so the message queues; without a host its driver never
    // runs, and the test plays the channel with the worker's functions.
    c.batch_execute("UPDATE smsbus.channel SET enabled = true")
        .await
        .unwrap();
    let w = worker(&db, "w1");
    let ids: Vec<i64> = strings(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel)
         VALUES ('+31612345678', 'x', 'kpn'), ('+31612345679', 'quiet', 'kpn') RETURNING id::text",
        &[],
    )
    .await
    .iter()
    .map(|id| id.parse().unwrap())
    .collect();
    let (id, quiet) = (ids[0], ids[1]);
    c.batch_execute("SELECT count(*) FROM smsbus._claim('kpn', 'test', 10, interval '1 minute')")
        .await
        .unwrap();
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, ARRAY[1, 1], ARRAY['r1', 'r2'])",
        &[&ids],
    )
    .await
    .unwrap();
    assert_eq!(outcome(&c, id, &w).await.0, "processed");
    assert_eq!(log_of(&c, id).await, ["on-delivered"]);
    // The delivered chain matched nothing, but the sent chain ran.
    assert_eq!(outcome(&c, quiet, &w).await.0, "processed");
    assert!(log_of(&c, quiet).await.is_empty());
    assert_eq!(status_of(&c, id).await, "delivered");
}

#[tokio::test]
async fn a_failed_chain_is_in_the_trace() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES
            ('broken', '{received}', 'sql', 'SELECT 1 / 0');",
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let id = receive(&c, "hello").await;
    assert_eq!(outcome(&c, id, &w).await.0, "failed");
    let detail: String = c
        .query_one(
            "SELECT detail FROM smsbus.message_event WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detail, "triggers failed: trigger broken: division by zero");
}

#[tokio::test]
async fn many_messages_at_once_each_chain_in_order() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, position, on_status, language, script) VALUES
            ('a', 1, '{received}', 'sql', $$INSERT INTO public.log (trigger, message_id) VALUES ('a', $1)$$),
            ('b', 2, '{received}', 'sql', $$INSERT INTO public.log (trigger, message_id) VALUES ('b', $1)$$),
            ('c', 3, '{received}', 'sql', $$INSERT INTO public.log (trigger, message_id) VALUES ('c', $1)$$);"#,
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let ids = receive_many(&c, 250).await;
    assert_eq!(ids.len(), 250);
    for &id in &ids {
        assert_eq!(outcome(&c, id, &w).await.0, "processed");
    }
    let out_of_order: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT message_id, string_agg(trigger, '' ORDER BY n) AS seq
                                   FROM public.log GROUP BY message_id) s WHERE seq <> 'abc'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(out_of_order, 0);
    let logged: i64 = c
        .query_one("SELECT count(*) FROM public.log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 750);
}

#[tokio::test]
async fn a_changed_trigger_counts_from_the_next_message_on() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES
            ('versioned', '{received}', 'sql', $$INSERT INTO public.log (trigger, message_id) VALUES ('v1', $1)$$);"#,
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let first = receive(&c, "one").await;
    assert_eq!(outcome(&c, first, &w).await.0, "processed");
    c.batch_execute(
        r#"UPDATE smsbus.trigger
           SET script = $$INSERT INTO public.log (trigger, message_id) VALUES ('v2', $1)$$
           WHERE name = 'versioned';"#,
    )
    .await
    .unwrap();
    let second = receive(&c, "two").await;
    assert_eq!(outcome(&c, second, &w).await.0, "processed");
    assert_eq!(log_of(&c, first).await, ["v1"]);
    assert_eq!(log_of(&c, second).await, ["v2"]);
    // Disabled: messages are no longer armed for it.
    c.batch_execute("UPDATE smsbus.trigger SET enabled = false")
        .await
        .unwrap();
    let third = receive(&c, "three").await;
    assert_eq!(trigger_status_of(&c, third).await, "notriggers");
}

#[tokio::test]
async fn a_script_gets_the_message_id_as_bigint_even_where_untyped() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES
            ('untyped', '{received}', 'sql',
             $$SELECT $1; INSERT INTO public.log (trigger, message_id) SELECT 'untyped', $1$$);"#,
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let id = receive(&c, "hello").await;
    assert_eq!(outcome(&c, id, &w).await, ("processed".into(), None));
    assert_eq!(log_of(&c, id).await, ["untyped"]);
}

/// A slow group's messages stay locked while it runs: maintenance, arming
/// again the chains a dead worker left processing, skips them, so none
/// runs twice.
#[tokio::test]
async fn a_slow_groups_chains_are_not_armed_again_while_it_runs() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        r#"INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES
            ('slow', '{received}', 'sql',
             $$INSERT INTO public.log (trigger, message_id) VALUES ('slow', $1); SELECT pg_sleep(1)$$);"#,
    )
    .await
    .unwrap();
    let first = receive(&c, "one").await;
    let second = receive(&c, "two").await;
    let w = worker(&db, "w1");
    let sleeping = eventually(Duration::from_secs(20), || async {
        count(
            &c,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .await
            == 1
    })
    .await;
    assert!(sleeping, "the first script never ran\n{}", w.log());
    let armed: i32 = scalar(&c, "SELECT smsbus._resume_triggers(interval '0')", &[]).await;
    assert_eq!(armed, 0, "chains of a running group armed again");
    for id in [first, second] {
        assert_eq!(outcome(&c, id, &w).await.0, "processed");
        assert_eq!(log_of(&c, id).await, ["slow"]);
    }
}
