//! Channels: the worker's connections to the outside world.
//!
//! - [`supervisor`]: one task per enabled channel this worker owns
//!   (advisory lock), following `smsbus.channel` live; restarts a failed,
//!   panicked or hung driver with backoff without disturbing the others.
//! - [`state`]: `smsbus.channel_state` kept live (status, counters, rate).
//! - [`config_json`]: a channel's config read with errors that never
//!   quote a value (they reach `channel_state`, which senders read).
//! - [`outbox`]: claims queued messages for a driver, never more than its
//!   window can take, and writes their outcomes in batches.
//! - [`inbox`]: records delivery reports and inbound messages in batches;
//!   a driver acknowledges them to the peer only after the commit.
//! - [`smpp`]: the SMPP driver: sessions, each a link to the provider and
//!   a window of submissions in flight.
//! - [`gsm`]: the GSM modem driver.
//! - [`http`]: the REST provider driver (Twilio, Vonage, Infobip, or a
//!   generic mapping): requests in flight up to its concurrency; reports
//!   and inbound messages by webhook to the HTTP API.
//! - [`tls`]: TLS to providers, SMPP and HTTP alike.
//! - [`client_parts`]: the parts an SMPP client sent a message in, kept
//!   with their user data headers for the SMPP channel to send as they came.
//!
//! A driver is an async function taking a [`ChannelContext`]; adding a kind
//! is one folder and one arm in [`run_driver`].

pub mod client_parts;
pub mod config_json;
pub mod gsm;
pub mod http;
pub mod inbox;
pub mod outbox;
pub mod smpp;
pub mod state;
pub mod supervisor;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use smsbus_core::text::Encoding;
use tokio_util::sync::CancellationToken;

use crate::listener::Wakeups;

/// A row of `smsbus.channel`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelRow {
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub can_send: bool,
    pub can_receive: bool,
    pub config: serde_json::Value,
    pub updated_at: SystemTime,
}

/// A claimed outbound message, as a driver needs it.
#[derive(Clone, Debug)]
pub struct OutMessage {
    pub id: i64,
    pub to_address: String,
    pub from_address: Option<String>,
    pub body: String,
    pub encoding: Encoding,
    pub segments: i32,
    pub priority: i16,
    pub request_report: bool,
    pub valid_until: Option<SystemTime>,
    /// When it came due (inserted, or its scheduled time): for the metrics.
    pub due_at: SystemTime,
    pub to_ton: Option<i16>,
    pub to_npi: Option<i16>,
    pub from_ton: Option<i16>,
    pub from_npi: Option<i16>,
    /// The parts its client sent it in, to send as they came.
    pub client_parts: Option<Vec<client_parts::ClientPart>>,
    /// Its user fields (`message.custom`), for HTTP channels' templates.
    pub custom: Option<serde_json::Value>,
}

/// What a driver gets to work with.
#[derive(Clone)]
pub struct ChannelContext {
    pub row: Arc<ChannelRow>,
    pub worker_id: Arc<str>,
    pub pool: Pool,
    pub wakeups: Wakeups,
    pub state: state::StateHandle,
    pub heartbeat: Heartbeat,
    pub claims: outbox::ClaimSettings,
    /// Cancelled when the channel must stop (disabled, changed, deleted,
    /// lost ownership, worker shutting down).
    pub stop: CancellationToken,
}

/// Proof of life from a driver; the supervisor restarts a driver whose
/// heartbeat stops.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(now_millis(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn silence(&self) -> Duration {
        Duration::from_millis(now_millis().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the driver of the channel's kind until it fails or `ctx.stop`.
pub async fn run_driver(ctx: ChannelContext) -> anyhow::Result<()> {
    match ctx.row.kind.as_str() {
        "smpp" => smpp::run(ctx).await,
        "gsm" => gsm::run(ctx).await,
        "http" => http::run(ctx).await,
        other => anyhow::bail!("channel kind {other:?} is not supported by this worker"),
    }
}
