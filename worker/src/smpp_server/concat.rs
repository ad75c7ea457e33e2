//! Long messages a client sends in parts (a concatenation UDH with an 8-
//! or 16-bit reference, or the SAR TLVs) put back together into one
//! submission, so they become one message row. A bind holds the parts it
//! has until the last one comes; each part's submit_sm_resp then waits for
//! the whole message's commit and names its id. Parts whose siblings do
//! not come within the timeout are refused, as are the parts a session
//! holds when it ends: nothing is stored before the whole message is, so
//! the client's resubmission is the retry.
//!
//! Parts belong together when they share the destination, the source,
//! the reference and the total, as a handset puts them together.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::channels::smpp::inbound::PartOf;
use smsbus_core::text::Encoding;

use super::submission::Submission;

/// How long the first part of a message waits for the others.
pub const PART_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    to: String,
    from: Option<String>,
    reference: u16,
    total: u8,
}

struct Set<T> {
    since: Instant,
    parts: BTreeMap<u8, (T, Submission)>,
}

/// Parts waiting for their siblings; `T` is what answers a part (its
/// sequence number and response kind).
pub struct Assembler<T> {
    sets: HashMap<Key, Set<T>>,
    timeout: Duration,
}

/// What became of a part.
pub enum Added<T> {
    /// Held until its siblings come.
    Held,
    /// The last part came: the whole message, and every part's answer.
    Complete { whole: Submission, parts: Vec<T> },
    /// A part already held came again: refused, the held one stays.
    Duplicate(T),
}

impl<T> Assembler<T> {
    pub fn new(timeout: Duration) -> Assembler<T> {
        Assembler {
            sets: HashMap::new(),
            timeout,
        }
    }

    pub fn add(&mut self, tag: T, submission: Submission, part: PartOf, now: Instant) -> Added<T> {
        let key = Key {
            to: submission.to.clone(),
            from: submission.from.clone(),
            reference: part.reference,
            total: part.total,
        };
        let set = self.sets.entry(key.clone()).or_insert_with(|| Set {
            since: now,
            parts: BTreeMap::new(),
        });
        if set.parts.contains_key(&part.seq) {
            return Added::Duplicate(tag);
        }
        set.parts.insert(part.seq, (tag, submission));
        if set.parts.len() < usize::from(part.total) {
            return Added::Held;
        }
        let set = self.sets.remove(&key).expect("the set just completed");
        let (tags, parts): (Vec<T>, Vec<Submission>) = set.parts.into_values().unzip();
        Added::Complete {
            whole: join(parts),
            parts: tags,
        }
    }

    /// Parts held now.
    pub fn held(&self) -> usize {
        self.sets.values().map(|s| s.parts.len()).sum()
    }

    /// When the oldest incomplete message times out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sets.values().map(|s| s.since + self.timeout).min()
    }

    /// The parts of messages that waited past the timeout, with why.
    pub fn expire(&mut self, now: Instant) -> Vec<(T, String)> {
        let timeout = self.timeout;
        let expired: Vec<Key> = self
            .sets
            .iter()
            .filter(|(_, s)| now >= s.since + timeout)
            .map(|(k, _)| k.clone())
            .collect();
        let mut refused = Vec::new();
        for key in expired {
            let set = self.sets.remove(&key).expect("an expired set");
            let reason = format!(
                "parts {} of {} (reference {}) never came within {} s",
                missing(&set, key.total),
                key.total,
                key.reference,
                timeout.as_secs()
            );
            refused.extend(
                set.parts
                    .into_values()
                    .map(|(tag, _)| (tag, reason.clone())),
            );
        }
        refused
    }

    /// Every part held, for a session that ends.
    pub fn drain(&mut self) -> Vec<T> {
        self.sets
            .drain()
            .flat_map(|(_, set)| set.parts.into_values().map(|(tag, _)| tag))
            .collect()
    }
}

fn missing<T>(set: &Set<T>, total: u8) -> String {
    (1..=total)
        .filter(|seq| !set.parts.contains_key(seq))
        .map(|seq| seq.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole message from its parts in order: their texts one after the
/// other, the first part's fields, UCS-2 if any part was, every receipt
/// any part asked for, and the parts with their headers when each had
/// one and all are in one encoding (so each can go again as it came).
fn join(parts: Vec<Submission>) -> Submission {
    let encoding = if parts.iter().any(|p| p.encoding == Encoding::Ucs2) {
        Encoding::Ucs2
    } else {
        parts[0].encoding
    };
    let registered_delivery = parts.iter().fold(0, |r, p| r | p.registered_delivery);
    let body = parts.iter().map(|p| p.body.as_str()).collect();
    let client_parts = if parts
        .iter()
        .all(|p| p.encoding == encoding && p.client_parts.len() == 1)
    {
        parts.iter().flat_map(|p| p.client_parts.clone()).collect()
    } else {
        Vec::new()
    };
    let mut parts = parts.into_iter();
    let first = parts.next().expect("a message has parts");
    Submission {
        body,
        encoding,
        registered_delivery,
        part: None,
        client_parts,
        ..first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(text: &str, to: &str) -> Submission {
        Submission {
            to: to.into(),
            from: Some("ACME".into()),
            body: text.into(),
            encoding: Encoding::Gsm7,
            priority: 0,
            scheduled: None,
            validity: None,
            registered_delivery: 0,
            part: None,
            client_parts: Vec::new(),
        }
    }

    fn of(reference: u16, total: u8, seq: u8) -> PartOf {
        PartOf {
            reference,
            total,
            seq,
        }
    }

    #[test]
    fn parts_in_any_order_make_one_message() {
        let now = Instant::now();
        let mut a = Assembler::new(PART_TIMEOUT);
        assert!(matches!(
            a.add(3, part("c", "+1"), of(7, 3, 3), now),
            Added::Held
        ));
        assert!(matches!(
            a.add(1, part("a", "+1"), of(7, 3, 1), now),
            Added::Held
        ));
        // Another message to another recipient with the same reference.
        assert!(matches!(
            a.add(9, part("x", "+2"), of(7, 3, 1), now),
            Added::Held
        ));
        let mut second = part("b", "+1");
        second.registered_delivery = 1;
        second.encoding = Encoding::Ucs2;
        let Added::Complete { whole, parts } = a.add(2, second, of(7, 3, 2), now) else {
            panic!("complete");
        };
        assert_eq!(whole.body, "abc");
        assert_eq!(whole.registered_delivery, 1);
        assert_eq!(whole.encoding, Encoding::Ucs2);
        assert_eq!(parts, [1, 2, 3]);
        assert_eq!(a.held(), 1);
    }

    #[test]
    fn a_part_twice_is_refused_and_missing_parts_time_out() {
        let now = Instant::now();
        let mut a = Assembler::new(Duration::from_secs(10));
        assert!(matches!(
            a.add(1, part("a", "+1"), of(1, 3, 1), now),
            Added::Held
        ));
        assert!(matches!(
            a.add(2, part("a", "+1"), of(1, 3, 1), now),
            Added::Duplicate(2)
        ));
        assert!(matches!(
            a.add(3, part("c", "+1"), of(1, 3, 3), now),
            Added::Held
        ));
        assert_eq!(a.next_expiry(), Some(now + Duration::from_secs(10)));
        assert!(a.expire(now + Duration::from_secs(9)).is_empty());
        let refused = a.expire(now + Duration::from_secs(10));
        let tags: Vec<i32> = refused.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [1, 3]);
        assert_eq!(
            refused[0].1,
            "parts 2 of 3 (reference 1) never came within 10 s"
        );
        assert_eq!(a.held(), 0);
        assert_eq!(a.next_expiry(), None);
    }
}
