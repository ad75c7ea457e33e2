//! One SMPP session: connect, bind, then keep a window of submit_sm in
//! flight while answering what the provider sends, until the link dies or
//! the channel stops. Reconnects with exponential backoff and jitter.
//!
//! The outcome of every claimed message is decided here:
//! - all parts accepted -> sent, with one reference per part;
//! - a permanent error -> failed, with the SMPP status in last_error;
//! - throttled / queue full -> the part is sent again after a pause;
//! - no answer (timeout, lost link) -> outcome unknown: queued again or
//!   failed as `on_unknown_outcome` says, noted in last_error and the trace;
//! - never sent -> handed back at once.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter, SubmitSm};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Framed;

use super::codec::{Frame, SmppCodec};
use super::config::{BindMode, UnknownOutcome};
use super::delivery::{self, Delivered};
use super::receipt;
use super::submit;
use super::Channel;
use crate::backoff::Backoff;
use crate::channels::outbox::{Claimed, Outcome};
use crate::channels::state::Count;
use crate::channels::Heartbeat;

/// deliver_sm/data_sm a session records at once before it stops reading.
const MAX_DELIVERIES: usize = 1000;

/// How long an unanswered message waits before it is queued again.
const UNKNOWN_RETRY_DELAY: Duration = Duration::from_secs(5);

pub(super) async fn run(channel: Arc<Channel>, bind: BindMode, index: usize, beat: Heartbeat) {
    let config = &channel.config;
    let stop = channel.ctx.stop.clone();
    let name = channel.ctx.row.name.clone();
    let mut backoff = Backoff::new(
        Duration::from_secs_f64(config.reconnect_min_s),
        Duration::from_secs_f64(config.reconnect_max_s),
    );
    // What the provider has (or may have) whose outcome is not committed
    // yet counts in the window across reconnects too: the window bounds
    // what a crash sends twice only if a new connection does not forget it.
    let mut unrecorded = VecDeque::new();
    loop {
        beat.beat();
        let mut session = Session::new(channel.clone(), bind, index, beat.clone());
        session.unrecorded = unrecorded;
        let ended = session.connect_and_serve().await;
        session.settle_all();
        unrecorded = session.hand_over();
        match ended {
            Ended::Stopped => return,
            Ended::Lost { reason, was_bound } => {
                if was_bound {
                    backoff.reset();
                    channel.ctx.state.session_down(&reason).await;
                    if bind != BindMode::Receiver {
                        channel.transmitter_down();
                    }
                } else if channel.ctx.state.sessions_up() == 0 {
                    channel
                        .ctx
                        .state
                        .set(
                            crate::channels::state::LinkStatus::Connecting,
                            Some(&reason),
                        )
                        .await;
                }
                let delay = backoff.next_delay();
                tracing::warn!(channel = %name, session = index, "{reason}; reconnecting in {delay:?}");
                // Sleep in short steps so the heartbeat keeps going.
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    beat.beat();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep((until - Instant::now()).min(Duration::from_secs(1))) => {}
                    }
                }
            }
        }
    }
}

enum Ended {
    Stopped,
    Lost { reason: String, was_bound: bool },
}

/// What an outstanding request of ours is.
enum Request {
    Submit { message: i64, part: usize },
    EnquireLink,
    Unbind,
}

struct Outstanding {
    request: Request,
    sent_at: Instant,
}

/// A message being submitted by this session.
struct Progress {
    claimed: Claimed,
    pdus: Vec<SubmitSm>,
    references: Vec<Option<String>>,
    /// Some part was written to the wire.
    written: bool,
}

/// A connection to the provider, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Link = Framed<Box<dyn Stream>, SmppCodec>;

struct Session {
    channel: Arc<Channel>,
    bind: BindMode,
    index: usize,
    beat: Heartbeat,
    next_sequence: u32,
    outstanding: HashMap<u32, Outstanding>,
    messages: HashMap<i64, Progress>,
    /// Parts ready to be written, in order.
    ready: VecDeque<(i64, usize)>,
    /// Answers to deliver_sm, sent by tasks once the database committed.
    answers: (
        mpsc::UnboundedSender<Command>,
        mpsc::UnboundedReceiver<Command>,
    ),
    last_sent: Instant,
    /// What this session last added to the channel's window gauge.
    window_reported: i64,
    /// deliver_sm/data_sm being recorded and not yet answered.
    deliveries: Arc<Semaphore>,
    /// Messages the provider took (or may have taken) whose outcome is not
    /// committed yet, as (outcome number, parts). They count against the
    /// window: a worker killed now would send them again, so the window
    /// bounds what a crash can send twice.
    unrecorded: VecDeque<(u64, usize)>,
    /// The outbox's last committed outcome number.
    written: Option<tokio::sync::watch::Receiver<u64>>,
    /// Successful binds so far: every one after the first is a reconnect.
    binds: u64,
}

impl Session {
    fn new(channel: Arc<Channel>, bind: BindMode, index: usize, beat: Heartbeat) -> Session {
        Session {
            bind,
            index,
            beat,
            next_sequence: 0,
            outstanding: HashMap::new(),
            messages: HashMap::new(),
            ready: VecDeque::new(),
            answers: mpsc::unbounded_channel(),
            last_sent: Instant::now(),
            window_reported: 0,
            deliveries: Arc::new(Semaphore::new(MAX_DELIVERIES)),
            unrecorded: VecDeque::new(),
            written: channel.outbox.as_ref().map(|o| o.written()),
            binds: 0,
            channel,
        }
    }

    fn sequence(&mut self) -> u32 {
        // Sequence numbers run 1..=0x7FFFFFFF (SMPP 3.4 §5.1.4).
        self.next_sequence = self.next_sequence % 0x7FFF_FFFF + 1;
        self.next_sequence
    }

    fn transmits(&self) -> bool {
        self.bind != BindMode::Receiver && self.channel.outbox.is_some()
    }

    async fn connect_and_serve(&mut self) -> Ended {
        let config = &self.channel.config;
        let stop = self.channel.ctx.stop.clone();
        let address = format!("{}:{}", config.host, config.port);
        let connect = tokio::time::timeout(config.connect_timeout(), TcpStream::connect(&address));
        let stream = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            result = connect => match result {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return lost(format!("cannot connect to {address}: {e}"), false),
                Err(_) => return lost(format!("cannot connect to {address}: timed out"), false),
            },
        };
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.channel.tls {
            None => Box::new(stream),
            Some(connector) => {
                let handshake = tokio::time::timeout(
                    config.connect_timeout(),
                    super::tls::handshake(connector, &config.host, stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(reason)) => return lost(reason, false),
                    Err(_) => {
                        return lost(format!("TLS handshake with {address} timed out"), false)
                    }
                }
            }
        };
        let mut link = Framed::new(stream, SmppCodec::new());
        if let Err(reason) = self.bind(&mut link).await {
            return lost(reason, false);
        }
        tracing::info!(channel = %self.channel.ctx.row.name, session = self.index, bind = ?self.bind, "bound to {address}");
        if self.binds > 0 {
            self.channel.ctx.state.count(Count::Reconnects, 1);
        }
        self.binds += 1;
        self.channel.ctx.state.session_up().await;
        if self.bind != BindMode::Receiver {
            self.channel.transmitter_up();
        }
        match self.serve(&mut link).await {
            Ok(()) => {
                self.unbind(&mut link).await;
                Ended::Stopped
            }
            Err(reason) => lost(reason, true),
        }
    }

    async fn bind(&mut self, link: &mut Link) -> Result<(), String> {
        let channel = self.channel.clone();
        let c = &channel.config;
        let (system_id, password, system_type, range) = (
            text(&c.system_id, "system_id")?,
            text(&c.password, "password")?,
            text(&c.system_type, "system_type")?,
            text(&c.address_range, "address_range")?,
        );
        let version = InterfaceVersion::from(c.interface_version_byte());
        // The three binds carry the same fields.
        macro_rules! bind {
            ($kind:ident) => {
                $kind::new(
                    system_id,
                    password,
                    system_type,
                    version,
                    Ton::Unknown,
                    Npi::Unknown,
                    range,
                )
                .into()
            };
        }
        let pdu: Pdu = match self.bind {
            BindMode::Transmitter => bind!(BindTransmitter),
            BindMode::Receiver => bind!(BindReceiver),
            BindMode::Transceiver | BindMode::TxRx => bind!(BindTransceiver),
        };
        let sequence = self.sequence();
        link.send(Command::new(CommandStatus::EsmeRok, sequence, pdu))
            .await
            .map_err(|e| format!("cannot send the bind: {e}"))?;
        let deadline = tokio::time::sleep(c.response_timeout());
        tokio::pin!(deadline);
        loop {
            let frame = tokio::select! {
                _ = &mut deadline => return Err("no answer to the bind".into()),
                _ = self.channel.ctx.stop.cancelled() => return Err("stopped while binding".into()),
                frame = link.next() => frame,
            };
            match frame {
                None => return Err("connection closed during the bind".into()),
                Some(Err(e)) => return Err(format!("during the bind: {e}")),
                Some(Ok(Frame::Command(command))) if command.sequence_number() == sequence => {
                    let status = command.status();
                    if status == CommandStatus::EsmeRok {
                        return Ok(());
                    }
                    return Err(format!("bind refused: {}", status_text(status)));
                }
                Some(Ok(Frame::Command(command))) if command.id() == CommandId::GenericNack => {
                    return Err(format!("bind refused: {}", status_text(command.status())));
                }
                // Anything else before the bind answer is ignored.
                Some(Ok(_)) => {}
            }
        }
    }

    /// The bound session's loop; Ok when the channel stops.
    async fn serve(&mut self, link: &mut Link) -> Result<(), String> {
        let config = self.channel.config.clone();
        let stop = self.channel.ctx.stop.clone();
        let mut enquire = tokio::time::interval(config.enquire_link());
        enquire.reset();
        let mut check = tokio::time::interval(Duration::from_millis(200));
        let mut throttle_wait: Option<Instant> = None;
        let mut written = self.written.clone();
        loop {
            self.beat.beat();
            self.forget_recorded();
            throttle_wait = self.write_window(link, throttle_wait).await?;
            let can_take = self.transmits()
                && self.ready.is_empty()
                && self.window_free()
                && throttle_wait.is_none();
            let outbox = self.channel.outbox.clone();
            tokio::select! {
                _ = stop.cancelled() => return self.drain(link).await,
                frame = link.next() => match frame {
                    None => return Err("the provider closed the connection".into()),
                    Some(Err(e)) => return Err(format!("link error: {e}")),
                    Some(Ok(frame)) => self.handle(link, frame).await?,
                },
                Some(answer) = self.answers.1.recv() => {
                    link.send(answer).await.map_err(|e| format!("cannot answer: {e}"))?;
                }
                claimed = async { outbox.as_ref().expect("transmits").next().await }, if can_take => {
                    if let Some(claimed) = claimed {
                        self.take(claimed);
                    }
                }
                _ = async { written.as_mut().expect("unrecorded outcomes come from the outbox").changed().await },
                    if !self.unrecorded.is_empty() => {}
                _ = sleep_until(throttle_wait), if throttle_wait.is_some() => throttle_wait = None,
                _ = enquire.tick() => {
                    if self.last_sent.elapsed() >= config.enquire_link() / 2 || self.outstanding.is_empty() {
                        let sequence = self.sequence();
                        self.outstanding.insert(sequence, Outstanding { request: Request::EnquireLink, sent_at: Instant::now() });
                        link.send(Command::new(CommandStatus::EsmeRok, sequence, Pdu::EnquireLink))
                            .await
                            .map_err(|e| format!("cannot send enquire_link: {e}"))?;
                    }
                }
                _ = check.tick() => self.expire(config.response_timeout())?,
            }
        }
    }

    fn window_free(&self) -> bool {
        self.in_window() < self.channel.config.window as usize
    }

    /// Parts in flight: written and unanswered, or answered with their
    /// outcome not committed yet.
    fn in_window(&self) -> usize {
        let unanswered = self
            .outstanding
            .values()
            .filter(|o| matches!(o.request, Request::Submit { .. }))
            .count();
        unanswered
            + self
                .unrecorded
                .iter()
                .map(|(_, parts)| parts)
                .sum::<usize>()
    }

    /// Drops the outcomes committed since.
    fn forget_recorded(&mut self) {
        if let Some(written) = &self.written {
            let written = *written.borrow();
            while self
                .unrecorded
                .front()
                .is_some_and(|(seq, _)| *seq <= written)
            {
                self.unrecorded.pop_front();
            }
        }
    }

    /// Adds a claimed message's parts to the ready queue (or fails it when
    /// it cannot be put into PDUs).
    fn take(&mut self, claimed: Claimed) {
        let id = claimed.message.id;
        match submit::build(&claimed.message, &self.channel.config, SystemTime::now()) {
            Ok(pdus) => {
                for part in 0..pdus.len() {
                    self.ready.push_back((id, part));
                }
                self.messages.insert(
                    id,
                    Progress {
                        references: vec![None; pdus.len()],
                        pdus,
                        claimed,
                        written: false,
                    },
                );
            }
            Err(e) => self.finish_claimed(
                claimed,
                Outcome::Failed {
                    error: e.to_string(),
                },
                0,
            ),
        }
    }

    /// Writes ready parts while the window and the rate allow; returns when
    /// the rate wants a pause.
    async fn write_window(
        &mut self,
        link: &mut Link,
        mut throttle_wait: Option<Instant>,
    ) -> Result<Option<Instant>, String> {
        if throttle_wait.is_some() {
            return Ok(throttle_wait);
        }
        let mut written = 0;
        while self.window_free() {
            if self.ready.is_empty() {
                match self.channel.outbox.as_ref().and_then(|o| o.try_next()) {
                    Some(claimed) if self.transmits() => self.take(claimed),
                    _ => break,
                }
                continue;
            }
            let now = Instant::now();
            if let Err(wait) = self.channel.throttle.take(now) {
                throttle_wait = Some(now + wait);
                break;
            }
            let (id, part) = self.ready.pop_front().expect("not empty");
            let Some(progress) = self.messages.get_mut(&id) else {
                continue;
            };
            let pdu = progress.pdus[part].clone();
            if !progress.written {
                self.channel
                    .ctx
                    .state
                    .first_submit(progress.claimed.message.due_at);
            }
            progress.written = true;
            let sequence = self.sequence();
            self.outstanding.insert(
                sequence,
                Outstanding {
                    request: Request::Submit { message: id, part },
                    sent_at: now,
                },
            );
            link.feed(Command::new(CommandStatus::EsmeRok, sequence, pdu))
                .await
                .map_err(|e| format!("cannot write submit_sm: {e}"))?;
            written += 1;
        }
        if written > 0 {
            link.flush()
                .await
                .map_err(|e| format!("cannot write submit_sm: {e}"))?;
            self.last_sent = Instant::now();
            self.channel.ctx.state.count(Count::Submitted, written);
        }
        self.report_window();
        Ok(throttle_wait)
    }

    /// Adds this session's change of window use to the channel's gauge.
    fn report_window(&mut self) {
        let now = self.in_window() as i64;
        let delta = now - self.window_reported;
        if delta != 0 {
            self.channel.ctx.state.window_change(delta);
            self.window_reported = now;
        }
    }

    async fn handle(&mut self, link: &mut Link, frame: Frame) -> Result<(), String> {
        let command = match frame {
            Frame::Command(command) => command,
            Frame::Malformed {
                command_id,
                sequence,
                error,
            } => return self.malformed(link, command_id, sequence, &error).await,
        };
        let sequence = command.sequence_number();
        let status = command.status();
        tracing::trace!(channel = %self.channel.ctx.row.name, session = self.index, id = ?command.id(), sequence, ?status, "received");
        match command.id() {
            CommandId::SubmitSmResp => {
                let message_id = match command.pdu() {
                    Some(Pdu::SubmitSmResp(resp)) => Some(resp.message_id().as_str().to_owned()),
                    _ => None,
                };
                self.answered(sequence, status, message_id);
            }
            CommandId::GenericNack => self.answered(sequence, status, None),
            CommandId::EnquireLinkResp | CommandId::UnbindResp => {
                self.outstanding.remove(&sequence);
            }
            CommandId::EnquireLink => {
                link.send(Command::new(
                    CommandStatus::EsmeRok,
                    sequence,
                    Pdu::EnquireLinkResp,
                ))
                .await
                .map_err(|e| format!("cannot answer enquire_link: {e}"))?;
            }
            CommandId::Unbind => {
                let _ = link
                    .send(Command::new(
                        CommandStatus::EsmeRok,
                        sequence,
                        Pdu::UnbindResp,
                    ))
                    .await;
                return Err("the provider unbound".into());
            }
            CommandId::DeliverSm | CommandId::DataSm => {
                let pdu = match command.pdu() {
                    Some(Pdu::DeliverSm(pdu)) => Delivered::DeliverSm(pdu.clone()),
                    Some(Pdu::DataSm(pdu)) => Delivered::DataSm(pdu.clone()),
                    _ => return Ok(()),
                };
                // Backpressure: with this many deliveries waiting for the
                // database, stop reading until one is answered.
                let slot = self
                    .deliveries
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                self.deliver(sequence, pdu, slot);
            }
            id => {
                let is_request = u32::from(id) & 0x8000_0000 == 0;
                if is_request {
                    link.send(Command::new(
                        CommandStatus::EsmeRinvcmdid,
                        sequence,
                        Pdu::GenericNack,
                    ))
                    .await
                    .map_err(|e| format!("cannot answer: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// A PDU whose body could not be read: refuse it (a request) or treat
    /// it as an answer with an unknown outcome (a response).
    async fn malformed(
        &mut self,
        link: &mut Link,
        command_id: u32,
        sequence: u32,
        error: &str,
    ) -> Result<(), String> {
        tracing::warn!(channel = %self.channel.ctx.row.name, session = self.index,
            "malformed PDU (command_id 0x{command_id:08X}, sequence {sequence}): {error}");
        if command_id & 0x8000_0000 == 0 {
            link.send(Command::new(
                CommandStatus::EsmeRinvcmdlen,
                sequence,
                Pdu::GenericNack,
            ))
            .await
            .map_err(|e| format!("cannot answer: {e}"))?;
        } else if let Some(Outstanding {
            request: Request::Submit { message, .. },
            ..
        }) = self.outstanding.remove(&sequence)
        {
            self.unknown(message, &format!("unreadable submit_sm_resp ({error})"));
        }
        Ok(())
    }

    fn answered(&mut self, sequence: u32, status: CommandStatus, message_id: Option<String>) {
        let Some(Outstanding {
            request: Request::Submit { message, part },
            ..
        }) = self.outstanding.remove(&sequence)
        else {
            return;
        };
        let Some(progress) = self.messages.get_mut(&message) else {
            return; // the message was already decided (a sibling part failed)
        };
        match status {
            CommandStatus::EsmeRok => {
                self.channel.throttle.accepted();
                let reference = receipt::reference(
                    message_id.as_deref().unwrap_or_default(),
                    self.channel.config.dlr_id_format,
                );
                progress.references[part] = Some(reference);
                if progress.references.iter().all(Option::is_some) {
                    let progress = self.messages.remove(&message).expect("present");
                    let references: Vec<String> =
                        progress.references.into_iter().flatten().collect();
                    let taken = references.len();
                    self.finish_claimed(progress.claimed, Outcome::Sent { references }, taken);
                }
            }
            CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful => {
                self.channel.ctx.state.count(Count::Throttled, 1);
                let pause = self.channel.throttle.slow_down(Instant::now());
                tracing::debug!(channel = %self.channel.ctx.row.name, "{}: pausing {pause:?}", status_text(status));
                // Sent again first thing after the pause.
                self.ready.push_front((message, part));
            }
            refusal => {
                let progress = self.messages.remove(&message).expect("present");
                self.ready.retain(|(id, _)| *id != message);
                let total = progress.pdus.len();
                let error = if total > 1 {
                    format!(
                        "submit_sm refused: {} (part {} of {total})",
                        status_text(refusal),
                        part + 1
                    )
                } else {
                    format!("submit_sm refused: {}", status_text(refusal))
                };
                self.finish_claimed(progress.claimed, Outcome::Failed { error }, 0);
            }
        }
    }

    /// Answers that did not come in time.
    fn expire(&mut self, timeout: Duration) -> Result<(), String> {
        let now = Instant::now();
        let late: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, o)| now.duration_since(o.sent_at) > timeout)
            .map(|(s, _)| *s)
            .collect();
        for sequence in late {
            match self.outstanding.remove(&sequence).map(|o| o.request) {
                Some(Request::Submit { message, .. }) => self.unknown(
                    message,
                    &format!("no submit_sm_resp within {}s", timeout.as_secs_f64()),
                ),
                Some(Request::EnquireLink) => {
                    return Err(format!(
                        "no enquire_link_resp within {}s: the link is dead",
                        timeout.as_secs_f64()
                    ))
                }
                Some(Request::Unbind) | None => {}
            }
        }
        Ok(())
    }

    /// A message that may or may not have been accepted.
    fn unknown(&mut self, message: i64, why: &str) {
        let Some(progress) = self.messages.remove(&message) else {
            return;
        };
        self.ready.retain(|(id, _)| *id != message);
        let outcome = unknown_outcome(self.channel.config.on_unknown_outcome, why);
        let taken = progress.pdus.len();
        self.finish_claimed(progress.claimed, outcome, taken);
    }

    /// Hands the outcome to the writer; `taken` parts of the message the
    /// provider has, or may have, and count in flight until it commits.
    fn finish_claimed(&mut self, claimed: Claimed, outcome: Outcome, taken: usize) {
        let Some(outbox) = &self.channel.outbox else {
            return;
        };
        let seq = outbox.finish(claimed, outcome);
        if taken > 0 && seq > 0 {
            self.unrecorded.push_back((seq, taken));
        }
    }

    /// Decides every message still held: never written -> handed back;
    /// written -> outcome unknown (and in the window until committed).
    fn settle_all(&mut self) {
        let policy = self.channel.config.on_unknown_outcome;
        let held: Vec<Progress> = self.messages.drain().map(|(_, p)| p).collect();
        for progress in held {
            if progress.written {
                let outcome = unknown_outcome(
                    policy,
                    "connection lost before every submit_sm was answered",
                );
                let taken = progress.pdus.len();
                self.finish_claimed(progress.claimed, outcome, taken);
            } else {
                self.finish_claimed(progress.claimed, Outcome::Release, 0);
            }
        }
        self.ready.clear();
        self.outstanding.clear();
        self.report_window();
    }

    /// The outcomes not committed yet, for the next connection; this
    /// session's share of the window gauge goes with them.
    fn hand_over(mut self) -> VecDeque<(u64, usize)> {
        self.forget_recorded();
        self.channel.ctx.state.window_change(-self.window_reported);
        std::mem::take(&mut self.unrecorded)
    }

    /// The channel is stopping: stop taking messages, hand back what was
    /// never written, and wait (bounded) for the window's answers.
    async fn drain(&mut self, link: &mut Link) -> Result<(), String> {
        let never_written: Vec<i64> = self
            .messages
            .iter()
            .filter(|(_, p)| !p.written)
            .map(|(id, _)| *id)
            .collect();
        for id in never_written {
            if let Some(p) = self.messages.remove(&id) {
                self.finish_claimed(p.claimed, Outcome::Release, 0);
            }
        }
        self.ready.clear();
        let timeout = self.channel.config.response_timeout();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while self.in_window() > 0 {
            self.beat.beat();
            tokio::select! {
                _ = &mut deadline => break,
                frame = link.next() => match frame {
                    Some(Ok(frame)) => self.handle(link, frame).await?,
                    _ => return Err("connection lost while stopping".into()),
                },
                Some(answer) = self.answers.1.recv() => {
                    let _ = link.send(answer).await;
                }
            }
        }
        Ok(())
    }

    async fn unbind(&mut self, link: &mut Link) {
        self.channel
            .ctx
            .state
            .set(crate::channels::state::LinkStatus::Disconnecting, None)
            .await;
        let sequence = self.sequence();
        self.outstanding.insert(
            sequence,
            Outstanding {
                request: Request::Unbind,
                sent_at: Instant::now(),
            },
        );
        if link
            .send(Command::new(CommandStatus::EsmeRok, sequence, Pdu::Unbind))
            .await
            .is_err()
        {
            return;
        }
        let wait = async {
            while let Some(Ok(frame)) = link.next().await {
                if let Frame::Command(c) = frame {
                    if c.id() == CommandId::UnbindResp {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        let _ = link.close().await;
    }

    /// A deliver_sm or data_sm: answered once the database has it.
    fn deliver(&mut self, sequence: u32, pdu: Delivered, slot: OwnedSemaphorePermit) {
        delivery::spawn(
            self.channel.clone(),
            self.answers.0.clone(),
            sequence,
            pdu,
            slot,
        );
    }
}

fn unknown_outcome(policy: UnknownOutcome, why: &str) -> Outcome {
    let error = format!("outcome unknown: {why}; the message may have been sent");
    match policy {
        UnknownOutcome::Retry => Outcome::Retry {
            error,
            delay: UNKNOWN_RETRY_DELAY,
        },
        UnknownOutcome::Fail => Outcome::Failed { error },
    }
}

fn text<const MIN: usize, const MAX: usize>(
    value: &str,
    what: &str,
) -> Result<COctetString<MIN, MAX>, String> {
    COctetString::from_str(value).map_err(|e| format!("{what}: {e}"))
}

fn lost(reason: String, was_bound: bool) -> Ended {
    Ended::Lost { reason, was_bound }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// `ESME_RTHROTTLED (0x00000058)`.
pub fn status_text(status: CommandStatus) -> String {
    let code = u32::from(status);
    let name = format!("{status:?}");
    let name = if name.starts_with("Other") {
        "unknown status".to_owned()
    } else {
        // EsmeRthrottled -> ESME_RTHROTTLED
        name.replacen("Esme", "ESME_", 1).to_ascii_uppercase()
    };
    format!("{name} (0x{code:08X})")
}
