//! Delivery receipts back to the client from the durable outbox: end to
//! end through the SMSC simulator, while the client is away, across a
//! killed worker, refused by the client.

use super::*;

/// A receipt as the client reads it: the receipted_message_id TLV and the
/// text.
struct GotReceipt {
    sequence: u32,
    id: i64,
    text: String,
    source: String,
    destination: String,
    esm_class: u8,
}

/// The next deliver_sm, answering the server's enquire_links on the way.
async fn next_receipt(client: &mut Client) -> GotReceipt {
    loop {
        let command = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("a receipt in time")
            .expect("the connection open")
            .expect("a PDU");
        match command.pdu() {
            Some(Pdu::DeliverSm(d)) => {
                let id = d
                    .tlvs()
                    .iter()
                    .find_map(|t| match t.value() {
                        Some(TlvValue::ReceiptedMessageId(id)) => Some(id.as_str().to_owned()),
                        _ => None,
                    })
                    .expect("receipted_message_id");
                return GotReceipt {
                    sequence: command.sequence_number(),
                    id: id.parse().unwrap(),
                    text: String::from_utf8(d.short_message().as_ref().to_vec()).unwrap(),
                    source: d.source_addr.as_str().to_owned(),
                    destination: d.destination_addr.as_str().to_owned(),
                    esm_class: u8::from(d.esm_class),
                };
            }
            _ if command.id() == CommandId::EnquireLink => {
                client
                    .send(Command::new(
                        CommandStatus::EsmeRok,
                        command.sequence_number(),
                        Pdu::EnquireLinkResp,
                    ))
                    .await
                    .unwrap();
            }
            _ => panic!("expected deliver_sm, got {command:?}"),
        }
    }
}

async fn acknowledge(client: &mut Client, receipt: &GotReceipt) {
    client
        .send(Command::new(
            CommandStatus::EsmeRok,
            receipt.sequence,
            DeliverSmResp::builder().build(),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_receipt_travels_from_the_smsc_back_to_the_client() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let port = free_port();
    account_and_listener(&c, port, ", channel = 'kpn'").await;
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);

    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let with = submitted_id(
        &call(
            &mut client,
            2,
            with_receipt(submit("31612345678", "Hello receipts")),
        )
        .await,
    );
    let without = submitted_id(&call(&mut client, 3, submit("31612345679", "No receipt")).await);
    wait_for(&c, &[with, without], &["delivered"], FINAL, &worker).await;

    let receipt = next_receipt(&mut client).await;
    assert_eq!(receipt.id, with);
    assert_eq!(receipt.esm_class, 0x04);
    assert!(
        receipt
            .text
            .starts_with(&format!("id:{with} sub:001 dlvrd:001 submit date:")),
        "{}",
        receipt.text
    );
    assert!(
        receipt
            .text
            .ends_with("stat:DELIVRD err:000 text:Hello receipts"),
        "{}",
        receipt.text
    );
    assert_eq!(
        (receipt.source.as_str(), receipt.destination.as_str()),
        ("31612345678", "ACME")
    );
    // Until the client answers, the receipt stays in the outbox, taken.
    let taken: String = scalar(
        &c,
        "SELECT claimed_by FROM smsbus.smpp_outbox WHERE message_id = $1",
        &[&with],
    )
    .await;
    assert_eq!(taken, "w1");
    acknowledge(&mut client, &receipt).await;
    let gone = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == 0
    })
    .await;
    assert!(gone, "the acknowledged receipt left the outbox");
    // The message that asked for none got none.
    let none = tokio::time::timeout(Duration::from_millis(500), client.next()).await;
    assert!(none.is_err(), "no second receipt: {none:?}");
    let counted = eventually(Duration::from_secs(10), || async {
        count(
            &c,
            "SELECT delivered FROM smsbus.smpp_bind WHERE account = 'acme'",
        )
        .await
            == 1
    })
    .await;
    assert!(
        counted,
        "smpp_bind.delivered counts the acknowledged receipt"
    );

    // Bit 4 of registered_delivery asks for an intermediate notification
    // too: ENROUTE when the provider took it, then the final receipt.
    let mut pdu = submit("31612345677", "Hello twice");
    pdu.registered_delivery = RegisteredDelivery::from(0x11);
    let both = submitted_id(&call(&mut client, 4, pdu).await);
    wait_for(&c, &[both], &["delivered"], FINAL, &worker).await;
    let first = next_receipt(&mut client).await;
    acknowledge(&mut client, &first).await;
    let second = next_receipt(&mut client).await;
    acknowledge(&mut client, &second).await;
    assert_eq!((first.id, second.id), (both, both));
    assert_eq!(first.esm_class, 0x20, "{}", first.text);
    assert!(first.text.contains("stat:ENROUTE"), "{}", first.text);
    assert_eq!(second.esm_class, 0x04);
    assert!(second.text.contains("stat:DELIVRD"), "{}", second.text);
}

#[tokio::test]
async fn receipts_wait_for_the_client_and_arrive_in_order_once_each() {
    const N: usize = 300;
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    // No channel at all: every message is nochannel at once, and owes its
    // receipt (REJECTD) while the client is away.
    account_and_listener(&c, port, ", deliver_window = 20").await;
    let mut worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);

    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_transmitter()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let mut ids = Vec::new();
    for i in 0..N {
        let answer = call(
            &mut client,
            2 + i as u32,
            with_receipt(submit("31612345678", &format!("message {i}"))),
        )
        .await;
        ids.push(submitted_id(&answer));
    }
    let unbound = call(&mut client, 9999, Pdu::Unbind).await;
    assert_eq!(unbound.id(), CommandId::UnbindResp);
    drop(client);
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        N as i64
    );

    // The client comes back, to another worker: all of them, in order.
    worker.signal(Signal::SIGTERM);
    worker.wait_exit(Duration::from_secs(10));
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w2"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_receiver()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let mut got = Vec::new();
    for _ in 0..N {
        let receipt = next_receipt(&mut client).await;
        assert!(receipt.text.contains("stat:REJECTD"), "{}", receipt.text);
        got.push(receipt.id);
        acknowledge(&mut client, &receipt).await;
    }
    assert_eq!(got, ids, "every receipt once, in the order of the messages");
    let gone = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == 0
    })
    .await;
    assert!(
        gone,
        "acknowledged receipts leave the outbox: {}",
        worker.log()
    );
    let none = tokio::time::timeout(Duration::from_millis(500), client.next()).await;
    assert!(none.is_err(), "nothing more: {none:?}");
}

#[tokio::test]
async fn a_killed_worker_resends_only_what_was_not_acknowledged() {
    const N: i64 = 50;
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", deliver_window = 10").await;
    c.batch_execute(&format!(
        "INSERT INTO smsbus.message (to_address, body, account, receipts)
         SELECT '+31612345678', 'm' || i, 'acme', 1 FROM generate_series(1, {N}) i"
    ))
    .await
    .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        N
    );
    let mut worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_receiver()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    // A window's worth arrives; the client acknowledges half of it.
    let mut first = Vec::new();
    for _ in 0..10 {
        first.push(next_receipt(&mut client).await);
    }
    for receipt in &first[..5] {
        acknowledge(&mut client, receipt).await;
    }
    let recorded = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == N - 5
    })
    .await;
    assert!(recorded, "five acknowledgements recorded");
    worker.signal(Signal::SIGKILL);
    // Gone before the next starts: a dying worker's socket could still
    // take the connection (SO_REUSEPORT).
    worker.wait_exit(Duration::from_secs(10));
    drop(client);

    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_receiver()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let mut again = Vec::new();
    for _ in 0..N - 5 {
        let receipt = tokio::time::timeout(Duration::from_secs(15), next_receipt(&mut client))
            .await
            .unwrap_or_else(|_| panic!("no receipt: {}", worker.log()));
        again.push(receipt.id);
        acknowledge(&mut client, &receipt).await;
    }
    let acknowledged: Vec<i64> = first[..5].iter().map(|r| r.id).collect();
    assert!(
        again.iter().all(|id| !acknowledged.contains(id)),
        "an acknowledged receipt came again"
    );
    let mut all: Vec<i64> = acknowledged.iter().chain(&again).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len() as i64, N, "none lost");
    let gone = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == 0
    })
    .await;
    assert!(gone, "{}", worker.log());
}

#[tokio::test]
async fn a_refused_receipt_comes_back_later_and_an_absent_account_gets_none() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, "").await;
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, account, receipts)
         VALUES ('+31612345678', 'x', 'acme', 2) RETURNING id",
        &[],
    )
    .await;
    // receipts = 3 asks for successes only: a nochannel message owes none.
    c.batch_execute(
        "INSERT INTO smsbus.message (to_address, body, account, receipts)
         VALUES ('+31612345678', 'y', 'acme', 3)",
    )
    .await
    .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        1
    );
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_receiver()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let receipt = next_receipt(&mut client).await;
    assert_eq!(receipt.id, id);
    client
        .send(Command::new(
            CommandStatus::EsmeRthrottled,
            receipt.sequence,
            DeliverSmResp::builder().build(),
        ))
        .await
        .unwrap();
    let returned = eventually(Duration::from_secs(10), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.smpp_outbox
             WHERE claimed_by IS NULL AND attempts = 1 AND last_error LIKE '%EsmeRthrottled%'",
        )
        .await
            == 1
    })
    .await;
    assert!(returned, "the refused receipt went back with its reason");
    // Its backoff is a second: then it comes again, and is taken.
    let again = next_receipt(&mut client).await;
    assert_eq!(again.id, id);
    acknowledge(&mut client, &again).await;
    let gone = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == 0
    })
    .await;
    assert!(gone);
}

#[tokio::test]
async fn an_inbound_message_a_trigger_gives_to_an_account_reaches_its_receiver() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, "").await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', false);
         INSERT INTO smsbus.trigger (name, on_status, direction, language, script)
         VALUES ('to-acme', '{received}', 'in', 'sql',
                 $$UPDATE smsbus.message SET account = 'acme' WHERE id = $1 AND to_address = '1234'$$)",
    )
    .await
    .unwrap();
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_receiver()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);

    let long = "A long inbound message, longer than one part. ".repeat(5);
    c.batch_execute(&format!(
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31600000001', '+31600000002', '+31600000003', '+31600000004'],
                                       ARRAY['1234', '1234', '1234', '5678'],
                                       ARRAY['STOP ads', 'Привет', '{long}', 'not for acme'],
                                       ARRAY['r1', 'r2', 'r3', 'r4'])"
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let command = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("a deliver_sm in time")
            .expect("the connection open")
            .expect("a PDU");
        let Some(Pdu::DeliverSm(d)) = command.pdu() else {
            continue; // enquire_link
        };
        assert_eq!(u8::from(d.esm_class), 0, "a message, not a receipt");
        let payload = d.tlvs().iter().find_map(|t| match t.value() {
            Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
            _ => None,
        });
        let data = payload.unwrap_or_else(|| d.short_message().as_ref().to_vec());
        let text = if d.data_coding == DataCoding::Ucs2 {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).unwrap()
        } else {
            smsbus_core::gsm7::decode(&data)
        };
        got.push((
            d.source_addr.as_str().to_owned(),
            d.destination_addr.as_str().to_owned(),
            text,
        ));
        client
            .send(Command::new(
                CommandStatus::EsmeRok,
                command.sequence_number(),
                DeliverSmResp::builder().build(),
            ))
            .await
            .unwrap();
    }
    got.sort();
    assert_eq!(
        got,
        [
            (
                "31600000001".to_owned(),
                "1234".to_owned(),
                "STOP ads".to_owned()
            ),
            (
                "31600000002".to_owned(),
                "1234".to_owned(),
                "Привет".to_owned()
            ),
            ("31600000003".to_owned(), "1234".to_owned(), long.clone()),
        ]
    );
    let gone = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == 0
    })
    .await;
    assert!(gone, "acknowledged inbound messages leave the outbox");
    let kept: String = scalar(
        &c,
        "SELECT coalesce(account, 'none') FROM smsbus.message WHERE to_address = '5678'",
        &[],
    )
    .await;
    assert_eq!(
        kept, "none",
        "the message the trigger left alone stays with smsbus"
    );
}

#[tokio::test]
async fn a_long_inbound_message_goes_in_parts_and_counts_only_when_every_part_is_taken() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", long_message = 'udh'").await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', false);
         INSERT INTO smsbus.trigger (name, on_status, direction, language, script)
         VALUES ('to-acme', '{received}', 'in', 'sql', $$UPDATE smsbus.message SET account = 'acme' WHERE id = $1$$)",
    )
    .await
    .unwrap();
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind_receiver()).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let long = "Long enough for two parts of a concatenated message. ".repeat(4);
    c.execute(
        "SELECT smsbus._record_inbound('kpn', ARRAY['+31600000001'], ARRAY['1234'], ARRAY[$1], ARRAY['r1'])",
        &[&long],
    )
    .await
    .unwrap();

    // Two parts with a concatenation UDH: the client takes one, refuses the other.
    let first = two_parts(&mut client).await;
    let answer = |sequence: u32, status: CommandStatus| {
        Command::new(status, sequence, DeliverSmResp::builder().build())
    };
    client
        .send(answer(first[0].0, CommandStatus::EsmeRok))
        .await
        .unwrap();
    client
        .send(answer(first[1].0, CommandStatus::EsmeRthrottled))
        .await
        .unwrap();
    let returned = eventually(Duration::from_secs(10), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.smpp_outbox WHERE kind = 'inbound' AND claimed_by IS NULL AND attempts = 1",
        )
        .await
            == 1
    })
    .await;
    assert!(returned, "one part refused: the message goes back whole");

    // Both parts again; taken, the row is done.
    let again = two_parts(&mut client).await;
    let mut text = Vec::new();
    for (sequence, data) in &again {
        assert_eq!(&data[..3], &[5, 0, 3]);
        text.extend_from_slice(&data[6..]);
        client
            .send(answer(*sequence, CommandStatus::EsmeRok))
            .await
            .unwrap();
    }
    assert_eq!(smsbus_core::gsm7::decode(&text), long);
    let gone = eventually(Duration::from_secs(10), || async {
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await == 0
    })
    .await;
    assert!(gone);
}

/// The next two deliver_sm, each a part with a concatenation UDH.
async fn two_parts(client: &mut Client) -> Vec<(u32, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < 2 {
        let command = next(client).await;
        if let Some(Pdu::DeliverSm(d)) = command.pdu() {
            assert_eq!(u8::from(d.esm_class), 0x40);
            got.push((
                command.sequence_number(),
                d.short_message().as_ref().to_vec(),
            ));
        }
    }
    got
}

#[tokio::test]
async fn an_account_that_asks_gets_a_receipt_for_each_part_with_its_own_outcome() {
    // The SMSC says UNDELIV for every second part: of each two-part
    // message, the first part is delivered and the second is not.
    let sim = smsc(Behaviour {
        undeliverable_every: 2,
        ..Behaviour::default()
    })
    .await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let port = free_port();
    account_and_listener(&c, port, ", channel = 'kpn', report_parts = 'each'").await;
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let long = |to: &str| {
        let mut pdu = with_receipt(submit(to, ""));
        pdu.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from("p".repeat(200).into_bytes())),
        ));
        pdu
    };

    let each = submitted_id(&call(&mut client, 2, long("31612345678")).await);
    wait_for(&c, &[each], &["notdelivered"], FINAL, &worker).await;
    let first = next_receipt(&mut client).await;
    acknowledge(&mut client, &first).await;
    let second = next_receipt(&mut client).await;
    acknowledge(&mut client, &second).await;
    assert_eq!((first.id, second.id), (each, each));
    // One receipt per part, in part order, each with that part's outcome.
    // Which part the SMSC refused depends on which it got first; a part
    // whose own report had not come when the refusal decided the message
    // is reported with the message's outcome.
    let outcomes: Vec<String> = c
        .query(
            "SELECT status FROM smsbus.message_part WHERE message_id = $1 ORDER BY part",
            &[&each],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        outcomes.contains(&"notdelivered".to_owned()),
        "{outcomes:?}"
    );
    for (receipt, outcome) in [&first, &second].into_iter().zip(&outcomes) {
        assert!(receipt.text.contains("sub:001 "), "{}", receipt.text);
        if receipt.text.contains("stat:DELIVRD") {
            assert_eq!(outcome, "delivered", "{}", receipt.text);
            assert!(receipt.text.contains("dlvrd:001 "), "{}", receipt.text);
        } else {
            assert!(receipt.text.contains("dlvrd:000 "), "{}", receipt.text);
            assert!(receipt.text.contains("stat:UNDELIV"), "{}", receipt.text);
        }
    }
    let refused = [&first, &second]
        .into_iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.as_str() == "notdelivered")
        .all(|(r, _)| r.text.contains("stat:UNDELIV"));
    assert!(refused, "the refused part's receipt says so");

    // By default one receipt speaks for the whole message.
    c.execute(
        "UPDATE smsbus.account SET report_parts = 'message' WHERE name = 'acme'",
        &[],
    )
    .await
    .unwrap();
    let whole = submitted_id(&call(&mut client, 3, long("31612345679")).await);
    wait_for(&c, &[whole], &["notdelivered"], FINAL, &worker).await;
    let only = next_receipt(&mut client).await;
    acknowledge(&mut client, &only).await;
    assert_eq!(only.id, whole);
    assert!(
        only.text.contains("sub:002 dlvrd:000 ") && only.text.contains("stat:UNDELIV"),
        "{}",
        only.text
    );
    let none = tokio::time::timeout(Duration::from_millis(500), client.next()).await;
    assert!(none.is_err(), "one receipt only: {none:?}");
}
