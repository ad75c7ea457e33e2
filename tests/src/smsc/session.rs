//! One connection to the simulator: bind, then submit_sm in, responses and
//! deliver_sm out. A writer task owns the socket's write half, so receipts
//! and inbound messages can be sent from timers while the reader loops.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures_util::StreamExt;
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, DeliverSm, SubmitSm, SubmitSmResp,
};
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, MessageState, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead};

use super::behaviour::{every, Behaviour, IdFormat, ReportOutcome};
use super::record::SubmittedPart;
use super::{text, SessionHandle, Shared};

pub(crate) enum Outgoing {
    /// A response, written as is.
    Command(Command),
    /// A deliver_sm or data_sm; the answer's status goes to the sender.
    Request(Pdu, oneshot::Sender<CommandStatus>),
    Raw(Vec<u8>),
    Close,
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<CommandStatus>>>>;

pub(crate) async fn run<S>(shared: Arc<Shared>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let (read, write) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read, CommandCodec::new());
    let (outgoing, queue) = mpsc::unbounded_channel();
    let pending: Pending = Arc::default();
    let writer = tokio::spawn(write_loop(write, queue, pending.clone()));
    let mut bound = false;

    while let Some(next) = reader.next().await {
        let command = match next {
            Ok(c) => c,
            Err(e) => {
                eprintln!("smsc: session {id}: cannot decode a PDU: {e}; closing");
                break;
            }
        };
        let seq = command.sequence_number();
        let reply = |status: CommandStatus, pdu: Pdu| {
            let _ = outgoing.send(Outgoing::Command(Command::new(status, seq, pdu)));
        };
        match command.pdu() {
            Some(pdu) if bind_request(pdu).is_some() => {
                let (system_id, password, receives, resp) = bind_request(pdu).expect("a bind");
                let status = bind_status(&shared, bound, system_id, password);
                reply(status, resp);
                if status == CommandStatus::EsmeRok {
                    bound = true;
                    register(&shared, id, receives, &outgoing);
                }
            }
            Some(Pdu::SubmitSm(submit)) => {
                if !bound {
                    reply(CommandStatus::EsmeRinvbndsts, empty_submit_resp());
                    continue;
                }
                if !submit_sm(&shared, id, seq, submit, &outgoing) {
                    break;
                }
            }
            Some(Pdu::DeliverSmResp(_)) | Some(Pdu::DataSmResp(_)) | None
                if matches!(
                    command.id(),
                    rusmpp::CommandId::DeliverSmResp | rusmpp::CommandId::DataSmResp
                ) =>
            {
                if let Some(answer) = pending.lock().unwrap().remove(&seq) {
                    let _ = answer.send(command.status());
                }
            }
            Some(Pdu::EnquireLink) => {
                if shared.behaviour.lock().unwrap().answer_enquire_link {
                    reply(CommandStatus::EsmeRok, Pdu::EnquireLinkResp);
                }
            }
            Some(Pdu::Unbind) => {
                reply(CommandStatus::EsmeRok, Pdu::UnbindResp);
                let _ = outgoing.send(Outgoing::Close);
                break;
            }
            Some(Pdu::EnquireLinkResp) | Some(Pdu::UnbindResp) | Some(Pdu::GenericNack) => {}
            _ => reply(CommandStatus::EsmeRinvcmdid, Pdu::GenericNack),
        }
    }
    shared.unregister(id);
    // Let queued responses go out, then stop.
    let _ = outgoing.send(Outgoing::Close);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// A bind's credentials, whether the session will receive, and the
/// response of the bind's kind.
fn bind_request(pdu: &Pdu) -> Option<(&str, &str, bool, Pdu)> {
    Some(match pdu {
        Pdu::BindTransmitter(b) => (
            b.system_id.as_str(),
            b.password.as_str(),
            false,
            BindTransmitterResp::builder()
                .system_id(sim_id())
                .build()
                .into(),
        ),
        Pdu::BindReceiver(b) => (
            b.system_id.as_str(),
            b.password.as_str(),
            true,
            BindReceiverResp::builder()
                .system_id(sim_id())
                .build()
                .into(),
        ),
        Pdu::BindTransceiver(b) => (
            b.system_id.as_str(),
            b.password.as_str(),
            true,
            BindTransceiverResp::builder()
                .system_id(sim_id())
                .build()
                .into(),
        ),
        _ => return None,
    })
}

fn sim_id() -> COctetString<1, 16> {
    COctetString::from_str("smsbus-sim").expect("ascii")
}

fn empty_submit_resp() -> Pdu {
    SubmitSmResp::builder().build().into()
}

fn bind_status(shared: &Shared, bound: bool, system_id: &str, password: &str) -> CommandStatus {
    let status = if bound {
        CommandStatus::EsmeRalybnd
    } else if system_id != shared.system_id {
        CommandStatus::EsmeRinvsysid
    } else if password != shared.password {
        CommandStatus::EsmeRinvpaswd
    } else {
        CommandStatus::EsmeRok
    };
    if status != CommandStatus::EsmeRok {
        shared.binds_refused.fetch_add(1, Ordering::Relaxed);
    }
    status
}

fn register(shared: &Shared, id: u64, receives: bool, outgoing: &mpsc::UnboundedSender<Outgoing>) {
    shared.register(SessionHandle {
        id,
        receives,
        outgoing: outgoing.clone(),
        window: Arc::new(tokio::sync::Semaphore::new(super::DELIVER_WINDOW)),
    });
}

/// Handles one submit_sm; false when the connection must close.
fn submit_sm(
    shared: &Arc<Shared>,
    session: u64,
    seq: u32,
    submit: &SubmitSm,
    outgoing: &mpsc::UnboundedSender<Outgoing>,
) -> bool {
    let n = shared.submits.fetch_add(1, Ordering::Relaxed) + 1;
    let behaviour = shared.behaviour.lock().unwrap().clone();
    if every(n, behaviour.drop_connection_every) {
        let _ = outgoing.send(Outgoing::Close);
        return false;
    }
    if every(n, behaviour.drop_response_every) {
        return true;
    }
    let destination = submit.destination_addr.as_str().to_owned();
    let refusal = if every(n, behaviour.throttle_every) {
        Some(CommandStatus::EsmeRthrottled)
    } else if every(n, behaviour.queue_full_every) {
        Some(CommandStatus::EsmeRmsgqful)
    } else if every(n, behaviour.reject_every)
        || behaviour.reject_destination.as_deref() == Some(destination.as_str())
    {
        Some(CommandStatus::EsmeRinvdstadr)
    } else {
        None
    };
    let decoded = text::decode(
        u8::from(submit.data_coding),
        u8::from(submit.esm_class),
        submit.short_message(),
        submit.tlvs(),
    );
    let (status, message_id) = match (refusal, decoded) {
        (Some(status), _) => (status, None),
        (None, Err(e)) => {
            eprintln!("smsc: session {session}: undecodable submit_sm: {e}");
            (CommandStatus::EsmeRinvmsglen, None)
        }
        (None, Ok(decoded)) => {
            let number = shared.next_message_id.fetch_add(1, Ordering::Relaxed);
            let message_id = match behaviour.id_format {
                IdFormat::Hex => format!("{number:x}"),
                IdFormat::Decimal => number.to_string(),
            };
            let text::Decoded { text, concat, how } = decoded;
            let part = SubmittedPart {
                at: std::time::Instant::now(),
                session,
                message_id: message_id.clone(),
                source: submit.source_addr.as_str().to_owned(),
                source_ton: u8::from(submit.source_addr_ton),
                source_npi: u8::from(submit.source_addr_npi),
                destination,
                dest_ton: u8::from(submit.dest_addr_ton),
                dest_npi: u8::from(submit.dest_addr_npi),
                esm_class: u8::from(submit.esm_class),
                priority: u8::from(submit.priority_flag),
                registered_delivery: u8::from(submit.registered_delivery),
                validity_period: submit.validity_period.as_str().to_owned(),
                data_coding: u8::from(submit.data_coding),
                text,
                concat,
                how,
                udh: user_data_header(u8::from(submit.esm_class), submit.short_message()),
            };
            let wants_report = part.registered_delivery & 0x03 != 0;
            let outcome = if every(n, behaviour.undeliverable_every) {
                ReportOutcome::Undeliverable
            } else {
                ReportOutcome::Delivered
            };
            if wants_report {
                let receipt = Receipt {
                    message_id: message_id.clone(),
                    number,
                    outcome,
                    part: part.clone(),
                };
                schedule_receipts(shared, session, receipt, &behaviour);
            }
            shared.record.lock().unwrap().add(part);
            (CommandStatus::EsmeRok, Some(message_id))
        }
    };
    let mut resp = SubmitSmResp::builder();
    if let Some(id) = message_id {
        resp = resp.message_id(COctetString::from_str(&id).expect("ascii id"));
    }
    let command = Command::new(status, seq, Pdu::from(resp.build()));
    if behaviour.response_delay.is_zero() {
        let _ = outgoing.send(Outgoing::Command(command));
    } else {
        let outgoing = outgoing.clone();
        tokio::spawn(async move {
            tokio::time::sleep(behaviour.response_delay).await;
            let _ = outgoing.send(Outgoing::Command(command));
        });
    }
    true
}

struct Receipt {
    message_id: String,
    number: u64,
    outcome: ReportOutcome,
    part: SubmittedPart,
}

fn schedule_receipts(shared: &Arc<Shared>, session: u64, receipt: Receipt, b: &Behaviour) {
    let text_id = if b.report_text_id_decimal {
        receipt.number.to_string()
    } else {
        receipt.message_id.clone()
    };
    let mut pdus = Vec::new();
    if b.intermediate_reports {
        pdus.push(receipt_pdu(&receipt, &text_id, None, b.report_tlvs));
    }
    pdus.push(receipt_pdu(
        &receipt,
        &text_id,
        Some(receipt.outcome),
        b.report_tlvs,
    ));
    let delay = if b.report_before_response {
        Duration::ZERO
    } else {
        b.report_delay
    };
    let shared = shared.clone();
    // Sent ahead of the submit_sm_resp, which is queued after this (when
    // the window has room right now).
    let mut first = Vec::new();
    if delay.is_zero() {
        if let Some(route) = shared.report_route(session) {
            for pdu in &pdus {
                let Ok(slot) = route.window.clone().try_acquire_owned() else {
                    break;
                };
                let (answer, waiting) = oneshot::channel();
                let _ = route
                    .outgoing
                    .send(Outgoing::Request(pdu.clone().into(), answer));
                first.push((waiting, slot));
            }
        }
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut first = first.into_iter();
        for pdu in pdus {
            deliver_until_acknowledged(&shared, session, pdu, first.next()).await;
        }
    });
}

/// How long an unanswered deliver_sm waits before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(30);

/// Sends a receipt until the ESME acknowledges it, as an SMSC keeps a
/// receipt until it is taken: over a reconnect, to another session.
async fn deliver_until_acknowledged(
    shared: &Shared,
    session: u64,
    pdu: DeliverSm,
    sent: Option<(
        oneshot::Receiver<CommandStatus>,
        tokio::sync::OwnedSemaphorePermit,
    )>,
) {
    if let Some((waiting, _slot)) = sent {
        if let Ok(Ok(CommandStatus::EsmeRok)) = tokio::time::timeout(RESEND_AFTER, waiting).await {
            return;
        }
    }
    for _ in 0..600 {
        if let Some(route) = shared.report_route(session) {
            if route.request(pdu.clone().into(), RESEND_AFTER).await == Some(CommandStatus::EsmeRok)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A delivery receipt (SMPP 3.4 Appendix B); `None` is an ENROUTE
/// intermediate notification.
fn receipt_pdu(
    r: &Receipt,
    text_id: &str,
    outcome: Option<ReportOutcome>,
    tlvs: bool,
) -> DeliverSm {
    let (stat, state, err, esm_class) = match outcome {
        Some(o) => (
            o.stat(),
            o.message_state(),
            if o == ReportOutcome::Delivered {
                "000"
            } else {
                "001"
            },
            0x04,
        ),
        None => ("ENROUTE", 1, "000", 0x20),
    };
    let date = receipt_date(SystemTime::now());
    let dlvrd = if outcome == Some(ReportOutcome::Delivered) {
        "001"
    } else {
        "000"
    };
    let sample: String = r.part.text.chars().take(20).collect();
    let body = format!(
        "id:{text_id} sub:001 dlvrd:{dlvrd} submit date:{date} done date:{date} stat:{stat} err:{err} text:{sample}"
    );
    let mut values = Vec::new();
    if tlvs {
        values.push(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
            COctetString::from_str(&r.message_id).expect("ascii id"),
        ));
        values.push(MessageDeliveryRequestTlvValue::MessageState(
            MessageState::from(state),
        ));
    }
    let (source, source_ton) = addr_or_unknown(&r.part.destination, r.part.dest_ton);
    let (dest, dest_ton) = addr_or_unknown(&r.part.source, r.part.source_ton);
    DeliverSm::builder()
        .source_addr_ton(source_ton)
        .source_addr_npi(Npi::Isdn)
        .source_addr(source)
        .dest_addr_ton(dest_ton)
        .dest_addr_npi(Npi::Unknown)
        .destination_addr(dest)
        .esm_class(EsmClass::from(esm_class))
        .short_message(
            OctetString::from_vec(body.into_bytes().into_iter().take(254).collect())
                .expect("receipt fits"),
        )
        .tlvs(values)
        .build()
}

fn addr_or_unknown(text: &str, ton: u8) -> (COctetString<1, 21>, Ton) {
    (
        COctetString::from_str(text).unwrap_or_else(|_| COctetString::empty()),
        Ton::from(ton),
    )
}

/// `YYMMDDhhmm` in UTC.
fn receipt_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        y % 100,
        m,
        d,
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    pending: Pending,
) {
    let mut codec = CommandCodec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut next_seq: u32 = 0;
    while let Some(first) = queue.recv().await {
        let mut item = Some(first);
        let mut close = false;
        // Everything already queued goes out in one write.
        while let Some(out) = item.take() {
            match out {
                Outgoing::Command(c) => {
                    let _ = codec.encode(c, &mut buf);
                }
                Outgoing::Request(pdu, answer) => {
                    next_seq = next_seq % 0x7FFF_FFFF + 1;
                    pending.lock().unwrap().insert(next_seq, answer);
                    let _ = codec.encode(
                        Command::new(CommandStatus::EsmeRok, next_seq, pdu),
                        &mut buf,
                    );
                }
                Outgoing::Raw(bytes) => buf.extend_from_slice(&bytes),
                Outgoing::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                item = queue.try_recv().ok();
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        if close {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// The user data header a short_message starts with when UDHI is set.
fn user_data_header(esm_class: u8, short_message: &[u8]) -> Vec<u8> {
    match short_message.first() {
        Some(&length) if esm_class & 0x40 != 0 => {
            short_message[..(usize::from(length) + 1).min(short_message.len())].to_vec()
        }
        _ => Vec::new(),
    }
}
