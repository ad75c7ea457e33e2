//! One SMPP session: open the link and bind ([`super::link`]), then keep a
//! window of submit_sm in flight ([`super::window`]) while answering what
//! the provider sends, until the link dies or the channel stops. Reconnects
//! with exponential backoff and jitter.
//!
//! What a claimed message comes to is decided by the window; this loop
//! carries it out: it writes what the window says, tells it what came
//! back, hands its decisions to the outbox, and keeps what the provider
//! may have whose outcome is not committed yet in the window across
//! reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::sync::{mpsc, watch, Semaphore};

use super::codec::Frame;
use super::config::BindMode;
use super::delivery::{self, Delivered};
use super::error::{status_text, Closing, SessionError, Writing};
use super::link::{self, Link};
use super::window::{Answered, Decided, Window};
use super::{receipt, submit, Channel};
use crate::backoff::Backoff;
use crate::channels::outbox::{Claimed, Outcome};
use crate::channels::state::{Count, LinkStatus};
use crate::channels::Heartbeat;

/// deliver_sm/data_sm a session records at once before it stops reading.
const MAX_DELIVERIES: usize = 1000;

/// How often the window is checked for answers that did not come.
const EXPIRY_CHECK: Duration = Duration::from_millis(200);

/// Runs session `index` of the channel, bound as `bind`, until the channel
/// stops; `beat` shows it is not stuck.
pub(super) async fn run(channel: Arc<Channel>, bind: BindMode, index: usize, beat: Heartbeat) {
    let config = &channel.config;
    let stop = channel.ctx.stop.clone();
    let name = channel.ctx.row.name.clone();
    let mut backoff = Backoff::new(
        Duration::from_secs_f64(config.reconnect_min_s),
        Duration::from_secs_f64(config.reconnect_max_s),
    );
    let mut session = Session {
        window: Window::new(config.window as usize, config.on_unknown_outcome),
        written: channel.outbox.as_ref().map(|o| o.written()),
        channel: channel.clone(),
        bind,
        index,
        beat: beat.clone(),
        window_reported: 0,
        binds: 0,
    };
    loop {
        beat.beat();
        let ended = session.connect_and_serve().await;
        session.settle_all();
        session.between_links();
        let (error, was_bound) = match ended {
            Ended::Stopped => return,
            Ended::Lost { error, was_bound } => (error, was_bound),
        };
        let reason = error.to_string();
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
                .set(LinkStatus::Connecting, Some(&reason))
                .await;
        }
        let delay = backoff.next_delay();
        if error.is_refusal() {
            // Retried all the same, but an operator must act.
            tracing::error!(channel = %name, session = index, "{reason}; reconnecting in {delay:?}");
        } else {
            tracing::warn!(channel = %name, session = index, "{reason}; reconnecting in {delay:?}");
        }
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

enum Ended {
    Stopped,
    Lost {
        error: SessionError,
        was_bound: bool,
    },
}

struct Session {
    channel: Arc<Channel>,
    bind: BindMode,
    index: usize,
    beat: Heartbeat,
    window: Window<Claimed>,
    /// What this session last added to the channel's window gauge.
    window_reported: i64,
    /// The outbox's last committed outcome number.
    written: Option<watch::Receiver<u64>>,
    /// Successful binds so far: every one after the first is a reconnect.
    binds: u64,
}

/// What lives as long as one bound link.
struct Connection {
    link: Link,
    /// Answers to deliver_sm, sent by tasks once the database committed.
    /// Unbounded, but never holding more than [`MAX_DELIVERIES`]: each
    /// delivery holds a `deliveries` permit until its answer is queued.
    answers: (
        mpsc::UnboundedSender<Command>,
        mpsc::UnboundedReceiver<Command>,
    ),
    /// deliver_sm/data_sm being recorded and not yet answered.
    deliveries: Arc<Semaphore>,
    last_sent: Instant,
}

impl Connection {
    fn new(link: Link) -> Connection {
        Connection {
            link,
            answers: mpsc::unbounded_channel(),
            deliveries: Arc::new(Semaphore::new(MAX_DELIVERIES)),
            last_sent: Instant::now(),
        }
    }
}

impl Session {
    fn transmits(&self) -> bool {
        self.bind != BindMode::Receiver && self.channel.outbox.is_some()
    }

    fn name(&self) -> &str {
        &self.channel.ctx.row.name
    }

    async fn connect_and_serve(&mut self) -> Ended {
        let channel = self.channel.clone();
        let config = &channel.config;
        let stop = &channel.ctx.stop;
        let lost = |error, was_bound| Ended::Lost { error, was_bound };
        let mut link = match link::connect(self.name(), config, channel.tls.as_ref(), stop).await {
            None => return Ended::Stopped,
            Some(Err(e)) => return lost(e, false),
            Some(Ok(link)) => link,
        };
        let sequence = self.window.sequence();
        if let Err(e) = link::bind(&mut link, config, self.bind, sequence, stop).await {
            return lost(e, false);
        }
        tracing::info!(channel = %self.name(), session = self.index, bind = ?self.bind,
            "bound to {}:{}", config.host, config.port);
        if self.binds > 0 {
            channel.ctx.state.count(Count::Reconnects, 1);
        }
        self.binds += 1;
        channel.ctx.state.session_up().await;
        if self.bind != BindMode::Receiver {
            channel.transmitter_up();
        }
        let mut connection = Connection::new(link);
        match self.serve(&mut connection).await {
            Ok(()) => {
                channel.ctx.state.set(LinkStatus::Disconnecting, None).await;
                let sequence = self.window.unbind(Instant::now());
                link::unbind(&channel.ctx.row.name, &mut connection.link, sequence).await;
                Ended::Stopped
            }
            Err(e) => lost(e, true),
        }
    }

    /// The bound session's loop; Ok when the channel stops.
    async fn serve(&mut self, conn: &mut Connection) -> Result<(), SessionError> {
        let config = self.channel.config.clone();
        let stop = self.channel.ctx.stop.clone();
        let mut enquire = tokio::time::interval(config.enquire_link());
        enquire.reset();
        let mut check = tokio::time::interval(EXPIRY_CHECK);
        let mut throttle_wait: Option<Instant> = None;
        let mut written = self.written.clone();
        loop {
            self.beat.beat();
            self.forget_recorded();
            throttle_wait = self.write_window(conn, throttle_wait).await?;
            let can_take = self.transmits()
                && !self.window.has_ready()
                && self.window.is_free()
                && throttle_wait.is_none();
            let outbox = self.channel.outbox.clone();
            tokio::select! {
                _ = stop.cancelled() => return self.drain(conn).await,
                frame = conn.link.next() => match frame {
                    None => return Err(SessionError::Closed(Closing::WhileBound)),
                    Some(Err(e)) => return Err(SessionError::Read(e)),
                    Some(Ok(frame)) => self.handle(conn, frame).await?,
                },
                Some(answer) = conn.answers.1.recv() => {
                    conn.link.send(answer).await.map_err(SessionError::write(Writing::Answer))?;
                }
                claimed = async { outbox.as_ref().expect("transmits").next().await }, if can_take => {
                    if let Some(claimed) = claimed {
                        self.take(claimed);
                    }
                }
                _ = async { written.as_mut().expect("unrecorded outcomes come from the outbox").changed().await },
                    if self.window.has_unrecorded() => {}
                _ = sleep_until(throttle_wait), if throttle_wait.is_some() => throttle_wait = None,
                _ = enquire.tick() => {
                    if conn.last_sent.elapsed() >= config.enquire_link() / 2 || self.window.nothing_outstanding() {
                        let sequence = self.window.enquire_link(Instant::now());
                        conn.link.send(Command::new(CommandStatus::EsmeRok, sequence, Pdu::EnquireLink))
                            .await
                            .map_err(SessionError::write(Writing::EnquireLink))?;
                    }
                }
                _ = check.tick() => self.expire(config.response_timeout())?,
            }
        }
    }

    /// Drops the outcomes committed since.
    fn forget_recorded(&mut self) {
        if let Some(written) = &self.written {
            let written = *written.borrow();
            self.window.forget_recorded(written);
        }
    }

    /// Adds a claimed message's parts to the window (or fails it when it
    /// cannot be put into PDUs).
    fn take(&mut self, claimed: Claimed) {
        match submit::build(&claimed.message, &self.channel.config, SystemTime::now()) {
            Ok(pdus) => self.window.hold(claimed.message.id, claimed, pdus),
            Err(e) => self.finish(Decided {
                claimed,
                outcome: Outcome::Failed {
                    error: e.to_string(),
                },
                taken: 0,
            }),
        }
    }

    /// Writes ready parts while the window and the rate allow; returns when
    /// the rate wants a pause.
    async fn write_window(
        &mut self,
        conn: &mut Connection,
        mut throttle_wait: Option<Instant>,
    ) -> Result<Option<Instant>, SessionError> {
        if throttle_wait.is_some() {
            return Ok(throttle_wait);
        }
        let mut written = 0;
        while self.window.is_free() {
            if !self.window.has_ready() {
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
            let Some(part) = self.window.next_part(now) else {
                continue;
            };
            if part.first_of_message {
                self.channel
                    .ctx
                    .state
                    .first_submit(part.claimed.message.due_at);
            }
            let command = Command::new(CommandStatus::EsmeRok, part.sequence, part.pdu);
            conn.link
                .feed(command)
                .await
                .map_err(SessionError::write(Writing::SubmitSm))?;
            written += 1;
        }
        if written > 0 {
            conn.link
                .flush()
                .await
                .map_err(SessionError::write(Writing::SubmitSm))?;
            conn.last_sent = Instant::now();
            self.channel.ctx.state.count(Count::Submitted, written);
        }
        self.report_window();
        Ok(throttle_wait)
    }

    /// Adds this session's change of window use to the channel's gauge.
    fn report_window(&mut self) {
        let now = self.window.in_window() as i64;
        let delta = now - self.window_reported;
        if delta != 0 {
            self.channel.ctx.state.window_change(delta);
            self.window_reported = now;
        }
    }

    async fn handle(&mut self, conn: &mut Connection, frame: Frame) -> Result<(), SessionError> {
        let command = match frame {
            Frame::Command(command) => command,
            Frame::Malformed {
                command_id,
                sequence,
                error,
            } => return self.malformed(conn, command_id, sequence, &error).await,
        };
        let sequence = command.sequence_number();
        let status = command.status();
        tracing::trace!(channel = %self.name(), session = self.index, id = ?command.id(), sequence, ?status, "received");
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
                self.window.acknowledged(sequence);
            }
            CommandId::EnquireLink => {
                let answer = Command::new(CommandStatus::EsmeRok, sequence, Pdu::EnquireLinkResp);
                conn.link
                    .send(answer)
                    .await
                    .map_err(SessionError::write(Writing::EnquireLinkResp))?;
            }
            CommandId::Unbind => {
                let answer = Command::new(CommandStatus::EsmeRok, sequence, Pdu::UnbindResp);
                if let Err(e) = conn.link.send(answer).await {
                    // The session ends either way; the provider unbinding
                    // is the reason worth reporting.
                    tracing::debug!(channel = %self.name(), session = self.index,
                        "cannot answer the provider's unbind: {e}");
                }
                return Err(SessionError::ProviderUnbound);
            }
            CommandId::DeliverSm | CommandId::DataSm => {
                let pdu = match command.pdu() {
                    Some(Pdu::DeliverSm(pdu)) => Delivered::DeliverSm(pdu.clone()),
                    Some(Pdu::DataSm(pdu)) => Delivered::DataSm(pdu.clone()),
                    _ => return Ok(()),
                };
                // Backpressure: with this many deliveries waiting for the
                // database, stop reading until one is answered.
                let slot = conn
                    .deliveries
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let answers = conn.answers.0.clone();
                delivery::spawn(self.channel.clone(), answers, sequence, pdu, slot);
            }
            id => {
                let is_request = u32::from(id) & 0x8000_0000 == 0;
                if is_request {
                    let nack =
                        Command::new(CommandStatus::EsmeRinvcmdid, sequence, Pdu::GenericNack);
                    conn.link
                        .send(nack)
                        .await
                        .map_err(SessionError::write(Writing::Answer))?;
                }
            }
        }
        Ok(())
    }

    /// A PDU whose body could not be read: refuse it (a request) or treat
    /// it as an answer with an unknown outcome (a response).
    async fn malformed(
        &mut self,
        conn: &mut Connection,
        command_id: u32,
        sequence: u32,
        error: &str,
    ) -> Result<(), SessionError> {
        tracing::warn!(channel = %self.name(), session = self.index,
            "malformed PDU (command_id 0x{command_id:08X}, sequence {sequence}): {error}");
        if command_id & 0x8000_0000 == 0 {
            let nack = Command::new(CommandStatus::EsmeRinvcmdlen, sequence, Pdu::GenericNack);
            conn.link
                .send(nack)
                .await
                .map_err(SessionError::write(Writing::Answer))?;
        } else if let Some(decided) = self.window.unreadable_answer(sequence, error) {
            self.finish(decided);
        }
        Ok(())
    }

    fn answered(&mut self, sequence: u32, status: CommandStatus, message_id: Option<String>) {
        let format = self.channel.config.dlr_id_format;
        let reference = || receipt::reference(message_id.as_deref().unwrap_or_default(), format);
        match self.window.answered(sequence, status, reference) {
            Answered::Unmatched => {}
            Answered::Accepted { decided } => {
                self.channel.throttle.accepted();
                if let Some(decided) = decided {
                    self.finish(decided);
                }
            }
            Answered::Throttled => {
                self.channel.ctx.state.count(Count::Throttled, 1);
                let pause = self.channel.throttle.slow_down(Instant::now());
                tracing::debug!(channel = %self.name(), "{}: pausing {pause:?}", status_text(status));
            }
            Answered::Refused(decided) => self.finish(decided),
        }
    }

    /// Answers that did not come in time.
    fn expire(&mut self, timeout: Duration) -> Result<(), SessionError> {
        let expired = self.window.expire(Instant::now(), timeout);
        for decided in expired.decided {
            self.finish(decided);
        }
        if expired.enquire_link {
            return Err(SessionError::EnquireLinkUnanswered {
                seconds: timeout.as_secs_f64(),
            });
        }
        Ok(())
    }

    /// Hands a decided outcome to the outbox; the parts the provider has,
    /// or may have, stay in the window until it commits.
    fn finish(&mut self, decided: Decided<Claimed>) {
        let Some(outbox) = &self.channel.outbox else {
            return;
        };
        let seq = outbox.finish(decided.claimed, decided.outcome);
        self.window.unrecorded(seq, decided.taken);
    }

    /// The link is gone: decides every message still held.
    fn settle_all(&mut self) {
        for decided in self.window.settle_all() {
            self.finish(decided);
        }
        self.report_window();
    }

    /// Until the next link, this session's share of the window gauge is
    /// withdrawn; what stays unrecorded counts again once bound.
    fn between_links(&mut self) {
        self.forget_recorded();
        self.channel.ctx.state.window_change(-self.window_reported);
        self.window_reported = 0;
    }

    /// The channel is stopping: stop taking messages, hand back what was
    /// never written, and wait (bounded) for the window's answers.
    async fn drain(&mut self, conn: &mut Connection) -> Result<(), SessionError> {
        for decided in self.window.release_unwritten() {
            self.finish(decided);
        }
        let timeout = self.channel.config.response_timeout();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while self.window.in_window() > 0 {
            self.beat.beat();
            tokio::select! {
                _ = &mut deadline => break,
                frame = conn.link.next() => match frame {
                    Some(Ok(frame)) => self.handle(conn, frame).await?,
                    _ => return Err(SessionError::Closed(Closing::WhileStopping)),
                },
                Some(answer) = conn.answers.1.recv() => {
                    conn.link.send(answer).await.map_err(SessionError::write(Writing::Answer))?;
                }
            }
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
