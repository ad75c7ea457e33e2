//! 8-bit data (data_coding 4) through smsbus: submitted by a client, kept
//! as a binary message in hexadecimal digits, sent on to the provider as
//! the same octets (in parts when long); and from a handset back to an
//! account as the octets it came as. Alphabets smsbus does not carry are
//! refused by name.

use smsbus_tests::scenario::wait_link;
use smsbus_tests::smsc::InboundText;

use super::*;

fn submit_octets(to: &str, data_coding: u8, octets: Vec<u8>) -> SubmitSm {
    let mut pdu = submit(to, "");
    pdu.data_coding = DataCoding::from(data_coding);
    if octets.len() <= 140 {
        pdu.set_short_message(OctetString::from_vec(octets).unwrap());
    } else {
        pdu.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from(octets)),
        ));
    }
    pdu
}

fn hex(octets: &[u8]) -> String {
    octets.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn eight_bit_data_travels_as_its_octets_both_ways() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let port = free_port();
    account_and_listener(&c, port, ", channel = 'kpn'").await;
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, direction, language, script)
         VALUES ('to-acme', '{received}', 'in', 'sql',
                 $$UPDATE smsbus.message SET account = 'acme' WHERE id = $1$$)",
    )
    .await
    .unwrap();
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    wait_link(&c, "kpn", "connected", &worker).await;
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);

    // A vCard for port 9204 (a port-addressing header inside the data) and
    // a 200-octet blob in message_payload, which goes on in two parts.
    let vcard = vec![0x06, 0x05, 0x04, 0x23, 0xF4, 0x00, 0x00, 0xCA, 0xFE];
    let blob: Vec<u8> = (0..200u8).collect();
    let short = submitted_id(
        &call(
            &mut client,
            2,
            submit_octets("31612345678", 4, vcard.clone()),
        )
        .await,
    );
    let long = submitted_id(
        &call(
            &mut client,
            3,
            submit_octets("31612345679", 0xF5, blob.clone()),
        )
        .await,
    );
    for (id, octets, segments) in [(short, &vcard, 1), (long, &blob, 2)] {
        let row: (String, String, i32) = {
            let r = c
                .query_one(
                    "SELECT encoding, body, segments FROM smsbus.message WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        assert_eq!(row, ("binary".to_owned(), hex(octets), segments));
    }
    wait_for(&c, &[short, long], &["delivered"], FINAL, &worker).await;
    let received = sim.received();
    for (to, octets, parts) in [("31612345678", &vcard, 1), ("31612345679", &blob, 2)] {
        let got = received
            .iter()
            .find(|r| r.destination == to)
            .unwrap_or_else(|| panic!("the SMSC got nothing for {to}: {received:?}"));
        assert_eq!(
            (got.data_coding, got.text.as_str(), got.parts),
            (4, hex(octets).as_str(), parts),
            "{to}"
        );
    }

    // Alphabets smsbus does not carry are refused, and nothing is stored.
    let cyrillic = call(
        &mut client,
        4,
        submit_octets("31612345670", 0x06, vec![0xC1]),
    )
    .await;
    assert_eq!(cyrillic.status(), CommandStatus::EsmeRinvdcs);
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.message").await, 2);

    // 8-bit data from a handset reaches the account as the same octets.
    let mut inbound = InboundText::new("+31600000001", "1234", &hex(&vcard));
    inbound.encoding = smsbus_core::text::Encoding::Binary;
    sim.deliver(&inbound, FINAL)
        .await
        .expect("deliver_sm answered");
    let delivered = loop {
        let command = tokio::time::timeout(FINAL, client.next())
            .await
            .expect("a deliver_sm in time")
            .expect("the connection open")
            .expect("a PDU");
        if let Some(Pdu::DeliverSm(d)) = command.pdu() {
            client
                .send(Command::new(
                    CommandStatus::EsmeRok,
                    command.sequence_number(),
                    DeliverSmResp::builder().build(),
                ))
                .await
                .unwrap();
            if u8::from(d.esm_class) == 0 {
                break d.clone();
            }
        }
    };
    assert_eq!(delivered.data_coding, DataCoding::from(4));
    assert_eq!(delivered.short_message().as_ref(), vcard.as_slice());
    assert_eq!(delivered.source_addr.as_str(), "31600000001");
}
