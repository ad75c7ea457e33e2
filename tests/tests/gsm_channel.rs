//! The GSM modem channel end to end: a real database, the worker as a
//! process and the modem simulator on a pseudo-terminal. What crossed the
//! line is checked at the simulator (decoded by its own PDU code), what was
//! recorded in the database.

use std::time::Duration;

use serde_json::json;
use smsbus_tests::db::{count, scalar, status_of, strings, TestDb};
use smsbus_tests::modem::{pdu, Coding, Modem, ModemBehaviour};
use smsbus_tests::scenario::{
    add_channel_of_kind, gsm_config, link_state, sample_bodies, send, wait_for, wait_link, worker,
};
use smsbus_tests::worker::{eventually, Worker};
use tokio_postgres::Client;

const FINAL: Duration = Duration::from_secs(20);

/// A modem, a database with a GSM channel `modem` on it, and a worker.
/// Fields drop in order: the worker stops before its database goes.
struct OneModem {
    worker: Worker,
    client: Client,
    modem: Modem,
    _db: TestDb,
}

async fn one_modem(
    behaviour: ModemBehaviour,
    stored: &[(String, usize)],
    extra: serde_json::Value,
) -> OneModem {
    let modem = Modem::start(behaviour, stored).expect("modem simulator");
    let db = TestDb::new().await;
    let client = db.connect().await;
    add_channel_of_kind(&client, "modem", "gsm", &gsm_config(modem.path(), extra)).await;
    let worker = worker(&db, "w1");
    OneModem {
        worker,
        client,
        modem,
        _db: db,
    }
}

async fn received(c: &Client) -> Vec<(String, String, String)> {
    c.query(
        "SELECT from_address, to_address, body FROM smsbus.message WHERE direction = 'in' AND status = 'received' ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn wait_received(c: &Client, n: usize, w: &Worker) -> Vec<(String, String, String)> {
    let ok = eventually(FINAL, || async { received(c).await.len() >= n }).await;
    assert!(
        ok,
        "{n} messages not received: {:?}\nworker log:\n{}",
        received(c).await,
        w.log()
    );
    received(c).await
}

#[tokio::test]
async fn texts_reach_the_modem_intact_and_come_back_delivered() {
    let t = one_modem(ModemBehaviour::default(), &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    let bodies = sample_bodies();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(send(c, "modem", "+31612345678", body).await);
    }
    wait_for(c, &ids, &["delivered"], FINAL, w).await;
    let texts = modem.texts();
    for (id, body) in ids.iter().zip(&bodies) {
        let segments: i32 = scalar(
            c,
            "SELECT segments FROM smsbus.message WHERE id = $1",
            &[id],
        )
        .await;
        let got = texts
            .iter()
            .find(|(_, text, _)| text == body)
            .unwrap_or_else(|| panic!("the modem never got {body:?}; got {texts:#?}"));
        assert_eq!(got.0, "+31612345678");
        assert_eq!(got.2 as i32, segments, "parts of {body:?}");
        let delivered = count(
            c,
            &format!("SELECT count(*) FROM smsbus.message_part WHERE message_id = {id} AND status = 'delivered'"),
        )
        .await;
        assert_eq!(delivered, i64::from(segments));
    }
    // Every submission asked for a status report, and each part's
    // reference is its TP-MR with the recipient's last digits.
    let submitted = modem.submitted();
    assert!(submitted.iter().all(|s| s.submit.status_report));
    let first: String = scalar(
        c,
        "SELECT reference FROM smsbus.message WHERE id = $1",
        &[&ids[0]],
    )
    .await;
    assert_eq!(first, format!("{}:612345678", submitted[0].reference));
    // The link, its registration and signal are in channel_state.
    let detail: serde_json::Value = scalar(
        c,
        "SELECT detail FROM smsbus.channel_state WHERE channel = 'modem'",
        &[],
    )
    .await;
    assert_eq!(detail["registration"], "home");
    assert_eq!(detail["signal_dbm"], -71);
    assert_eq!(link_state(c, "modem").await.unwrap().0, "connected");
}

#[tokio::test]
async fn national_numbers_validity_and_no_report_wanted() {
    let t = one_modem(ModemBehaviour::default(), &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    let id: i64 = c
        .query_one(
            "INSERT INTO smsbus.message (to_address, body, channel, request_report, valid_until)
             VALUES ('0612345678', 'no report', 'modem', false, now() + interval '2 hours') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    wait_for(c, &[id], &["sent"], FINAL, w).await;
    let s = &modem.submitted()[0].submit;
    assert_eq!((s.to.as_str(), s.to_type), ("0612345678", 0x81));
    assert!(!s.status_report);
    // Two hours, rounded down: (115 / 5) - 1 = 22, 5-minute steps.
    let vp = s.validity.expect("a relative validity period");
    assert!((21..=23).contains(&vp), "TP-VP {vp}");
}

#[tokio::test]
async fn inbound_messages_become_rows_and_leave_the_sim_only_after() {
    let t = one_modem(ModemBehaviour::default(), &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    wait_link(c, "modem", "connected", w).await;
    modem.deliver("+31687654321", "Hello smsbus", Coding::Gsm7, None);
    modem.deliver("Shop", "Your code is 1234", Coding::Gsm7, None);
    let long = "Длинное входящее сообщение. ".repeat(6);
    modem.deliver("+31611111111", &long, Coding::Ucs2, Some(&[3, 1, 2]));
    let got = wait_received(c, 3, w).await;
    assert!(got.contains(&(
        "+31687654321".into(),
        "+31600000001".into(),
        "Hello smsbus".into()
    )));
    assert!(got
        .iter()
        .any(|(from, _, body)| from == "Shop" && body == "Your code is 1234"));
    assert!(
        got.iter()
            .any(|(from, _, body)| from == "+31611111111" && body == &long),
        "{got:?}"
    );
    // Every entry is deleted from the SIM, after its row was committed.
    let ok = eventually(FINAL, || async { modem.stored().0 == 0 }).await;
    assert!(ok, "left on the SIM: {:?}", modem.stored());
    let custom: serde_json::Value = scalar(
        c,
        "SELECT custom FROM smsbus.message WHERE body = 'Hello smsbus'",
        &[],
    )
    .await;
    assert_eq!(custom["smsc_timestamp"], "2024-11-07T19:58:47+01:00");
}

#[tokio::test]
async fn messages_stored_before_start_are_read() {
    let mut stored = pdu::encode_deliver("+31622222222", "waiting on the SIM", Coding::Gsm7, 1);
    stored.extend(pdu::encode_deliver(
        "+31633333333",
        &"x".repeat(170),
        Coding::Gsm7,
        2,
    ));
    let t = one_modem(ModemBehaviour::default(), &stored, json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    let got = wait_received(c, 2, w).await;
    assert!(got.iter().any(|(_, _, b)| b == "waiting on the SIM"));
    assert!(got.iter().any(|(_, _, b)| b == &"x".repeat(170)));
    let ok = eventually(FINAL, || async { modem.stored().0 == 0 }).await;
    assert!(ok);
    assert!(modem.commands().iter().any(|cmd| cmd == "AT+CMGL=4"));
}

#[tokio::test]
async fn the_pin_is_entered_once_and_a_wrong_one_is_not_tried_again() {
    let behaviour = ModemBehaviour {
        pin: Some("4321".into()),
        ..ModemBehaviour::default()
    };
    let t = one_modem(behaviour.clone(), &[], json!({"pin": "4321"})).await;
    let id = send(&t.client, "modem", "+31612345678", "after the PIN").await;
    wait_for(&t.client, &[id], &["delivered"], FINAL, &t.worker).await;

    let wrong = one_modem(behaviour, &[], json!({"pin": "1111"})).await;
    let c = &wrong.client;
    let ok = eventually(FINAL, || async {
        link_state(c, "modem").await.is_some_and(|s| s.0 == "error")
    })
    .await;
    assert!(
        ok,
        "{:?}\n{}",
        link_state(c, "modem").await,
        wrong.worker.log()
    );
    let (_, error) = link_state(c, "modem").await.unwrap();
    assert!(error.unwrap().contains("refused the configured PIN"));
    // The SIM allows three attempts: the channel must not spend them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = wrong
        .modem
        .commands()
        .iter()
        .filter(|c| c.starts_with("AT+CPIN="))
        .count();
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn refusals_retry_or_fail_by_their_code() {
    let behaviour = ModemBehaviour {
        fail_submits: 1,
        fail_code: 42, // congestion: temporary
        ..ModemBehaviour::default()
    };
    let t = one_modem(behaviour, &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    let retried = send(c, "modem", "+31612345678", "congested once").await;
    wait_for(c, &[retried], &["delivered"], FINAL, w).await;
    let attempts: i32 = scalar(
        c,
        "SELECT attempts FROM smsbus.message WHERE id = $1",
        &[&retried],
    )
    .await;
    assert_eq!(attempts, 2);

    modem.set_behaviour(|b| {
        b.fail_submits = 1;
        b.fail_code = 21;
    });
    let failed = send(c, "modem", "+31612345678", "rejected").await;
    wait_for(c, &[failed], &["failed"], FINAL, w).await;
    let error: String = scalar(
        c,
        "SELECT last_error FROM smsbus.message WHERE id = $1",
        &[&failed],
    )
    .await;
    assert_eq!(error, "+CMS ERROR 21: short message transfer rejected");
}

#[tokio::test]
async fn a_stalled_modem_and_a_vanished_port_are_recovered_with_nothing_lost() {
    let t = one_modem(ModemBehaviour::default(), &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    wait_link(c, "modem", "connected", w).await;
    let first = send(c, "modem", "+31612345678", "before").await;
    wait_for(c, &[first], &["delivered"], FINAL, w).await;

    // Hung: the next command times out, the channel restarts and reopens.
    modem.set_behaviour(|b| b.stalled = true);
    let during = send(c, "modem", "+31612345678", "during the stall").await;
    let ok = eventually(FINAL, || async {
        link_state(c, "modem")
            .await
            .is_some_and(|s| s.0 != "connected")
    })
    .await;
    assert!(ok, "the stall went unnoticed\n{}", w.log());
    modem.set_behaviour(|b| b.stalled = false);
    wait_for(c, &[during], &["delivered"], Duration::from_secs(40), w).await;

    // Unplugged: the port goes away, comes back, and the channel with it.
    modem.vanish().await;
    let gone = send(c, "modem", "+31612345678", "while unplugged").await;
    let ok = eventually(FINAL, || async {
        link_state(c, "modem")
            .await
            .is_some_and(|s| s.0 != "connected")
    })
    .await;
    assert!(ok, "the vanished port went unnoticed\n{}", w.log());
    modem.reappear().unwrap();
    wait_for(c, &[gone], &["delivered"], Duration::from_secs(40), w).await;
    let texts: Vec<String> = modem.texts().into_iter().map(|t| t.1).collect();
    for body in ["before", "during the stall", "while unplugged"] {
        assert!(
            texts.iter().any(|t| t == body),
            "{body:?} not sent: {texts:?}"
        );
    }
}

#[tokio::test]
async fn garbage_on_the_line_is_survived() {
    let t = one_modem(ModemBehaviour::default(), &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    wait_link(c, "modem", "connected", w).await;
    modem.write_raw(b"\r\n\xff\xfe garbage \x00\x01\r\n+CMTI: \"SM\",x\r\n+CDS: 9\r\nZZ\r\n");
    // An entry that is not a PDU at all is kept as a row with the raw text.
    modem.arrive("07FFFF".into(), 2);
    let id = send(c, "modem", "+31612345678", "after the garbage").await;
    wait_for(c, &[id], &["delivered"], FINAL, w).await;
    // The stored entry and the +CDS that carried no PDU are both kept.
    let undecodable = strings(
        c,
        "SELECT custom->>'undecodable_pdu' FROM smsbus.message WHERE custom ? 'undecodable_pdu' ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(undecodable, ["07FFFF", "ZZ"]);
    assert_eq!(modem.stored().0, 0);
    assert_eq!(link_state(c, "modem").await.unwrap().0, "connected");
}

#[tokio::test]
async fn two_modems_side_by_side_one_broken() {
    let good = Modem::start(ModemBehaviour::default(), &[]).unwrap();
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel_of_kind(&c, "good", "gsm", &gsm_config(good.path(), json!({}))).await;
    add_channel_of_kind(
        &c,
        "broken",
        "gsm",
        &gsm_config(std::path::Path::new("/dev/does-not-exist"), json!({})),
    )
    .await;
    let w = worker(&db, "w1");
    let ok = eventually(FINAL, || async {
        link_state(&c, "broken")
            .await
            .is_some_and(|s| s.0 == "error")
    })
    .await;
    assert!(ok, "{:?}", link_state(&c, "broken").await);
    let (_, error) = link_state(&c, "broken").await.unwrap();
    assert!(error.unwrap().contains("/dev/does-not-exist"));
    let id = send(&c, "good", "+31612345678", "through the good one").await;
    wait_for(&c, &[id], &["delivered"], FINAL, &w).await;
}

#[tokio::test]
async fn status_reports_say_delivered_failed_or_still_trying() {
    let t = one_modem(ModemBehaviour::default(), &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    // Validity period expired: a permanent failure.
    modem.set_behaviour(|b| b.report_status = Some(0x46));
    let failed = send(c, "modem", "+31612345678", "never delivered").await;
    wait_for(c, &[failed], &["notdelivered"], FINAL, w).await;
    let error: String = scalar(
        c,
        "SELECT last_error FROM smsbus.message WHERE id = $1",
        &[&failed],
    )
    .await;
    assert_eq!(error, "TP-ST 0x46: validity period expired");
    // Recipient busy, the service centre still trying: the message stays
    // sent, and the trace says so.
    modem.set_behaviour(|b| b.report_status = Some(0x21));
    let trying = send(c, "modem", "+31612345678", "still trying").await;
    let ok = eventually(FINAL, || async {
        count(
            c,
            &format!("SELECT count(*) FROM smsbus.message_event WHERE message_id = {trying} AND detail LIKE 'intermediate report: TP-ST 0x21%'"),
        )
        .await
            == 1
    })
    .await;
    assert!(ok, "{}", w.log());
    assert_eq!(status_of(c, trying).await, "sent");
    assert_eq!(modem.stored().0, 0);
}

#[tokio::test]
async fn reports_find_their_part_across_the_tp_mr_wrap() {
    let behaviour = ModemBehaviour {
        first_reference: 254,
        report_status: None,
        ..ModemBehaviour::default()
    };
    let t = one_modem(behaviour, &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    // TP-MR 254, 255, then 0 and 1 after the wrap, to two recipients.
    let a = send(c, "modem", "+31612345678", "to a").await;
    let b = send(c, "modem", "+31687654321", "to b").await;
    let c2 = send(c, "modem", "+31612345678", "to a again").await;
    let d = send(c, "modem", "+31687654321", "to b again").await;
    wait_for(c, &[a, b, c2, d], &["sent"], FINAL, w).await;
    let refs: Vec<u8> = modem.submitted().iter().map(|s| s.reference).collect();
    assert_eq!(refs, [254, 255, 0, 1]);
    // Reports for TP-MR 0 to +31612345678 (message c2) and TP-MR 255 to
    // +31687654321 (message b), in the national format an SMSC may use.
    let (r1, l1) = pdu::encode_status_report(0, "0612345678", 0x00);
    let (r2, l2) = pdu::encode_status_report(255, "+31687654321", 0x41);
    modem.arrive(r1, l1);
    modem.arrive(r2, l2);
    wait_for(c, &[c2], &["delivered"], FINAL, w).await;
    wait_for(c, &[b], &["notdelivered"], FINAL, w).await;
    // The others still wait for theirs; a report with a TP-MR of another
    // recipient matches nothing.
    let (r3, l3) = pdu::encode_status_report(254, "+31687654321", 0x00);
    modem.arrive(r3, l3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [a, d] {
        assert_eq!(status_of(c, id).await, "sent");
    }
}

#[tokio::test]
async fn status_reports_kept_in_a_memory_of_their_own() {
    let behaviour = ModemBehaviour {
        reports_apart: true,
        ..ModemBehaviour::default()
    };
    let t = one_modem(behaviour, &[], json!({})).await;
    let (modem, c, w) = (&t.modem, &t.client, &t.worker);
    let ids = [
        send(c, "modem", "+31612345678", "report one").await,
        send(c, "modem", "+31612345678", "report two").await,
    ];
    wait_for(c, &ids, &["delivered"], FINAL, w).await;
    // Read and deleted in "SR", and the SIM memory selected again.
    let ok = eventually(FINAL, || async { modem.stored().0 == 0 }).await;
    assert!(ok, "{:?}", modem.stored());
    // The driver selects the SIM memory again right after its last delete
    // in "SR": wait for it rather than race it.
    let switched_back = eventually(FINAL, || async {
        let commands = modem.commands();
        let last_sr = commands.iter().rposition(|c| c == "AT+CPMS=\"SR\"");
        let last_sm = commands
            .iter()
            .rposition(|c| c == "AT+CPMS=\"SM\",\"SM\",\"SM\"");
        last_sr.is_some() && last_sm > last_sr
    })
    .await;
    assert!(switched_back, "{:?}", modem.commands());
    // Inbound messages still arrive in the SIM memory.
    modem.deliver("+31687654321", "after the reports", Coding::Gsm7, None);
    let got = wait_received(c, 1, w).await;
    assert_eq!(got[0].2, "after the reports");
}
