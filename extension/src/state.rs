//! The state machine's words for SQL (the transitions live in
//! `smsbus_core::status`, drawn in docs/ARCHITECTURE.md#the-state-machine;
//! the UPDATE trigger enforces them).

use pgrx::prelude::*;
use smsbus_core::status::Status;

use crate::refuse;

/// Whether triggers may run on a message resting in `status`.
#[pg_extern(immutable, strict, parallel_safe)]
fn status_is_permanent(status: &str) -> bool {
    status
        .parse::<Status>()
        .unwrap_or_else(|e| refuse(e.to_string()))
        .is_permanent()
}

/// Where a message in `from` may go, for the hint of a refused transition.
pub fn next_statuses_hint(from: Status) -> String {
    let next: Vec<&str> = Status::ALL
        .into_iter()
        .filter(|&to| from.can_become(to))
        .map(Status::as_str)
        .collect();
    if next.is_empty() {
        format!("{from} is final: no transition leaves it")
    } else {
        format!("from {from} a message may move to: {}", next.join(", "))
    }
}
