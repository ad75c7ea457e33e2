//! A session's window: which of our requests are unanswered, which parts of
//! which held messages wait to be written, and what the provider has (or
//! may have) whose outcome is not committed yet. Pure bookkeeping — no
//! socket, no clock of its own, no database: the session loop tells it
//! what happened and carries out what it decides.
//!
//! What a message comes to is decided here:
//! - all parts accepted -> sent, with one reference per part;
//! - a permanent error -> failed, with the SMPP status in last_error;
//! - throttled / queue full -> the part is written again first;
//! - no answer (timeout, lost link, unreadable answer) -> outcome unknown:
//!   queued again or failed as `on_unknown_outcome` says;
//! - never written -> handed back at once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rusmpp::pdus::SubmitSm;
use rusmpp::CommandStatus;

use super::config::UnknownOutcome;
use super::error::status_text;
use crate::channels::outbox::Outcome;

/// How long an unanswered message waits before it is queued again.
pub(super) const UNKNOWN_RETRY_DELAY: Duration = Duration::from_secs(5);

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

/// A message being submitted; `C` is what the window holds it by (the
/// outbox's claim in the session, a plain value in tests).
struct Progress<C> {
    claimed: C,
    pdus: Vec<SubmitSm>,
    references: Vec<Option<String>>,
    /// Some part was written to the wire.
    written: bool,
}

/// A message the window is done with: `outcome` goes to the outbox, and
/// `taken` parts the provider has (or may have) count in the window until
/// that outcome is committed (see [`Window::unrecorded`]).
#[derive(Debug)]
pub(super) struct Decided<C> {
    pub claimed: C,
    pub outcome: Outcome,
    pub taken: usize,
}

/// What a submit_sm_resp (or generic_nack) came to.
#[derive(Debug)]
pub(super) enum Answered<C> {
    /// Not an answer to a submit_sm of ours, or its message was already
    /// decided (a sibling part failed).
    Unmatched,
    /// A part was accepted; `decided` once every part of its message is.
    Accepted { decided: Option<Decided<C>> },
    /// Throttled or queue full: the part is written again first.
    Throttled,
    /// Refused for good: the message failed, its other parts dropped.
    Refused(Decided<C>),
}

/// A part to write now, registered as outstanding under `sequence`.
pub(super) struct ToWrite<'a, C> {
    pub sequence: u32,
    pub pdu: SubmitSm,
    /// Its message had no part on the wire before.
    pub first_of_message: bool,
    pub claimed: &'a C,
}

/// Requests that stayed unanswered past the response timeout.
#[derive(Debug)]
pub(super) struct Expired<C> {
    /// Messages whose outcome is now unknown.
    pub decided: Vec<Decided<C>>,
    /// An enquire_link went unanswered: the link is dead.
    pub enquire_link: bool,
}

pub(super) struct Window<C> {
    /// Most parts in flight: written and unanswered, or answered with
    /// their outcome not committed yet.
    size: usize,
    on_unknown: UnknownOutcome,
    next_sequence: u32,
    outstanding: HashMap<u32, Outstanding>,
    messages: HashMap<i64, Progress<C>>,
    /// Parts ready to be written, in order.
    ready: VecDeque<(i64, usize)>,
    /// Messages the provider took (or may have taken) whose outcome is not
    /// committed yet, as (outcome number, parts). They count against the
    /// window, across reconnects too: a worker killed now would send them
    /// again, so the window bounds what a crash can send twice only if a
    /// new connection does not forget them.
    unrecorded: VecDeque<(u64, usize)>,
}

impl<C> Window<C> {
    pub fn new(size: usize, on_unknown: UnknownOutcome) -> Window<C> {
        Window {
            size,
            on_unknown,
            next_sequence: 0,
            outstanding: HashMap::new(),
            messages: HashMap::new(),
            ready: VecDeque::new(),
            unrecorded: VecDeque::new(),
        }
    }

    /// The next sequence number; they run 1..=0x7FFFFFFF (SMPP 3.4 §5.1.4).
    pub fn sequence(&mut self) -> u32 {
        self.next_sequence = self.next_sequence % 0x7FFF_FFFF + 1;
        self.next_sequence
    }

    /// Parts in flight: written and unanswered, or answered with their
    /// outcome not committed yet.
    pub fn in_window(&self) -> usize {
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

    pub fn is_free(&self) -> bool {
        self.in_window() < self.size
    }

    /// Some part waits to be written.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// No request of ours is unanswered.
    pub fn nothing_outstanding(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Some outcome the provider may have acted on is not committed yet.
    pub fn has_unrecorded(&self) -> bool {
        !self.unrecorded.is_empty()
    }

    /// Holds a claimed message whose `pdus` are to be written in order.
    pub fn hold(&mut self, id: i64, claimed: C, pdus: Vec<SubmitSm>) {
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

    /// The next ready part, now registered as sent at `now`; None when no
    /// part is ready.
    pub fn next_part(&mut self, now: Instant) -> Option<ToWrite<'_, C>> {
        let (id, part) = loop {
            let (id, part) = self.ready.pop_front()?;
            if self.messages.contains_key(&id) {
                break (id, part);
            }
        };
        let sequence = self.request(Request::Submit { message: id, part }, now);
        let progress = self.messages.get_mut(&id).expect("checked above");
        let first_of_message = !progress.written;
        progress.written = true;
        Some(ToWrite {
            sequence,
            pdu: progress.pdus[part].clone(),
            first_of_message,
            claimed: &progress.claimed,
        })
    }

    /// Registers an enquire_link sent at `now`; its sequence number.
    pub fn enquire_link(&mut self, now: Instant) -> u32 {
        self.request(Request::EnquireLink, now)
    }

    /// Registers an unbind sent at `now`; its sequence number.
    pub fn unbind(&mut self, now: Instant) -> u32 {
        self.request(Request::Unbind, now)
    }

    fn request(&mut self, request: Request, now: Instant) -> u32 {
        let sequence = self.sequence();
        self.outstanding.insert(
            sequence,
            Outstanding {
                request,
                sent_at: now,
            },
        );
        sequence
    }

    /// An enquire_link_resp or unbind_resp.
    pub fn acknowledged(&mut self, sequence: u32) {
        self.outstanding.remove(&sequence);
    }

    /// A submit_sm_resp or generic_nack with `status`; `reference` is what
    /// the provider will name the part by in its receipts.
    pub fn answered(
        &mut self,
        sequence: u32,
        status: CommandStatus,
        reference: impl FnOnce() -> String,
    ) -> Answered<C> {
        let Some(Outstanding {
            request: Request::Submit { message, part },
            ..
        }) = self.outstanding.remove(&sequence)
        else {
            return Answered::Unmatched;
        };
        let Some(progress) = self.messages.get_mut(&message) else {
            return Answered::Unmatched;
        };
        match status {
            CommandStatus::EsmeRok => {
                progress.references[part] = Some(reference());
                if !progress.references.iter().all(Option::is_some) {
                    return Answered::Accepted { decided: None };
                }
                let progress = self.messages.remove(&message).expect("present");
                let references: Vec<String> = progress.references.into_iter().flatten().collect();
                let taken = references.len();
                Answered::Accepted {
                    decided: Some(Decided {
                        claimed: progress.claimed,
                        outcome: Outcome::Sent { references },
                        taken,
                    }),
                }
            }
            CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful => {
                self.ready.push_front((message, part));
                Answered::Throttled
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
                Answered::Refused(Decided {
                    claimed: progress.claimed,
                    outcome: Outcome::Failed { error },
                    taken: 0,
                })
            }
        }
    }

    /// A response whose body could not be read: if it answered a
    /// submit_sm, that message's outcome is unknown.
    pub fn unreadable_answer(&mut self, sequence: u32, error: &str) -> Option<Decided<C>> {
        match self.outstanding.remove(&sequence)?.request {
            Request::Submit { message, .. } => {
                self.unknown(message, &format!("unreadable submit_sm_resp ({error})"))
            }
            Request::EnquireLink | Request::Unbind => None,
        }
    }

    /// Requests sent more than `timeout` before `now` and still unanswered.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Expired<C> {
        let late: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, o)| now.duration_since(o.sent_at) > timeout)
            .map(|(s, _)| *s)
            .collect();
        let mut expired = Expired {
            decided: Vec::new(),
            enquire_link: false,
        };
        for sequence in late {
            match self.outstanding.remove(&sequence).map(|o| o.request) {
                Some(Request::Submit { message, .. }) => {
                    let why = format!("no submit_sm_resp within {}s", timeout.as_secs_f64());
                    expired.decided.extend(self.unknown(message, &why));
                }
                Some(Request::EnquireLink) => expired.enquire_link = true,
                Some(Request::Unbind) | None => {}
            }
        }
        expired
    }

    /// A message that may or may not have been accepted.
    fn unknown(&mut self, message: i64, why: &str) -> Option<Decided<C>> {
        let progress = self.messages.remove(&message)?;
        self.ready.retain(|(id, _)| *id != message);
        Some(Decided {
            outcome: unknown_outcome(self.on_unknown, why),
            taken: progress.pdus.len(),
            claimed: progress.claimed,
        })
    }

    /// The channel is stopping: every message with no part written goes
    /// back, and nothing more is written.
    pub fn release_unwritten(&mut self) -> Vec<Decided<C>> {
        let never_written: Vec<i64> = self
            .messages
            .iter()
            .filter(|(_, p)| !p.written)
            .map(|(id, _)| *id)
            .collect();
        self.ready.clear();
        never_written
            .into_iter()
            .filter_map(|id| self.messages.remove(&id))
            .map(released)
            .collect()
    }

    /// The link is gone: decides every message still held (never written
    /// -> handed back; written -> outcome unknown, in the window until
    /// committed) and forgets the requests. A new link numbers from 1 again;
    /// what is unrecorded stays.
    pub fn settle_all(&mut self) -> Vec<Decided<C>> {
        let policy = self.on_unknown;
        let decided = self
            .messages
            .drain()
            .map(|(_, progress)| {
                if progress.written {
                    Decided {
                        outcome: unknown_outcome(
                            policy,
                            "connection lost before every submit_sm was answered",
                        ),
                        taken: progress.pdus.len(),
                        claimed: progress.claimed,
                    }
                } else {
                    released(progress)
                }
            })
            .collect();
        self.ready.clear();
        self.outstanding.clear();
        self.next_sequence = 0;
        decided
    }

    /// `taken` parts whose outcome got number `seq` stay in the window
    /// until [`Window::forget_recorded`] passes `seq`.
    pub fn unrecorded(&mut self, seq: u64, taken: usize) {
        if taken > 0 && seq > 0 {
            self.unrecorded.push_back((seq, taken));
        }
    }

    /// Drops the outcomes committed up to `written`.
    pub fn forget_recorded(&mut self, written: u64) {
        while self
            .unrecorded
            .front()
            .is_some_and(|(seq, _)| *seq <= written)
        {
            self.unrecorded.pop_front();
        }
    }
}

fn released<C>(progress: Progress<C>) -> Decided<C> {
    Decided {
        claimed: progress.claimed,
        outcome: Outcome::Release,
        taken: 0,
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

#[cfg(test)]
mod tests;
