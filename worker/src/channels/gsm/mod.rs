//! The GSM modem channel (`kind = 'gsm'`): a modem on a serial port, in
//! PDU mode.
//!
//! - [`config`]: the channel's settings.
//! - [`at`]: AT command lines, answers and unsolicited results.
//! - [`errors`]: what `+CMS ERROR` codes mean for a message.
//! - [`modem`]: start-up, sending, and reading what the modem stored.
//!
//! [`run`] opens the port, brings the modem up, then serves one thing at a
//! time: a claimed message (`AT+CMGS`), an indication of a stored message
//! or report (`+CMTI`, `+CDSI`, `+CDS`), or the poll (`AT+CMGL`). A
//! command that gets no answer in time, or a port that fails, ends the
//! run; the supervisor reopens the port with backoff. A stored message is
//! deleted only after its row is committed.

pub mod at;
pub mod config;
pub mod errors;
mod modem;

use std::time::Duration;

use tokio_serial::SerialPortBuilderExt;

use super::inbox::Inbox;
use super::outbox::{Outbox, Outcome};
use super::state::LinkStatus;
use super::ChannelContext;
use config::{FlowControl, GsmConfig};
use modem::{Modem, StartUp};

/// Messages held at once: the one being sent and a few ready behind it.
const CAPACITY: usize = 4;

pub async fn run(ctx: ChannelContext) -> anyhow::Result<()> {
    let config = GsmConfig::parse(&ctx.row.config)?;
    ctx.state.set(LinkStatus::Connecting, None).await;
    let port = tokio_serial::new(&config.device, config.baud)
        .flow_control(match config.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
            FlowControl::Software => tokio_serial::FlowControl::Software,
        })
        .open_native_async()
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", config.device))?;
    let mut modem = Modem::new(port, config, ctx.clone());
    match modem.start_up().await? {
        StartUp::Ready => {}
        StartUp::Refused(reason) => {
            // Trying again would spend the SIM's PIN attempts: wait for
            // the operator to change the channel.
            ctx.state.set(LinkStatus::Error, Some(&reason)).await;
            tracing::error!(channel = %ctx.row.name, "{reason}");
            idle(&ctx).await;
            return Ok(());
        }
    }
    // A lease long enough for a message to wait behind the few ahead of
    // it, each bounded by the send timeout.
    let lease = ctx
        .claims
        .min_lease
        .max(modem.config().send_timeout() * (CAPACITY as u32 + 2));
    let outbox = ctx
        .row
        .can_send
        .then(|| Outbox::start(&ctx, CAPACITY, lease));
    let inbox = Inbox::start(&ctx, outbox.as_ref().map(|o| o.progress()));
    ctx.state.session_up().await;
    if let Some(outbox) = &outbox {
        outbox.set_active(true);
    }
    let mut result = serve(&mut modem, &ctx, outbox.as_deref(), &inbox).await;
    if let Some(outbox) = &outbox {
        if let Err(e) = outbox.shut_down().await {
            tracing::error!(channel = %ctx.row.name, "{e}");
            if result.is_ok() {
                result = Err(e.into());
            }
        }
    }
    match &result {
        Ok(()) => ctx.state.session_down("stopped").await,
        Err(e) => ctx.state.session_down(&format!("{e:#}")).await,
    }
    result
}

async fn serve(
    modem: &mut Modem,
    ctx: &ChannelContext,
    outbox: Option<&Outbox>,
    inbox: &Inbox,
) -> anyhow::Result<()> {
    // What the SIM held before we came: read it first.
    modem.read_stored(inbox).await?;
    let mut poll = tokio::time::interval(modem.config().poll_interval());
    poll.tick().await;
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        ctx.heartbeat.beat();
        modem.handle_unsolicited(inbox).await?;
        tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            heard = modem.listen() => heard?,
            claimed = async { outbox?.next().await }, if outbox.is_some() => {
                let Some(claimed) = claimed else { return Ok(()) };
                let (outcome, fatal) = modem.send(&claimed.message).await;
                let outbox = outbox.expect("claimed from it");
                if !matches!(outcome, Outcome::Sent { .. }) {
                    tracing::warn!(channel = %ctx.row.name, message = claimed.message.id, ?outcome, "not sent");
                }
                outbox.finish(claimed, outcome);
                if let Some(e) = fatal {
                    return Err(e);
                }
            }
            _ = poll.tick() => {
                modem.read_stored(inbox).await?;
                modem.refresh_network().await?;
            }
            _ = beat.tick() => {}
        }
    }
}

/// Waits, alive, for the channel to be changed or stopped.
async fn idle(ctx: &ChannelContext) {
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = beat.tick() => ctx.heartbeat.beat(),
        }
    }
}
