//! The row triggers of `smsbus.message`: validation and normalisation on
//! INSERT, the state machine and the system's columns on UPDATE.
//!
//! They run once per row on the hottest path smsbus has, so they are Rust:
//! the row is read once, every change is collected and written back with
//! one `heap_modify_tuple`, and their lookups (an idempotency key here, the
//! channel in [`crate::channels`]) run as plans prepared once per backend.
//! A message that is due goes through the router ([`crate::router`]) as it
//! will be stored: on INSERT, and on the UPDATE that moves it from
//! scheduled to queued.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgSqlErrorCode;
use smsbus_core::address;
use smsbus_core::status::Status;
use smsbus_core::text::{self, Encoding};

use crate::arming::trigger_status_for;
use crate::message_row::{enum_value, now, timestamptz_text, Columns, Edit, Row};
use smsbus_core::excerpt::excerpt;

use crate::{channels, internal, raise, refuse, router, settings};

/// Lookups prepared once per backend. Saved plans follow schema changes by
/// themselves (PostgreSQL replans them).
struct Plans {
    key_live: OwnedPreparedStatement,
    key_archived: OwnedPreparedStatement,
}

thread_local! {
    static PLANS: RefCell<Option<Plans>> = const { RefCell::new(None) };
}

fn with_plans<R>(f: impl FnOnce(&pgrx::spi::SpiClient<'_>, &Plans) -> R) -> R {
    Spi::connect(|client| {
        PLANS.with(|cell| {
            let mut plans = cell.borrow_mut();
            if plans.is_none() {
                let text = [PgOid::BuiltIn(PgBuiltInOids::TEXTOID)];
                let prepare = |sql: &str| {
                    client
                        .prepare(sql, &text)
                        .unwrap_or_else(|e| internal(format!("preparing {sql}: {e}")))
                        .keep()
                };
                *plans = Some(Plans {
                    key_live: prepare("SELECT id FROM smsbus.message WHERE idempotency_key = $1"),
                    key_archived: prepare(
                        "SELECT id FROM smsbus.message_archive WHERE idempotency_key = $1",
                    ),
                });
            }
            f(client, plans.as_ref().expect("prepared above"))
        })
    })
}

/// The message that already uses an idempotency key, live or archived.
fn key_owner(key: &str) -> Option<i64> {
    with_plans(|client, plans| {
        for plan in [&plans.key_live, &plans.key_archived] {
            let table = client
                .select(plan, Some(1), &[key.into()])
                .unwrap_or_else(|e| internal(format!("looking up idempotency_key: {e}")));
            if !table.is_empty() {
                return table.first().get_one::<i64>().unwrap_or_else(|e| {
                    internal(format!("reading idempotency_key's message: {e}"))
                });
            }
        }
        None
    })
}

fn required(what: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
        format!("{what} is required"),
        None,
    )
}

fn encoding_for(body: &str, asked: Option<&str>) -> Encoding {
    match asked {
        None => text::detect(body),
        Some(name) => name
            .parse()
            .unwrap_or_else(|e: text::TextError| refuse(e.to_string())),
    }
}

/// Segments of an outbound body, refused above `smsbus.max_segments`.
fn outbound_segments(body: &str, encoding: Encoding) -> i32 {
    let n = text::segments(body, encoding).unwrap_or_else(|e| refuse(e.to_string()));
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    let max = settings::MAX_SEGMENTS.get();
    if n > max {
        refuse(format!(
            "body needs {n} {encoding} segments, more than smsbus.max_segments ({max})"
        ));
    }
    n
}

fn set_address_type(edit: &mut Edit, ton: usize, npi: usize, kind: Option<address::AddressKind>) {
    edit.set(ton, kind.map(|k| i16::from(k.ton())));
    edit.set(npi, kind.map(|k| i16::from(k.npi())));
}

/// An outbound message's recipient, normalised (required), with its type
/// of number and numbering plan.
fn set_destination(edit: &mut Edit, c: &Columns, to: Option<String>) {
    let to = to.unwrap_or_else(|| required("to_address"));
    let to = address::destination(&to).unwrap_or_else(|e| refuse(e.to_string()));
    set_address_type(edit, c.to_ton, c.to_npi, Some(to.kind));
    edit.set(c.to_address, Some(to.text));
}

/// An outbound message's sender, normalised, with its type of number and
/// numbering plan (none: the channel's default).
fn set_sender(edit: &mut Edit, c: &Columns, from: Option<String>) {
    match from {
        None => set_address_type(edit, c.from_ton, c.from_npi, None),
        Some(from) => {
            let from = address::sender(&from).unwrap_or_else(|e| refuse(e.to_string()));
            set_address_type(edit, c.from_ton, c.from_npi, Some(from.kind));
            edit.set(c.from_address, Some(from.text));
        }
    }
}

fn set_status(edit: &mut Edit, c: &Columns, status: Status) {
    edit.datum(c.status, Some(enum_value(c.status_type, status.as_str())));
}

fn set_trigger_status(edit: &mut Edit, c: &Columns, label: &'static str) {
    edit.datum(
        c.trigger_status,
        Some(enum_value(c.trigger_status_type, label)),
    );
}

fn row_of<'a>(trigger: &'a PgTrigger<'a>, new: bool) -> Row {
    let tuple = if new { trigger.new() } else { trigger.old() };
    let tuple = tuple.unwrap_or_else(|| internal("smsbus row trigger fired without a row".into()));
    let desc = trigger
        .relation()
        .unwrap_or_else(|e| internal(format!("smsbus row trigger: {e}")))
        .rd_att;
    Row {
        tuple: tuple.into_pg(),
        desc,
    }
}

fn finish<'a>(new: &Row, edit: Edit) -> Option<PgHeapTuple<'a, AllocatedByPostgres>> {
    let tuple = edit.apply(new);
    // SAFETY: a tuple we just formed with the relation's descriptor.
    Some(unsafe {
        PgHeapTuple::from_heap_tuple(pgrx::PgTupleDesc::from_pg_unchecked(new.desc), tuple)
    })
}

/// BEFORE INSERT: validates and normalises a new message, picks its
/// encoding and segment count, and gives it its first status.
#[pg_trigger]
fn _message_before_insert<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if settings::RESTORING.get() {
        return Ok(trigger.new());
    }
    let new = row_of(trigger, true);
    let c = Columns::of(new.desc);
    if new.datum(c.status).is_some() {
        // A row that comes with its status is a dumped one: taking it as
        // new would route it and send it again.
        raise(
            PgSqlErrorCode::ERRCODE_GENERATED_ALWAYS,
            "column \"status\" is set by smsbus, not by INSERT".into(),
            Some("To restore a dump, run pg_restore with PGOPTIONS='-c smsbus.restoring=on' (README: Backups)."),
        );
    }
    let mut edit = Edit::new(new.desc);
    let now = now();

    // Columns the system owns start from known values, whatever the INSERT said.
    edit.null(c.previous_status);
    set_trigger_status(&mut edit, &c, "none");
    edit.set(c.attempts, Some(0i32));
    edit.set(c.created_at, Some(now));
    edit.set(c.updated_at, Some(now));
    for column in [
        c.sent_at,
        c.delivered_at,
        c.claimed_by,
        c.claimed_until,
        c.routed_by,
    ] {
        edit.null(column);
    }
    let body = new.text(c.body).unwrap_or_else(|| required("body"));

    let inbound = match new.text(c.direction).as_deref() {
        Some("in") => true,
        // NULL is left to the column's NOT NULL.
        Some("out") | None => false,
        Some(other) => raise(
            PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            format!(
                "direction must be 'out' or 'in', not \"{}\"",
                excerpt(other)
            ),
            None,
        ),
    };
    // Only the worker writes inbound rows (senders cannot set direction);
    // its note on a message, e.g. that parts are missing, is kept.
    if !inbound {
        edit.null(c.last_error);
    }
    if inbound {
        // What a peer sent is recorded as it came: never refused for its form.
        set_status(&mut edit, &c, Status::Received);
        set_trigger_status(&mut edit, &c, trigger_status_for(Status::Received, true));
        if new.datum(c.received_at).is_none() {
            edit.set(c.received_at, Some(now));
        }
        let encoding = new
            .text(c.encoding)
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| text::detect(&body));
        edit.set(c.encoding, Some(encoding.as_str()));
        let segments = text::segments(&body, encoding)
            .or_else(|_| text::segments(&body, Encoding::Ucs2))
            .map_or(1, |n| i32::try_from(n).unwrap_or(i32::MAX));
        edit.set(c.segments, Some(segments));
        let kind = |column| new.text(column).map(|a| address::classify_received(&a));
        set_address_type(&mut edit, c.from_ton, c.from_npi, kind(c.from_address));
        set_address_type(&mut edit, c.to_ton, c.to_npi, kind(c.to_address));
        return Ok(finish(&new, edit));
    }

    edit.null(c.received_at);
    edit.null(c.reference);
    set_destination(&mut edit, &c, new.text(c.to_address));
    set_sender(&mut edit, &c, new.text(c.from_address));
    let encoding = encoding_for(&body, new.text(c.encoding).as_deref());
    edit.set(c.encoding, Some(encoding.as_str()));
    edit.set(c.segments, Some(outbound_segments(&body, encoding)));

    let scheduled_at = new.get::<i64>(c.scheduled_at);
    if let (Some(valid_until), Some(scheduled_at)) = (new.get::<i64>(c.valid_until), scheduled_at) {
        if valid_until <= scheduled_at {
            refuse(format!(
                "valid_until ({}) must be later than scheduled_at ({})",
                timestamptz_text(valid_until),
                timestamptz_text(scheduled_at)
            ));
        }
    }

    if let Some(key) = new.text(c.idempotency_key) {
        // The unique index settles races; this names the first message.
        if let Some(first) = key_owner(&key) {
            raise(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!(
                    "idempotency_key \"{}\" was already used by message {first}",
                    excerpt(&key)
                ),
                None,
            );
        }
    }

    let channel = new.text(c.channel);
    if let Some(name) = &channel {
        require_channel(name);
    }

    if scheduled_at.is_some_and(|at| at > now) {
        set_status(&mut edit, &c, Status::Scheduled);
        set_trigger_status(&mut edit, &c, trigger_status_for(Status::Scheduled, false));
        return Ok(finish(&new, edit));
    }
    // Route the row as it will be stored: normalised, encoded, counted.
    let staged = Row {
        tuple: edit.apply(&new),
        desc: new.desc,
    };
    let mut edit = Edit::new(new.desc);
    let verdict = router::route(staged.tuple, staged.desc, channel.as_deref());
    apply_verdict(&mut edit, &c, verdict);
    Ok(finish(&staged, edit))
}

/// Refuses a message naming a channel that does not exist.
fn require_channel(name: &str) {
    if channels::channel(name).is_none() {
        raise(
            PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
            format!("unknown channel \"{}\"", excerpt(name)),
            Some("Use a name from smsbus.channel, or leave channel null to let the router choose."),
        );
    }
}

/// Writes the router's decision into the row.
fn apply_verdict(edit: &mut Edit, c: &Columns, verdict: router::Verdict) {
    if verdict.channel.is_some() {
        edit.set(c.channel, verdict.channel);
    }
    edit.set(c.routed_by, verdict.routed_by);
    edit.set(c.last_error, verdict.reason);
    set_status(edit, c, verdict.status);
    set_trigger_status(edit, c, trigger_status_for(verdict.status, false));
}

/// BEFORE UPDATE: enforces the state machine and keeps the system's
/// columns: timestamps, attempts, the lease, and the normalised addresses,
/// encoding and segment count when a waiting message is edited.
#[pg_trigger]
fn _message_before_update<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let new = row_of(trigger, true);
    let old = row_of(trigger, false);
    let c = Columns::of(new.desc);
    let mut edit = Edit::new(new.desc);
    let now = now();

    for column in [
        c.direction,
        c.created_at,
        c.attempts,
        c.sent_at,
        c.delivered_at,
        c.received_at,
        c.routed_by,
    ] {
        edit.keep(&old, column);
    }
    edit.set(c.updated_at, Some(now));
    let old_status = old.status(c.status);
    let new_status = new.status(c.status);
    edit.datum(c.previous_status, old.datum(c.status));

    if old.text(c.direction).as_deref() == Some("out") {
        revalidate(&old, &new, &c, &mut edit);
    }

    if new_status == old_status {
        return Ok(finish(&new, edit));
    }
    if !old_status.can_become(new_status) {
        let id = old.get::<i64>(c.id).unwrap_or_default();
        raise(
            PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            format!("illegal status transition from {old_status} to {new_status} (message {id})"),
            Some(&crate::state::next_statuses_hint(old_status)),
        );
    }
    if old_status == Status::Scheduled
        && new_status == Status::Queued
        && old.text(c.direction).as_deref() == Some("out")
    {
        return Ok(Some(route_due(&old, &new, &c, edit)));
    }
    match new_status {
        Status::Sending => {
            let attempts = old.get::<i32>(c.attempts).unwrap_or(0);
            edit.set(c.attempts, Some(attempts.saturating_add(1)));
        }
        Status::Sent => edit.set(c.sent_at, Some(now)),
        Status::Delivered => edit.set(c.delivered_at, Some(now)),
        _ => {}
    }
    if new_status != Status::Sending {
        edit.null(c.claimed_by);
        edit.null(c.claimed_until);
    }
    // last_error explains the current status: a step forward, or a retry,
    // that gives no reason of its own clears the old one (the trace keeps it).
    if matches!(
        new_status,
        Status::Sending | Status::Sent | Status::Delivered | Status::Scheduled
    ) && new.text(c.last_error) == old.text(c.last_error)
    {
        edit.null(c.last_error);
    }
    let inbound = old.text(c.direction).as_deref() == Some("in");
    set_trigger_status(&mut edit, &c, trigger_status_for(new_status, inbound));
    Ok(finish(&new, edit))
}

/// A scheduled message that came due goes through the router. A channel
/// the router chose last time (before a retry) is chosen afresh; one the
/// sender gave, or this UPDATE sets, is kept.
fn route_due<'a>(
    old: &Row,
    new: &Row,
    c: &Columns,
    mut edit: Edit,
) -> PgHeapTuple<'a, AllocatedByPostgres> {
    let channel = new.text(c.channel);
    let chosen_by_router = old
        .text(c.routed_by)
        .is_some_and(|by| by.starts_with("route ") || by == "round robin");
    if chosen_by_router && channel == old.text(c.channel) {
        edit.null(c.channel);
    }
    let channel = edit_channel(&edit, c, channel);
    if let Some(name) = &channel {
        require_channel(name);
    }
    edit.null(c.claimed_by);
    edit.null(c.claimed_until);
    edit.null(c.last_error);
    let staged = Row {
        tuple: edit.apply(new),
        desc: new.desc,
    };
    let mut edit = Edit::new(new.desc);
    let verdict = router::route(staged.tuple, staged.desc, channel.as_deref());
    apply_verdict(&mut edit, c, verdict);
    finish(&staged, edit).expect("finish returns a row")
}

/// The channel the row will have after `edit`.
fn edit_channel(edit: &Edit, c: &Columns, channel: Option<String>) -> Option<String> {
    if edit.sets_null(c.channel) {
        None
    } else {
        channel
    }
}

/// An outbound message edited while it waits is validated again.
fn revalidate(old: &Row, new: &Row, c: &Columns, edit: &mut Edit) {
    let to = new.text(c.to_address);
    if to != old.text(c.to_address) {
        set_destination(edit, c, to);
    }
    let from = new.text(c.from_address);
    if from != old.text(c.from_address) {
        set_sender(edit, c, from);
    }
    let body = new.text(c.body);
    let encoding = new.text(c.encoding);
    let old_encoding = old.text(c.encoding);
    if body != old.text(c.body) || encoding != old_encoding {
        let body = body.unwrap_or_else(|| required("body"));
        // A new body without a new encoding gets its encoding detected again.
        let asked = if encoding == old_encoding {
            None
        } else {
            encoding
        };
        let encoding = encoding_for(&body, asked.as_deref());
        edit.set(c.encoding, Some(encoding.as_str()));
        edit.set(c.segments, Some(outbound_segments(&body, encoding)));
    } else {
        edit.keep(old, c.segments);
    }
}
