//! HTTP channels end to end: a worker sending through the provider
//! simulator (tests/src/providers.rs) of each preset over real TCP, the
//! simulator posting reports and inbound messages to the worker's HTTP API.

use std::time::Duration;

use serde_json::{json, Value};
use smsbus_tests::db::{scalar, TestDb};
use smsbus_tests::net::free_port;
use smsbus_tests::providers::{Answer, Preset, Provider, Signing};
use smsbus_tests::scenario::{add_channel_of_kind, send, wait_for};
use smsbus_tests::worker::{eventually, Worker};
use tokio_postgres::Client;

/// A database, a worker serving the HTTP API (where the providers' webhooks
/// go), and its base URL.
struct Setup {
    c: Client,
    api: String,
    worker: Worker,
    _db: TestDb,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

/// As [`setup`], the worker given `args` too.
async fn setup_with(args: &[&str]) -> Setup {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut all = vec![
        "--worker-id",
        "w1",
        "--maintenance-interval",
        "0.2",
        "--http-addr",
        &addr,
    ];
    all.extend_from_slice(args);
    let worker = Worker::start(&db.conninfo(), &all);
    let api = format!("http://127.0.0.1:{port}");
    Setup {
        c,
        api,
        worker,
        _db: db,
    }
}

async fn add_http(s: &Setup, name: &str, provider: &Provider, extra: Value) {
    let config = provider.channel_config(&s.api, extra);
    add_channel_of_kind(&s.c, name, "http", &config).await;
}

/// The generic preset as a Kannel-like provider that takes one part a
/// request (its user data header in `udh`), with `extra` keys.
fn split_by_smsbus(extra: Value) -> Value {
    let mut config = json!({
        "parts": "split",
        "request": {"url": "${base_url}?to=${to}&text=${body}&udh=${udh}&dlr-url=${report_url}"}
    });
    for (key, value) in extra.as_object().expect("an object") {
        config[key] = value.clone();
    }
    config
}

/// From the first request the provider took to the last, of `expected`.
fn spread_of(provider: &Provider, expected: usize) -> Duration {
    let at: Vec<std::time::Instant> = provider.taken().iter().map(|t| t.at).collect();
    assert_eq!(at.len(), expected);
    *at.iter().max().unwrap() - *at.iter().min().unwrap()
}

fn hook(s: &Setup, channel: &str, hook: &str) -> String {
    format!("{}/v1/providers/{channel}/{hook}", s.api)
}

async fn status_of(c: &Client, id: i64) -> (String, Option<String>) {
    let row = c
        .query_one(
            "SELECT status::text, last_error FROM smsbus.message WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn every_preset_sends_and_its_reports_deliver() {
    let s = setup().await;
    for preset in Preset::ALL {
        let provider = Provider::start(preset).await;
        let name = preset.name();
        add_http(&s, name, &provider, json!({})).await;
        let long = "Long GSM text. ".repeat(20);
        let bodies = ["Hello from smsbus & co", "Привет, мир", long.as_str()];
        let mut ids = Vec::new();
        for body in bodies {
            ids.push(send(&s.c, name, "+31612345678", body).await);
        }
        wait_for(
            &s.c,
            &ids,
            &["delivered"],
            Duration::from_secs(30),
            &s.worker,
        )
        .await;
        // Sent side by side (concurrency): in any order.
        let taken = provider.taken();
        assert_eq!(taken.len(), 3, "{name}: {taken:?}");
        for body in bodies {
            let t = taken
                .iter()
                .find(|t| t.text == body)
                .unwrap_or_else(|| panic!("{name}: {body:?} not taken: {taken:?}"));
            let to = match preset {
                Preset::Twilio | Preset::Generic => "+31612345678",
                _ => "31612345678",
            };
            assert_eq!(t.to, to, "{name}");
            assert!(
                t.report_url
                    .ends_with(&format!("/v1/providers/{name}/reports")),
                "{name}: {}",
                t.report_url
            );
        }
        // Each part's id is recorded as a part: Vonage's two for the
        // long text, one for the others.
        let parts: i64 = s
            .c
            .query_one(
                "SELECT count(*) FROM smsbus.message_part WHERE message_id = $1 AND status = 'delivered'",
                &[&ids[2]],
            )
            .await
            .unwrap()
            .get(0);
        let expected = if preset == Preset::Vonage { 2 } else { 1 };
        assert_eq!(parts, expected, "{name}");
        let mut references: Vec<String> =
            s.c.query(
                "SELECT reference FROM smsbus.message_part WHERE message_id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        references.sort();
        let mut given: Vec<String> = taken.iter().flat_map(|t| t.ids.clone()).collect();
        given.sort();
        assert_eq!(references, given, "{name}");
        assert!(provider
            .hook_answers()
            .iter()
            .all(|a| (200..300).contains(a)));
    }
}

#[tokio::test]
async fn a_provider_that_does_not_split_gets_each_part_and_reports_on_each() {
    let s = setup().await;
    let provider = Provider::start(Preset::Generic).await;
    add_http(&s, "kannel", &provider, split_by_smsbus(json!({}))).await;
    let body = "Long GSM text. ".repeat(20);
    let id = send(&s.c, "kannel", "+31612345678", &body).await;
    wait_for(
        &s.c,
        &[id],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let taken = provider.taken();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(format!("{}{}", taken[0].text, taken[1].text), body);
    assert_eq!(taken[0].text.chars().count(), 153);
    let parts: Vec<(i32, String, String)> = s
        .c
        .query(
            "SELECT part::int, reference, status::text FROM smsbus.message_part WHERE message_id = $1 ORDER BY part",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        parts,
        vec![
            (1, taken[0].ids[0].clone(), "delivered".to_owned()),
            (2, taken[1].ids[0].clone(), "delivered".to_owned()),
        ]
    );
}

/// A later part refused for now is tried again in place: sending the
/// message again would send its first part twice. One refused for good
/// fails the message, naming the part, as an SMPP channel does.
#[tokio::test]
async fn a_later_part_refused_is_tried_again_in_place_or_fails_the_message() {
    let s = setup().await;
    let provider = Provider::start(Preset::Generic).await;
    provider.script([
        Answer::Accept,
        Answer::Temporary,
        Answer::Accept,
        Answer::Accept,
        Answer::Permanent,
    ]);
    add_http(
        &s,
        "kannel",
        &provider,
        split_by_smsbus(json!({"concurrency": 1})),
    )
    .await;
    let body = "Long GSM text. ".repeat(20);
    let again = send(&s.c, "kannel", "+31612345678", &body).await;
    wait_for(
        &s.c,
        &[again],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let attempts: i32 = scalar(
        &s.c,
        "SELECT attempts FROM smsbus.message WHERE id = $1",
        &[&again],
    )
    .await;
    assert_eq!(attempts, 1, "the message was not sent again");
    let taken = provider.taken();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(format!("{}{}", taken[0].text, taken[1].text), body);
    assert_eq!(provider.requests(), 3);

    let refused = send(&s.c, "kannel", "+31612345678", &body).await;
    wait_for(
        &s.c,
        &[refused],
        &["failed"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let (_, error) = status_of(&s.c, refused).await;
    let error = error.unwrap();
    assert!(
        error.starts_with("part 2 of 2 not sent, 1 before it sent: "),
        "{error}"
    );
    assert_eq!(provider.requests(), 5);
    let parts: i64 = scalar(
        &s.c,
        "SELECT count(*) FROM smsbus.message_part WHERE message_id = $1",
        &[&refused],
    )
    .await;
    assert_eq!(parts, 0);
}

#[tokio::test]
async fn a_provider_over_tls_is_trusted_by_its_ca_only() {
    let s = setup().await;
    let provider = Provider::start_tls(Preset::Twilio).await;
    let ca = provider.ca_file().unwrap().to_string_lossy().into_owned();
    // The system's roots do not know the simulator's CA.
    add_http(&s, "untrusted", &provider, json!({})).await;
    let refused = send(&s.c, "untrusted", "+31612345678", "not to a stranger").await;
    let shown = eventually(Duration::from_secs(15), || async {
        smsbus_tests::scenario::link_state(&s.c, "untrusted")
            .await
            .is_some_and(|(status, error)| {
                status == "error" && error.is_some_and(|e| e.contains("certificate"))
            })
    })
    .await;
    assert!(
        shown,
        "{:?}
{}",
        smsbus_tests::scenario::link_state(&s.c, "untrusted").await,
        s.worker.log()
    );
    assert!(provider.taken().is_empty());
    assert_ne!(status_of(&s.c, refused).await.0, "sent");
    add_http(&s, "trusted", &provider, json!({"tls_ca": ca})).await;
    let id = send(&s.c, "trusted", "+31612345678", "over TLS").await;
    wait_for(
        &s.c,
        &[id],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    assert_eq!(provider.taken()[0].text, "over TLS");
}

#[tokio::test]
async fn throughput_paces_the_requests() {
    let s = setup().await;
    let provider = Provider::start(Preset::Vonage).await;
    add_http(
        &s,
        "vg",
        &provider,
        json!({"throughput": 10, "concurrency": 8}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(send(&s.c, "vg", "+447700900000", &format!("paced {n}")).await);
    }
    wait_for(
        &s.c,
        &ids,
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let spread = spread_of(&provider, 25);
    // 25 at 10 a second, a burst of 2 allowed: at least 2.2 s apart from
    // first to last (a slow machine only spreads them more).
    assert!(spread >= Duration::from_millis(2000), "{spread:?}");
}

/// `throughput` counts requests: each part of a message the channel
/// splits takes its turn.
#[tokio::test]
async fn throughput_paces_each_part_of_a_split_message() {
    let s = setup().await;
    let provider = Provider::start(Preset::Generic).await;
    add_http(
        &s,
        "kannel",
        &provider,
        split_by_smsbus(json!({"throughput": 10, "concurrency": 8})),
    )
    .await;
    let body = "Long GSM text. ".repeat(20);
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(send(&s.c, "kannel", "+31612345678", &body).await);
    }
    wait_for(
        &s.c,
        &ids,
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let spread = spread_of(&provider, 24);
    // 24 requests at 10 a second, a burst of 2 allowed: 2.2 s at least.
    assert!(spread >= Duration::from_millis(2000), "{spread:?}");
}

/// Every request slot busy with a slow provider for longer than the hang
/// timeout: the channel waits for a slot, alive, and is not restarted as
/// hung.
#[tokio::test]
async fn a_channel_waiting_for_a_free_slot_is_not_hung() {
    let s = setup_with(&["--channel-hang-timeout", "2"]).await;
    let provider = Provider::start(Preset::Twilio).await;
    // Each answer longer than the hang timeout, well within the request
    // timeout: the channel waits for its one slot longer than 2 s.
    provider.script([
        Answer::Slow(Duration::from_millis(3000)),
        Answer::Slow(Duration::from_millis(3000)),
    ]);
    add_http(
        &s,
        "tw",
        &provider,
        json!({"concurrency": 1, "request_timeout_s": 10}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(send(&s.c, "tw", "+31612345678", &format!("slow {n}")).await);
    }
    wait_for(
        &s.c,
        &ids,
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    assert!(
        !s.worker.log().contains("driver hung"),
        "{}",
        s.worker.log()
    );
    assert_eq!(provider.requests(), 3, "none timed out and went again");
}

#[tokio::test]
async fn refusals_for_now_wait_and_refusals_for_good_fail() {
    let s = setup().await;
    let provider = Provider::start(Preset::Twilio).await;
    provider.script([
        Answer::TooMany(Some(1)),
        Answer::Temporary,
        Answer::Accept,
        Answer::Permanent,
    ]);
    add_http(&s, "tw", &provider, json!({"concurrency": 1})).await;
    let later = send(&s.c, "tw", "+31612345678", "after two refusals").await;
    wait_for(
        &s.c,
        &[later],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let never = send(&s.c, "tw", "+31612345678", "refused").await;
    wait_for(
        &s.c,
        &[never],
        &["failed"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let (_, error) = status_of(&s.c, never).await;
    let error = error.unwrap();
    assert!(
        error.contains("HTTP 400") && error.contains("not a valid phone number"),
        "{error}"
    );
    let attempts: i32 =
        s.c.query_one(
            "SELECT attempts FROM smsbus.message WHERE id = $1",
            &[&later],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3, "a 429 and a 503 before it went");
    let trace: Vec<String> = s
        .c
        .query(
            "SELECT coalesce(detail, '') FROM smsbus.message_event WHERE message_id = $1 ORDER BY id",
            &[&later],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        trace.iter().any(|d| d.contains("HTTP 429"))
            && trace.iter().any(|d| d.contains("HTTP 503")),
        "{trace:?}"
    );
    assert_eq!(provider.requests(), 4);
}

#[tokio::test]
async fn refused_credentials_are_the_channels_fault_not_the_messages() {
    let s = setup().await;
    let provider = Provider::start(Preset::Infobip).await;
    add_http(&s, "ib", &provider, json!({"token": "not-the-key"})).await;
    let id = send(&s.c, "ib", "+41793026727", "waits for the key").await;
    let shown = eventually(Duration::from_secs(15), || async {
        smsbus_tests::scenario::link_state(&s.c, "ib")
            .await
            .and_then(|(status, error)| (status == "error").then_some(error))
            .flatten()
            .is_some_and(|e| e.contains("HTTP 401"))
    })
    .await;
    assert!(shown, "{}", s.worker.log());
    let (status, _) = status_of(&s.c, id).await;
    assert!(matches!(status.as_str(), "queued" | "sending"), "{status}");
    let error: String =
        s.c.query_one(
            "SELECT last_error FROM smsbus.channel_state WHERE channel = 'ib'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!error.contains("not-the-key"), "{error}");
    s.c.execute(
        "UPDATE smsbus.channel SET config = config - 'token' || jsonb_build_object('token', $1::text) WHERE name = 'ib'",
        &[&smsbus_tests::providers::PASSWORD],
    )
    .await
    .unwrap();
    wait_for(
        &s.c,
        &[id],
        &["delivered"],
        Duration::from_secs(60),
        &s.worker,
    )
    .await;
}

#[tokio::test]
async fn a_provider_that_does_not_answer_is_an_unknown_outcome() {
    let s = setup().await;
    let provider = Provider::start(Preset::Vonage).await;
    provider.script([Answer::Hang, Answer::Slow(Duration::from_millis(300))]);
    add_http(
        &s,
        "vg",
        &provider,
        json!({"request_timeout_s": 1, "on_unknown_outcome": "retry"}),
    )
    .await;
    let id = send(&s.c, "vg", "+447700900000", "slowly").await;
    wait_for(
        &s.c,
        &[id],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let retried: i64 = s
        .c
        .query_one(
            "SELECT count(*) FROM smsbus.message_event WHERE message_id = $1 AND detail LIKE '%may arrive twice%'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(retried, 1, "the timed-out attempt is marked in the trace");
    assert_eq!(provider.requests(), 2);
    assert_eq!(
        provider.taken().len(),
        1,
        "the hung request never got to take it"
    );

    // With fail, the message that may be out is not sent again.
    s.c.execute(
        "UPDATE smsbus.channel SET config = config || '{\"on_unknown_outcome\": \"fail\"}' WHERE name = 'vg'",
        &[],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    provider.script([Answer::Hang]);
    let id = send(&s.c, "vg", "+447700900000", "once at most").await;
    wait_for(&s.c, &[id], &["failed"], Duration::from_secs(30), &s.worker).await;
    assert!(status_of(&s.c, id)
        .await
        .1
        .unwrap()
        .contains("outcome unknown"));
}

#[tokio::test]
async fn reports_twice_out_of_order_and_before_the_answer_apply_once() {
    let s = setup().await;
    let provider = Provider::start(Preset::Twilio).await;
    provider.auto_report(None);
    add_http(&s, "tw", &provider, json!({})).await;
    let id = send(&s.c, "tw", "+31612345678", "reported by hand").await;
    wait_for(&s.c, &[id], &["sent"], Duration::from_secs(30), &s.worker).await;
    let sid = provider.taken()[0].ids[0].clone();
    let url = hook(&s, "tw", "reports");
    // An intermediate report, the final one twice, then a late
    // intermediate one: delivered once, never back.
    for word in ["sent", "delivered", "delivered", "sent"] {
        assert_eq!(provider.report(&url, &sid, word, Signing::Right).await, 200);
    }
    assert_eq!(status_of(&s.c, id).await.0, "delivered");
    let delivered: i64 = s
        .c
        .query_one(
            "SELECT count(*) FROM smsbus.message_event WHERE message_id = $1 AND to_status = 'delivered'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 1);

    // The report may come before the answer to the send was recorded.
    provider.auto_report(Some("delivered"));
    provider.script([Answer::AcceptReportFirst]);
    let early = send(&s.c, "tw", "+31612345678", "reported early").await;
    wait_for(
        &s.c,
        &[early],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    assert_eq!(provider.hook_answers(), vec![200]);
}

#[tokio::test]
async fn webhooks_with_a_wrong_or_no_signature_are_refused_and_stored_nowhere() {
    let s = setup().await;
    for preset in Preset::ALL {
        let provider = Provider::start(preset).await;
        let name = preset.name();
        provider.auto_report(None);
        add_http(&s, name, &provider, json!({})).await;
        let id = send(&s.c, name, "+31612345678", "signed?").await;
        wait_for(&s.c, &[id], &["sent"], Duration::from_secs(30), &s.worker).await;
        let reference = provider.taken()[0].ids[0].clone();
        let word = match preset {
            Preset::Infobip => "DELIVERED_TO_HANDSET",
            Preset::Generic => "1",
            _ => "delivered",
        };
        let reports = hook(&s, name, "reports");
        let inbound = hook(&s, name, "inbound");
        for sign in [Signing::Wrong, Signing::Unsigned] {
            assert_eq!(
                provider.report(&reports, &reference, word, sign).await,
                401,
                "{name} {sign:?}"
            );
            assert_eq!(
                provider
                    .inbound(&inbound, "+31611111111", "+3197000", "forged", "f1", sign)
                    .await,
                401,
                "{name} {sign:?}"
            );
        }
        assert_eq!(status_of(&s.c, id).await.0, "sent", "{name}");
        let forged: i64 =
            s.c.query_one(
                "SELECT count(*) FROM smsbus.message WHERE direction = 'in' AND channel = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(forged, 0, "{name}");
        assert_eq!(
            provider
                .report(&reports, &reference, word, Signing::Right)
                .await,
            if preset == Preset::Generic { 202 } else { 200 },
            "{name}"
        );
        assert_eq!(status_of(&s.c, id).await.0, "delivered", "{name}");
        let id = provider.new_id();
        assert_eq!(
            provider
                .inbound(
                    &inbound,
                    "+31611111111",
                    "+3197000",
                    "hello",
                    &id,
                    Signing::Right
                )
                .await,
            if preset == Preset::Generic { 202 } else { 200 },
            "{name}"
        );
        let rows = s
            .c
            .query(
                "SELECT body, reference FROM smsbus.message WHERE direction = 'in' AND channel = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(rows[0].get::<_, String>(0), "hello", "{name}");
        assert_eq!(rows[0].get::<_, Option<String>>(1), Some(id), "{name}");
    }
    assert!(s.worker.log().contains("signature does not match"));
}

#[tokio::test]
async fn a_report_through_another_channel_reaches_none_of_its_messages() {
    let s = setup().await;
    let provider = Provider::start(Preset::Generic).await;
    provider.auto_report(None);
    add_http(&s, "kannel", &provider, json!({})).await;
    // A channel whose webhooks anyone may post to.
    let open = Provider::start(Preset::Generic).await;
    add_http(&s, "open", &open, json!({"signature": "none"})).await;
    let id = send(&s.c, "kannel", "+31612345678", "not yours").await;
    wait_for(&s.c, &[id], &["sent"], Duration::from_secs(30), &s.worker).await;
    let reference = provider.taken()[0].ids[0].clone();
    for word in ["1", "2"] {
        assert_eq!(
            open.report(
                &hook(&s, "open", "reports"),
                &reference,
                word,
                Signing::Unsigned
            )
            .await,
            202
        );
    }
    assert_eq!(status_of(&s.c, id).await.0, "sent");
    // A name that is no channel's is refused before any query.
    let client = reqwest_client();
    for name in ["kannel%27--", "..", "a%2Fb"] {
        let status = client
            .post(format!("{}/v1/providers/{name}/reports", s.api))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 404, "{name}");
    }
}

#[tokio::test]
async fn an_inbound_webhook_is_a_received_row_once_and_a_trigger_answers_it() {
    let s = setup().await;
    s.c.execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES
         ('echo', '{received}', 'sql',
          $$SELECT smsbus.send(m.from_address, 'echo: ' || m.body, channel => m.channel)
            FROM smsbus.message m WHERE m.id = $1$$)",
        &[],
    )
    .await
    .unwrap();
    for preset in Preset::ALL {
        let provider = Provider::start(preset).await;
        let name = preset.name();
        add_http(&s, name, &provider, json!({})).await;
        let url = hook(&s, name, "inbound");
        let id = provider.new_id();
        let ok = if preset == Preset::Generic { 202 } else { 200 };
        for _ in 0..2 {
            // Providers post again when their first request's answer is lost.
            assert_eq!(
                provider
                    .inbound(
                        &url,
                        "+31687654321",
                        "+3197001",
                        "ping",
                        &id,
                        Signing::Right
                    )
                    .await,
                ok,
                "{name}"
            );
        }
        let rows =
            s.c.query(
                "SELECT id, from_address, body, reference FROM smsbus.message
                 WHERE direction = 'in' AND channel = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{name}: stored once");
        let received: i64 = rows[0].get(0);
        assert_eq!(rows[0].get::<_, String>(1), "+31687654321", "{name}");
        assert_eq!(rows[0].get::<_, String>(2), "ping", "{name}");
        assert_eq!(rows[0].get::<_, Option<String>>(3), Some(id), "{name}");
        let answered = eventually(Duration::from_secs(30), || async {
            provider
                .taken()
                .iter()
                .any(|t| t.text == "echo: ping" && t.to.trim_start_matches('+') == "31687654321")
        })
        .await;
        assert!(answered, "{name}: no answer went out: {}", s.worker.log());
        let trigger: String =
            s.c.query_one(
                "SELECT trigger_status::text FROM smsbus.message WHERE id = $1",
                &[&received],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(trigger, "processed", "{name}");
    }
}

#[tokio::test]
async fn bad_webhooks_get_clear_refusals_and_the_worker_keeps_going() {
    let s = setup().await;
    let provider = Provider::start(Preset::Infobip).await;
    add_http(&s, "ib", &provider, json!({})).await;
    let client = reqwest_client();
    let post = |url: String, body: &'static str, content_type: &'static str| {
        let client = client.clone();
        async move {
            let answer = client
                .post(url)
                .header("Content-Type", content_type)
                .header(
                    "Authorization",
                    format!(
                        "Basic {}",
                        base64_of(smsbus_tests::providers::SIGNATURE_SECRET)
                    ),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap())
        }
    };
    let (status, _) = post(hook(&s, "nosuch", "reports"), "{}", "application/json").await;
    assert_eq!(status, 404);
    let (status, text) = post(hook(&s, "ib", "reports"), "{not json", "application/json").await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = post(
        hook(&s, "ib", "reports"),
        r#"{"results": []}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("no report"), "{text}");
    let (status, text) = post(
        hook(&s, "ib", "reports"),
        r#"{"results": [{"status": {"name": "DELIVERED_TO_HANDSET"}}]}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("no message id"), "{text}");
    let (status, _) = post(
        hook(&s, "ib", "inbound"),
        r#"{"results": [{"text": "no sender"}]}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, 400);
    // A report for an id nobody sent is taken (the provider would only
    // send it again) and kept aside.
    let (status, _) = post(
        hook(&s, "ib", "reports"),
        r#"{"results": [{"messageId": "unknown-1", "status": {"name": "DELIVERED_TO_HANDSET"}}]}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, 200);
    // The worker still sends.
    let id = send(&s.c, "ib", "+41793026727", "still here").await;
    wait_for(
        &s.c,
        &[id],
        &["delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
}

#[tokio::test]
async fn routes_fail_over_between_an_smpp_and_an_http_channel() {
    let s = setup().await;
    let smsc = smsbus_tests::scenario::smsc(smsbus_tests::smsc::Behaviour::default()).await;
    let smpp = smsbus_tests::scenario::smpp_config(&smsc, json!({}));
    add_channel_of_kind(&s.c, "kpn", "smpp", &smpp).await;
    let provider = Provider::start(Preset::Vonage).await;
    add_http(&s, "vg", &provider, json!({})).await;
    s.c.batch_execute(
        "INSERT INTO smsbus.route (position, condition, channel) VALUES (1, 'true', 'kpn'), (2, 'true', 'vg');",
    )
    .await
    .unwrap();
    let insert = |body: &'static str| {
        let c = &s.c;
        async move {
            let row = c
                .query_one(
                    "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', $1) RETURNING id, channel",
                    &[&body],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, Option<String>>(1))
        }
    };
    let (first, channel) = insert("by smpp").await;
    assert_eq!(channel.as_deref(), Some("kpn"));
    set_enabled(&s.c, "kpn", false).await;
    let (second, channel) = insert("by http").await;
    assert_eq!(channel.as_deref(), Some("vg"));
    set_enabled(&s.c, "kpn", true).await;
    set_enabled(&s.c, "vg", false).await;
    let (third, channel) = insert("by smpp again").await;
    assert_eq!(channel.as_deref(), Some("kpn"));
    set_enabled(&s.c, "vg", true).await;
    wait_for(
        &s.c,
        &[first, second, third],
        &["sent", "delivered"],
        Duration::from_secs(30),
        &s.worker,
    )
    .await;
    let taken: Vec<String> = provider.taken().into_iter().map(|t| t.text).collect();
    assert_eq!(taken, vec!["by http".to_owned()]);
}

#[tokio::test]
async fn senders_neither_read_nor_make_http_channels_nor_forge_what_they_bring() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let provider = Provider::start(Preset::Twilio).await;
    let config = provider.channel_config("https://smsbus.example", json!({}));
    add_channel_of_kind(&c, "tw", "http", &config).await;
    let mut logins = smsbus_tests::roles::LoginRoles::default();
    let (_, sender) = logins.login(&db, "sender", "smsbus_sender").await;
    let (_, admin) = logins.login(&db, "admin", "smsbus_admin").await;
    let denied = |e: tokio_postgres::Error| {
        let text = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(text.contains("permission denied"), "{text}");
        assert!(!text.contains(smsbus_tests::providers::PASSWORD), "{text}");
    };
    denied(
        sender
            .query("SELECT config FROM smsbus.channel WHERE name = 'tw'", &[])
            .await
            .unwrap_err(),
    );
    denied(
        sender
            .execute(
                "INSERT INTO smsbus.channel (name, kind, config) VALUES ('mine', 'http', $1)",
                &[&config],
            )
            .await
            .unwrap_err(),
    );
    denied(
        sender
            .query(
                "SELECT smsbus._record_inbound('tw', ARRAY['+31600000000'], ARRAY['1'], ARRAY['forged'], ARRAY['SM1'])",
                &[],
            )
            .await
            .unwrap_err(),
    );
    denied(
        sender
            .query(
                "SELECT smsbus._apply_reports('tw', ARRAY['SM1'], ARRAY['delivered'], ARRAY['forged'])",
                &[],
            )
            .await
            .unwrap_err(),
    );
    // A sender sends through it like through any channel.
    sender
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'hi', 'tw')",
            &[],
        )
        .await
        .unwrap();
    // Admins configure it.
    admin
        .execute(
            "UPDATE smsbus.channel SET config = config || '{\"concurrency\": 4}' WHERE name = 'tw'",
            &[],
        )
        .await
        .unwrap();
    drop((sender, admin, c));
    logins.remove(db).await;
}

async fn set_enabled(c: &Client, channel: &str, enabled: bool) {
    c.execute(
        "UPDATE smsbus.channel SET enabled = $2 WHERE name = $1",
        &[&channel, &enabled],
    )
    .await
    .unwrap();
}

fn reqwest_client() -> reqwest::Client {
    let tls = smsbus_worker::channels::tls::client_config(None).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
