//! What goes out to one receiver (or transceiver) bind — delivery
//! receipts ([`receipt`](super::receipt)) and inbound messages given to
//! the account ([`mo`](super::mo)):
//! taken from `smsbus.smpp_outbox` under a lease, oldest first, at most
//! the account's `deliver_window` unanswered at a time; deleted when the
//! client's deliver_sm_resp says OK, given back with a backoff when it
//! refuses one or does not answer within [`RESPONSE_TIMEOUT`], and given
//! back at once when the session ends. A worker that dies leaves its
//! rows to the lease: another bind takes them when it passes, so a
//! receipt is sent again only when its acknowledgement was not recorded.
//!
//! The session drives it ([`super::session`]): it sends what [`claim`]
//! returns, reports each deliver_sm_resp to [`answered`], and calls
//! [`settle`] when [`due`] comes.
//!
//! [`claim`]: Deliveries::claim
//! [`answered`]: Deliveries::answered
//! [`settle`]: Deliveries::settle
//! [`due`]: Deliveries::due

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rusmpp::CommandStatus;
use tokio::sync::broadcast;

use rusmpp::pdus::DeliverSm;

use super::account::Account;
use super::mo::{Inbound, LongMessage};
use super::receipt::Receipt;
use crate::statements::{self, params};

/// One row of `smsbus.smpp_outbox`, to go out as deliver_sm.
pub enum Outgoing {
    Receipt(Receipt),
    Inbound(Inbound),
}

impl Outgoing {
    fn outbox_id(&self) -> i64 {
        match self {
            Outgoing::Receipt(r) => r.outbox_id,
            Outgoing::Inbound(i) => i.outbox_id,
        }
    }

    fn attempts(&self) -> i32 {
        match self {
            Outgoing::Receipt(r) => r.attempts,
            Outgoing::Inbound(i) => i.attempts,
        }
    }

    /// The deliver_sm that carry it: one, or a long message's parts.
    pub fn pdus(&self, long: LongMessage) -> Vec<DeliverSm> {
        match self {
            Outgoing::Receipt(r) => vec![r.pdu()],
            Outgoing::Inbound(i) => i.pdus(long),
        }
    }
}

/// How long a deliver_sm waits for its deliver_sm_resp.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a taken receipt stays this bind's: past it, another bind
/// (on any worker) may take it.
const LEASE: &str = "2 minutes";
/// How often the outbox is looked at without a notification.
const POLL: Duration = Duration::from_secs(2);
/// Answers that come in together are recorded together.
const SETTLE_AFTER: Duration = Duration::from_millis(5);
/// After a database error, the next try.
const RETRY: Duration = Duration::from_secs(1);

struct InFlight {
    outbox_id: i64,
    attempts: i32,
    sent_at: Instant,
}

/// A row sent as several deliver_sm: the answers it still waits for, and
/// the first that was not OK. It is done when all came; acknowledged only
/// if every part was.
struct Parts {
    waiting: usize,
    failure: Option<Returned>,
}

struct Returned {
    outbox_id: i64,
    error: Option<String>,
    delay: Duration,
}

pub struct Deliveries {
    pool: Pool,
    worker: String,
    account: Arc<Account>,
    in_flight: HashMap<u32, InFlight>,
    parts: HashMap<i64, Parts>,
    acknowledged: Vec<i64>,
    returned: Vec<Returned>,
    due: Instant,
    /// Accounts whose outbox got rows (`smsbus_smpp_outbox`).
    pub wakeups: broadcast::Receiver<Arc<str>>,
}

/// What became of a deliver_sm_resp.
pub enum Answered {
    Acknowledged,
    Refused,
    /// A part of a long message; its row waits for the others.
    Part,
    /// Not an answer to a receipt of ours (a late one, after its timeout).
    Unknown,
}

impl Deliveries {
    pub fn new(
        pool: Pool,
        worker: String,
        account: Arc<Account>,
        wakeups: broadcast::Receiver<Arc<str>>,
    ) -> Deliveries {
        Deliveries {
            pool,
            worker,
            account,
            in_flight: HashMap::new(),
            parts: HashMap::new(),
            acknowledged: Vec::new(),
            returned: Vec::new(),
            due: Instant::now(),
            wakeups,
        }
    }

    /// When [`settle`](Self::settle) should run next.
    pub fn due(&self) -> Instant {
        let oldest = self.in_flight.values().map(|f| f.sent_at).min();
        oldest.map_or(self.due, |at| self.due.min(at + RESPONSE_TIMEOUT))
    }

    /// A notification for `account`'s outbox (None: some were missed).
    pub fn woken(&mut self, account: Option<&str>) {
        if account.is_none_or(|a| a == self.account.name) {
            self.due = Instant::now();
        }
    }

    /// Records the client's answer to deliver_sm `sequence`.
    pub fn answered(&mut self, sequence: u32, status: CommandStatus) -> Answered {
        let Some(sent) = self.in_flight.remove(&sequence) else {
            return Answered::Unknown;
        };
        self.due = self.due.min(Instant::now() + SETTLE_AFTER);
        let failure = (status != CommandStatus::EsmeRok).then(|| Returned {
            outbox_id: sent.outbox_id,
            error: Some(format!(
                "the client answered deliver_sm with {status:?} (0x{:08X})",
                u32::from(status)
            )),
            delay: backoff(sent.attempts, status == CommandStatus::EsmeRthrottled),
        });
        self.resolve(sent.outbox_id, failure)
    }

    /// One deliver_sm of row `outbox_id` was answered (or timed out).
    fn resolve(&mut self, outbox_id: i64, failure: Option<Returned>) -> Answered {
        let failure = match self.parts.get_mut(&outbox_id) {
            None => failure,
            Some(parts) => {
                parts.waiting -= 1;
                if parts.failure.is_none() {
                    parts.failure = failure;
                }
                if parts.waiting > 0 {
                    return Answered::Part;
                }
                self.parts
                    .remove(&outbox_id)
                    .and_then(|parts| parts.failure)
            }
        };
        match failure {
            None => {
                self.acknowledged.push(outbox_id);
                Answered::Acknowledged
            }
            Some(returned) => {
                self.returned.push(returned);
                Answered::Refused
            }
        }
    }

    /// Gives back receipts whose answer is overdue, and records what the
    /// client answered. What cannot be recorded now is kept for the next
    /// time.
    pub async fn settle(&mut self) {
        let now = Instant::now();
        let overdue: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.sent_at + RESPONSE_TIMEOUT)
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in overdue {
            let sent = self
                .in_flight
                .remove(&sequence)
                .expect("an overdue deliver_sm");
            let failure = Returned {
                outbox_id: sent.outbox_id,
                error: Some(format!(
                    "no deliver_sm_resp within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                )),
                delay: backoff(sent.attempts, false),
            };
            self.resolve(sent.outbox_id, Some(failure));
        }
        self.due = now + POLL;
        if let Err(e) = self.record().await {
            tracing::warn!(account = %self.account.name,
                "smpp server: cannot record the answers to receipts (kept for the next try): {e}");
            self.due = now + RETRY;
        }
    }

    async fn record(&mut self) -> Result<(), DeliveryError> {
        if self.acknowledged.is_empty() && self.returned.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        if !self.acknowledged.is_empty() {
            statements::execute(
                &client,
                "SELECT smsbus._outbox_acknowledged($1)",
                &params![self.acknowledged],
            )
            .await?;
            self.acknowledged.clear();
        }
        if !self.returned.is_empty() {
            let ids: Vec<i64> = self.returned.iter().map(|r| r.outbox_id).collect();
            let errors: Vec<Option<&str>> =
                self.returned.iter().map(|r| r.error.as_deref()).collect();
            let delays: Vec<f32> = self
                .returned
                .iter()
                .map(|r| r.delay.as_secs_f32())
                .collect();
            statements::execute(
                &client,
                "SELECT smsbus._outbox_returned($1, $2, $3, $4)",
                &params![self.worker, ids, errors, delays],
            )
            .await?;
            self.returned.clear();
        }
        Ok(())
    }

    /// Takes as many due receipts as the window has room for, oldest
    /// first; the caller sends them and tells [`sent`](Self::sent).
    pub async fn claim(&mut self) -> Vec<Outgoing> {
        let room = (self.account.deliver_window as usize).saturating_sub(self.in_flight.len());
        if room == 0 {
            return Vec::new();
        }
        match self.take(room).await {
            Ok(receipts) => {
                if receipts.len() == room {
                    // More may wait: look again as soon as answers free room.
                    self.due = Instant::now() + SETTLE_AFTER;
                }
                receipts
            }
            Err(e) => {
                tracing::warn!(account = %self.account.name, "smpp server: cannot take receipts: {e}");
                self.due = Instant::now() + RETRY;
                Vec::new()
            }
        }
    }

    async fn take(&self, room: usize) -> Result<Vec<Outgoing>, DeliveryError> {
        let client = self.pool.get().await?;
        let rows = statements::query(
            &client,
            &format!("SELECT * FROM smsbus._claim_outbox($1, $2, $3, interval '{LEASE}')"),
            &params![self.account.name, self.worker, room as i32],
        )
        .await?;
        let mut receipts = rows
            .iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(if kind == "inbound" {
                    Outgoing::Inbound(Inbound {
                        outbox_id: r.try_get("id")?,
                        from_address: r.try_get("from_address")?,
                        to_address: r.try_get("to_address")?,
                        body: r.try_get::<_, Option<String>>("body")?.unwrap_or_default(),
                        binary: r.try_get::<_, Option<String>>("encoding")?.as_deref()
                            == Some("binary"),
                        attempts: r.try_get("attempts")?,
                    })
                } else {
                    Outgoing::Receipt(Receipt {
                        outbox_id: r.try_get("id")?,
                        message_id: self.account.message_id(r.try_get("message_id")?),
                        status: r.try_get("status")?,
                        to_address: r.try_get("to_address")?,
                        from_address: r.try_get("from_address")?,
                        submit_date: r.try_get("submit_date")?,
                        done_date: r.try_get("done_date")?,
                        error_code: r.try_get("error_code")?,
                        sample: r.try_get("sample")?,
                        segments: r.try_get("segments")?,
                        part: r.try_get("part")?,
                        attempts: r.try_get("attempts")?,
                    })
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        // UPDATE ... RETURNING keeps no order: the outbox's is by id.
        receipts.sort_by_key(Outgoing::outbox_id);
        Ok(receipts)
    }

    /// A row went out as the deliver_sm `sequences` (several: a long
    /// message's parts).
    pub fn sent(&mut self, sequences: &[u32], outgoing: &Outgoing) {
        let now = Instant::now();
        for &sequence in sequences {
            self.in_flight.insert(
                sequence,
                InFlight {
                    outbox_id: outgoing.outbox_id(),
                    attempts: outgoing.attempts(),
                    sent_at: now,
                },
            );
        }
        if sequences.len() > 1 {
            self.parts.insert(
                outgoing.outbox_id(),
                Parts {
                    waiting: sequences.len(),
                    failure: None,
                },
            );
        }
    }

    /// The session ends: what the client acknowledged is recorded, what
    /// it did not is given back at once, for the account's other binds.
    pub async fn close(&mut self) {
        let mut unanswered: Vec<i64> = self.in_flight.drain().map(|(_, s)| s.outbox_id).collect();
        unanswered.sort_unstable();
        unanswered.dedup();
        self.parts.clear();
        for outbox_id in unanswered {
            self.returned.push(Returned {
                outbox_id,
                error: None,
                delay: Duration::ZERO,
            });
        }
        if let Err(e) = self.record().await {
            tracing::warn!(account = %self.account.name,
                "smpp server: cannot give back receipts at unbind (their lease frees them): {e}");
        }
    }
}

/// How long a refused or unanswered receipt waits: doubling from a second
/// (a throttled client) or five, up to ten minutes.
fn backoff(attempts: i32, throttled: bool) -> Duration {
    let base = if throttled { 1 } else { 5 };
    let doublings = attempts.saturating_sub(1).clamp(0, 10) as u32;
    Duration::from_secs((base << doublings).min(600))
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1, false), Duration::from_secs(5));
        assert_eq!(backoff(2, false), Duration::from_secs(10));
        assert_eq!(backoff(1, true), Duration::from_secs(1));
        assert_eq!(backoff(4, true), Duration::from_secs(8));
        assert_eq!(backoff(30, false), Duration::from_secs(600));
    }
}
