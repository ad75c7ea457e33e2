//! One message through the provider: its requests sent, each answer read
//! by the channel's mapping, and what that comes to for the message.
//!
//! - accepted: `sent`, with the provider's id of each part (smsbus's own
//!   `smsbus-<id>` when the provider gives none, as Kannel does);
//! - refused for now (429, 5xx, a throttling status): back to the queue
//!   after `Retry-After` or the channel's backoff, and the whole channel
//!   pauses as long, so one provider's limit does not fail a queue;
//! - refused for good: `failed`, with the provider's words;
//! - not reached (refused connection, DNS), or our credentials refused
//!   (401, 403, 407: the channel's fault, not the message's): back to the
//!   queue, the channel in `error` until a request goes through again;
//! - not known (a timeout after the request left, an answer the mapping
//!   does not recognise): the message may be out, so
//!   `on_unknown_outcome` decides, as for SMPP;
//! - some parts out, but not all (a later part refused, or a provider
//!   that took only some of the parts it split): `failed`, naming the
//!   part, as for SMPP; a later part refused for now is first tried again
//!   in place, since sending the message again would repeat the parts
//!   that went.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::config::HttpConfig;
use super::request::{self, Rendered};
use super::response;
use crate::backoff::Backoff;
use crate::channels::outbox::Outcome;
use crate::channels::smpp::config::UnknownOutcome;
use crate::channels::smpp::throttle::Throttle;
use crate::channels::state::{LinkStatus, StateHandle};
use crate::channels::OutMessage;

/// Most bytes of an answer read; the rest is not waited for.
const ANSWER_MAX: usize = 256 * 1024;

/// How many times a later part of a split message refused for now is
/// tried again in place before the message fails.
const PART_RETRIES: u32 = 3;

/// What one request came to.
#[derive(Debug)]
enum Exchange {
    Answered(response::Outcome),
    /// The request never reached the provider.
    NotSent(String),
    /// It may have reached it; no answer says what became of it.
    Unknown(String),
}

/// What the requests of a channel share.
pub struct Sender {
    pub config: HttpConfig,
    pub channel: String,
    pub client: reqwest::Client,
    pub throttle: Throttle,
    pub state: StateHandle,
    backoff: Mutex<Backoff>,
    failing: AtomicBool,
}

impl Sender {
    pub fn new(
        config: HttpConfig,
        channel: String,
        client: reqwest::Client,
        state: StateHandle,
    ) -> Sender {
        Sender {
            throttle: Throttle::new(config.throughput),
            backoff: Mutex::new(Backoff::new(config.retry_min, config.retry_max)),
            failing: AtomicBool::new(false),
            config,
            channel,
            client,
            state,
        }
    }

    /// Sends `message` and says what became of it.
    ///
    /// A message the channel splits goes in one request a part. Once a
    /// part is out, sending the message again would send it twice: a
    /// later part refused for now is tried again in place (at most
    /// [`PART_RETRIES`] times, its lease renewed meanwhile), and one that
    /// still does not go makes the message `failed`, naming the part, as
    /// an SMPP channel does when a provider refuses a part.
    pub async fn send(&self, message: &OutMessage) -> Outcome {
        let requests =
            match request::render(&self.config, &self.channel, message, SystemTime::now()) {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::Failed {
                        error: e.to_string(),
                    }
                }
            };
        let total = requests.len();
        let mut references = Vec::new();
        for (n, request) in requests.iter().enumerate() {
            let mut retries = 0;
            let mut ids = loop {
                if n > 0 {
                    // The first request took its turn before the message
                    // was handed here; `throughput` counts requests.
                    self.wait_turn().await;
                }
                let outcome = match self.part(request).await {
                    Ok(ids) => break ids,
                    Err(outcome) if n == 0 => return outcome,
                    Err(outcome) => outcome,
                };
                match outcome {
                    Outcome::Retry { error, delay } if retries < PART_RETRIES => {
                        retries += 1;
                        tracing::warn!(channel = %self.channel, message = message.id,
                            "part {} of {total} not taken for now ({error}); again in {delay:?}", n + 1);
                        tokio::time::sleep(delay).await;
                    }
                    outcome => {
                        return Outcome::Failed {
                            error: format!(
                                "part {} of {total} not sent, {n} before it sent: {}",
                                n + 1,
                                outcome.error().unwrap_or_default()
                            ),
                        }
                    }
                }
            };
            if ids.is_empty() {
                ids.push(if total == 1 {
                    format!("smsbus-{}", message.id)
                } else {
                    format!("smsbus-{}-{}", message.id, n + 1)
                });
            }
            references.extend(ids);
        }
        self.backoff.lock().unwrap().reset();
        self.throttle.accepted();
        Outcome::Sent { references }
    }

    /// Waits until the channel's `throughput` allows another request.
    async fn wait_turn(&self) {
        while let Err(wait) = self.throttle.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// One request: the provider's ids of what it took (none when it
    /// names none), or what its refusal comes to for the message.
    async fn part(&self, request: &Rendered) -> Result<Vec<String>, Outcome> {
        match self.exchange(request).await {
            Exchange::Answered(response::Outcome::Accepted { ids, refused }) => {
                self.went_through().await;
                match refused {
                    None => Ok(ids),
                    // A provider that split the message itself took only
                    // some of its parts: those are out and cannot be taken
                    // back, the others will not be sent.
                    Some(refused) => Err(Outcome::Failed {
                        error: format!("the provider took only some parts, not {refused}"),
                    }),
                }
            }
            Exchange::Answered(response::Outcome::Temporary {
                reason,
                retry_after,
            }) => {
                self.went_through().await;
                let now = Instant::now();
                let delay = match retry_after {
                    // At least retry_min_s: "Retry-After: 0" from a
                    // provider under load must not make a busy loop.
                    Some(wait) => {
                        let wait = wait.max(self.config.retry_min);
                        self.throttle.pause_for(now, wait);
                        wait
                    }
                    None => {
                        self.throttle.slow_down(now);
                        self.backoff.lock().unwrap().next_delay()
                    }
                };
                Err(Outcome::Retry {
                    error: reason,
                    delay,
                })
            }
            Exchange::Answered(response::Outcome::Permanent { reason }) => {
                self.went_through().await;
                Err(Outcome::Failed { error: reason })
            }
            Exchange::Answered(response::Outcome::Unknown { reason }) => {
                self.went_through().await;
                Err(self.unknown(reason))
            }
            Exchange::NotSent(reason) => {
                self.cannot_reach(&reason).await;
                let delay = self.backoff.lock().unwrap().next_delay();
                Err(Outcome::Retry {
                    error: reason,
                    delay,
                })
            }
            Exchange::Unknown(reason) => Err(self.unknown(reason)),
        }
    }

    fn unknown(&self, reason: String) -> Outcome {
        match self.config.on_unknown_outcome {
            UnknownOutcome::Retry => Outcome::Retry {
                error: format!("outcome unknown, sending again (it may arrive twice): {reason}"),
                delay: self.config.retry_min,
            },
            UnknownOutcome::Fail => Outcome::Failed {
                error: format!("outcome unknown: {reason}"),
            },
        }
    }

    async fn went_through(&self) {
        if self.failing.swap(false, Ordering::SeqCst) {
            self.state.set(LinkStatus::Connected, None).await;
        }
    }

    async fn cannot_reach(&self, reason: &str) {
        self.throttle.slow_down(Instant::now());
        if !self.failing.swap(true, Ordering::SeqCst) {
            tracing::warn!(channel = %self.channel, "the provider cannot be reached: {reason}");
            self.state.set(LinkStatus::Error, Some(reason)).await;
        }
    }

    async fn exchange(&self, request: &Rendered) -> Exchange {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some((content_type, body)) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                .body(body.clone());
        }
        // The URL may carry credentials (Kannel's send-url): errors are
        // kept without it.
        let mut answer = match builder.send().await {
            Ok(answer) => answer,
            Err(e) if e.is_builder() => {
                return Exchange::Answered(response::Outcome::Permanent {
                    reason: format!("the request cannot be made: {}", e.without_url()),
                })
            }
            Err(e) if e.is_connect() => return Exchange::NotSent(describe(e)),
            Err(e) => return Exchange::Unknown(describe(e)),
        };
        let status = answer.status().as_u16();
        if matches!(status, 401 | 403 | 407) {
            return Exchange::NotSent(format!(
                "HTTP {status}: the provider refuses the channel's credentials"
            ));
        }
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ANSWER_MAX - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= ANSWER_MAX {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Exchange::Unknown(format!(
                        "HTTP {status}, answer cut off: {}",
                        describe(e)
                    ))
                }
            }
        }
        let body = String::from_utf8_lossy(&body);
        Exchange::Answered(self.config.response.outcome(
            status,
            retry_after.as_deref(),
            &body,
            SystemTime::now(),
        ))
    }
}

/// An error's text without the URL, and with its causes.
fn describe(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if timeout && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// How long the channel waits for a request before it counts as unknown:
/// for leases.
pub fn longest_request(config: &HttpConfig) -> Duration {
    config.connect_timeout + config.request_timeout
}
