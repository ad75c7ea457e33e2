//! The worker's side of the database: claims with leases, outcomes in
//! batches, delivery reports (also early ones), inbound messages, and the
//! maintenance steps.

use smsbus_tests::db::{count, scalar, status_of, wait_until_blocked, TestDb};
use tokio_postgres::Client;

async fn setup(db: &TestDb) -> Client {
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp'), ('other', 'smpp');",
    )
    .await
    .unwrap();
    c
}

async fn queue(c: &Client, n: i32, channel: &str) -> Vec<i64> {
    c.query(
        "INSERT INTO smsbus.message (to_address, body, channel)
         SELECT '+3161234' || lpad(g::text, 4, '0'), 'msg ' || g, $2 FROM generate_series(1, $1) g
         RETURNING id",
        &[&n, &channel],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn claim(c: &Client, channel: &str, worker: &str, limit: i32) -> Vec<i64> {
    c.query(
        "SELECT id FROM smsbus._claim($1, $2, $3, interval '1 minute')",
        &[&channel, &worker, &limit],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn last_event(c: &Client, id: i64) -> (String, String, Option<String>) {
    let row = c
        .query_one(
            "SELECT to_status::text, actor, detail FROM smsbus.message_event
             WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn claim_takes_priority_then_age_and_sets_a_lease() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let low = queue(&c, 3, "kpn").await;
    let high: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel, priority)
             VALUES ('+31612345678', 'urgent', 'kpn', 2) RETURNING id",
        &[],
    )
    .await;
    queue(&c, 2, "other").await;
    let got = claim(&c, "kpn", "w1", 3).await;
    assert_eq!(got, vec![high, low[0], low[1]]);
    let row = c
        .query_one(
            "SELECT status::text, claimed_by, claimed_until > now() + interval '50 seconds', attempts
             FROM smsbus.message WHERE id = $1",
            &[&high],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sending");
    assert_eq!(row.get::<_, String>(1), "w1");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, i32>(3), 1);
    // The rest, then nothing; the other channel's messages are not touched.
    assert_eq!(claim(&c, "kpn", "w1", 10).await, vec![low[2]]);
    assert!(claim(&c, "kpn", "w1", 10).await.is_empty());
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE channel = 'other' AND status = 'queued'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn concurrent_claims_never_share_a_message() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    queue(&c, 10, "kpn").await;
    // Worker A holds its claim open in a transaction; B skips those rows.
    let mut a = db.connect().await;
    let b = db.connect().await;
    let tx = a.transaction().await.unwrap();
    let a_ids: Vec<i64> = tx
        .query(
            "SELECT id FROM smsbus._claim('kpn', 'a', 4, interval '1 minute')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let b_ids = claim(&b, "kpn", "b", 100).await;
    assert_eq!(a_ids.len(), 4);
    assert_eq!(b_ids.len(), 6);
    assert!(a_ids.iter().all(|id| !b_ids.contains(id)));
    tx.commit().await.unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'sending'"
        )
        .await,
        10
    );
}

#[tokio::test]
async fn claim_expires_messages_past_their_validity() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids: Vec<i64> = c
        .query(
            "INSERT INTO smsbus.message (to_address, body, channel, valid_until) VALUES
                ('+31612345678', 'late', 'kpn', now() + interval '50 milliseconds'),
                ('+31612345678', 'fine', 'kpn', now() + interval '1 hour')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(claim(&c, "kpn", "w", 10).await, vec![ids[1]]);
    assert_eq!(status_of(&c, ids[0]).await, "expired");
    assert_eq!(
        last_event(&c, ids[0]).await.2.as_deref(),
        Some("validity period ended before submission")
    );
}

#[tokio::test]
async fn outcomes_in_batches() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 4, "kpn").await;
    claim(&c, "kpn", "w", 10).await;
    // Message 0 has two parts, message 1 one; 2 fails; 3 is retried later.
    let sent: i32 = scalar(
        &c,
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[
            &vec![ids[0], ids[0], ids[1]],
            &vec![1i32, 2, 1],
            &vec!["r0a", "r0b", "r1"],
        ],
    )
    .await;
    assert_eq!(sent, 2);
    let failed: i32 = scalar(
        &c,
        "SELECT smsbus._mark_failed($1, $2)",
        &[
            &vec![ids[2]],
            &vec!["0x0000000B: invalid destination address (ESME_RINVDSTADR)"],
        ],
    )
    .await;
    assert_eq!(failed, 1);
    let retried: i32 = scalar(
        &c,
        "SELECT smsbus._mark_retry($1, $2, $3)",
        &[
            &vec![ids[3]],
            &vec!["0x00000058: throttled"],
            &vec![3600.0f64],
        ],
    )
    .await;
    assert_eq!(retried, 1);

    let row = c
        .query_one(
            "SELECT status::text, reference, sent_at IS NOT NULL FROM smsbus.message WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2)
        ),
        ("sent".into(), "r0a".into(), true)
    );
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM smsbus.message_part WHERE message_id = {}",
                ids[0]
            )
        )
        .await,
        2
    );
    assert_eq!(
        last_event(&c, ids[0]).await.2.as_deref(),
        Some("reference r0a")
    );
    assert_eq!(status_of(&c, ids[2]).await, "failed");
    assert_eq!(
        last_event(&c, ids[2]).await.2.as_deref(),
        Some("0x0000000B: invalid destination address (ESME_RINVDSTADR)")
    );
    // The retried message waits for its delay before it can be claimed.
    assert_eq!(status_of(&c, ids[3]).await, "queued");
    assert!(claim(&c, "kpn", "w", 10).await.is_empty());
    c.batch_execute(&format!(
        "UPDATE smsbus.message SET scheduled_at = now() WHERE id = {}",
        ids[3]
    ))
    .await
    .unwrap();
    assert_eq!(claim(&c, "kpn", "w", 10).await, vec![ids[3]]);
    let attempts: i32 = scalar(
        &c,
        "SELECT attempts FROM smsbus.message WHERE id = $1",
        &[&ids[3]],
    )
    .await;
    assert_eq!(attempts, 2);
    // An outcome for a message that is not in flight changes nothing.
    let again: i32 = scalar(
        &c,
        "SELECT smsbus._mark_failed($1, $2)",
        &[&vec![ids[0]], &vec!["late"]],
    )
    .await;
    assert_eq!(again, 0);
    assert_eq!(status_of(&c, ids[0]).await, "sent");
}

async fn report(c: &Client, channel: &str, refs: &[&str], statuses: &[&str]) -> i32 {
    let details: Vec<Option<String>> = statuses.iter().map(|s| Some(format!("stat:{s}"))).collect();
    scalar(
        c,
        "SELECT smsbus._apply_reports($1, $2, $3, $4)",
        &[&channel, &refs, &statuses, &details],
    )
    .await
}

#[tokio::test]
async fn delivery_reports_per_part() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 2, "kpn").await;
    claim(&c, "kpn", "w", 10).await;
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[
            &vec![ids[0], ids[0], ids[1], ids[1]],
            &vec![1i32, 2, 1, 2],
            &vec!["a1", "a2", "b1", "b2"],
        ],
    )
    .await
    .unwrap();
    // One part delivered: the message still waits for the other.
    assert_eq!(report(&c, "kpn", &["a1"], &["delivered"]).await, 1);
    assert_eq!(status_of(&c, ids[0]).await, "sent");
    assert_eq!(report(&c, "kpn", &["a2"], &["delivered"]).await, 1);
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
    // One part not delivered is enough.
    assert_eq!(report(&c, "kpn", &["b2"], &["notdelivered"]).await, 1);
    assert_eq!(status_of(&c, ids[1]).await, "notdelivered");
    let err: Option<String> = scalar(
        &c,
        "SELECT last_error FROM smsbus.message WHERE id = $1",
        &[&ids[1]],
    )
    .await;
    assert_eq!(err.as_deref(), Some("stat:notdelivered"));
    // The same reference on another channel is another message.
    assert_eq!(report(&c, "other", &["b1"], &["delivered"]).await, 0);
    // A repeated report for a finished part is ignored, not parked.
    assert_eq!(report(&c, "kpn", &["a1"], &["notdelivered"]).await, 0);
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.pending_report WHERE reference = 'a1'"
        )
        .await,
        0
    );
}

/// A message on `kpn` sent in two parts, `p1` and `p2`; its id.
async fn sent_in_two_parts(c: &Client) -> i64 {
    let ids = queue(c, 1, "kpn").await;
    claim(c, "kpn", "w", 10).await;
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&vec![ids[0], ids[0]], &vec![1i32, 2], &vec!["p1", "p2"]],
    )
    .await
    .unwrap();
    ids[0]
}

/// Reports for the two parts of one message applied at the same time, in
/// two transactions (two webhook calls): the second waits for the first,
/// then sees both parts delivered and delivers the message. Without the
/// wait each would miss the other's part and the message stay sent.
#[tokio::test]
async fn reports_for_two_parts_at_once_deliver_the_message() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let id = sent_in_two_parts(&c).await;
    let first = db.connect().await;
    let second = db.connect().await;
    first.batch_execute("BEGIN").await.unwrap();
    assert_eq!(report(&first, "kpn", &["p1"], &["delivered"]).await, 1);
    second.batch_execute("BEGIN").await.unwrap();
    let second_pid: i32 = scalar(&second, "SELECT pg_backend_pid()", &[]).await;
    let applying = tokio::spawn(async move {
        let matched = report(&second, "kpn", &["p2"], &["delivered"]).await;
        second.batch_execute("COMMIT").await.unwrap();
        matched
    });
    wait_until_blocked(&c, second_pid).await;
    first.batch_execute("COMMIT").await.unwrap();
    assert_eq!(applying.await.unwrap(), 1);
    assert_eq!(status_of(&c, id).await, "delivered");
}

/// A part's DELIVRD and a late ENROUTE for it applied at the same time
/// (a provider posts "sent" and "delivered" milliseconds apart, to two
/// workers): the ENROUTE, waiting for the DELIVRD's transaction, then
/// finds the part final and leaves it so; the other part's report still
/// delivers the message.
#[tokio::test]
async fn a_late_intermediate_report_does_not_undo_a_final_one_applied_at_once() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let id = sent_in_two_parts(&c).await;
    let first = db.connect().await;
    let second = db.connect().await;
    first.batch_execute("BEGIN").await.unwrap();
    assert_eq!(report(&first, "kpn", &["p1"], &["delivered"]).await, 1);
    let second_pid: i32 = scalar(&second, "SELECT pg_backend_pid()", &[]).await;
    let applying = tokio::spawn(async move { report(&second, "kpn", &["p1"], &["enroute"]).await });
    wait_until_blocked(&c, second_pid).await;
    first.batch_execute("COMMIT").await.unwrap();
    assert_eq!(applying.await.unwrap(), 0);
    let part1: String = scalar(
        &c,
        "SELECT status FROM smsbus.message_part WHERE message_id = $1 AND part = 1",
        &[&id],
    )
    .await;
    assert_eq!(part1, "delivered");
    assert_eq!(report(&c, "kpn", &["p2"], &["delivered"]).await, 1);
    assert_eq!(status_of(&c, id).await, "delivered");
    // Not parked either: its part exists and is final.
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.pending_report").await,
        0
    );
}

/// A set of inbound parts expired by maintenance just as its last part
/// arrives: the part waits for the expiry, then finds the set gone and
/// starts a new one. One message for the parts that came, never also the
/// whole text a second time.
#[tokio::test]
async fn a_set_expired_while_its_last_part_arrives_is_received_once() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let part = "SELECT smsbus._record_inbound_parts('kpn', ARRAY['+31612345678'], ARRAY['4455'], \
                ARRAY[7], ARRAY[3], ARRAY[$1::int], ARRAY[$2::text])";
    for (seq, body) in [(1i32, "one "), (2, "two ")] {
        c.execute(part, &[&seq, &body]).await.unwrap();
    }
    let expiring = db.connect().await;
    expiring.batch_execute("BEGIN").await.unwrap();
    let expired: i32 = scalar(
        &expiring,
        "SELECT smsbus._expire_inbound_parts(interval '0')",
        &[],
    )
    .await;
    assert_eq!(expired, 1);
    let late = db.connect().await;
    let late_pid: i32 = scalar(&late, "SELECT pg_backend_pid()", &[]).await;
    let arriving = tokio::spawn(async move {
        late.execute(part, &[&3i32, &"three"]).await.unwrap();
    });
    wait_until_blocked(&c, late_pid).await;
    expiring.batch_execute("COMMIT").await.unwrap();
    arriving.await.unwrap();
    let received: Vec<(String, Option<String>)> = c
        .query(
            "SELECT body, last_error FROM smsbus.message WHERE direction = 'in'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        received,
        [(
            "one two ".to_owned(),
            Some("incomplete: parts 1, 2 of 3 received".to_owned())
        )]
    );
    let waiting: Vec<i32> = c
        .query("SELECT seq FROM smsbus.inbound_part", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(waiting, [3]);
}

/// A part's number, its report, and the message's status after it.
type Step = (i32, &'static str, &'static str);

/// A channel's `report_parts` says which parts' reports decide a message
/// sent in three parts, for providers that report only one of them.
#[tokio::test]
async fn report_parts_decides_which_receipts_count() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    // Per policy, each part's report in turn and the message's status
    // after it.
    let cases: [(&str, &[Step]); 5] = [
        (
            "all",
            &[
                (1, "delivered", "sent"),
                (3, "delivered", "sent"),
                (2, "delivered", "delivered"),
            ],
        ),
        (
            "first",
            &[(2, "notdelivered", "sent"), (1, "delivered", "delivered")],
        ),
        (
            "last",
            &[
                (1, "delivered", "sent"),
                (3, "notdelivered", "notdelivered"),
            ],
        ),
        (
            "any",
            &[(2, "enroute", "sent"), (2, "delivered", "delivered")],
        ),
        (
            "any",
            &[
                (3, "notdelivered", "notdelivered"),
                (1, "delivered", "notdelivered"),
            ],
        ),
    ];
    for (n, (policy, steps)) in cases.iter().enumerate() {
        let channel = format!("c{n}");
        c.execute(
            "INSERT INTO smsbus.channel (name, kind, config) VALUES ($1, 'smpp', jsonb_build_object('report_parts', $2::text))",
            &[&channel, policy],
        )
        .await
        .unwrap();
        let id = queue(&c, 1, &channel).await[0];
        claim(&c, &channel, "w", 10).await;
        let refs: Vec<String> = (1..=3).map(|p| format!("{channel}-{p}")).collect();
        c.execute(
            "SELECT smsbus._mark_sent($1, $2, $3, $4)",
            &[&channel, &vec![id, id, id], &vec![1i32, 2, 3], &refs],
        )
        .await
        .unwrap();
        for (part, status, expected) in steps.iter() {
            report(
                &c,
                &channel,
                &[refs[*part as usize - 1].as_str()],
                &[status],
            )
            .await;
            assert_eq!(
                status_of(&c, id).await,
                *expected,
                "{policy}: after part {part} {status}"
            );
        }
    }
}

/// A report that arrives while the _mark_sent recording its part is still
/// uncommitted sees no part and is parked; _mark_sent looked for parked
/// reports before that one existed. Maintenance applies it once the part
/// is there: nothing is lost, and the hot path takes no lock.
#[tokio::test]
async fn a_report_racing_the_uncommitted_submit_outcome_is_applied() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 1, "kpn").await;
    claim(&c, "kpn", "w", 10).await;
    let writer = db.connect().await;
    writer.batch_execute("BEGIN").await.unwrap();
    writer
        .execute(
            "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
            &[&vec![ids[0]], &vec![1i32], &vec!["race"]],
        )
        .await
        .unwrap();
    // Does not wait for the writer.
    assert_eq!(report(&c, "kpn", &["race"], &["delivered"]).await, 0);
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(status_of(&c, ids[0]).await, "sent");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.pending_report").await,
        1
    );
    let done: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(done["parked_reports_applied"], 1);
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.pending_report").await,
        0
    );
}

#[tokio::test]
async fn a_report_before_the_submit_outcome_is_applied_later() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 1, "kpn").await;
    claim(&c, "kpn", "w", 10).await;
    // The SMSC answered and reported before the batching writer recorded
    // the submission.
    assert_eq!(report(&c, "kpn", &["early"], &["delivered"]).await, 0);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.pending_report").await,
        1
    );
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&vec![ids[0]], &vec![1i32], &vec!["early"]],
    )
    .await
    .unwrap();
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.pending_report").await,
        0
    );
    let trace: Vec<String> = c
        .query(
            "SELECT to_status::text FROM smsbus.message_event WHERE message_id = $1 ORDER BY id",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(trace, ["queued", "sending", "sent", "delivered"]);
}

#[tokio::test]
async fn an_inbound_message_the_provider_names_is_stored_once() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let record = |bodies: Vec<&'static str>, references: Vec<Option<&'static str>>| {
        let c = &c;
        async move {
            let from = vec!["+31612345678"; bodies.len()];
            let to = vec![Some("4455"); bodies.len()];
            scalar::<Vec<i64>>(
                c,
                "SELECT smsbus._record_inbound('kpn', $1, $2, $3, $4)",
                &[&from, &to, &bodies, &references],
            )
            .await
        }
    };
    // Named and unnamed side by side, one name twice in the batch.
    let first = record(
        vec!["a", "b", "a again", "c"],
        vec![Some("p-1"), None, Some("p-1"), None],
    )
    .await;
    assert_eq!(first.len(), 4);
    assert_eq!(first[0], first[2], "one row for p-1: {first:?}");
    assert!(first[1] != first[3] && first[1] != first[0]);
    // Posted again later: the first row's id, no new row.
    let again = record(vec!["a", "d"], vec![Some("p-1"), None]).await;
    assert_eq!(again[0], first[0]);
    let rows: Vec<(String, Option<String>)> = c
        .query(
            "SELECT body, reference FROM smsbus.message WHERE direction = 'in' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(bodies, ["b", "c", "a", "d"]);
    // Another channel may use the same name for its own message.
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('rest', 'http')")
        .await
        .unwrap();
    let other: Vec<i64> = scalar(
        &c,
        "SELECT smsbus._record_inbound('rest', ARRAY['+31612345678'], ARRAY['4455'], ARRAY['x'], ARRAY['p-1'])",
        &[],
    )
    .await;
    assert_ne!(other[0], first[0]);
}

#[tokio::test]
async fn inbound_messages_are_recorded() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids: Vec<i64> = scalar(
        &c,
        "SELECT smsbus._record_inbound('kpn', $1, $2, $3, $4, NULL, $5)",
        &[
            &vec!["+31612345678", "MyBank"],
            &vec![Some("4455"), None],
            &vec!["STOP", "Ваш код 1234"],
            &vec!["in-1", "in-2"],
            &vec![
                serde_json::json!({"smsc_time": "2026-11-25T10:00:00+01:00"}),
                serde_json::json!(null),
            ],
        ],
    )
    .await;
    assert_eq!(ids.len(), 2);
    let rows = c
        .query(
            "SELECT direction, status::text, from_address, from_ton, to_address, body, encoding, reference,
                    received_at IS NOT NULL, custom->>'smsc_time'
             FROM smsbus.message WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "in");
    assert_eq!(rows[0].get::<_, String>(1), "received");
    assert_eq!(rows[0].get::<_, String>(2), "+31612345678");
    assert_eq!(rows[0].get::<_, i16>(3), 1);
    assert_eq!(rows[0].get::<_, Option<String>>(4).as_deref(), Some("4455"));
    assert_eq!(rows[0].get::<_, String>(5), "STOP");
    assert_eq!(rows[0].get::<_, String>(7), "in-1");
    assert!(rows[0].get::<_, bool>(8));
    assert_eq!(
        rows[0].get::<_, Option<String>>(9).as_deref(),
        Some("2026-11-25T10:00:00+01:00")
    );
    assert_eq!(rows[1].get::<_, String>(2), "MyBank");
    assert_eq!(rows[1].get::<_, i16>(3), 5);
    assert_eq!(rows[1].get::<_, Option<String>>(4), None);
    assert_eq!(rows[1].get::<_, String>(6), "ucs2");
    // Whatever the peer sent is kept: a malformed originator is not refused.
    c.execute(
        "SELECT smsbus._record_inbound('kpn', ARRAY['??? not a number ???'], ARRAY[NULL], ARRAY[''], ARRAY[NULL])",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE direction = 'in'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn expired_leases_go_back_to_the_queue_marked_unknown() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 3, "kpn").await;
    c.query(
        "SELECT id FROM smsbus._claim('kpn', 'dead-worker', 2, interval '10 milliseconds')",
        &[],
    )
    .await
    .unwrap();
    c.query(
        "SELECT id FROM smsbus._claim('kpn', 'live-worker', 1, interval '1 hour')",
        &[],
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let n: i32 = scalar(&c, "SELECT smsbus._expire_leases()", &[]).await;
    assert_eq!(n, 2);
    assert_eq!(status_of(&c, ids[0]).await, "queued");
    assert_eq!(status_of(&c, ids[2]).await, "sending");
    let (_, _, detail) = last_event(&c, ids[0]).await;
    assert_eq!(
        detail.as_deref(),
        Some("lease of dead-worker expired: outcome of the submission unknown")
    );
    // Released on shutdown.
    let n: i32 = scalar(&c, "SELECT smsbus._release('live-worker')", &[]).await;
    assert_eq!(n, 1);
    assert_eq!(status_of(&c, ids[2]).await, "queued");
}

#[tokio::test]
async fn maintenance_promotes_due_messages_and_marks_noreport() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "UPDATE smsbus.channel SET config = '{\"report_timeout_s\": 0}' WHERE name = 'other';
         SET smsbus.actor = 'worker:test';",
    )
    .await
    .unwrap();
    let ids: Vec<i64> = c
        .query(
            "INSERT INTO smsbus.message (to_address, body, channel, scheduled_at, valid_until) VALUES
                ('+31612345678', 'due', 'kpn', now() + interval '100 milliseconds', NULL),
                ('+31612345678', 'no channel', NULL, now() + interval '100 milliseconds', NULL),
                ('+31612345678', 'stale', 'kpn', now() + interval '100 milliseconds', now() + interval '150 milliseconds'),
                ('+31612345678', 'later', 'kpn', now() + interval '1 hour', NULL)
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sent = queue(&c, 2, "other").await;
    claim(&c, "other", "w", 10).await;
    c.execute(
        "SELECT smsbus._mark_sent('other', $1, $2, $3)",
        &[&sent, &vec![1i32, 1], &vec!["s1", "s2"]],
    )
    .await
    .unwrap();
    c.batch_execute(&format!(
        "UPDATE smsbus.message SET request_report = false WHERE id = {}",
        sent[1]
    ))
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let done: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(done["promoted"], 3);
    assert_eq!(done["noreport"], 1);
    assert_eq!(status_of(&c, ids[0]).await, "queued");
    // Without a channel, routed when due: round robin, no rules here.
    let routed: String = scalar(
        &c,
        "SELECT status::text || ' ' || routed_by FROM smsbus.message WHERE id = $1",
        &[&ids[1]],
    )
    .await;
    assert_eq!(routed, "queued round robin");
    assert_eq!(status_of(&c, ids[2]).await, "expired");
    assert_eq!(status_of(&c, ids[3]).await, "scheduled");
    assert_eq!(status_of(&c, sent[0]).await, "noreport");
    // Without a report requested, sent is final.
    assert_eq!(status_of(&c, sent[1]).await, "sent");
    assert_eq!(
        last_event(&c, ids[0]).await,
        (
            "queued".into(),
            "worker:test".into(),
            Some("channel given".into())
        )
    );
}

#[tokio::test]
async fn archive_moves_finished_messages_only() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 5, "kpn").await;
    claim(&c, "kpn", "w", 3).await;
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&vec![ids[0]], &vec![1i32], &vec!["x"]],
    )
    .await
    .unwrap();
    c.execute(
        "SELECT smsbus._mark_failed($1, $2)",
        &[&vec![ids[1]], &vec!["nope"]],
    )
    .await
    .unwrap();
    report(&c, "kpn", &["x"], &["delivered"]).await;
    // delivered + failed are finished; sending and queued are not.
    let moved: i64 = scalar(&c, "SELECT smsbus.archive(interval '0', 1)", &[]).await;
    assert_eq!(moved, 1);
    let moved: i64 = scalar(&c, "SELECT smsbus.archive(interval '0')", &[]).await;
    assert_eq!(moved, 1);
    let moved: i64 = scalar(&c, "SELECT smsbus.archive(interval '0')", &[]).await;
    assert_eq!(moved, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 3);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_archive").await,
        2
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_part_archive").await,
        1
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_part").await,
        0
    );
    // Recent messages are kept until they are old enough.
    let moved: i64 = scalar(&c, "SELECT smsbus.archive(interval '1 day')", &[]).await;
    assert_eq!(moved, 0);
    let row = c
        .query_one(
            "SELECT status::text, reference FROM smsbus.message_archive WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("delivered".into(), "x".into())
    );
}

#[tokio::test]
async fn queue_depth_view() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    queue(&c, 3, "kpn").await;
    queue(&c, 1, "other").await;
    claim(&c, "kpn", "w", 1).await;
    let rows = c
        .query(
            "SELECT channel, status::text, messages FROM smsbus.queue_depth ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("kpn".into(), "queued".into(), 2),
            ("kpn".into(), "sending".into(), 1),
            ("other".into(), "queued".into(), 1)
        ]
    );
    let overview = c
        .query_one(
            "SELECT link, queued, sending FROM smsbus.channel_overview WHERE name = 'kpn'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            overview.get::<_, String>(0),
            overview.get::<_, i64>(1),
            overview.get::<_, i64>(2)
        ),
        ("disconnected".into(), 2, 1)
    );
}

#[tokio::test]
async fn the_worker_role_can_run_the_queue() {
    let db = TestDb::new().await;
    let admin = setup(&db).await;
    queue(&admin, 2, "kpn").await;
    let w = db.connect_as("smsbus_worker").await;
    let ids = claim(&w, "kpn", "w", 10).await;
    assert_eq!(ids.len(), 2);
    w.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&ids, &vec![1i32, 1], &vec!["a", "b"]],
    )
    .await
    .unwrap();
    assert_eq!(
        report(&w, "kpn", &["a", "b"], &["delivered", "delivered"]).await,
        2
    );
    w.execute("SELECT smsbus._record_inbound('kpn', ARRAY['+31612345678'], ARRAY['1234'], ARRAY['hi'], ARRAY['r'])", &[])
        .await
        .unwrap();
    w.query_one("SELECT smsbus._maintain()", &[]).await.unwrap();
    // ... and a sender can queue with send() and read the outcome.
    let s = db.connect_as("smsbus_sender").await;
    let id: i64 = scalar(
        &s,
        "SELECT smsbus.send('+31612345678', 'hi', channel => 'kpn')",
        &[],
    )
    .await;
    assert_eq!(status_of(&s, id).await, "queued");
    let names = s
        .query("SELECT name FROM smsbus.channel ORDER BY name", &[])
        .await
        .unwrap();
    assert_eq!(names.len(), 2);
    assert_eq!(
        count(&s, "SELECT count(*) FROM smsbus.queue_depth").await,
        1
    );
}

#[tokio::test]
async fn leases_are_renewed_only_for_their_holder() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    queue(&c, 2, "kpn").await;
    let mine = claim(&c, "kpn", "me", 1).await;
    let theirs = claim(&c, "kpn", "them", 1).await;
    let renewed: i32 = scalar(
        &c,
        "SELECT smsbus._renew_leases('me', $1, interval '1 hour')",
        &[&vec![mine[0], theirs[0]]],
    )
    .await;
    assert_eq!(renewed, 1);
    let left = count(
        &c,
        &format!("SELECT count(*) FROM smsbus.message WHERE id = {} AND claimed_until > now() + interval '50 minutes'", mine[0]),
    )
    .await;
    assert_eq!(left, 1);
    let untouched = count(
        &c,
        &format!("SELECT count(*) FROM smsbus.message WHERE id = {} AND claimed_until < now() + interval '2 minutes'", theirs[0]),
    )
    .await;
    assert_eq!(untouched, 1);
}

#[tokio::test]
async fn a_parked_report_in_the_other_base_is_applied_when_its_part_arrives() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 1, "kpn").await;
    claim(&c, "kpn", "w", 10).await;
    // The receipt says 6699 (decimal); the submit_sm_resp said 1A2B.
    let matched: i32 = scalar(
        &c,
        "SELECT smsbus._apply_reports('kpn', ARRAY['6699'], ARRAY['delivered'], ARRAY['stat:DELIVRD'], ARRAY['1a2b'])",
        &[],
    )
    .await;
    assert_eq!(matched, 0);
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&vec![ids[0]], &vec![1i32], &vec!["1A2B"]],
    )
    .await
    .unwrap();
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.pending_report").await,
        0
    );
}

/// With dlr_id_format auto, the other base of an id can be another
/// message's id (hex "1234" is decimal 4660; decimal "4660" could be a hex
/// id too). A report names its own part first: the full bench lost 14 % of
/// its reports when a report that raced its part matched another message
/// in the other base instead.
#[tokio::test]
async fn a_report_prefers_its_own_spelling_over_the_other_base() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 2, "kpn").await;
    claim(&c, "kpn", "w", 10).await;
    // Message 0 is 1234 (hex), message 1 is 4d2 (hex of decimal 1234).
    c.execute(
        "SELECT smsbus._mark_sent('kpn', $1, $2, $3)",
        &[&ids, &vec![1i32, 1], &vec!["1234", "4d2"]],
    )
    .await
    .unwrap();
    let apply = |reference: &'static str, alternate: &'static str| {
        let c = &c;
        async move {
            let matched: i32 = scalar(
                c,
                "SELECT smsbus._apply_reports('kpn', ARRAY[$1::text], ARRAY['delivered'], \
                 ARRAY['stat:DELIVRD'], ARRAY[$2::text])",
                &[&reference, &alternate],
            )
            .await;
            matched
        }
    };
    // A report for 1234 reaches message 0, not also message 1 through 4d2.
    assert_eq!(apply("1234", "4d2").await, 1);
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
    assert_eq!(status_of(&c, ids[1]).await, "sent");
    // A repeat of it, its own part final, is dropped: not applied to
    // message 1 in the other base, not parked.
    assert_eq!(apply("1234", "4d2").await, 0);
    assert_eq!(status_of(&c, ids[1]).await, "sent");
    let parked = "SELECT count(*) FROM smsbus.pending_report";
    assert_eq!(count(&c, parked).await, 0);
    // 4660 names no part; its other base 1234 is final, but may be another
    // message than the one this report is for: parked, not dropped, and
    // not taken again by maintenance while no live part matches.
    assert_eq!(apply("4660", "1234").await, 0);
    assert_eq!(count(&c, parked).await, 1);
    let done: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(done["parked_reports_applied"], 0);
    assert_eq!(count(&c, parked).await, 1);
    // A report whose own spelling names nothing uses the other base.
    assert_eq!(apply("1234567", "4d2").await, 1);
    assert_eq!(status_of(&c, ids[1]).await, "delivered");
}

/// A `_mark_sent` repeated because the answer to its commit was lost
/// changes nothing: parts already reported keep their report.
#[tokio::test]
async fn a_repeated_mark_sent_leaves_reported_parts_alone() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let ids = queue(&c, 1, "kpn").await;
    assert_eq!(claim(&c, "kpn", "w", 10).await, ids);
    let mark = "SELECT smsbus._mark_sent('kpn', $1, ARRAY[1], ARRAY['ref-1'])";
    let marked: i32 = scalar(&c, mark, &[&ids]).await;
    assert_eq!(marked, 1);
    c.batch_execute(
        "SELECT smsbus._apply_reports('kpn', ARRAY['ref-1'], ARRAY['delivered'], ARRAY['DELIVRD'])",
    )
    .await
    .unwrap();
    let again: i32 = scalar(&c, mark, &[&ids]).await;
    assert_eq!(again, 0);
    let part: (String, Option<String>) = {
        let row = c
            .query_one("SELECT status, detail FROM smsbus.message_part", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(part, ("delivered".into(), Some("DELIVRD".into())));
    assert_eq!(status_of(&c, ids[0]).await, "delivered");
}
