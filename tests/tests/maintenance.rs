//! The worker's maintenance pass (`smsbus._maintain`): a message or a step
//! that fails never stops the others.

use smsbus_tests::db::{count, scalar, TestDb};

#[tokio::test]
async fn one_failing_message_or_step_does_not_stop_the_others() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // An operator's triggers: on the trace, refusing one message's
    // promotion and every noreport; on the archive, refusing everything.
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         CREATE TABLE poisoned (id bigint);
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.to_status = 'noreport' OR (NEW.to_status = 'queued' AND NEW.message_id IN (SELECT id FROM public.poisoned)) THEN
                 RAISE EXCEPTION 'refused by the operator';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON smsbus.message_event FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE FUNCTION refuse_archive() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'archive refused'; END $$;
         CREATE TRIGGER refuse_archive BEFORE INSERT ON smsbus.message_archive
             FOR EACH ROW EXECUTE FUNCTION refuse_archive();
         UPDATE smsbus.archiving SET older_than = interval '0', every = interval '0';
         INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
             SELECT '+3161234567' || n, 'later', 'kpn', now() + interval '100 ms' FROM generate_series(1, 3) n;
         INSERT INTO poisoned SELECT min(id) FROM smsbus.message;
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345670', 'now', 'kpn');",
    )
    .await
    .unwrap();
    // One message claimed with a lease that has run out, one sent long
    // ago, one finished (blocked) for the archive.
    let claimed: i64 = count(
        &c,
        "SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '0 s')",
    )
    .await;
    assert_eq!(claimed, 1);
    c.batch_execute(
        "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345679', 'sent', 'kpn');
         SELECT count(*) FROM smsbus._claim('kpn', 'w2', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[max(id)], ARRAY[1], ARRAY['ref-1']) FROM smsbus.message;
         INSERT INTO smsbus.block (condition, reason) VALUES ('body = ''block me''', 'test');
         INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345671', 'block me', 'kpn');",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let done: serde_json::Value = scalar(
        &c,
        "SELECT smsbus._maintain(interval '0 s', 10000, interval '1 hour')",
        &[],
    )
    .await;
    assert_eq!(done["promoted"], 2, "{done}");
    assert_eq!(done["leases_expired"], 1, "{done}");
    // The message that cannot be marked noreport stays sent (and is
    // logged); the archiving step fails as a whole and says so; the steps
    // after it still ran.
    assert_eq!(done["noreport"], 0, "{done}");
    assert!(
        done["errors"]["archived"]
            .as_str()
            .is_some_and(|e| e.contains("archive refused")),
        "{done}"
    );
    assert_eq!(done["inbound_incomplete"], 0, "{done}");
    let poisoned: (String, String) = {
        let row = c
            .query_one(
                "SELECT m.status::text, m.last_error FROM smsbus.message m JOIN poisoned p ON p.id = m.id
                 WHERE m.scheduled_at > now() + interval '30 s'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(poisoned.0, "scheduled");
    assert!(
        poisoned.1.starts_with("not moved on when due"),
        "{}",
        poisoned.1
    );
    assert!(
        poisoned.1.contains("refused by the operator"),
        "{}",
        poisoned.1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'sent'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'blocked'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_queued_message_whose_validity_ends_while_it_waits_expires() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // Nobody claims kpn's queue (its worker is away).
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
         INSERT INTO smsbus.message (to_address, body, channel, valid_until) VALUES
             ('+31612345678', 'soon stale', 'kpn', now() + interval '100 ms'),
             ('+31612345679', 'still good', 'kpn', now() + interval '1 hour'),
             ('+31612345670', 'no validity', 'kpn', NULL);",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let done: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(done["queued_expired"], 1, "{done}");
    let rows: Vec<(String, String, Option<String>)> = c
        .query(
            "SELECT body, status::text, last_error FROM smsbus.message ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "soon stale".into(),
                "expired".into(),
                Some("validity period ended while the message waited in the queue".into())
            ),
            ("still good".into(), "queued".into(), None),
            ("no validity".into(), "queued".into(), None),
        ]
    );
    // The trace says so.
    let traced = count(
        &c,
        "SELECT count(*) FROM smsbus.message_event WHERE from_status = 'queued' AND to_status = 'expired'",
    )
    .await;
    assert_eq!(traced, 1);
}
