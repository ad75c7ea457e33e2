//! Submissions: long messages in parts and in message_payload, credit and
//! daily limits, throttling; every accepted one a committed row.

use rusmpp::pdus::SubmitMulti;
use rusmpp::values::{DestAddress, DistributionListName, Npi, SmeAddress};

use super::*;

/// A submit_sm whose whole text travels in message_payload.
fn submit_long(to: &str, text: &str) -> SubmitSm {
    let mut pdu = submit(to, "");
    pdu.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
        MessagePayload::new(AnyOctetString::from(
            smsbus_core::gsm7::encode(text).unwrap(),
        )),
    ));
    pdu
}

#[tokio::test]
async fn credit_and_the_daily_limit_refuse_what_is_beyond_them() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", credit = 3, daily_limit = 5").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let credit = || async {
        scalar::<Option<i64>>(
            &c,
            "SELECT credit FROM smsbus.account WHERE name = 'acme'",
            &[],
        )
        .await
    };
    let messages = || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE account = 'acme'",
        )
        .await
    };

    submitted_id(&call(&mut client, 2, submit("31612345678", "one part")).await);
    assert_eq!(credit().await, Some(2));
    // Two parts take two.
    submitted_id(&call(&mut client, 3, submit_long("31612345678", &"x".repeat(200))).await);
    assert_eq!(credit().await, Some(0));
    let refused = call(&mut client, 4, submit("31612345678", "no credit")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRsubmitfail);
    assert_eq!(messages().await, 2, "a refused submission is no message");
    assert_eq!(credit().await, Some(0));

    // Without a credit kept, the daily limit still counts: 2 of 3 today.
    c.batch_execute("UPDATE smsbus.account SET credit = NULL, daily_limit = 3 WHERE name = 'acme'")
        .await
        .unwrap();
    submitted_id(&call(&mut client, 5, submit("31612345678", "third")).await);
    let refused = call(&mut client, 6, submit("31612345678", "fourth")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRsubmitfail);
    assert_eq!(messages().await, 3);
    let today = count(
        &c,
        "SELECT submitted FROM smsbus.account_usage WHERE account = 'acme' AND day = (now() AT TIME ZONE 'UTC')::date",
    )
    .await;
    assert_eq!(today, 3);
    assert_eq!(credit().await, None, "no credit kept, none taken");
}

/// Part `seq` of `total` of a long GSM text, with an 8-bit (reference
/// < 256) or 16-bit concatenation UDH.
fn udh_part(reference: u16, total: u8, seq: u8, text: &str) -> SubmitSm {
    let mut data = if reference < 256 {
        vec![5, 0x00, 3, reference as u8, total, seq]
    } else {
        let [hi, lo] = reference.to_be_bytes();
        vec![6, 0x08, 4, hi, lo, total, seq]
    };
    data.extend(smsbus_core::gsm7::encode(text).unwrap());
    SubmitSm::builder()
        .source_addr(COctetString::from_str("ACME").unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str("31612345678").unwrap())
        .esm_class(EsmClass::from(0x40))
        .short_message(OctetString::from_vec(data).unwrap())
        .build()
}

/// The same with SAR TLVs.
fn sar_part(reference: u16, total: u8, seq: u8, text: &str) -> SubmitSm {
    let mut pdu = submit("31612345678", text);
    pdu.push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(reference));
    pdu.push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(total));
    pdu.push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seq));
    pdu
}

async fn silent(client: &mut Client) -> bool {
    tokio::time::timeout(Duration::from_millis(300), client.next())
        .await
        .is_err()
}

#[tokio::test]
async fn long_messages_in_parts_become_one_row_once_every_part_came() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, "").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let texts = ["First part, ", "second part, ", "third part."];
    let whole = texts.concat();

    let send = |pdu: SubmitSm, seq: u32| Command::new(CommandStatus::EsmeRok, seq, pdu);
    let mut ids = Vec::new();
    for (name, parts) in [
        (
            "udh8",
            [
                udh_part(7, 3, 3, texts[2]),
                udh_part(7, 3, 1, texts[0]),
                udh_part(7, 3, 2, texts[1]),
            ],
        ),
        (
            "udh16",
            [
                udh_part(700, 3, 1, texts[0]),
                udh_part(700, 3, 2, texts[1]),
                udh_part(700, 3, 3, texts[2]),
            ],
        ),
        (
            "sar",
            [
                sar_part(9, 3, 2, texts[1]),
                sar_part(9, 3, 3, texts[2]),
                sar_part(9, 3, 1, texts[0]),
            ],
        ),
    ] {
        let base = 10 * (ids.len() as u32 + 1);
        let [a, b, last] = parts;
        client.send(send(a, base)).await.unwrap();
        client.send(send(b, base + 1)).await.unwrap();
        assert!(
            silent(&mut client).await,
            "{name}: no answer before the last part"
        );
        assert_eq!(
            count(&c, "SELECT count(*) FROM smsbus.message").await,
            ids.len() as i64,
            "{name}: nothing stored before the last part"
        );
        client.send(send(last, base + 2)).await.unwrap();
        let mut answered = Vec::new();
        for _ in 0..3 {
            let answer = next(&mut client).await;
            answered.push((answer.sequence_number(), submitted_id(&answer)));
        }
        answered.sort();
        let id = answered[0].1;
        assert!(
            answered.iter().all(|(_, i)| *i == id),
            "{name}: every part is told the message's id: {answered:?}"
        );
        assert_eq!(
            answered.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [base, base + 1, base + 2]
        );
        let body: String =
            scalar(&c, "SELECT body FROM smsbus.message WHERE id = $1", &[&id]).await;
        assert_eq!(body, whole, "{name}");
        ids.push(id);
    }

    // A part twice is refused; the one held stays.
    client.send(send(udh_part(8, 2, 1, "a"), 50)).await.unwrap();
    let twice = call(&mut client, 51, udh_part(8, 2, 1, "a")).await;
    assert_eq!(twice.sequence_number(), 51);
    assert_eq!(twice.status(), CommandStatus::EsmeRsubmitfail);
    // Unbinding refuses the part whose sibling never came, before unbind_resp.
    client
        .send(Command::new(CommandStatus::EsmeRok, 52, Pdu::Unbind))
        .await
        .unwrap();
    let refused = next(&mut client).await;
    assert_eq!(
        (refused.sequence_number(), refused.status()),
        (50, CommandStatus::EsmeRsubmitfail)
    );
    assert_eq!(next(&mut client).await.id(), CommandId::UnbindResp);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 3);
}

#[tokio::test]
async fn over_its_throughput_an_account_is_throttled_and_nothing_is_lost() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", throughput = 5").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    // Forty at once, far over 5 a second.
    for i in 0..40u32 {
        client
            .send(Command::new(
                CommandStatus::EsmeRok,
                10 + i,
                submit("31612345678", &format!("burst {i}")),
            ))
            .await
            .unwrap();
    }
    let mut accepted = Vec::new();
    let mut throttled = 0;
    for _ in 0..40 {
        let answer = next(&mut client).await;
        match answer.status() {
            CommandStatus::EsmeRok => accepted.push(submitted_id(&answer)),
            CommandStatus::EsmeRthrottled => throttled += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(throttled >= 20, "throttled {throttled} of 40");
    assert!(!accepted.is_empty());
    // Every accepted submission is a row; no throttled one is.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE account = 'acme'"
        )
        .await,
        accepted.len() as i64
    );
    let counted = eventually(Duration::from_secs(10), || async {
        count(
            &c,
            "SELECT throttled FROM smsbus.smpp_bind WHERE account = 'acme'",
        )
        .await
            == throttled
    })
    .await;
    assert!(counted, "smpp_bind.throttled");
}

#[tokio::test]
async fn submit_multi_makes_a_message_per_destination_and_names_those_refused() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, "").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let sme = |to: &str| {
        DestAddress::SmeAddress(SmeAddress::new(
            Ton::International,
            Npi::Isdn,
            COctetString::from_str(to).unwrap(),
        ))
    };
    let multi = |dests: Vec<DestAddress>| {
        SubmitMulti::builder()
            .source_addr(COctetString::from_str("ACME").unwrap())
            .dest_address(dests)
            .short_message(
                OctetString::from_vec(smsbus_core::gsm7::encode("to many").unwrap()).unwrap(),
            )
            .build()
    };
    let answer = call(
        &mut client,
        2,
        multi(vec![
            sme("31612345678"),
            sme("12ab"),
            DestAddress::DistributionListName(DistributionListName::new(
                COctetString::from_str("friends").unwrap(),
            )),
            sme("31612345679"),
        ]),
    )
    .await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    let Some(Pdu::SubmitMultiResp(resp)) = answer.pdu() else {
        panic!("not a submit_multi_resp: {answer:?}");
    };
    let first: i64 = resp.message_id.as_str().parse().unwrap();
    let refused: Vec<(String, CommandStatus)> = resp
        .unsuccess_sme()
        .iter()
        .map(|u| (u.destination_addr.as_str().to_owned(), u.error_status_code))
        .collect();
    assert_eq!(
        refused,
        [
            ("12ab".to_owned(), CommandStatus::EsmeRinvdstadr),
            ("friends".to_owned(), CommandStatus::EsmeRinvdstadr)
        ]
    );
    let rows: Vec<(i64, String)> = c
        .query(
            "SELECT id, to_address FROM smsbus.message WHERE account = 'acme' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], (first, "+31612345678".to_owned()));
    assert_eq!(rows[1].1, "+31612345679");

    // None accepted: the command fails with the first refusal's status.
    let answer = call(&mut client, 3, multi(vec![sme("12ab")])).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRinvdstadr);
}

/// A port-addressing header (a vCard, to port 9204).
const PORT_HEADER: [u8; 7] = [6, 5, 4, 0x23, 0xF4, 0, 0];

/// A text in two parts the client cut itself (it would fit one), and
/// 8-bit data with a port-addressing header: their ids.
async fn send_parts_and_port_addressed(client: &mut Client, base: u32) -> (i64, i64) {
    let mut data = PORT_HEADER.to_vec();
    data.extend([0xCA, 0xFE]);
    let port_addressed = SubmitSm::builder()
        .source_addr(COctetString::from_str("ACME").unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str("31612345670").unwrap())
        .esm_class(EsmClass::from(0x40))
        .data_coding(DataCoding::from(4))
        .short_message(OctetString::from_vec(data).unwrap())
        .build();
    client
        .send(Command::new(
            CommandStatus::EsmeRok,
            base,
            udh_part(0x42, 2, 1, "First part, "),
        ))
        .await
        .unwrap();
    let text = submitted_id(&call(client, base + 1, udh_part(0x42, 2, 2, "second part.")).await);
    assert_eq!(submitted_id(&next(client).await), text);
    let binary = submitted_id(&call(client, base + 2, port_addressed).await);
    (text, binary)
}

#[tokio::test]
async fn an_account_that_keeps_its_udh_has_its_parts_sent_on_as_they_came() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let port = free_port();
    account_and_listener(&c, port, ", channel = 'kpn', keep_udh = true").await;
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let port_header = PORT_HEADER;
    let mut client = connect(port).await;
    assert_eq!(
        call(&mut client, 1, bind("secret1")).await.status(),
        CommandStatus::EsmeRok
    );
    let (text, binary) = send_parts_and_port_addressed(&mut client, 10).await;
    wait_for(&c, &[text, binary], &["delivered"], FINAL, &worker).await;
    let kept: serde_json::Value = scalar(
        &c,
        "SELECT client_parts FROM smsbus.message WHERE id = $1",
        &[&text],
    )
    .await;
    assert_eq!(
        kept,
        json!([{"udh": "050003420201", "chars": 12}, {"udh": "050003420202", "chars": 12}])
    );
    let parts = sim.parts();
    let sent: Vec<(Vec<u8>, &str)> = parts
        .iter()
        .map(|p| (p.udh.clone(), p.text.as_str()))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.contains(&(vec![5, 0, 3, 0x42, 2, 1], "First part, ")));
    assert!(sent.contains(&(vec![5, 0, 3, 0x42, 2, 2], "second part.")));
    assert!(sent.contains(&(port_header.to_vec(), "cafe")));

    // Without keep_udh the channel cuts the text itself (one part here)
    // and the port header does not travel.
    client
        .send(Command::new(CommandStatus::EsmeRok, 20, Pdu::Unbind))
        .await
        .unwrap();
    assert_eq!(next(&mut client).await.id(), CommandId::UnbindResp);
    c.batch_execute("UPDATE smsbus.account SET keep_udh = false WHERE name = 'acme'")
        .await
        .unwrap();
    let mut client = connect(port).await;
    assert_eq!(
        call(&mut client, 1, bind("secret1")).await.status(),
        CommandStatus::EsmeRok
    );
    let (text, binary) = send_parts_and_port_addressed(&mut client, 30).await;
    wait_for(&c, &[text, binary], &["delivered"], FINAL, &worker).await;
    let parts = sim.parts();
    let again: Vec<(Vec<u8>, &str)> = parts[3..]
        .iter()
        .map(|p| (p.udh.clone(), p.text.as_str()))
        .collect();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.contains(&(vec![], "First part, second part.")));
    assert!(again.contains(&(vec![], "cafe")));
}
