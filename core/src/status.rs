//! The message state machine (docs/ARCHITECTURE.md#the-state-machine).
//!
//! | from | to | by |
//! | --- | --- | --- |
//! | (insert) | scheduled, queued, blocked, nochannel, dailylimit, failed | router |
//! | scheduled | queued, blocked, nochannel, dailylimit, failed, expired | router, when due |
//! | queued | sending; expired (validity ended while it waited) | channel claim; maintenance |
//! | scheduled, queued | cancelled | the sender (SMPP cancel_sm) or an operator, before it is claimed |
//! | sending | sent, failed, queued (retry / lease expired), expired | channel |
//! | sent | delivered, notdelivered, noreport | delivery report / timeout |
//! | failed, nochannel, blocked, dailylimit, expired, notdelivered, noreport | scheduled | retry |
//! | (insert, inbound) | received | channel |
//!
//! `failed` straight from the router is a function route that raised an
//! error: the message fails alone, the INSERT that carried it does not.
//!
//! [`mermaid`] draws this table as the diagram in `docs/ARCHITECTURE.md`;
//! a unit test keeps the two the same.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Scheduled,
    Queued,
    Sending,
    Sent,
    Failed,
    NoChannel,
    Blocked,
    DailyLimit,
    Expired,
    Received,
    Delivered,
    NotDelivered,
    NoReport,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 14] = [
        Status::Scheduled,
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Failed,
        Status::NoChannel,
        Status::Blocked,
        Status::DailyLimit,
        Status::Expired,
        Status::Received,
        Status::Delivered,
        Status::NotDelivered,
        Status::NoReport,
        Status::Cancelled,
    ];

    /// The name of the value in the SQL enum `smsbus.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::NoChannel => "nochannel",
            Status::Blocked => "blocked",
            Status::DailyLimit => "dailylimit",
            Status::Expired => "expired",
            Status::Received => "received",
            Status::Delivered => "delivered",
            Status::NotDelivered => "notdelivered",
            Status::NoReport => "noreport",
            Status::Cancelled => "cancelled",
        }
    }

    /// A permanent status is one the message may rest in: triggers may run.
    pub fn is_permanent(self) -> bool {
        !matches!(self, Status::Scheduled | Status::Queued | Status::Sending)
    }

    /// Whether an outbound message in this status has its last word: what a
    /// delivery receipt to the account that submitted it reports.
    pub fn is_final_outcome(self) -> bool {
        // A cancelled message's sender asked for that itself.
        self.is_permanent() && !matches!(self, Status::Sent | Status::Received | Status::Cancelled)
    }

    /// Whether a message may be inserted in this status (outbound statuses
    /// are chosen by the router, `received` by an inbound channel).
    pub fn is_initial(self) -> bool {
        matches!(
            self,
            Status::Scheduled
                | Status::Queued
                | Status::Blocked
                | Status::NoChannel
                | Status::DailyLimit
                | Status::Failed
                | Status::Received
        )
    }

    /// Whether a message in `self` may move to `to`.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match self {
            Scheduled => matches!(
                to,
                Queued | Blocked | NoChannel | DailyLimit | Failed | Expired | Cancelled
            ),
            Queued => matches!(to, Sending | Expired | Cancelled),
            Sending => matches!(to, Sent | Failed | Queued | Expired),
            Sent => matches!(to, Delivered | NotDelivered | NoReport),
            Failed | NoChannel | Blocked | DailyLimit | Expired | NotDelivered | NoReport => {
                to == Scheduled
            }
            Received | Delivered | Cancelled => false,
        }
    }
}

/// What makes the transition `from` -> `to` (None: from an INSERT), as
/// the diagram labels it.
fn made_by(from: Option<Status>, to: Status) -> &'static str {
    use Status::*;
    match (from, to) {
        (None, Received) => "inbound channel",
        (None, Scheduled) => "insert, not due yet",
        (None, _) => "insert, router",
        (Some(_), Cancelled) => "cancelled",
        (Some(Scheduled), Expired) => "due, validity ended",
        (Some(Scheduled), _) => "due, router",
        (Some(Queued), Expired) => "validity ended in the queue",
        (Some(Queued), _) => "claim",
        (Some(Sending), Queued) => "retry, release or lease ended",
        (Some(Sending), Expired) => "validity ended at claim",
        (Some(Sending), _) => "outcome",
        (Some(Sent), Delivered | NotDelivered) => "delivery report",
        (Some(Sent), _) => "report timeout",
        (Some(_), _) => "retry",
    }
}

/// The state machine as a Mermaid `stateDiagram-v2`: an arrow from `[*]`
/// for every status a message may be inserted in ([`Status::is_initial`]),
/// one for every legal transition ([`Status::can_become`]), and the
/// permanent statuses ([`Status::is_permanent`]) in a class of their own.
/// `docs/ARCHITECTURE.md` holds its output (a test compares them).
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n");
    for to in Status::ALL.into_iter().filter(|s| s.is_initial()) {
        out += &format!("    [*] --> {to}: {}\n", made_by(None, to));
    }
    for from in Status::ALL {
        for to in Status::ALL.into_iter().filter(|&to| from.can_become(to)) {
            out += &format!("    {from} --> {to}: {}\n", made_by(Some(from), to));
        }
    }
    out += "    classDef permanent font-weight:bold\n";
    let permanent: Vec<&str> = Status::ALL
        .into_iter()
        .filter(|s| s.is_permanent())
        .map(Status::as_str)
        .collect();
    out += &format!("    class {} permanent\n", permanent.join(","));
    out
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message status \"{}\"", crate::excerpt::excerpt(.0))]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn the_table_of_the_module_docs() {
        let allowed: &[(Status, &[Status])] = &[
            (
                Scheduled,
                &[
                    Queued, Blocked, NoChannel, DailyLimit, Failed, Expired, Cancelled,
                ],
            ),
            (Queued, &[Sending, Expired, Cancelled]),
            (Sending, &[Sent, Failed, Queued, Expired]),
            (Sent, &[Delivered, NotDelivered, NoReport]),
            (Failed, &[Scheduled]),
            (NoChannel, &[Scheduled]),
            (Blocked, &[Scheduled]),
            (DailyLimit, &[Scheduled]),
            (Expired, &[Scheduled]),
            (NotDelivered, &[Scheduled]),
            (NoReport, &[Scheduled]),
            (Received, &[]),
            (Delivered, &[]),
            (Cancelled, &[]),
        ];
        let mut legal = 0;
        for &(from, tos) in allowed {
            for to in Status::ALL {
                assert_eq!(from.can_become(to), tos.contains(&to), "{from} -> {to}");
                legal += usize::from(from.can_become(to));
            }
        }
        assert_eq!(legal, 24);
    }

    #[test]
    fn permanent_statuses() {
        let permanent: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_permanent())
            .collect();
        assert_eq!(
            permanent,
            [
                Sent,
                Failed,
                NoChannel,
                Blocked,
                DailyLimit,
                Expired,
                Received,
                Delivered,
                NotDelivered,
                NoReport,
                Cancelled
            ]
        );
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert!("lost".parse::<Status>().is_err());
    }

    /// The fenced `mermaid` block of docs/ARCHITECTURE.md that holds the
    /// state diagram: (start, end) byte offsets of its contents.
    fn diagram_block(doc: &str) -> Option<(usize, usize)> {
        let fence = "```mermaid\nstateDiagram-v2\n";
        let start = doc.find(fence)? + "```mermaid\n".len();
        let end = start + doc[start..].find("```")?;
        Some((start, end))
    }

    #[test]
    fn the_diagram_in_architecture_md_is_mermaid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
        let doc = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let (start, end) = diagram_block(&doc).unwrap_or_else(|| {
            panic!(
                "{} has no ```mermaid block starting with stateDiagram-v2",
                path.display()
            )
        });
        let expected = mermaid();
        if doc[start..end] == expected {
            return;
        }
        if std::env::var_os("SMSBUS_REGENERATE").is_some() {
            let regenerated = format!("{}{expected}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, regenerated)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            return;
        }
        panic!(
            "the state diagram in docs/ARCHITECTURE.md differs from \
             smsbus_core::status::mermaid(), which draws the transitions of \
             core/src/status.rs. Regenerate it with\n\n    \
             SMSBUS_REGENERATE=1 cargo test -p smsbus-core the_diagram\n\n\
             (or paste this between its ```mermaid fences):\n\n{expected}"
        );
    }
}
