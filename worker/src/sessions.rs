//! Whether the worker's session connections keep their server session.
//!
//! Two things the worker does need one server session for a long time:
//! LISTEN (the wake-ups) and the channel ownership locks. Directly, or
//! behind a pooler in session mode, a client connection is one server
//! session. Behind PgBouncer in transaction mode it is not: between two
//! transactions the client may be handed another server connection, so a
//! LISTEN stays behind on one the client no longer has, and a session
//! lock is held by whoever uses that server connection next.
//!
//! At start (and in `smsbus-worker check`) the worker finds out: it
//! LISTENs on a session connection (--listen-url) and sends itself a
//! notification through the pool (--database-url). When it arrives,
//! sessions are kept; when not, or with --poll-only, the worker runs
//! poll-only: its tasks look for work on a short timer, and channel
//! ownership is held in one open transaction instead, which a pooler
//! keeps on one server connection for as long as it is open.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::poll_fn;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::statements::{self, params};
use crate::{db, Config};

/// The notification channel of the probe.
const PROBE: &str = "smsbus_probe";

/// How long the probe's notification may take to come back.
const PROBE_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sessions {
    /// LISTEN and session locks on --listen-url.
    Kept,
    /// No LISTEN; ownership in a held transaction.
    PollOnly(PollOnlyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOnlyReason {
    /// --poll-only.
    Asked,
    /// The probe's notification did not come back.
    NotificationsLost,
}

impl fmt::Display for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sessions::Kept => f.write_str("notifications: LISTEN on the listen connection"),
            Sessions::PollOnly(PollOnlyReason::Asked) => f.write_str("poll-only (--poll-only)"),
            Sessions::PollOnly(PollOnlyReason::NotificationsLost) => f.write_str(
                "poll-only: a notification sent through --database-url did not reach the \
                 listen connection, so its session is not kept (a pooler in transaction \
                 mode?); give --listen-url, a direct connection to the primary, to LISTEN",
            ),
        }
    }
}

/// Finds out, sending the probe's notification through `notifier` (a
/// connection to --database-url).
pub async fn probe(config: &Config, notifier: &tokio_postgres::Client) -> anyhow::Result<Sessions> {
    if config.poll_only {
        return Ok(Sessions::PollOnly(PollOnlyReason::Asked));
    }
    let (listener, mut connection) = db::session_config(config, "probe")
        .connect(NoTls)
        .await
        .context("cannot open a connection to --listen-url")?;
    let (heard, mut hear) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == PROBE => {
                    if heard.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let outcome = async {
        listener.batch_execute(&format!("LISTEN {PROBE}")).await?;
        let token = format!("{}:{}", config.worker_id, std::process::id());
        statements::execute(notifier, "SELECT pg_notify($1, $2)", &params![PROBE, token]).await?;
        let arrived = tokio::time::timeout(PROBE_WAIT, async {
            while let Some(payload) = hear.recv().await {
                if payload == token {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        anyhow::Ok(if arrived {
            Sessions::Kept
        } else {
            Sessions::PollOnly(PollOnlyReason::NotificationsLost)
        })
    }
    .await
    .context("cannot probe for notifications");
    drop(listener);
    pump.abort();
    outcome
}
