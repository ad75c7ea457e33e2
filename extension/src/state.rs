//! The state machine's check, called by the UPDATE trigger of
//! `smsbus.message` (the table of DESIGN.md §3 lives in `smsbus_core::status`).

use pgrx::prelude::*;
use smsbus_core::status::Status;

use crate::refuse;

fn parse(s: &str) -> Status {
    s.parse()
        .unwrap_or_else(|e: smsbus_core::status::UnknownStatus| refuse(e.to_string()))
}

/// Whether a message may move from status `from` to status `to`.
#[pg_extern(immutable, strict, parallel_safe, name = "_transition_allowed")]
fn transition_allowed(from: &str, to: &str) -> bool {
    parse(from).can_become(parse(to))
}

/// Whether triggers may run on a message resting in `status`.
#[pg_extern(immutable, strict, parallel_safe)]
fn status_is_permanent(status: &str) -> bool {
    parse(status).is_permanent()
}

/// The statuses a message in `status` may move to, for error hints.
#[pg_extern(immutable, strict, parallel_safe, name = "_next_statuses")]
fn next_statuses(status: &str) -> String {
    let from = parse(status);
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
