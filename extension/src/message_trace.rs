//! The per-statement trigger of `smsbus.message`: writes the trace (one
//! `smsbus.message_event` row per status change) and wakes the channels
//! whose owners wait for work (`smsbus.channel_wakeup`).
//! A statement that armed messages for their triggers also sends one
//! NOTIFY `smsbus_triggers`.
//!
//! It reads the statement's transition table (REFERENCING NEW TABLE) and
//! writes the events straight into the table ([`crate::direct_insert`]):
//! an SQL statement's start-up would cost a single-row INSERT more than
//! the row itself. Wake-ups read `smsbus.channel_wakeup` first, so the
//! statement that takes an armed row runs only when there is one; busy
//! channels are never armed.
//! The `previous_status` the row trigger leaves on each row tells a status
//! change from any other update without the OLD table.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use smsbus_core::owner_sql;
use smsbus_core::status::Status;

use crate::actor::{self, Actor};
use crate::direct_insert::Inserter;
use crate::direct_read;
use crate::message_row::{enum_status, enum_value, Columns};
use crate::{owner, raise};

/// One statement's trace and wake-ups, in the column order of the plan.
#[derive(Default)]
struct Batch {
    ids: Vec<i64>,
    from: Vec<Option<&'static str>>,
    to: Vec<&'static str>,
    details: Vec<Option<String>>,
    wake: Vec<String>,
    /// Messages of an account that reached a final status, or were sent:
    /// their receipts may be owed (`smsbus._queue_receipts` decides).
    receipts: Vec<i64>,
    /// Every message of an account whose status changed: its webhooks
    /// may be owed an event (`smsbus._queue_webhooks` decides).
    webhooks: Vec<i64>,
}

thread_local! {
    static WAKE_PLAN: RefCell<Option<NonNull<pg_sys::_SPI_plan>>> = const { RefCell::new(None) };
    /// The identity sequence of `message_event.id`, by the table's OID.
    static EVENT_SEQUENCE: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
}

/// AFTER INSERT/UPDATE, FOR EACH STATEMENT, REFERENCING NEW TABLE.
#[pg_trigger]
fn _message_after_change<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if crate::settings::RESTORING.get() {
        // Restored rows bring their trace; no channel waits for them.
        return Ok(None);
    }
    let data = trigger.trigger_data();
    let inserting = matches!(trigger.op(), Ok(PgTriggerOperation::Insert));
    if data.tg_newtable.is_null() {
        raise(
            PgSqlErrorCode::ERRCODE_TRIGGERED_ACTION_EXCEPTION,
            "_message_after_change needs REFERENCING NEW TABLE".into(),
            None,
        );
    }
    // SAFETY: a statement trigger on smsbus.message: the relation is open.
    let (desc, owner) = unsafe {
        (
            (*data.tg_relation).rd_att,
            (*(*data.tg_relation).rd_rel).relowner,
        )
    };
    if crate::arming::take_armed() {
        // One wake-up for the trigger runner per statement that armed
        // messages; delivered at commit, like any NOTIFY.
        unsafe extern "C-unwind" {
            // commands/async.h; pgrx does not bind it.
            #[link_name = "Async_Notify"]
            fn async_notify(channel: *const std::ffi::c_char, payload: *const std::ffi::c_char);
        }
        // SAFETY: static NUL-terminated strings; Async_Notify copies them.
        unsafe { async_notify(c"smsbus_triggers".as_ptr(), c"".as_ptr()) };
    }
    let c = Columns::of(desc);
    // Optional: a schema before 0.2.0 (not yet upgraded) has no accounts.
    let account = direct_read::column_of(desc, c"account");
    let batch = collect(data.tg_newtable, desc, &c, account, inserting);
    if batch.ids.is_empty() && batch.wake.is_empty() {
        return Ok(None);
    }
    let actor = actor::current();
    // The trace is the system's: senders cannot write message_event
    // themselves, so this runs as the table's owner, like a SECURITY
    // DEFINER function (crate::owner).
    if !batch.ids.is_empty() {
        owner::as_owner(owner, || write_events(&batch, &actor));
    }
    if !batch.wake.is_empty() && armed(&batch.wake) {
        owner::as_owner_fixed_path(owner, || wake(&batch.wake));
    }
    if !batch.receipts.is_empty() {
        owner::as_owner_fixed_path(owner, || queue_receipts(&batch.receipts));
    }
    if !batch.webhooks.is_empty() {
        owner::as_owner_fixed_path(owner, || queue_webhooks(&batch.webhooks));
    }
    Ok(None)
}

/// Reads the transition table: every row whose status changed (all of them
/// on INSERT) is an event; rows that entered `queued` wake their channel;
/// an account's messages that reached a final status may owe a receipt.
fn collect(
    table: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    c: &Columns,
    account: Option<usize>,
    inserting: bool,
) -> Batch {
    let mut batch = Batch::default();
    // SAFETY: the tuplestore and descriptor belong to this trigger call; a
    // read pointer of our own leaves other readers of the table undisturbed.
    unsafe {
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &raw const pg_sys::TTSOpsMinimalTuple);
        let reader = pg_sys::tuplestore_alloc_read_pointer(table, 0);
        pg_sys::tuplestore_select_read_pointer(table, reader);
        pg_sys::tuplestore_rescan(table);
        let get = |slot: *mut pg_sys::TupleTableSlot, column: usize| {
            let mut null = false;
            let datum = pg_sys::slot_getattr(slot, (column + 1) as i32, &mut null);
            (!null).then_some(datum)
        };
        while pg_sys::tuplestore_gettupleslot(table, true, false, slot) {
            let Some(status) = get(slot, c.status).map(enum_status) else {
                continue;
            };
            let previous = if inserting {
                None
            } else {
                get(slot, c.previous_status).map(enum_status)
            };
            if previous == Some(status) {
                continue;
            }
            let text = |column| get(slot, column).and_then(|d| String::from_datum(d, false));
            if status == Status::Queued {
                if let Some(channel) = text(c.channel) {
                    if !batch.wake.contains(&channel) {
                        batch.wake.push(channel);
                    }
                }
            }
            let routed = matches!(previous, None | Some(Status::Scheduled));
            let detail = match (status, text(c.reference)) {
                (Status::Sent, Some(reference)) => Some(format!("reference {reference}")),
                // The router's steps name the rule that decided.
                _ if routed && !matches!(status, Status::Scheduled | Status::Expired) => {
                    match (text(c.routed_by), text(c.last_error)) {
                        (Some(by), Some(error)) => Some(format!("{by}: {error}")),
                        (by, error) => by.or(error),
                    }
                }
                _ => text(c.last_error),
            };
            let id = get(slot, c.id)
                .and_then(|d| i64::from_datum(d, false))
                .unwrap_or_default();
            // Sent: an intermediate receipt, when one was asked for.
            let receipt_may_be_owed = status.is_final_outcome() || status == Status::Sent;
            if account.is_some_and(|a| get(slot, a).is_some()) {
                if receipt_may_be_owed {
                    batch.receipts.push(id);
                }
                batch.webhooks.push(id);
            }
            batch.ids.push(id);
            batch.from.push(previous.map(Status::as_str));
            batch.to.push(status.as_str());
            batch.details.push(detail);
        }
        pg_sys::tuplestore_select_read_pointer(table, 0);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }
    batch
}

/// Appends the statement's events to `smsbus.message_event`, a row each,
/// without an SQL statement (see [`crate::direct_insert`]).
fn write_events(batch: &Batch, actor: &Actor) {
    let relid = direct_read::smsbus_table(c"message_event");
    let mut table = Inserter::open(relid);
    let id = direct_read::required_column(table.descriptor(), c"message_event", c"id");
    let sequence = event_sequence(relid, id);
    // Row triggers on the trace (only its owner may create them) would run
    // in the owner context: under the fixed search_path, never the
    // caller's.
    if table.has_triggers() {
        owner::with_fixed_search_path(|| insert_events(&mut table, batch, actor, sequence));
    } else {
        insert_events(&mut table, batch, actor, sequence);
    }
    table.finish();
}

/// The events' rows, through `table` (message_event, open).
fn insert_events(table: &mut Inserter, batch: &Batch, actor: &Actor, sequence: pg_sys::Oid) {
    let column =
        |name: &CStr| direct_read::required_column(table.descriptor(), c"message_event", name);
    let id = column(c"id");
    let message_id = column(c"message_id");
    let at = column(c"at");
    let from_status = column(c"from_status");
    let to_status = column(c"to_status");
    let actor_column = column(c"actor");
    let detail = column(c"detail");
    // Optional: a schema before 0.2.0 (not yet upgraded) has no such column.
    let session_role = direct_read::column_of(table.descriptor(), c"session_role");
    let desc = table.descriptor();
    // SAFETY: positions found in this descriptor just above.
    let (natts, status_type) = unsafe {
        (
            (*desc).natts as usize,
            (*(*desc).attrs.as_ptr().add(to_status)).atttypid,
        )
    };
    let actor_datum = actor.name.as_str().into_datum();
    let session_role_datum = actor
        .session_role
        .as_deref()
        .and_then(IntoDatum::into_datum);
    let mut values = vec![None; natts];
    for (i, &message) in batch.ids.iter().enumerate() {
        // SAFETY: a sequence of ours; nextval's own privilege check is
        // skipped as for a column default.
        values[id] = Some(pg_sys::Datum::from(unsafe {
            nextval_internal(sequence, false)
        }));
        values[message_id] = Some(pg_sys::Datum::from(message));
        // clock_timestamp(), the column's default.
        values[at] = Some(pg_sys::Datum::from(unsafe {
            pg_sys::GetCurrentTimestamp()
        }));
        values[from_status] = batch.from[i].map(|label| enum_value(status_type, label));
        values[to_status] = Some(enum_value(status_type, batch.to[i]));
        values[actor_column] = actor_datum;
        if let Some(session_role) = session_role {
            values[session_role] = session_role_datum;
        }
        values[detail] = batch.details[i].as_deref().and_then(IntoDatum::into_datum);
        table.insert(&values);
    }
}

unsafe extern "C-unwind" {
    // commands/sequence.h; pgrx does not bind it.
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The sequence behind `message_event.id` (column `id` at 0-based `column`).
fn event_sequence(relid: pg_sys::Oid, column: usize) -> pg_sys::Oid {
    if let Some((table, sequence)) = EVENT_SEQUENCE.get() {
        if table == relid {
            return sequence;
        }
    }
    // SAFETY: a catalog lookup; raises if the column is no identity.
    let sequence = unsafe { pg_sys::getIdentitySequence(relid, (column + 1) as i16, false) };
    EVENT_SEQUENCE.set(Some((relid, sequence)));
    sequence
}

/// Whether the owner of one of `channels` waits for a wake-up: a read of
/// `smsbus.channel_wakeup` (a handful of rows), so the statement that
/// takes the row runs only when there is one to take.
fn armed(channels: &[String]) -> bool {
    let mut found = false;
    // Fresh: an owner that armed its row while this statement ran is woken.
    let snapshot = direct_read::Snapshot::Latest;
    direct_read::scan(
        c"channel_wakeup",
        snapshot,
        [c"channel"],
        None,
        |[channel], row| {
            found = row
                .get::<String>(*channel)
                .is_some_and(|c| channels.contains(&c));
            !found
        },
    );
    found
}

/// Takes the armed wake-up rows of `channels` and notifies their owners.
fn wake(channels: &[String]) {
    let args = [channels.to_vec().into_datum()];
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|d| d.unwrap_or(pg_sys::Datum::from(0)))
        .collect();
    let mut nulls: Vec<std::ffi::c_char> = vec![b' ' as _; 1];
    Spi::connect(|_client| {
        let plan = WAKE_PLAN.with(|cell| *cell.borrow_mut().get_or_insert_with(prepare_wake));
        // SAFETY: a kept plan with one text[] parameter.
        let status = unsafe {
            pg_sys::SPI_execute_plan(
                plan.as_ptr(),
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
                false,
                0,
            )
        };
        if status < 0 {
            crate::internal(format!("waking the channels failed (SPI status {status})"));
        }
    })
}

/// Writes the receipts owed for `ids` (`smsbus._queue_receipts`). Only
/// statements that finish messages of accounts come here: a plain SPI
/// statement is cheap beside what they did.
fn queue_receipts(ids: &[i64]) {
    let ids = ids.to_vec();
    let result = Spi::run_with_args(owner_sql::QUEUE_RECEIPTS, &[ids.into()]);
    if let Err(e) = result {
        crate::internal(format!("writing the delivery receipts failed: {e}"));
    }
}

/// Writes the webhook events owed for `ids` (`smsbus._queue_webhooks`):
/// one statement for all of them, which finds nothing at once for
/// accounts without webhooks.
fn queue_webhooks(ids: &[i64]) {
    let ids = ids.to_vec();
    let result = Spi::run_with_args(owner_sql::QUEUE_WEBHOOKS, &[ids.into()]);
    if let Err(e) = result {
        crate::internal(format!("writing the webhook events failed: {e}"));
    }
}

/// Prepares the wake-up statement once per backend with a generic plan.
fn prepare_wake() -> NonNull<pg_sys::_SPI_plan> {
    let query = CString::new(owner_sql::WAKE).expect("no NUL in the statement");
    let mut types = [pg_sys::TEXTARRAYOID];
    // SAFETY: called inside SPI_connect; the plan is kept beyond it.
    unsafe {
        let plan = pg_sys::SPI_prepare_cursor(
            query.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
        );
        let plan = NonNull::new(plan)
            .unwrap_or_else(|| crate::internal("preparing the wake-up statement failed".into()));
        pg_sys::SPI_keepplan(plan.as_ptr());
        plan
    }
}
