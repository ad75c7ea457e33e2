//! The SMPP server: an application binds to smsbus over real TCP and
//! submits; each submit_sm_resp names a committed row of its account.

use std::str::FromStr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, InterfaceVersion, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use smsbus_tests::db::{scalar, TestDb};
use smsbus_tests::worker::Worker;
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
