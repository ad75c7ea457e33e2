//! One client connection: bind, then submissions in and their answers
//! out, each `submit_sm_resp` only after its row is committed
//! ([`accept`](super::accept)). Answers go out as commits finish, which
//! may be out of order: SMPP pairs them by sequence number.
//!
//! The session keeps the connection honest both ways: a client that does
//! not bind within `bind_timeout_s`, or says nothing for
//! `inactivity_timeout_s`, is closed; a silent one is asked
//! `enquire_link` every `enquire_link_s`. A PDU it cannot decode, or one
//! it does not serve, is answered with `generic_nack` and the session
//! goes on: only a stream that cannot be framed ends it.
//!
//! A receiver or transceiver bind also carries the account's delivery
//! receipts to the client ([`deliveries`](super::deliveries)).
//!
//! - here: the connection's loop, its timers, and the dispatch of PDUs;
//! - [`binding`]: bind PDUs, checked against the account;
//! - [`submitting`]: submit_sm and data_sm, long messages' parts, the
//!   answers after commit;
//! - [`operations`]: query_sm, cancel_sm, replace_sm, and the receipts to
//!   a receiving bind.

mod binding;
mod operations;
mod submitting;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, DataSmResp, QuerySmResp,
    SubmitSmResp,
};
use rusmpp::types::COctetString;
use rusmpp::values::InterfaceVersion;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::accept::{Accepter, Answer};
use super::account::{self, BindType};
use super::binds::{Bind, Binds, OpenError};
use super::concat::{Added, Assembler, PART_TIMEOUT};
use super::deliveries::{Answered, Deliveries};
use super::listener::Settings;
use super::queries;
use super::submission::{self, Refusal, Submission};
use crate::channels::smpp::codec::{Frame, SmppCodec};
use crate::metrics;

/// What a server names itself in bind responses.
const SYSTEM_ID: &str = "smsbus";
/// How long a refused bind waits before its answer: guessing passwords
/// costs a client a second a guess.
const REFUSED_BIND_DELAY: Duration = Duration::from_secs(1);
/// How long an unbind may wait for the client's unbind_resp.
const UNBIND_GRACE: Duration = Duration::from_secs(2);

/// What a session needs from its listener.
pub struct Context {
    pub settings: Arc<Settings>,
    pub pool: deadpool_postgres::Pool,
    pub binds: Arc<Binds>,
    pub accepter: Accepter,
    /// This worker's id, for the leases on receipts it takes.
    pub worker: String,
    /// Accounts with new receipts (`smsbus_smpp_outbox`).
    pub receipts: tokio::sync::broadcast::Sender<Arc<str>>,
}

type Reader<S> = FramedRead<tokio::io::ReadHalf<S>, SmppCodec>;
type Writer<S> = FramedWrite<tokio::io::WriteHalf<S>, SmppCodec>;

/// A submission waiting for its commit, with what its answer answers.
type Waiting = std::pin::Pin<Box<dyn std::future::Future<Output = Waited> + Send + Sync>>;

/// A committed (or refused) submission and the PDUs it answers.
enum Waited {
    /// submit_sm or data_sm: one PDU, or every part of a long message.
    One(Vec<(u32, Reply)>, Answer),
    /// submit_multi: each destination's answer, in the order given.
    Multi {
        sequence: u32,
        destinations: Vec<(Destination, Answer)>,
    },
}

/// A submit_multi destination as the client named it.
struct Destination {
    ton: u8,
    npi: u8,
    address: String,
}

enum Reply {
    SubmitSm,
    DataSm,
}

pub async fn run<S>(ctx: Arc<Context>, stream: S, peer: SocketAddr, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let mut session = Session {
        ctx,
        peer,
        reader: FramedRead::new(read, SmppCodec::new()),
        writer: FramedWrite::new(write, SmppCodec::new()),
        bind: None,
        deliveries: None,
        parts: Assembler::new(PART_TIMEOUT),
        waiting: FuturesUnordered::new(),
        sequence: 0,
        last_heard: Instant::now(),
        asked_at: None,
        opened: Instant::now(),
    };
    let ended = session.serve(&stop).await;
    if let Some(deliveries) = session.deliveries.as_mut() {
        deliveries.close().await;
    }
    if let Some((bind, _)) = session.bind.take() {
        session.ctx.binds.close(&bind).await;
        tracing::info!(account = %bind.account.name, %peer, "smpp server: unbound ({ended})");
    } else {
        tracing::debug!(%peer, "smpp server: connection closed before a bind ({ended})");
    }
}

struct Session<S> {
    ctx: Arc<Context>,
    peer: SocketAddr,
    reader: Reader<S>,
    writer: Writer<S>,
    bind: Option<(Arc<Bind>, BindType)>,
    /// Receipts to the client, when the bind receives.
    deliveries: Option<Deliveries>,
    /// Parts of long messages waiting for their siblings.
    parts: Assembler<(u32, Reply)>,
    waiting: FuturesUnordered<Waiting>,
    sequence: u32,
    last_heard: Instant,
    /// When the server's own enquire_link went out, unanswered.
    asked_at: Option<Instant>,
    opened: Instant,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Serves the connection; returns why it ended.
    async fn serve(&mut self, stop: &CancellationToken) -> String {
        loop {
            let bind_ended = match &self.bind {
                Some((bind, _)) => bind.ended.clone(),
                None => CancellationToken::new(),
            };
            let deadline = self.deadline();
            let receipts_due = self.deliveries.as_ref().map(Deliveries::due);
            let woken = async {
                match self.deliveries.as_mut() {
                    Some(d) => Some(d.wakeups.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return self.unbind("the server is stopping").await,
                _ = bind_ended.cancelled() => return self.unbind("the account was disabled or deleted").await,
                Some(waited) = self.waiting.next(), if !self.waiting.is_empty() => {
                    if let Err(e) = self.answer_waited(waited).await {
                        return format!("cannot write to the client: {e}");
                    }
                }
                frame = self.reader.next() => match frame {
                    None => return "the client closed the connection".into(),
                    Some(Err(e)) => return format!("the stream cannot be read: {e}"),
                    Some(Ok(frame)) => {
                        self.last_heard = Instant::now();
                        self.asked_at = None;
                        match self.handle(frame).await {
                            Ok(None) => {}
                            Ok(Some(reason)) => return reason,
                            Err(e) => return format!("cannot write to the client: {e}"),
                        }
                    }
                },
                Some(woken) = woken => {
                    let deliveries = self.deliveries.as_mut().expect("a receiving bind");
                    match woken {
                        Ok(account) if !account.is_empty() => deliveries.woken(Some(&account)),
                        // Every account, or notifications missed.
                        _ => deliveries.woken(None),
                    }
                }
                _ = tokio::time::sleep_until(receipts_due.unwrap_or(deadline).into()), if receipts_due.is_some() => {
                    if let Err(e) = self.deliver().await {
                        return format!("cannot write to the client: {e}");
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if let Some(reason) = self.on_timer().await {
                        return reason;
                    }
                }
            }
        }
    }

    /// The next moment a timer is due.
    fn deadline(&self) -> Instant {
        let s = &self.ctx.settings;
        if self.bind.is_none() {
            return self.opened + s.bind_timeout;
        }
        let due = self.ask_at().min(self.last_heard + s.inactivity_timeout);
        self.parts.next_expiry().map_or(due, |parts| due.min(parts))
    }

    /// When the client is next asked enquire_link: after a silence, or
    /// again after an unanswered one.
    fn ask_at(&self) -> Instant {
        let every = self.ctx.settings.enquire_link;
        self.asked_at
            .map_or(self.last_heard + every, |at| at + every)
    }

    async fn on_timer(&mut self) -> Option<String> {
        let now = Instant::now();
        let s = self.ctx.settings.clone();
        if self.bind.is_none() {
            return (now >= self.opened + s.bind_timeout)
                .then(|| format!("no bind within {} s", s.bind_timeout.as_secs()));
        }
        for ((sequence, reply), reason) in self.parts.expire(now) {
            if let Err(e) = self.part_refused(sequence, reply, &reason).await {
                return Some(format!("cannot write to the client: {e}"));
            }
        }
        if now < self.ask_at() && now < self.last_heard + s.inactivity_timeout {
            // Only the parts' timer was due.
            return None;
        }
        if now >= self.last_heard + s.inactivity_timeout {
            return Some(format!(
                "no PDU from the client for {} s",
                s.inactivity_timeout.as_secs()
            ));
        }
        let sequence = self.next_sequence();
        self.asked_at = Some(now);
        match self
            .send(Command::new(
                CommandStatus::EsmeRok,
                sequence,
                Pdu::EnquireLink,
            ))
            .await
        {
            Ok(()) => None,
            Err(e) => Some(format!("cannot write to the client: {e}")),
        }
    }

    fn next_sequence(&mut self) -> u32 {
        // Sequence numbers run 1..=0x7FFFFFFF (SMPP 3.4 §5.1.4).
        self.sequence = self.sequence % 0x7FFF_FFFF + 1;
        self.sequence
    }

    async fn send(&mut self, command: Command) -> std::io::Result<()> {
        self.writer.send(command).await
    }

    /// Handles one PDU; Some(reason) ends the session.
    async fn handle(&mut self, frame: Frame) -> std::io::Result<Option<String>> {
        let command = match frame {
            Frame::Command(command) => command,
            Frame::Malformed {
                command_id,
                sequence,
                error,
            } => {
                tracing::info!(peer = %self.peer, command_id = format!("0x{command_id:08X}"),
                    "smpp server: a PDU that cannot be decoded: {error}");
                let status = if !matches!(CommandId::from(command_id), CommandId::Other(_)) {
                    CommandStatus::EsmeRinvcmdlen
                } else {
                    CommandStatus::EsmeRinvcmdid
                };
                self.send(Command::new(status, sequence, Pdu::GenericNack))
                    .await?;
                return Ok(None);
            }
        };
        let sequence = command.sequence_number();
        if command.id() == CommandId::DeliverSmResp {
            self.receipt_answered(sequence, command.status());
            return Ok(None);
        }
        let Some(pdu) = command.pdu() else {
            return self.body_less(command.id(), sequence).await;
        };
        // The three binds are distinct types with the same fields.
        let bind = match pdu {
            Pdu::BindTransmitter(b) => Some((
                BindType::Transmitter,
                &b.system_id,
                &b.password,
                b.interface_version,
            )),
            Pdu::BindReceiver(b) => Some((
                BindType::Receiver,
                &b.system_id,
                &b.password,
                b.interface_version,
            )),
            Pdu::BindTransceiver(b) => Some((
                BindType::Transceiver,
                &b.system_id,
                &b.password,
                b.interface_version,
            )),
            _ => None,
        };
        if let Some((bind_type, system_id, password, version)) = bind {
            self.bind(
                sequence,
                bind_type,
                system_id.as_str(),
                password.as_str(),
                version,
            )
            .await?;
            return Ok(None);
        }
        match pdu {
            Pdu::SubmitSm(submit) => {
                let read = submission::from_submit_sm(submit);
                self.submit(sequence, Reply::SubmitSm, read).await?
            }
            Pdu::DataSm(data) => {
                let read = submission::from_data_sm(data);
                self.submit(sequence, Reply::DataSm, read).await?
            }
            Pdu::SubmitMulti(multi) => {
                let destinations = submission::from_submit_multi(multi);
                self.submit_multi(sequence, destinations).await?
            }
            Pdu::QuerySm(query) => {
                let message_id = query.message_id.as_str().to_owned();
                self.query(sequence, &message_id).await?
            }
            Pdu::CancelSm(cancel) => self.cancel(sequence, cancel).await?,
            Pdu::ReplaceSm(replace) => self.replace(sequence, replace).await?,
            Pdu::Unbind => {
                // Answers still committing go out first: the client is
                // owed them, and unbinding does not cancel submissions.
                self.drain().await?;
                self.send(Command::new(
                    CommandStatus::EsmeRok,
                    sequence,
                    Pdu::UnbindResp,
                ))
                .await?;
                return Ok(Some("the client unbound".into()));
            }
            Pdu::EnquireLink => {
                self.send(Command::new(
                    CommandStatus::EsmeRok,
                    sequence,
                    Pdu::EnquireLinkResp,
                ))
                .await?
            }
            Pdu::EnquireLinkResp | Pdu::GenericNack | Pdu::UnbindResp => {}
            other => self.not_served(other.command_id(), sequence).await?,
        }
        Ok(None)
    }

    /// Commands rusmpp reads without a body of its own.
    async fn body_less(&mut self, id: CommandId, sequence: u32) -> std::io::Result<Option<String>> {
        match id {
            CommandId::EnquireLinkResp
            | CommandId::GenericNack
            | CommandId::UnbindResp
            | CommandId::DataSmResp => {}
            other => self.not_served(other, sequence).await?,
        }
        Ok(None)
    }

    /// A command the server does not serve: generic_nack, and the session
    /// goes on.
    async fn not_served(&mut self, id: CommandId, sequence: u32) -> std::io::Result<()> {
        tracing::debug!(peer = %self.peer, ?id, "smpp server: not served; generic_nack");
        self.send(Command::new(
            CommandStatus::EsmeRinvcmdid,
            sequence,
            Pdu::GenericNack,
        ))
        .await
    }

    /// Ends a bound session from our side: answers what is committing,
    /// sends unbind and waits briefly for unbind_resp.
    async fn unbind(&mut self, reason: &str) -> String {
        if self.bind.is_none() {
            return reason.to_owned();
        }
        if let Err(e) = self.drain().await {
            return format!("{reason}; cannot write to the client: {e}");
        }
        let sequence = self.next_sequence();
        if let Err(e) = self
            .send(Command::new(CommandStatus::EsmeRok, sequence, Pdu::Unbind))
            .await
        {
            return format!("{reason}; cannot write to the client: {e}");
        }
        let answered = tokio::time::timeout(UNBIND_GRACE, async {
            while let Some(Ok(frame)) = self.reader.next().await {
                if let Frame::Command(c) = frame {
                    if c.id() == CommandId::UnbindResp {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        match answered {
            Ok(true) => reason.to_owned(),
            _ => format!("{reason}; the client did not answer unbind"),
        }
    }
}
