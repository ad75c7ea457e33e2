//! The SMPP channel end to end: a real database, the worker as a process
//! and the SMSC simulator over TCP. What crossed the wire is checked at the
//! simulator, what was recorded in the database.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use smsbus_tests::db::{count, scalar, TestDb};
use smsbus_tests::scenario::{
    add_channel, link_state, one_channel, sample_bodies, send, smpp_config, smsc, wait_for,
    wait_link, worker,
};
use smsbus_tests::smsc::{Behaviour, Concat, InboundText};
use smsbus_tests::worker::eventually;

const FINAL: Duration = Duration::from_secs(20);

#[tokio::test]
async fn texts_reach_the_smsc_intact_and_come_back_delivered() {
    let t = one_channel(Behaviour::default(), json!({})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);

    let bodies = sample_bodies();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(send(c, "kpn", "+31612345678", body).await);
    }
    wait_for(c, &ids, &["delivered"], FINAL, w).await;

    let received = sim.received();
    for (id, body) in ids.iter().zip(&bodies) {
        let segments: i32 = scalar(
            c,
            "SELECT segments FROM smsbus.message WHERE id = $1",
            &[id],
        )
        .await;
        let got = received
            .iter()
            .find(|r| &r.text == body)
            .unwrap_or_else(|| panic!("the SMSC never got {body:?}; got {received:#?}"));
        assert_eq!(got.parts as i32, segments, "parts of {body:?}");
        assert_eq!(got.destination, "31612345678");
        let parts = count(c, &format!("SELECT count(*) FROM smsbus.message_part WHERE message_id = {id} AND status = 'delivered'")).await;
        assert_eq!(parts, i64::from(segments), "delivered parts of {body:?}");
    }
    // The references are the SMSC's message ids.
    let reference: String = scalar(
        c,
        "SELECT reference FROM smsbus.message WHERE id = $1",
        &[&ids[0]],
    )
    .await;
    assert!(received.iter().any(|r| r.message_ids[0] == reference));
    // Every part went out once.
    let parts: i64 = count(c, "SELECT sum(segments) FROM smsbus.message").await;
    assert_eq!(sim.parts().len() as i64, parts);
    let dest_ton = sim.parts()[0].dest_ton;
    assert_eq!(dest_ton, 1, "international TON");

    wait_link(c, "kpn", "connected", w).await;
    let submitted_counted = eventually(Duration::from_secs(5), || async {
        count(
            c,
            "SELECT submitted FROM smsbus.channel_state WHERE channel = 'kpn'",
        )
        .await
            == parts
    })
    .await;
    assert!(submitted_counted, "channel_state counters");
    let owner: String = scalar(
        c,
        "SELECT owner FROM smsbus.channel_state WHERE channel = 'kpn'",
        &[],
    )
    .await;
    assert_eq!(owner, "w1");
}

#[tokio::test]
async fn refusals_fail_and_undeliverable_reports_are_recorded() {
    let t = one_channel(
        Behaviour {
            reject_destination: Some("31600000000".into()),
            undeliverable_every: 2,
            ..Behaviour::default()
        },
        json!({}),
    )
    .await;
    let (c, w) = (&t.client, &t.worker);
    let refused = send(c, "kpn", "+31600000000", "nobody home").await;
    wait_for(c, &[refused], &["failed"], FINAL, w).await;
    let error: String = scalar(
        c,
        "SELECT last_error FROM smsbus.message WHERE id = $1",
        &[&refused],
    )
    .await;
    assert!(error.contains("ESME_RINVDSTADR (0x0000000B)"), "{error}");

    let a = send(c, "kpn", "+31612345678", "one").await;
    let b = send(c, "kpn", "+31612345678", "two").await;
    wait_for(c, &[a, b], &["delivered", "notdelivered"], FINAL, w).await;
    let undelivered = count(c, &format!("SELECT count(*) FROM smsbus.message WHERE id IN ({a}, {b}) AND status = 'notdelivered' AND last_error LIKE 'stat:UNDELIV%'")).await;
    assert_eq!(undelivered, 1);
}

#[tokio::test]
async fn inbound_messages_are_stored_before_they_are_acknowledged() {
    let t = one_channel(Behaviour::default(), json!({})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    wait_link(c, "kpn", "connected", w).await;

    let statuses = sim
        .deliver(
            &InboundText::new("+31687654321", "1234", "STOP ads €"),
            Duration::from_secs(10),
        )
        .await
        .expect("deliver_sm answered");
    assert_eq!(statuses, vec![rusmpp::CommandStatus::EsmeRok]);
    // Acknowledged means committed: the row is there now, no waiting.
    let row = c
        .query_one(
            "SELECT from_address, to_address, body, status::text, direction, channel FROM smsbus.message WHERE direction = 'in'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "+31687654321");
    assert_eq!(row.get::<_, String>(1), "1234");
    assert_eq!(row.get::<_, String>(2), "STOP ads €");
    assert_eq!(row.get::<_, String>(3), "received");
    assert_eq!(row.get::<_, String>(5), "kpn");
}

#[tokio::test]
async fn a_refused_bind_is_reported_and_retried() {
    let t = one_channel(Behaviour::default(), json!({"password": "wrong"})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    let reported = eventually(Duration::from_secs(10), || async {
        link_state(c, "kpn")
            .await
            .and_then(|s| s.1)
            .is_some_and(|e| e.contains("bind refused: ESME_RINVPASWD (0x0000000E)"))
    })
    .await;
    assert!(reported, "{:?}\n{}", link_state(c, "kpn").await, w.log());
    // Fixing the row takes effect without a restart.
    c.execute(
        "UPDATE smsbus.channel SET config = config || '{\"password\": \"secret\"}' WHERE name = 'kpn'",
        &[],
    )
    .await
    .unwrap();
    wait_link(c, "kpn", "connected", w).await;
    assert!(sim.binds_refused() >= 1);
}

#[tokio::test]
async fn throttling_slows_the_channel_and_fails_nothing() {
    let t = one_channel(
        Behaviour {
            throttle_every: 3,
            queue_full_every: 7,
            ..Behaviour::default()
        },
        json!({}),
    )
    .await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(send(c, "kpn", "+31612345678", &format!("message {i}")).await);
    }
    wait_for(c, &ids, &["delivered"], Duration::from_secs(60), w).await;
    assert!(
        sim.submit_count() > 30,
        "some submits were refused and sent again"
    );
    // Each message reached the SMSC once.
    let mut texts: Vec<String> = sim.received().into_iter().map(|r| r.text).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 30);
    assert_eq!(sim.received().len(), 30);
}

#[tokio::test]
async fn receipts_with_decimal_ids_for_hex_message_ids_are_matched() {
    let sim = smsc(Behaviour {
        report_text_id_decimal: true,
        report_tlvs: false,
        ..Behaviour::default()
    })
    .await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "auto", &smpp_config(&sim, json!({}))).await;
    let w = worker(&db, "w1");
    let id = send(&c, "auto", "+31612345678", "which base?").await;
    wait_for(&c, &[id], &["delivered"], FINAL, &w).await;
}

#[tokio::test]
async fn a_receipt_before_the_response_is_still_applied() {
    let t = one_channel(
        Behaviour {
            report_before_response: true,
            ..Behaviour::default()
        },
        json!({}),
    )
    .await;
    let (c, w) = (&t.client, &t.worker);
    let ids = [
        send(c, "kpn", "+31612345678", "early report").await,
        send(c, "kpn", "+31612345678", &"x".repeat(200)).await,
    ];
    wait_for(c, &ids, &["delivered"], FINAL, w).await;
}

#[tokio::test]
async fn sigterm_unbinds_and_hands_back_nothing_lost() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let mut w = worker(&db, "w1");
    wait_link(&c, "kpn", "connected", &w).await;
    w.signal(Signal::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(20))
        .expect("worker stopped");
    assert!(status.success(), "{}", w.log());
    // The simulator saw the unbind (it closes its side right after).
    let unbound = eventually(Duration::from_secs(2), || async {
        sim.bound_sessions() == 0
    })
    .await;
    assert!(unbound, "still bound; log:\n{}", w.log());
    let (state, _) = link_state(&c, "kpn").await.unwrap();
    assert_eq!(state, "disconnected");
}

#[tokio::test]
async fn concatenated_inbound_messages_are_reassembled_in_any_order() {
    let t = one_channel(Behaviour::default(), json!({})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    wait_link(c, "kpn", "connected", w).await;

    let long_gsm = "An inbound message long enough for three parts. ".repeat(8);
    let long_ucs2 = "Входящее сообщение из нескольких частей. ".repeat(3);
    let mut sent = Vec::new();
    for (text, concat, reversed, reference) in [
        (long_gsm.as_str(), Concat::Udh8, true, 7),
        (long_ucs2.as_str(), Concat::Udh16, false, 300),
        (long_gsm.as_str(), Concat::Sar, true, 9),
    ] {
        let mut m = InboundText::new("+31687654321", "1234", text);
        m.concat = concat;
        m.reversed = reversed;
        m.reference = reference;
        let statuses = sim
            .deliver(&m, Duration::from_secs(10))
            .await
            .expect("answered");
        assert!(statuses.len() > 1);
        assert!(statuses
            .iter()
            .all(|s| *s == rusmpp::CommandStatus::EsmeRok));
        sent.push((text.to_owned(), statuses.len()));
    }
    let rows = c
        .query(
            "SELECT body, (custom->>'parts')::int FROM smsbus.message WHERE direction = 'in' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, usize)> = rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1) as usize))
        .collect();
    assert_eq!(got, sent);
    assert_eq!(
        count(c, "SELECT count(*) FROM smsbus.inbound_part").await,
        0
    );
}

#[tokio::test]
async fn an_incomplete_inbound_message_is_kept_after_the_timeout() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let w = smsbus_tests::worker::Worker::start(
        &db.conninfo(),
        &[
            "--maintenance-interval",
            "0.2",
            "--inbound-part-timeout",
            "1",
        ],
    );
    wait_link(&c, "kpn", "connected", &w).await;
    // Only the first of two parts ever comes: a single-part deliver_sm
    // carrying a concatenation header that says 1 of 2.
    let mut m = InboundText::new("+31687654321", "1234", &"x".repeat(200));
    m.reference = 5;
    let mut pdus = m.deliver_sms().unwrap();
    pdus.truncate(1);
    let statuses = sim
        .deliver_pdus(
            pdus.into_iter().map(Into::into).collect(),
            Duration::from_secs(10),
        )
        .await
        .expect("answered");
    assert_eq!(statuses, vec![rusmpp::CommandStatus::EsmeRok]);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.inbound_part").await,
        1
    );
    let kept = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.message WHERE direction = 'in' AND last_error = 'incomplete: parts 1 of 2 received' AND custom->>'incomplete' = 'true'").await == 1
    })
    .await;
    assert!(kept, "{}", w.log());
    let body: String = scalar(
        &c,
        "SELECT body FROM smsbus.message WHERE direction = 'in'",
        &[],
    )
    .await;
    assert_eq!(body, "x".repeat(153));
}

#[tokio::test]
async fn data_sm_carries_inbound_messages_too() {
    let t = one_channel(Behaviour::default(), json!({})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    wait_link(c, "kpn", "connected", w).await;
    let text = "Через data_sm: длинный текст целиком в message_payload. ".repeat(3);
    let mut m = InboundText::new("+31687654321", "1234", &text);
    m.data_sm = true;
    let statuses = sim
        .deliver(&m, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.log()));
    assert_eq!(statuses, vec![rusmpp::CommandStatus::EsmeRok]);
    let body: String = scalar(
        c,
        "SELECT body FROM smsbus.message WHERE direction = 'in'",
        &[],
    )
    .await;
    assert_eq!(body, text);
}

#[tokio::test]
async fn transmitter_and_receiver_pairs_and_smpp_5() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(
        &c,
        "pair",
        &smpp_config(
            &sim,
            json!({"bind": "tx+rx", "sessions": 2, "interface_version": "5.0"}),
        ),
    )
    .await;
    let w = worker(&db, "w1");
    let ids = [
        send(&c, "pair", "+31612345678", "over a transmitter").await,
        send(&c, "pair", "+31612345678", &"and a long one ".repeat(20)).await,
    ];
    // Receipts come back over the receivers.
    wait_for(&c, &ids, &["delivered"], FINAL, &w).await;
    assert_eq!(sim.bound_sessions(), 4);
    sim.deliver(
        &InboundText::new("+31687654321", "1234", "to a receiver"),
        Duration::from_secs(10),
    )
    .await
    .expect("answered");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE direction = 'in'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_channel_that_only_sends_or_only_receives_binds_accordingly() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(
        &c,
        "out",
        &smpp_config(&sim, json!({"bind": "transmitter"})),
    )
    .await;
    c.execute(
        "INSERT INTO smsbus.channel (name, kind, config, can_send) VALUES ('in', 'smpp', $1, false)",
        &[&smpp_config(&sim, json!({}))],
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let id = send(&c, "out", "+31612345678", "no receiver on this channel").await;
    // Sent; its receipt goes to the other channel's receiver, which does
    // not know the reference: it is parked, never applied to this one.
    wait_for(&c, &[id], &["sent"], FINAL, &w).await;
    wait_link(&c, "in", "connected", &w).await;
    sim.deliver(
        &InboundText::new("+31687654321", "1234", "to the receiver"),
        Duration::from_secs(10),
    )
    .await
    .expect("answered");
    let channel: String = scalar(
        &c,
        "SELECT channel FROM smsbus.message WHERE direction = 'in'",
        &[],
    )
    .await;
    assert_eq!(channel, "in");
}

#[tokio::test]
async fn unanswered_submissions_are_marked_outcome_unknown() {
    let sim = smsc(Behaviour {
        drop_response_every: 2,
        ..Behaviour::default()
    })
    .await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(
        &c,
        "retry",
        &smpp_config(&sim, json!({"response_timeout_s": 1})),
    )
    .await;
    add_channel(
        &c,
        "fail",
        &smpp_config(
            &sim,
            json!({"response_timeout_s": 1, "on_unknown_outcome": "fail", "window": 1}),
        ),
    )
    .await;
    let w = worker(&db, "w1");
    let retried: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(send(&c, "retry", "+31612345678", &format!("retry {i}")).await);
        }
        ids
    };
    wait_for(&c, &retried, &["delivered"], Duration::from_secs(40), &w).await;
    let unknown = count(
        &c,
        "SELECT count(DISTINCT message_id) FROM smsbus.message_event e JOIN smsbus.message m ON m.id = e.message_id
         WHERE m.channel = 'retry' AND e.to_status = 'queued' AND e.detail LIKE '%outcome unknown: no submit_sm_resp within 1s%'",
    )
    .await;
    assert!(
        unknown >= 1,
        "some submissions went unanswered and were retried"
    );

    let failed: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..2 {
            ids.push(send(&c, "fail", "+31612345678", &format!("fail {i}")).await);
        }
        ids
    };
    wait_for(
        &c,
        &failed,
        &["delivered", "failed"],
        Duration::from_secs(40),
        &w,
    )
    .await;
    let failed_unknown = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE channel = 'fail' AND status = 'failed' AND last_error LIKE 'outcome unknown:%'",
    )
    .await;
    assert!(failed_unknown >= 1, "{}", w.log());
}

#[tokio::test]
async fn intermediate_receipts_go_to_the_trace_only() {
    let t = one_channel(
        Behaviour {
            intermediate_reports: true,
            // After the submission is recorded: an ENROUTE that loses the
            // race with its own submission and its final receipt is
            // dropped as stale, which would make this test a coin toss.
            report_delay: Duration::from_millis(500),
            ..Behaviour::default()
        },
        json!({}),
    )
    .await;
    let (c, w) = (&t.client, &t.worker);
    let id = send(c, "kpn", "+31612345678", "en route").await;
    wait_for(c, &[id], &["delivered"], FINAL, w).await;
    let trace: Vec<String> = c
        .query(
            "SELECT to_status::text || coalesce(' ' || detail, '') FROM smsbus.message_event WHERE message_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(trace.len(), 5, "{trace:?}");
    assert!(
        trace[3].starts_with("sent intermediate report: stat:ENROUTE"),
        "{trace:?}"
    );
    assert_eq!(trace[4], "delivered");
}

#[tokio::test]
async fn tls_with_the_providers_ca_and_a_clear_error_without_it() {
    let sim = smsbus_tests::smsc::Smsc::start_tls(
        smsbus_tests::scenario::SYSTEM_ID,
        smsbus_tests::scenario::PASSWORD,
        Behaviour::default(),
    )
    .await;
    let other = smsbus_tests::smsc::Smsc::start_tls("x", "x", Behaviour::default()).await;
    let ca = sim.ca_file().unwrap().to_str().unwrap().to_owned();
    let wrong_ca = other.ca_file().unwrap().to_str().unwrap().to_owned();
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(
        &c,
        "secure",
        &smpp_config(&sim, json!({"tls": true, "tls_ca": ca})),
    )
    .await;
    add_channel(
        &c,
        "untrusted",
        &smpp_config(&sim, json!({"tls": true, "tls_ca": wrong_ca})),
    )
    .await;
    add_channel(
        &c,
        "nofile",
        &smpp_config(&sim, json!({"tls": true, "tls_ca": "/nonexistent/ca.pem"})),
    )
    .await;
    let w = worker(&db, "w1");
    let id = send(&c, "secure", "+31612345678", "over TLS").await;
    wait_for(&c, &[id], &["delivered"], FINAL, &w).await;
    assert_eq!(sim.received()[0].text, "over TLS");
    let reported = eventually(Duration::from_secs(10), || async {
        let untrusted = link_state(&c, "untrusted")
            .await
            .and_then(|s| s.1)
            .unwrap_or_default();
        let nofile = link_state(&c, "nofile")
            .await
            .and_then(|s| s.1)
            .unwrap_or_default();
        untrusted.contains("TLS handshake with 127.0.0.1 failed")
            && nofile.contains("tls_ca: cannot read /nonexistent/ca.pem")
    })
    .await;
    assert!(
        reported,
        "untrusted: {:?}\nnofile: {:?}\n{}",
        link_state(&c, "untrusted").await,
        link_state(&c, "nofile").await,
        w.log()
    );
}

#[tokio::test]
async fn an_inbound_message_the_database_cannot_take_is_refused_temporarily() {
    let t = one_channel(Behaviour::default(), json!({})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    wait_link(c, "kpn", "connected", w).await;
    // The worker cannot record inbound messages for now.
    c.batch_execute(
        "ALTER FUNCTION smsbus._record_inbound(text, text[], text[], text[], text[], timestamptz[], jsonb[])
         RENAME TO _record_inbound_away",
    )
    .await
    .unwrap();
    let message = InboundText::new("+31687654321", "1234", "try again later");
    let statuses = sim
        .deliver(&message, Duration::from_secs(10))
        .await
        .expect("answered");
    // ESME_RX_T_APPN: a temporary error, so the SMSC sends it again.
    assert_eq!(statuses, vec![rusmpp::CommandStatus::EsmeRxTAppn]);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM smsbus.message WHERE direction = 'in'"
        )
        .await,
        0
    );
    c.batch_execute("ALTER FUNCTION smsbus._record_inbound_away(text, text[], text[], text[], text[], timestamptz[], jsonb[]) RENAME TO _record_inbound")
        .await
        .unwrap();
    let statuses = sim
        .deliver(&message, Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(statuses, vec![rusmpp::CommandStatus::EsmeRok]);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM smsbus.message WHERE direction = 'in'"
        )
        .await,
        1
    );
}

/// Each way of carrying a long message, and Latin-1, through the real
/// driver to the simulator's own decoder: the text arrives whole, in the
/// configured form, with one delivered part row per segment.
#[tokio::test]
async fn long_messages_in_every_configured_form_and_latin1() {
    for (long_message, how) in [("udh16", "udh16"), ("sar", "sar"), ("payload", "payload")] {
        let t = one_channel(Behaviour::default(), json!({"long_message": long_message})).await;
        let (sim, c, w) = (&t.sim, &t.client, &t.worker);
        let body = format!("{long_message}: {}", "a long text in parts. ".repeat(12));
        let id = send(c, "kpn", "+31612345678", &body).await;
        wait_for(c, &[id], &["delivered"], FINAL, w).await;
        let received = sim.received();
        let got = received.iter().find(|r| r.text == body).unwrap_or_else(|| {
            panic!("{long_message}: the SMSC never got the text; got {received:#?}")
        });
        let hows: Vec<&str> = sim.parts().iter().map(|p| p.how).collect();
        assert!(hows.iter().all(|h| *h == how), "{long_message}: {hows:?}");
        let parts = count(c, &format!("SELECT count(*) FROM smsbus.message_part WHERE message_id = {id} AND status = 'delivered'")).await;
        if long_message == "payload" {
            // One submit_sm carries the whole text.
            assert_eq!((got.parts, parts), (1, 1));
        } else {
            let segments: i32 = scalar(
                c,
                "SELECT segments FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await;
            assert_eq!(got.parts as i32, segments);
            assert_eq!(parts, i64::from(segments));
        }
    }

    let t = one_channel(Behaviour::default(), json!({"default_coding": "latin1"})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    let latin = send(c, "kpn", "+31612345678", "Café ¿Qué? Ñoño à ü").await;
    let euro = send(c, "kpn", "+31612345678", "Prijs: 5 €").await;
    wait_for(c, &[latin, euro], &["delivered"], FINAL, w).await;
    let received = sim.received();
    let coding = |text: &str| {
        received
            .iter()
            .find(|r| r.text == text)
            .map(|r| r.data_coding)
    };
    assert_eq!(coding("Café ¿Qué? Ñoño à ü"), Some(3), "{received:#?}");
    // € is not in Latin-1: that message goes as UCS-2.
    assert_eq!(coding("Prijs: 5 €"), Some(8), "{received:#?}");
}
