//! The SMPP server: an application binds to smsbus over real TCP and
//! submits; each submit_sm_resp names a committed row of its account.
//! Delivery receipts come back to it from the durable outbox, in order,
//! once per acknowledgement, across unbinds and killed workers.
//!
//! - [`binds`], [`submissions`], [`codings`], [`receipts`], [`operations`],
//!   [`observability`]: the tests;
//! - here: what they share: a client over real TCP, PDUs, an account and
//!   a listener.

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
pub(crate) use smsbus_tests::net::free_port;
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, wait_for};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

mod binds;
mod codings;
mod observability;
mod operations;
mod receipts;
mod submissions;

pub(crate) type Client = Framed<TcpStream, CommandCodec>;

pub(crate) const FINAL: Duration = Duration::from_secs(20);

pub(crate) async fn connect(port: u16) -> Client {
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            return Framed::new(s, CommandCodec::new());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker never listened on {port}");
}

pub(crate) async fn call(client: &mut Client, seq: u32, pdu: impl Into<Pdu>) -> Command {
    client
        .send(Command::new(CommandStatus::EsmeRok, seq, pdu))
        .await
        .unwrap();
    next(client).await
}

pub(crate) async fn next(client: &mut Client) -> Command {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("an answer in time")
        .expect("the connection open")
        .expect("a PDU")
}

pub(crate) fn bind(password: &str) -> BindTransceiver {
    BindTransceiver::builder()
        .system_id(COctetString::from_str("acme").unwrap())
        .password(COctetString::from_str(password).unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

pub(crate) fn submit(to: &str, text: &str) -> SubmitSm {
    SubmitSm::builder()
        .source_addr(COctetString::from_str("ACME").unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str(to).unwrap())
        .data_coding(DataCoding::McSpecific)
        .short_message(OctetString::from_vec(smsbus_core::gsm7::encode(text).unwrap()).unwrap())
        .build()
}

pub(crate) fn with_receipt(mut pdu: SubmitSm) -> SubmitSm {
    pdu.registered_delivery = RegisteredDelivery::from(1);
    pdu
}

pub(crate) fn submitted_id(answer: &Command) -> i64 {
    assert_eq!(answer.status(), CommandStatus::EsmeRok, "{answer:?}");
    let Some(Pdu::SubmitSmResp(resp)) = answer.pdu() else {
        panic!("not a submit_sm_resp: {answer:?}");
    };
    resp.message_id().as_str().parse().unwrap()
}

pub(crate) fn bind_receiver() -> BindReceiver {
    BindReceiver::builder()
        .system_id(COctetString::from_str("acme").unwrap())
        .password(COctetString::from_str("secret1").unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

pub(crate) fn bind_transmitter() -> BindTransmitter {
    BindTransmitter::builder()
        .system_id(COctetString::from_str("acme").unwrap())
        .password(COctetString::from_str("secret1").unwrap())
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

pub(crate) async fn account_and_listener(
    c: &tokio_postgres::Client,
    port: u16,
    account_extra: &str,
) {
    c.batch_execute(&format!(
        "INSERT INTO smsbus.account (name) VALUES ('acme');
         UPDATE smsbus.account SET name = name {account_extra} WHERE name = 'acme';
         SELECT smsbus.set_password('acme', 'secret1');
         INSERT INTO smsbus.smpp_server (name, listen) VALUES ('main', '127.0.0.1:{port}');"
    ))
    .await
    .unwrap();
}
