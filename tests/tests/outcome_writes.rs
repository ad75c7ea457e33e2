//! Outcomes that cannot be written (docs/ARCHITECTURE.md#never-losing-a-message):
//! an operator's trigger
//! on `smsbus.message_event` that raises for the `sent` events of one
//! channel makes every `_mark_sent` of that channel fail. Its messages
//! must still reach the SMSC once each, never again on lease expiry; they
//! end `failed` with "outcome not recorded"; the channel stops claiming
//! while its writes fail and resumes once they work; another channel
//! never notices.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use smsbus_tests::db::{count, scalar, strings, TestDb};
use smsbus_tests::scenario::{add_channel, link_state, smpp_config, smsc};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};

/// Messages queued on each channel.
const EACH: i32 = 200;
const WINDOW: i64 = 10;
/// The worker's retry horizon for outcome writes, in seconds.
const HORIZON: f64 = 1.5;
/// The lease the SMPP channels take: six response timeouts of 1 s (the
/// worker's floor is lowered to 1 s).
const LEASE: Duration = Duration::from_secs(6);

#[tokio::test]
async fn outcomes_that_cannot_be_written_are_never_sent_again() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "CREATE FUNCTION public.refuse_sent_on_a() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.to_status = 'sent'
                AND (SELECT m.channel FROM smsbus.message m WHERE m.id = NEW.message_id) = 'a' THEN
                 RAISE EXCEPTION 'refusing the sent events of channel a';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_sent_on_a BEFORE INSERT ON smsbus.message_event
             FOR EACH ROW EXECUTE FUNCTION public.refuse_sent_on_a();",
    )
    .await
    .unwrap();
    let config = smpp_config(&sim, json!({"window": WINDOW, "response_timeout_s": 1}));
    add_channel(&c, "a", &config).await;
    add_channel(&c, "b", &config).await;
    c.execute(
        "INSERT INTO smsbus.message (to_address, body, channel)
         SELECT '+3161' || lpad(g::text, 7, '0'), ch || ' ' || g, ch
         FROM generate_series(1, $1::int) g, (VALUES ('a'), ('b')) AS v(ch)",
        &[&EACH],
    )
    .await
    .unwrap();
    let horizon = HORIZON.to_string();
    let worker = Worker::start(
        &db.conninfo(),
        &[
            "--worker-id",
            "w1",
            "--maintenance-interval",
            "0.2",
            "--min-lease",
            "1",
            "--outcome-retry-horizon",
            &horizon,
        ],
    );
    let broken_since = Instant::now();

    // Channel b goes on as if nothing happened.
    let b_done = eventually(Duration::from_secs(90), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE channel = 'b' AND status IN ('sent', 'delivered')",
        )
        .await
            == i64::from(EACH)
    })
    .await;
    assert!(b_done, "channel b did not finish:\n{}", worker.log());

    // Channel a pauses and says why.
    let paused = eventually(Duration::from_secs(20), || async {
        link_state(&c, "a").await.and_then(|s| s.1).is_some_and(|e| {
            e.starts_with(
                "claiming paused: outcomes cannot be written: refusing the sent events of channel a",
            )
        })
    })
    .await;
    assert!(paused, "{:?}\n{}", link_state(&c, "a").await, worker.log());

    // Over several lease periods, what channel a sent is marked and never
    // sent again; it stops claiming instead of working through its queue.
    let unrecorded = "SELECT count(*) FROM smsbus.message WHERE channel = 'a' AND status = 'failed'
                        AND last_error LIKE 'outcome not recorded: refusing the sent events of channel a; the provider accepted it (reference %)'";
    let marked = eventually(Duration::from_secs(30), || async {
        count(&c, unrecorded).await > 0
    })
    .await;
    assert!(marked, "nothing marked unrecorded:\n{}", worker.log());
    let settle = (LEASE * 3).saturating_sub(broken_since.elapsed());
    tokio::time::sleep(settle).await;
    let broken_for = broken_since.elapsed();
    let a_sent = times_sent(&sim, "a ");
    let twice: Vec<&String> = a_sent
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| t)
        .collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let expired = strings(
        &c,
        "SELECT format('%s %s', e.message_id, e.detail) FROM smsbus.message_event e
         JOIN smsbus.message m ON m.id = e.message_id
         WHERE m.channel = 'a' AND e.from_status = 'sending' AND e.to_status = 'queued'",
        &[],
    )
    .await;
    assert!(expired.is_empty(), "back to the queue: {expired:?}");
    // What is held at once (4 windows), then one probe per horizon.
    let bound = 4 * WINDOW as usize + (broken_for.as_secs_f64() / HORIZON) as usize + 2;
    assert!(
        a_sent.len() <= bound,
        "channel a sent {} while its outcomes could not be written (bound {bound} in {broken_for:?})",
        a_sent.len()
    );
    let failed_unrecorded = count(&c, unrecorded).await;
    let in_flight = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE channel = 'a' AND status = 'sending'",
    )
    .await;
    assert_eq!(
        failed_unrecorded + in_flight,
        a_sent.len() as i64,
        "everything channel a sent is marked or still held"
    );
    let traced = count(
        &c,
        "SELECT count(*) FROM smsbus.message m WHERE m.channel = 'a' AND m.status = 'failed'
         AND EXISTS (SELECT 1 FROM smsbus.message_event e WHERE e.message_id = m.id
                     AND e.from_status = 'sending' AND e.to_status = 'failed'
                     AND e.detail LIKE 'outcome not recorded: %')",
    )
    .await;
    assert_eq!(
        traced, failed_unrecorded,
        "the trace names each unrecorded outcome"
    );

    // Writes work again: the channel resumes and sends the rest, once each.
    c.batch_execute("DROP TRIGGER refuse_sent_on_a ON smsbus.message_event")
        .await
        .unwrap();
    let a_done = eventually(Duration::from_secs(90), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE channel = 'a' AND status NOT IN ('sent', 'delivered', 'failed')",
        )
        .await
            == 0
    })
    .await;
    assert!(
        a_done,
        "channel a did not resume: {:?}\n{}",
        strings(
            &c,
            "SELECT format('%s %s %s', id, status, last_error) FROM smsbus.message
             WHERE channel = 'a' AND status NOT IN ('sent', 'delivered', 'failed') LIMIT 5",
            &[]
        )
        .await,
        worker.log()
    );
    let a_sent = times_sent(&sim, "a ");
    assert_eq!(
        a_sent.len(),
        EACH as usize,
        "every message of a reached the SMSC"
    );
    let twice: Vec<&String> = a_sent
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| t)
        .collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let failed = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE channel = 'a' AND status = 'failed'",
    )
    .await;
    assert_eq!(
        failed,
        count(&c, unrecorded).await,
        "only unrecorded outcomes failed"
    );
    let sent = i64::from(EACH) - failed;
    assert!(sent > 0, "nothing sent after the trigger was dropped");
    let resumed: Option<String> = link_state(&c, "a").await.and_then(|s| s.1);
    assert_eq!(
        resumed.as_deref(),
        Some("claiming resumed: outcomes are written again")
    );

    // channel_state counts what was committed, not what was attempted.
    let counted = eventually(Duration::from_secs(5), || async {
        let row: (i64, i64) = (
            scalar(
                &c,
                "SELECT sent FROM smsbus.channel_state WHERE channel = 'a'",
                &[],
            )
            .await,
            scalar(
                &c,
                "SELECT failed FROM smsbus.channel_state WHERE channel = 'a'",
                &[],
            )
            .await,
        );
        row == (sent, failed)
    })
    .await;
    assert!(
        counted,
        "channel_state of a: {:?}, committed sent {sent}, failed {failed}",
        c.query_one(
            "SELECT sent, failed FROM smsbus.channel_state WHERE channel = 'a'",
            &[]
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
    );
    eprintln!(
        "channel a: {failed} sent while its outcomes could not be written (each once, marked), \
         {sent} sent after; broken for {broken_for:?}"
    );
}

/// How many times the SMSC got each text starting with `prefix`.
fn times_sent(sim: &smsbus_tests::smsc::Smsc, prefix: &str) -> HashMap<String, usize> {
    let mut times = HashMap::new();
    for part in sim.parts() {
        if part.text.starts_with(prefix) {
            *times.entry(part.text).or_default() += 1;
        }
    }
    times
}
