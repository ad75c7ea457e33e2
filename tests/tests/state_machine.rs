//! The state machine (docs/ARCHITECTURE.md#the-state-machine), through SQL: every one of the 13 × 13
//! status pairs is tried on a real row; the legal ones pass, every other is
//! refused naming both states. Timestamps and attempts are the extension's.

use smsbus_core::status::Status;
use smsbus_tests::db::{db_error, scalar, TestDb};
use tokio_postgres::Transaction;

/// Brings a fresh message into `status` by legal steps; returns its id.
async fn message_in(c: &Transaction<'_>, status: Status) -> i64 {
    let id_of = |sql: String| async move {
        c.query_one(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get::<_, i64>(0)
    };
    let queued = || {
        id_of("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'kpn') RETURNING id".into())
    };
    let scheduled = || {
        id_of(
            "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
               VALUES ('+31612345678', 'x', 'kpn', now() + interval '1 day') RETURNING id"
                .into(),
        )
    };
    let set = |id: i64, to: &str| {
        let sql = format!("UPDATE smsbus.message SET status = '{to}' WHERE id = {id}");
        async move {
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }
    };
    use Status::*;
    match status {
        Scheduled => scheduled().await,
        Queued => queued().await,
        NoChannel => {
            id_of("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'off') RETURNING id".into()).await
        }
        Blocked | DailyLimit | Expired | Cancelled => {
            let id = scheduled().await;
            set(id, status.as_str()).await;
            id
        }
        Received => {
            id_of("SELECT (smsbus._record_inbound('kpn', ARRAY['+31600000000'], ARRAY['1234'], ARRAY['hi'], ARRAY['r']))[1]".into())
                .await
        }
        Sending | Sent | Failed | Delivered | NotDelivered | NoReport => {
            let id = queued().await;
            set(id, "sending").await;
            match status {
                Sending => {}
                Failed => set(id, "failed").await,
                _ => {
                    set(id, "sent").await;
                    if status != Sent {
                        set(id, status.as_str()).await;
                    }
                }
            }
            id
        }
    }
}

#[tokio::test]
async fn every_pair_of_statuses() {
    let db = TestDb::new().await;
    let mut c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', true), ('off', 'smpp', false)",
    )
        .await
        .unwrap();
    let mut legal = 0;
    for from in Status::ALL {
        for to in Status::ALL {
            if from == to {
                continue;
            }
            let tx = c.transaction().await.unwrap();
            let id = message_in(&tx, from).await;
            let got: String = scalar(
                &tx,
                "SELECT status::text FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await;
            assert_eq!(got, from.as_str());
            let result = tx
                .batch_execute(&format!(
                    "UPDATE smsbus.message SET status = '{to}' WHERE id = {id}"
                ))
                .await;
            match (from.can_become(to), result) {
                (true, Ok(())) => {
                    legal += 1;
                    let (now, last): (String, Option<String>) = {
                        let row = tx
                            .query_one(
                                "SELECT m.status::text,
                                        (SELECT e.from_status::text || '->' || e.to_status::text
                                         FROM smsbus.message_event e WHERE e.message_id = m.id
                                         ORDER BY e.id DESC LIMIT 1)
                                 FROM smsbus.message m WHERE m.id = $1",
                                &[&id],
                            )
                            .await
                            .unwrap();
                        (row.get(0), row.get(1))
                    };
                    assert_eq!(now, to.as_str());
                    assert_eq!(
                        last,
                        Some(format!("{from}->{to}")),
                        "trace of {from} -> {to}"
                    );
                }
                (false, Err(e)) => {
                    assert_eq!(
                        db_error(&e),
                        (
                            "23514".to_owned(),
                            format!("illegal status transition from {from} to {to} (message {id})")
                        )
                    );
                }
                (true, Err(e)) => panic!("{from} -> {to} should be allowed: {e}"),
                (false, Ok(())) => panic!("{from} -> {to} should be refused"),
            }
            tx.rollback().await.unwrap();
        }
    }
    assert_eq!(legal, 24);
}

#[tokio::test]
async fn timestamps_and_attempts_are_maintained() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', true), ('off', 'smpp', false)",
    )
        .await
        .unwrap();
    let id: i64 = scalar(&c, "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'x', 'kpn') RETURNING id",
            &[]).await;
    let c = &c;
    let state = || async move {
        let row = c
            .query_one(
                "SELECT attempts, sent_at IS NOT NULL, delivered_at IS NOT NULL, trigger_status::text
                 FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (
            row.get::<_, i32>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2),
            row.get::<_, String>(3),
        )
    };
    let step = |sql: String| async move { c.batch_execute(&sql).await.unwrap() };
    assert_eq!(state().await, (0, false, false, "none".into()));
    step(format!(
        "UPDATE smsbus.message SET status = 'sending' WHERE id = {id}"
    ))
    .await;
    assert_eq!(state().await, (1, false, false, "none".into()));
    // A retry goes back to the queue; the next claim counts a second attempt.
    step(format!(
        "UPDATE smsbus.message SET status = 'queued' WHERE id = {id}"
    ))
    .await;
    step(format!(
        "UPDATE smsbus.message SET status = 'sending' WHERE id = {id}"
    ))
    .await;
    assert_eq!(state().await, (2, false, false, "none".into()));
    step(format!(
        "UPDATE smsbus.message SET status = 'sent' WHERE id = {id}"
    ))
    .await;
    assert_eq!(state().await, (2, true, false, "notriggers".into()));
    step(format!(
        "UPDATE smsbus.message SET status = 'delivered' WHERE id = {id}"
    ))
    .await;
    assert_eq!(state().await, (2, true, true, "notriggers".into()));
    // Callers cannot write the system's columns.
    step(format!(
        "UPDATE smsbus.message SET attempts = 99, sent_at = NULL, delivered_at = NULL,
             created_at = '2000-01-01', direction = 'in' WHERE id = {id}"
    ))
    .await;
    assert_eq!(state().await, (2, true, true, "notriggers".into()));
    let row = c
        .query_one(
            "SELECT direction, created_at > '2020-01-01' FROM smsbus.message WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("out".into(), true)
    );
}

#[tokio::test]
async fn editing_a_waiting_message_revalidates_it() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', true), ('off', 'smpp', false)",
    )
        .await
        .unwrap();
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
             VALUES ('+31612345678', 'x', 'kpn', now() + interval '1 day') RETURNING id",
        &[],
    )
    .await;
    c.batch_execute(&format!(
        "UPDATE smsbus.message SET to_address = '0031 20 123 4567', body = repeat('ж', 71) WHERE id = {id}"
    ))
    .await
    .unwrap();
    let row = c
        .query_one(
            "SELECT to_address, to_ton, encoding, segments FROM smsbus.message WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "+31201234567");
    assert_eq!(row.get::<_, i16>(1), 1);
    assert_eq!(row.get::<_, String>(2), "ucs2");
    assert_eq!(row.get::<_, i32>(3), 2);
    let err = c
        .batch_execute(&format!(
            "UPDATE smsbus.message SET to_address = 'nobody' WHERE id = {id}"
        ))
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "22023");
}
