//! The SMPP channel (`kind = 'smpp'`).
//!
//! - [`config`]: the channel's settings.
//! - [`codec`]: framing that survives a malformed PDU.
//! - [`carried`]: deliver_sm and data_sm read alike.
//! - [`submit`]: submit_sm PDUs from a message.
//! - [`receipt`]: delivery receipts.
//! - [`inbound`]: mobile-originated messages.
//! - [`throttle`]: the channel's rate, shared by its sessions.
//! - [`session`]: one session's loop: bound, it writes what the window
//!   allows and answers what the provider sends; lost, it reconnects.
//! - [`link`]: the connection (TCP, TLS), its bind and its unbind.
//! - [`window`]: what is in flight and what each message comes to (pure
//!   bookkeeping, tested without sockets or a runtime).
//! - [`error`]: why a session ended ([`SessionError`]): a refused bind
//!   apart from a lost link.
//! - [`delivery`]: receipts and inbound messages, answered after commit.
//! - [`tls`]: TLS to providers that require it.
//!
//! [`run`] opens the configured sessions (each reconnecting on its own
//! with backoff), claims messages while a transmitting session is bound,
//! and on stop lets the sessions finish their window and unbind.

pub mod carried;
pub mod codec;
pub mod config;
mod delivery;
pub mod error;
pub mod inbound;
mod link;
pub mod receipt;
mod session;
pub mod submit;
pub mod throttle;
pub mod tls;
mod window;

pub use error::SessionError;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::inbox::Inbox;
use super::outbox::Outbox;
use super::{ChannelContext, Heartbeat};
use config::{BindMode, SmppConfig};

/// A session that has not looped for this long is stuck.
const SESSION_HANG: Duration = Duration::from_secs(30);

/// State the sessions of one channel share.
struct Channel {
    ctx: ChannelContext,
    config: SmppConfig,
    outbox: Option<Arc<Outbox>>,
    inbox: Inbox,
    throttle: throttle::Throttle,
    transmitters_up: AtomicUsize,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Channel {
    fn transmitter_up(&self) {
        if self.transmitters_up.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(outbox) = &self.outbox {
                outbox.set_active(true);
            }
        }
    }

    fn transmitter_down(&self) {
        if self.transmitters_up.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(outbox) = &self.outbox {
                outbox.set_active(false);
            }
        }
    }
}

pub async fn run(ctx: ChannelContext) -> anyhow::Result<()> {
    let config = SmppConfig::parse(&ctx.row.config)?;
    let tls = if config.tls {
        Some(tls::connector(&config)?)
    } else {
        None
    };
    let mut binds = config.session_binds();
    if !ctx.row.can_receive {
        // A channel that must not receive binds as transmitter only.
        binds.retain(|b| *b != BindMode::Receiver);
        for b in &mut binds {
            if *b == BindMode::Transceiver {
                *b = BindMode::Transmitter;
            }
        }
    }
    if !ctx.row.can_send {
        binds.retain(|b| *b != BindMode::Transmitter);
        for b in &mut binds {
            if *b == BindMode::Transceiver {
                *b = BindMode::Receiver;
            }
        }
    }
    anyhow::ensure!(
        !binds.is_empty(),
        "the channel can neither send nor receive with bind = {:?}",
        config.bind
    );
    let transmitting = binds.iter().filter(|b| **b != BindMode::Receiver).count();
    // A lease long enough for a message to wait behind a full window and
    // its responses; a worker that dies is replaced after it.
    let lease = ctx.claims.min_lease.max(config.response_timeout() * 6);
    // Held at once: the windows in flight, as many ready behind them, and
    // room for outcomes on their way to the database (a permit returns
    // only when its outcome is written).
    let capacity = 4 * transmitting * config.window as usize;
    let outbox = (transmitting > 0).then(|| Outbox::start(&ctx, capacity, lease));
    let channel = Arc::new(Channel {
        inbox: Inbox::start(&ctx, outbox.as_ref().map(|o| o.progress())),
        throttle: throttle::Throttle::new(config.throughput),
        transmitters_up: AtomicUsize::new(0),
        tls,
        outbox,
        config,
        ctx: ctx.clone(),
    });
    let mut sessions = Vec::new();
    let mut beats = Vec::new();
    for (index, bind) in binds.into_iter().enumerate() {
        let beat = Heartbeat::default();
        beat.beat();
        beats.push(beat.clone());
        let session = tokio::spawn(session::run(channel.clone(), bind, index + 1, beat));
        sessions.push((index + 1, session));
    }
    // The channel is alive while every session is: one stuck session stops
    // the channel's heartbeat and the supervisor restarts the channel.
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut failure = loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break None,
            _ = beat.tick() => {
                if beats.iter().all(|b| b.silence() < SESSION_HANG) {
                    ctx.heartbeat.beat();
                }
            }
        }
        if let Some(done) = sessions.iter().position(|(_, s)| s.is_finished()) {
            let (index, session) = sessions.remove(done);
            let result = session.await;
            // A session returns only once the channel stops: one that
            // did so just before this loop saw the stop is no failure.
            let stopping = ctx.stop.is_cancelled();
            ctx.stop.cancel();
            break match result {
                Ok(()) if stopping => None,
                Ok(()) => Some(anyhow::anyhow!("an SMPP session ended unexpectedly")),
                Err(e) => Some(anyhow::anyhow!("SMPP session {index} failed: {e}")),
            };
        }
    };
    // The first failure is the channel's (the supervisor logs it and
    // writes it to channel_state); any later one is logged here.
    let name = &ctx.row.name;
    for (index, session) in sessions {
        if let Err(e) = session.await {
            tracing::error!(channel = %name, session = index, "SMPP session failed while stopping: {e}");
            failure.get_or_insert_with(|| anyhow::anyhow!("SMPP session {index} failed: {e}"));
        }
    }
    if let Some(outbox) = &channel.outbox {
        if let Err(e) = outbox.shut_down().await {
            tracing::error!(channel = %name, "{e}");
            failure.get_or_insert(e.into());
        }
    }
    failure.map_or(Ok(()), Err)
}
