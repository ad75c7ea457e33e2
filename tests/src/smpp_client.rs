//! The project's own SMPP client (an ESME, on rusmpp): binds, submits with
//! a window of unanswered submit_sm in flight, and takes delivery
//! receipts, acknowledging each. The benchmark drives it against smsbus's
//! SMPP server and against the SMSC simulator; `smsbus-smpp-client` is
//! it on the command line, for `make run` and for operators.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{
    BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp, SubmitSm,
};
use rusmpp::tlvs::TlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, InterfaceVersion, RegisteredDelivery, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

/// A delivery receipt as the client got it.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// receipted_message_id, else the receipt text's `id:`.
    pub message_id: String,
    pub text: String,
}

/// What a pipelined run saw.
#[derive(Debug, Default)]
pub struct Run {
    /// The message ids of accepted submissions, in the order sent.
    pub accepted: Vec<Option<String>>,
    /// Refused submissions by status.
    pub refused: HashMap<String, u64>,
    /// From each submit_sm written to its submit_sm_resp read.
    pub latencies: Vec<Duration>,
    pub receipts: Vec<Receipt>,
    pub elapsed: Duration,
}

pub struct Client {
    framed: Framed<TcpStream, CommandCodec>,
    sequence: u32,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            framed: Framed::new(stream, CommandCodec::new()),
            sequence: 0,
        })
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence % 0x7FFF_FFFF + 1;
        self.sequence
    }

    pub async fn bind(&mut self, kind: BindKind, system_id: &str, password: &str) -> Result<()> {
        let (id, pw) = (
            COctetString::from_str(system_id)?,
            COctetString::from_str(password)?,
        );
        let v = InterfaceVersion::Smpp3_4;
        let pdu: Pdu = match kind {
            BindKind::Transmitter => BindTransmitter::builder()
                .system_id(id)
                .password(pw)
                .interface_version(v)
                .build()
                .into(),
            BindKind::Receiver => BindReceiver::builder()
                .system_id(id)
                .password(pw)
                .interface_version(v)
                .build()
                .into(),
            BindKind::Transceiver => BindTransceiver::builder()
                .system_id(id)
                .password(pw)
                .interface_version(v)
                .build()
                .into(),
        };
        let sequence = self.next_sequence();
        self.framed
            .send(Command::new(CommandStatus::EsmeRok, sequence, pdu))
            .await?;
        let answer = self.read().await?;
        if answer.status() != CommandStatus::EsmeRok {
            bail!("bind refused: {:?}", answer.status());
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<Command> {
        loop {
            let command = tokio::time::timeout(Duration::from_secs(30), self.framed.next())
                .await
                .context("no PDU within 30 s")?
                .context("the connection closed")??;
            if command.id() == CommandId::EnquireLink {
                self.framed
                    .send(Command::new(
                        CommandStatus::EsmeRok,
                        command.sequence_number(),
                        Pdu::EnquireLinkResp,
                    ))
                    .await?;
                continue;
            }
            return Ok(command);
        }
    }

    /// Submits every PDU of `pdus`, keeping at most `window` unanswered,
    /// paced at `rate` a second if given, and goes on until every one is
    /// answered and `receipts` receipts have come (each acknowledged).
    pub async fn run(
        &mut self,
        pdus: impl IntoIterator<Item = SubmitSm>,
        window: usize,
        rate: Option<f64>,
        receipts: usize,
    ) -> Result<Run> {
        let mut pdus = pdus.into_iter().peekable();
        let mut run = Run::default();
        let mut in_flight: HashMap<u32, (usize, Instant)> = HashMap::new();
        let started = Instant::now();
        let mut sent = 0usize;
        loop {
            let mut fed = false;
            while in_flight.len() < window && pdus.peek().is_some() {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(sent as f64 / rate);
                    if Instant::now() < due {
                        break;
                    }
                }
                let pdu = pdus.next().expect("peeked");
                let sequence = self.next_sequence();
                in_flight.insert(sequence, (run.accepted.len(), Instant::now()));
                run.accepted.push(None);
                self.framed
                    .feed(Command::new(CommandStatus::EsmeRok, sequence, pdu))
                    .await?;
                sent += 1;
                fed = true;
            }
            if fed {
                SinkExt::<Command>::flush(&mut self.framed).await?;
            }
            if in_flight.is_empty() && pdus.peek().is_none() && run.receipts.len() >= receipts {
                break;
            }
            let wait = match rate {
                Some(rate) if pdus.peek().is_some() && in_flight.len() < window => {
                    let due = started + Duration::from_secs_f64(sent as f64 / rate);
                    due.saturating_duration_since(Instant::now())
                }
                _ => Duration::from_secs(30),
            };
            let command = match tokio::time::timeout(wait, self.framed.next()).await {
                Err(_) if wait < Duration::from_secs(30) => continue,
                Err(_) => bail!(
                    "nothing for 30 s: {} unanswered, {} of {receipts} receipts",
                    in_flight.len(),
                    run.receipts.len()
                ),
                Ok(None) => bail!("the connection closed"),
                Ok(Some(frame)) => frame?,
            };
            match command.pdu() {
                Some(Pdu::SubmitSmResp(resp)) => {
                    let Some((index, at)) = in_flight.remove(&command.sequence_number()) else {
                        bail!("submit_sm_resp for nothing sent: {command:?}");
                    };
                    run.latencies.push(at.elapsed());
                    if command.status() == CommandStatus::EsmeRok {
                        run.accepted[index] = Some(resp.message_id().as_str().to_owned());
                    } else {
                        *run.refused
                            .entry(format!("{:?}", command.status()))
                            .or_default() += 1;
                    }
                }
                Some(Pdu::DeliverSm(deliver)) => {
                    run.receipts.push(receipt(deliver));
                    self.framed
                        .feed(Command::new(
                            CommandStatus::EsmeRok,
                            command.sequence_number(),
                            DeliverSmResp::builder().build(),
                        ))
                        .await?;
                }
                _ if command.id() == CommandId::EnquireLink => {
                    self.framed
                        .feed(Command::new(
                            CommandStatus::EsmeRok,
                            command.sequence_number(),
                            Pdu::EnquireLinkResp,
                        ))
                        .await?;
                }
                _ if command.id() == CommandId::SubmitSmResp => {
                    // A refusal without a body.
                    let Some((_, at)) = in_flight.remove(&command.sequence_number()) else {
                        bail!("submit_sm_resp for nothing sent: {command:?}");
                    };
                    run.latencies.push(at.elapsed());
                    *run.refused
                        .entry(format!("{:?}", command.status()))
                        .or_default() += 1;
                }
                _ => bail!("unexpected PDU: {command:?}"),
            }
            if in_flight.len() < window / 2 || in_flight.is_empty() {
                SinkExt::<Command>::flush(&mut self.framed).await?;
            }
        }
        SinkExt::<Command>::flush(&mut self.framed).await?;
        run.elapsed = started.elapsed();
        Ok(run)
    }

    pub async fn unbind(&mut self) -> Result<()> {
        let sequence = self.next_sequence();
        self.framed
            .send(Command::new(CommandStatus::EsmeRok, sequence, Pdu::Unbind))
            .await?;
        loop {
            let command = self.read().await?;
            if command.id() == CommandId::UnbindResp {
                return Ok(());
            }
        }
    }
}

fn receipt(deliver: &DeliverSm) -> Receipt {
    let text = String::from_utf8_lossy(deliver.short_message().as_ref()).into_owned();
    let tlv_id = deliver.tlvs().iter().find_map(|t| match t.value() {
        Some(TlvValue::ReceiptedMessageId(id)) => Some(id.as_str().to_owned()),
        _ => None,
    });
    let text_id = || {
        text.strip_prefix("id:")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    Receipt {
        message_id: tlv_id.or_else(text_id).unwrap_or_default(),
        text,
    }
}

/// A GSM text submit_sm to an international number; `receipt` asks for a
/// delivery receipt (registered_delivery 1).
pub fn text_submit(from: &str, to: &str, text: &str, receipt: bool) -> Result<SubmitSm> {
    let body = smsbus_core::gsm7::encode(text)
        .map_err(|c| anyhow::anyhow!("{c:?} is not in the GSM 7-bit alphabet"))?;
    Ok(SubmitSm::builder()
        .source_addr(COctetString::from_str(from)?)
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str(to.trim_start_matches('+'))?)
        .registered_delivery(RegisteredDelivery::from(u8::from(receipt)))
        .data_coding(DataCoding::McSpecific)
        .short_message(OctetString::from_vec(body)?)
        .build())
}
