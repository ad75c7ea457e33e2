//! Channels that send through REST providers (`kind = 'http'`): Twilio,
//! Vonage, Infobip, or any provider a generic mapping describes (Kannel's
//! `smsc = http` is the model). Reports and inbound messages come back by
//! webhook to the HTTP API (`http_api::providers`), which reads them with
//! the same mappings.
//!
//! - [`config`]: the channel's settings: a preset from `presets/` with the
//!   operator's keys laid over it, read as one mapping.
//! - [`template`]: the URL, headers and body of a request, with `${name}`
//!   values escaped for their place (URL, form, JSON, XML).
//! - [`request`]: the requests a message becomes (one, or one per part),
//!   with the channel's authentication.
//! - [`send`]: one message through the provider, and what its answer
//!   comes to (sent, failed, again later, not known).
//! - [`response`]: what an answer to a send means (accepted with the
//!   parts' ids, refused for good or for now, or not known).
//! - [`extract`]: values found in providers' answers and webhooks by JSON
//!   path or regular expression, bounded on hostile input.
//! - [`reports`]: the delivery reports a provider posts, each with its
//!   part's id and what its status word means.
//! - [`inbound`]: the messages a provider posts (whole, or parts).
//! - [`signatures`]: Twilio's `X-Twilio-Signature` and Vonage's `sig`,
//!   checked against the vectors the providers publish.
//!
//! [`run`] claims messages and keeps up to `concurrency` requests in
//! flight, at most `throughput` a second, pausing the channel when the
//! provider says to slow down.

pub mod config;
pub mod extract;
pub mod inbound;
pub mod reports;
pub mod request;
pub mod response;
pub mod send;
pub mod signatures;
pub mod template;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::outbox::{Claimed, Outbox, Outcome};
use super::ChannelContext;
use config::{HttpConfig, Signature};
use send::Sender;

/// Messages held per request slot: in flight, ready behind them, and on
/// their way to the database. Claims come in chunks of a quarter of what
/// is held, so a larger hold means fewer, larger claims (measured: at 2 per
/// slot, 64 slots, the claims held the channel to 2,700 msg/s; at 8, 3,400).
const HELD_PER_SLOT: usize = 8;

pub async fn run(ctx: ChannelContext) -> anyhow::Result<()> {
    let config = HttpConfig::parse(&ctx.row.config)?;
    let name = ctx.row.name.clone();
    if config.signature == Signature::None && ctx.row.can_receive {
        tracing::warn!(channel = %name,
            "webhooks of this channel are not signed (signature = none): anyone who knows their URL can post reports and messages");
    }
    ctx.state.session_up().await;
    if !ctx.row.can_send {
        // Reports and inbound messages arrive at the HTTP API: nothing
        // to do here but live.
        idle(&ctx).await;
        ctx.state.session_down("stopped").await;
        return Ok(());
    }
    let client = client(&config)?;
    let concurrency = config.concurrency as usize;
    // Held messages' leases are renewed while they wait; the lease covers
    // a request that is slow to come back, and is what a crash leaves.
    let lease = ctx.claims.min_lease.max(send::longest_request(&config) * 2);
    let outbox = Outbox::start(&ctx, HELD_PER_SLOT * concurrency, lease);
    let sender = Arc::new(Sender::new(config, name.clone(), client, ctx.state.clone()));
    outbox.set_active(true);
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let mut failure = None;
    let panicked = Arc::new(std::sync::Mutex::new(None::<String>));
    loop {
        ctx.heartbeat.beat();
        let claimed = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = beat.tick() => continue,
            claimed = outbox.next() => claimed,
        };
        let Some(claimed) = claimed else { break };
        let Some(claimed) = paced(&ctx, &sender, &outbox, claimed).await else {
            break;
        };
        // Waiting for a slot while every request is slow (or a part waits
        // to be tried again) is progress, not a hang.
        let slot = loop {
            tokio::select! {
                _ = ctx.stop.cancelled() => break None,
                _ = beat.tick() => ctx.heartbeat.beat(),
                slot = slots.clone().acquire_owned() => {
                    break Some(slot.expect("the semaphore is never closed"))
                }
            }
        };
        let Some(slot) = slot else {
            outbox.finish(claimed, Outcome::Release);
            break;
        };
        let sender = sender.clone();
        let outbox = outbox.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let outcome = sender.send(&claimed.message).await;
            outbox.finish(claimed, outcome);
        });
        // A panic in a send is this channel's failure (the supervisor
        // restarts it); its message's lease brings the message back.
        let (stop, panicked) = (ctx.stop.clone(), panicked.clone());
        tokio::spawn(async move {
            if let Err(e) = task.await {
                *panicked.lock().unwrap() = Some(e.to_string());
                stop.cancel();
            }
        });
    }
    if let Some(e) = panicked.lock().unwrap().take() {
        failure = Some(anyhow::anyhow!("a send failed: {e}"));
    }
    // Requests in flight finish (each bounded by the channel's timeouts)
    // before the outbox writes their outcomes and stops.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let wait = send::longest_request(&sender.config) + Duration::from_secs(1);
    if tokio::time::timeout(wait, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(channel = %name, "requests still in flight at stop are left to their leases");
    }
    if let Err(e) = outbox.shut_down().await {
        tracing::error!(channel = %name, "{e}");
        failure.get_or_insert(e.into());
    }
    ctx.state.session_down("stopped").await;
    failure.map_or(Ok(()), Err)
}

/// `claimed` once the channel's rate allows it; None (and the message
/// handed back) when the channel stops meanwhile.
async fn paced(
    ctx: &ChannelContext,
    sender: &Sender,
    outbox: &Outbox,
    claimed: Claimed,
) -> Option<Claimed> {
    loop {
        let Err(wait) = sender.throttle.take(Instant::now()) else {
            return Some(claimed);
        };
        ctx.heartbeat.beat();
        tokio::select! {
            _ = ctx.stop.cancelled() => {
                outbox.finish(claimed, Outcome::Release);
                return None;
            }
            _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
        }
    }
}

async fn idle(ctx: &ChannelContext) {
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        ctx.heartbeat.beat();
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = beat.tick() => {}
        }
    }
}

/// The channel's HTTP client: its timeouts, TLS roots, a connection per
/// request slot kept alive, and no redirects (a redirect would carry the
/// credentials elsewhere).
fn client(config: &HttpConfig) -> anyhow::Result<reqwest::Client> {
    let tls = super::tls::client_config(config.tls_ca.as_deref())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.concurrency as usize)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("smsbus/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot make the HTTP client: {}", e.without_url()))
}
