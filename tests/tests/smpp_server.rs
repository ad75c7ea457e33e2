//! The SMPP server: an application binds to smsbus over real TCP and
//! submits; each submit_sm_resp names a committed row of its account.
//! Delivery receipts come back to it from the durable outbox, in order,
//! once per acknowledgement, across unbinds and killed workers.

use std::str::FromStr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use rusmpp::pdus::{
    BindReceiver, BindTransceiver, BindTransmitter, CancelSm, DeliverSmResp, QuerySm, ReplaceSm,
    SubmitSm,
};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, MessagePayload, MessageState, RegisteredDelivery, Ton,
};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use serde_json::json;
use smsbus_tests::db::{count, scalar, TestDb};
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, wait_for};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Client = Framed<TcpStream, CommandCodec>;

const FINAL: Duration = Duration::from_secs(20);

async fn connect(port: u16) -> Client {
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            return Framed::new(s, CommandCodec::new());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker never listened on {port}");
}

async fn call(client: &mut Client, seq: u32, pdu: impl Into<Pdu>) -> Command {
    client
        .send(Command::new(CommandStatus::EsmeRok, seq, pdu))
        .await
        .unwrap();
    next(client).await
}

async fn next(client: &mut Client) -> Command {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("an answer in time")
        .expect("the connection open")
        .expect("a PDU")
}

fn bind(password: &str) -> BindTransceiver {
    BindTransceiver::builder()
        .system_id(COctetString::from_str("acme").unwrap())
        .password(COctetString::from_str(password).unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

fn submit(to: &str, text: &str) -> SubmitSm {
    SubmitSm::builder()
        .source_addr(COctetString::from_str("ACME").unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str(to).unwrap())
        .data_coding(DataCoding::McSpecific)
        .short_message(OctetString::from_vec(smsbus_core::gsm7::encode(text).unwrap()).unwrap())
        .build()
}

#[tokio::test]
async fn a_client_binds_submits_and_gets_committed_ids() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    c.batch_execute(&format!(
        "INSERT INTO smsbus.account (name) VALUES ('acme');
         SELECT smsbus.set_password('acme', 'secret1');
         INSERT INTO smsbus.smpp_server (name, listen) VALUES ('main', '127.0.0.1:{port}');"
    ))
    .await
    .unwrap();
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);

    let mut client = connect(port).await;
    let refused = call(&mut client, 1, bind("wrong")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRinvpaswd);
    let bound = call(&mut client, 2, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    assert_eq!(bound.id(), CommandId::BindTransceiverResp);
    let again = call(&mut client, 3, bind("secret1")).await;
    assert_eq!(again.status(), CommandStatus::EsmeRalybnd);

    let answer = call(&mut client, 4, submit("31612345678", "Hello €")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    let Some(Pdu::SubmitSmResp(resp)) = answer.pdu() else {
        panic!("not a submit_sm_resp: {answer:?}");
    };
    let id: i64 = resp.message_id().as_str().parse().unwrap();
    let (to, body, account): (String, String, String) = {
        let row = c
            .query_one(
                "SELECT to_address, body, account FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        (to.as_str(), body.as_str(), account.as_str()),
        ("+31612345678", "Hello €", "acme")
    );

    // A bad destination is refused by name; an unknown command gets a
    // generic_nack and the session goes on.
    let bad = call(&mut client, 5, submit("12ab", "x")).await;
    assert_eq!(bad.status(), CommandStatus::EsmeRinvdstadr);
    client
        .get_mut()
        .write_all(&[0, 0, 0, 16, 0, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 6])
        .await
        .unwrap();
    let nack = next(&mut client).await;
    assert_eq!(nack.id(), CommandId::GenericNack);
    assert_eq!(nack.sequence_number(), 6);
    let alive = call(&mut client, 7, Pdu::EnquireLink).await;
    assert_eq!(alive.id(), CommandId::EnquireLinkResp);

    let binds: i64 = scalar(
        &c,
        "SELECT count(*) FROM smsbus.smpp_bind WHERE account = 'acme' AND worker = 'w1'",
        &[],
    )
    .await;
    assert_eq!(binds, 1);
    let unbound = call(&mut client, 8, Pdu::Unbind).await;
    assert_eq!(unbound.id(), CommandId::UnbindResp);
}

fn with_receipt(mut pdu: SubmitSm) -> SubmitSm {
    pdu.registered_delivery = RegisteredDelivery::from(1);
    pdu
}

fn submitted_id(answer: &Command) -> i64 {
    assert_eq!(answer.status(), CommandStatus::EsmeRok, "{answer:?}");
    let Some(Pdu::SubmitSmResp(resp)) = answer.pdu() else {
        panic!("not a submit_sm_resp: {answer:?}");
    };
    resp.message_id().as_str().parse().unwrap()
}

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

fn bind_receiver() -> BindReceiver {
    BindReceiver::builder()
        .system_id(COctetString::from_str("acme").unwrap())
        .password(COctetString::from_str("secret1").unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

fn bind_transmitter() -> BindTransmitter {
    BindTransmitter::builder()
        .system_id(COctetString::from_str("acme").unwrap())
        .password(COctetString::from_str("secret1").unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

async fn account_and_listener(c: &tokio_postgres::Client, port: u16, account_extra: &str) {
    c.batch_execute(&format!(
        "INSERT INTO smsbus.account (name) VALUES ('acme');
         UPDATE smsbus.account SET name = name {account_extra} WHERE name = 'acme';
         SELECT smsbus.set_password('acme', 'secret1');
         INSERT INTO smsbus.smpp_server (name, listen) VALUES ('main', '127.0.0.1:{port}');"
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
    let worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
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

fn query_sm(id: &str) -> QuerySm {
    QuerySm::builder()
        .message_id(COctetString::from_str(id).unwrap())
        .build()
}

#[tokio::test]
async fn query_sm_answers_for_the_accounts_own_messages_only() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, "").await;
    c.batch_execute("INSERT INTO smsbus.account (name) VALUES ('other')")
        .await
        .unwrap();
    let insert = |account: &'static str, scheduled: &'static str| {
        let c = &c;
        async move {
            scalar::<i64>(
                c,
                &format!(
                    "INSERT INTO smsbus.message (to_address, body, account, scheduled_at)
                     VALUES ('+31612345678', 'x', '{account}', {scheduled}) RETURNING id"
                ),
                &[],
            )
            .await
        }
    };
    // No channel: nochannel at once, a final state.
    let rejected = insert("acme", "now()").await;
    let later = insert("acme", "now() + interval '1 day'").await;
    let others = insert("other", "now()").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);

    let answer = call(&mut client, 2, query_sm(&rejected.to_string())).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    let Some(Pdu::QuerySmResp(resp)) = answer.pdu() else {
        panic!("not a query_sm_resp: {answer:?}");
    };
    assert_eq!(resp.message_id.as_str(), rejected.to_string());
    assert_eq!(resp.message_state, MessageState::Rejected);
    assert_eq!(resp.final_date.as_ref().len(), 17, "a final date: {resp:?}");

    let answer = call(&mut client, 3, query_sm(&later.to_string())).await;
    let Some(Pdu::QuerySmResp(resp)) = answer.pdu() else {
        panic!("not a query_sm_resp: {answer:?}");
    };
    assert_eq!(resp.message_state, MessageState::Enroute);
    assert_eq!(resp.final_date.as_ref(), b"\0", "no final date yet");

    for (sequence, id) in [
        (4, others.to_string()),
        (5, "999999".into()),
        (6, "x1".into()),
    ] {
        let answer = call(&mut client, sequence, query_sm(&id)).await;
        assert_eq!(answer.status(), CommandStatus::EsmeRinvmsgid, "{id}");
        assert_eq!(answer.id(), CommandId::QuerySmResp);
    }
    // The archive answers too.
    c.batch_execute(&format!(
        "SELECT smsbus.archive(interval '0', 100); SELECT 1 FROM smsbus.message_archive WHERE id = {rejected}"
    ))
    .await
    .unwrap();
    let answer = call(&mut client, 7, query_sm(&rejected.to_string())).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok, "{answer:?}");
}

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
async fn binds_are_refused_by_address_state_and_max_binds_across_workers() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", allowed_ips = '{10.0.0.0/8}', max_binds = 2").await;
    let _w1 = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let _w2 = Worker::start(&db.conninfo(), &["--worker-id", "w2"]);

    let mut client = connect(port).await;
    let refused = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(
        refused.status(),
        CommandStatus::EsmeRbindfail,
        "not from 10/8"
    );
    c.batch_execute("UPDATE smsbus.account SET allowed_ips = '{127.0.0.0/8}', enabled = false")
        .await
        .unwrap();
    let refused = call(&mut client, 2, bind("secret1")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRbindfail, "disabled");
    c.batch_execute("UPDATE smsbus.account SET enabled = true")
        .await
        .unwrap();

    // Two binds, on whichever workers took the connections; the third is
    // refused, counted in smsbus.smpp_bind across workers.
    let mut open = Vec::new();
    for i in 0..2 {
        let mut client = connect(port).await;
        let bound = call(&mut client, 1, bind("secret1")).await;
        assert_eq!(bound.status(), CommandStatus::EsmeRok, "bind {i}");
        open.push(client);
    }
    let mut third = connect(port).await;
    let refused = call(&mut third, 1, bind("secret1")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRbindfail, "max_binds");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.smpp_bind WHERE account = 'acme'"
        )
        .await,
        2
    );

    // Disabling the account ends its binds: the server unbinds them.
    c.batch_execute("UPDATE smsbus.account SET enabled = false")
        .await
        .unwrap();
    for client in &mut open {
        let unbind = tokio::time::timeout(Duration::from_secs(15), client.next())
            .await
            .expect("an unbind in time")
            .expect("the connection open")
            .expect("a PDU");
        assert_eq!(unbind.id(), CommandId::Unbind);
    }
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

fn scheduled_in_an_hour(to: &str, text: &str) -> SubmitSm {
    let mut pdu = submit(to, text);
    pdu.schedule_delivery_time = EmptyOrFullCOctetString::from_str("000000010000000R").unwrap();
    pdu
}

fn cancel_sm(id: &str, destination: &str) -> CancelSm {
    CancelSm::builder()
        .message_id(COctetString::from_str(id).unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str(destination).unwrap())
        .build()
}

#[tokio::test]
async fn cancel_sm_and_replace_sm_change_only_what_no_channel_took() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", credit = 10").await;
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
    let row = |id: i64| {
        let c = &c;
        async move {
            let r = c
                .query_one(
                    "SELECT status::text, body, receipts FROM smsbus.message WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<i16>>(2),
            )
        }
    };

    let id =
        submitted_id(&call(&mut client, 2, scheduled_in_an_hour("31612345678", "first")).await);
    assert_eq!(row(id).await.0, "scheduled");
    assert_eq!(credit().await, Some(9));

    let replace = ReplaceSm::builder()
        .message_id(COctetString::from_str(&id.to_string()).unwrap())
        .registered_delivery(RegisteredDelivery::from(1))
        .short_message(
            OctetString::from_vec(smsbus_core::gsm7::encode("replaced").unwrap()).unwrap(),
        )
        .build();
    let answer = call(&mut client, 3, replace.clone()).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::ReplaceSmResp, CommandStatus::EsmeRok)
    );
    assert_eq!(
        row(id).await,
        ("scheduled".into(), "replaced".into(), Some(1))
    );

    let answer = call(&mut client, 4, cancel_sm(&id.to_string(), "")).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::CancelSmResp, CommandStatus::EsmeRok)
    );
    assert_eq!(row(id).await.0, "cancelled");
    assert_eq!(credit().await, Some(10), "the cancelled part is given back");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        0,
        "a cancelled message owes no receipt"
    );
    let again = call(&mut client, 5, cancel_sm(&id.to_string(), "")).await;
    assert_eq!(again.status(), CommandStatus::EsmeRcancelfail);
    let late = call(&mut client, 6, replace).await;
    assert_eq!(late.status(), CommandStatus::EsmeRreplacefail);
    let unknown = call(&mut client, 7, cancel_sm("987654", "")).await;
    assert_eq!(unknown.status(), CommandStatus::EsmeRinvmsgid);

    // Without an id: every message not yet claimed to that destination.
    let a = submitted_id(&call(&mut client, 8, scheduled_in_an_hour("31612345678", "a")).await);
    let b = submitted_id(&call(&mut client, 9, scheduled_in_an_hour("31612345678", "b")).await);
    let other =
        submitted_id(&call(&mut client, 10, scheduled_in_an_hour("31600000000", "c")).await);
    let answer = call(&mut client, 11, cancel_sm("", "31612345678")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    assert_eq!(row(a).await.0, "cancelled");
    assert_eq!(row(b).await.0, "cancelled");
    assert_eq!(row(other).await.0, "scheduled");
    assert_eq!(credit().await, Some(9));

    // A message already final cannot be taken back.
    let done = submitted_id(&call(&mut client, 12, submit("31612345678", "now")).await);
    assert_eq!(row(done).await.0, "nochannel");
    let answer = call(&mut client, 13, cancel_sm(&done.to_string(), "")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRcancelfail);
}
