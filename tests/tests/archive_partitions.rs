//! The archive by month: messages, parts and trace archived into monthly
//! partitions (UTC), made ahead by maintenance and on demand by
//! archive(); retention (`archiving.keep`) drops whole months; an archive
//! from the release before becomes one partition of the new one.

use smsbus_tests::db::{count, scalar, strings, TestDb};
use tokio_postgres::Client;

/// The archive's partitions of `table`, oldest first.
async fn months(c: &Client, table: &str) -> Vec<String> {
    strings(
        c,
        "SELECT b.partition::text FROM smsbus._archive_bounds($1::text::regclass) b ORDER BY b.lower_bound",
        &[&format!("smsbus.{table}")],
    )
    .await
}

/// One message archived with its part and trace, then copied into each
/// of the `n` months before this one (the 15th, noon UTC) with ids of its
/// own: an archive `n` months deep.
async fn fill_months(c: &Client, n: i32) {
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'seed', 'kpn');
         SELECT smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[max(id)], ARRAY[1], ARRAY['r1']) FROM smsbus.message;
         SELECT smsbus._apply_reports('kpn', ARRAY['r1'], ARRAY['delivered'], ARRAY['stat:DELIVRD']);",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar::<i64>(c, "SELECT smsbus.archive(interval '0')", &[]).await,
        1
    );
    let month = "(date_trunc('month', now() AT TIME ZONE 'UTC') - n * interval '1 month'
                  + interval '14 days 12 hours') AT TIME ZONE 'UTC'";
    c.execute(
        &format!("SELECT smsbus._archive_partitions(min({month}), now()) FROM generate_series(1, $1::int) n"),
        &[&n],
    )
    .await
    .unwrap();
    c.execute(
        "WITH month AS (
             SELECT n, ((date_trunc('month', now() AT TIME ZONE 'UTC') - n * interval '1 month'
                         + interval '14 days 12 hours') AT TIME ZONE 'UTC') AS at
             FROM generate_series(1, $1::int) n
         ), messages AS (
             INSERT INTO smsbus.message_archive
             SELECT (jsonb_populate_record(a, jsonb_build_object(
                         'id', a.id + m.n * 1000, 'created_at', m.at, 'updated_at', m.at))).*
             FROM smsbus.message_archive a, month m
         ), parts AS (
             INSERT INTO smsbus.message_part_archive
             SELECT (jsonb_populate_record(p, jsonb_build_object(
                         'message_id', p.message_id + m.n * 1000, 'submitted_at', m.at))).*
             FROM smsbus.message_part_archive p, month m
         )
         INSERT INTO smsbus.message_event_archive
         SELECT (jsonb_populate_record(e, jsonb_build_object(
                     'id', e.id + m.n * 1000, 'message_id', e.message_id + m.n * 1000, 'at', m.at))).*
         FROM smsbus.message_event_archive e, month m",
        &[&n],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_parts_and_trace_are_archived_by_month() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    fill_months(&c, 2).await;
    // This month's partition of each, and the two before, hold one
    // message each with its part and its four events.
    for table in [
        "message_archive",
        "message_part_archive",
        "message_event_archive",
    ] {
        assert_eq!(months(&c, table).await.len(), 3, "{table}");
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        3
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_part_archive").await,
        3
    );
    let events = count(&c, "SELECT count(*) FROM smsbus.message_event_archive").await;
    assert_eq!(events % 3, 0);
    assert!(events >= 9, "{events}");
    // The trace left the queue's with its message.
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_event").await,
        0
    );
    // Maintenance makes next month ahead; months are named in UTC.
    let next: String = scalar(
        &c,
        "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month',
                        '\"smsbus.message_archive_y\"YYYY\"m\"MM')",
        &[],
    )
    .await;
    c.batch_execute("SELECT smsbus._maintain()").await.unwrap();
    assert_eq!(months(&c, "message_archive").await.last(), Some(&next));
    // Each month has its indexes: a message is found by id in its own.
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = c
        .query(
            "EXPLAIN (COSTS OFF) SELECT * FROM smsbus.message_archive WHERE id = 1001",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("Index")), "{plan:#?}");
}

#[tokio::test]
async fn retention_drops_whole_months_past_keep() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // Fifteen months before this one, and this one.
    fill_months(&c, 15).await;
    let before = months(&c, "message_archive").await;
    assert_eq!(before.len(), 16);
    let queue_before = count(&c, "SELECT count(*) FROM smsbus.message").await;

    c.batch_execute(
        "UPDATE smsbus.archiving SET keep = interval '13 months';
         SELECT smsbus._maintain();",
    )
    .await
    .unwrap();
    // The two oldest months ended more than 13 months ago; the month
    // 13 months back ends less than that ago and stays.
    for table in [
        "message_archive",
        "message_part_archive",
        "message_event_archive",
    ] {
        let after = months(&c, table).await;
        assert_eq!(after.len(), 17 - 2, "{table}: {after:?}");
        assert!(!after.iter().any(|m| before[..2]
            .iter()
            .any(|gone| gone.replace("message_archive", table) == *m)));
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        14
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_part_archive").await,
        14
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message_archive
             WHERE created_at < (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '13 months') AT TIME ZONE 'UTC'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(DISTINCT message_id) FROM smsbus.message_event_archive"
        )
        .await,
        14
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message").await,
        queue_before,
        "the queue untouched"
    );
    let report: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(report.get("errors"), None, "{report}");
}

#[tokio::test]
async fn only_the_owner_context_makes_and_drops_months() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    fill_months(&c, 1).await;
    let month = months(&c, "message_archive").await[0].clone();
    // Months are tables of the owner's, reached through the archive only.
    for role in ["smsbus_sender", "smsbus_admin", "smsbus_worker"] {
        let client = db.connect_as(role).await;
        let refused = client
            .batch_execute(&format!("SELECT * FROM {month}"))
            .await
            .expect_err(role);
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{role}"
        );
        for sql in [
            format!("DROP TABLE {month}"),
            format!("ALTER TABLE {month} RENAME TO gone"),
            "CREATE TABLE smsbus.message_archive_y2099m01 PARTITION OF smsbus.message_archive
             FOR VALUES FROM ('2099-01-01') TO ('2099-02-01')"
                .to_owned(),
        ] {
            assert!(client.batch_execute(&sql).await.is_err(), "{role}: {sql}");
        }
        if role != "smsbus_sender" {
            // Months far ahead or far back are refused even to the worker.
            for sql in [
                "SELECT smsbus._archive_partitions(now(), now() + interval '5 years')",
                "SELECT smsbus._archive_partitions('0001-01-01', now())",
            ] {
                let far = client.batch_execute(sql).await.expect_err(role);
                assert_eq!(
                    far.code(),
                    Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE),
                    "{role}: {sql}"
                );
            }
        } else {
            assert!(client
                .batch_execute("SELECT smsbus._drop_expired_archive(interval '1 day')")
                .await
                .is_err());
        }
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        2
    );
}

#[tokio::test]
async fn the_archive_of_the_release_before_becomes_one_partition() {
    let db = TestDb::empty().await;
    let c = db.connect().await;
    c.batch_execute(
        "CREATE EXTENSION smsbus VERSION '0.1.0';
         INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'seed', 'kpn');
         SELECT smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[max(id)], ARRAY[1], ARRAY['r1']) FROM smsbus.message;
         SELECT smsbus._apply_reports('kpn', ARRAY['r1'], ARRAY['delivered'], ARRAY['stat:DELIVRD']);",
    )
    .await
    .unwrap();
    c.batch_execute("SELECT smsbus.archive(interval '0')")
        .await
        .unwrap();
    // Two years of history, a row a month, in the old archive.
    c.batch_execute(
        "INSERT INTO smsbus.message_archive
         SELECT (jsonb_populate_record(a, jsonb_build_object(
                     'id', a.id + n * 1000, 'created_at', now() - n * interval '1 month'))).*
         FROM smsbus.message_archive a, generate_series(1, 24) n;
         INSERT INTO smsbus.message_part_archive
         SELECT (jsonb_populate_record(p, jsonb_build_object(
                     'message_id', p.message_id + n * 1000, 'submitted_at', now() - n * interval '1 month'))).*
         FROM smsbus.message_part_archive p, generate_series(1, 24) n;",
    )
    .await
    .unwrap();
    let rows = "SELECT string_agg(id || ' ' || body || ' ' || created_at, ', ' ORDER BY id) FROM smsbus.message_archive";
    let before: String = scalar(&c, rows, &[]).await;

    c.batch_execute("ALTER EXTENSION smsbus UPDATE")
        .await
        .unwrap();
    assert_eq!(
        scalar::<String>(&c, rows, &[]).await,
        before,
        "every row kept"
    );
    assert_eq!(
        months(&c, "message_archive").await,
        ["smsbus.message_archive_legacy"]
    );
    assert_eq!(
        months(&c, "message_part_archive").await,
        ["smsbus.message_part_archive_legacy"]
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_part_archive").await,
        25
    );
    // Found by id as before, through its own index.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message_archive WHERE id = 12001"
        )
        .await,
        1
    );
    // New messages archive into it (its range ends with this month),
    // their trace into a month of the new trace archive.
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345679', 'after', 'kpn')
         RETURNING id",
        &[],
    )
    .await;
    c.batch_execute(
        "SELECT smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[max(id)], ARRAY[1], ARRAY['r2']) FROM smsbus.message;
         SELECT smsbus._apply_reports('kpn', ARRAY['r2'], ARRAY['delivered'], ARRAY['stat:DELIVRD']);",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar::<i64>(&c, "SELECT smsbus.archive(interval '0')", &[]).await,
        1
    );
    assert_eq!(
        scalar::<String>(
            &c,
            "SELECT tableoid::regclass::text FROM smsbus.message_archive WHERE id = $1",
            &[&id]
        )
        .await,
        "smsbus.message_archive_legacy"
    );
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM smsbus.message_event_archive WHERE message_id = {id}")
        )
        .await,
        4
    );
    // Retention keeps it while its newest month is not past keep.
    assert_eq!(
        scalar::<i32>(
            &c,
            "SELECT smsbus._drop_expired_archive(interval '1 day')",
            &[]
        )
        .await,
        0
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        26
    );
}
