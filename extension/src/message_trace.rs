//! The per-statement trigger of `smsbus.message`: writes the trace (one
//! `smsbus.message_event` row per status change) and wakes the channels
//! whose owners wait for work (`smsbus.channel_wakeup`).
//! A statement that armed messages for their triggers also sends one
//! NOTIFY `smsbus_triggers`.
//!
//! It reads the statement's transition table (REFERENCING NEW TABLE) and
//! does everything with one execution of one prepared statement, so a
//! single-row INSERT pays for the trace about what a row in a batch does.
//! The `previous_status` the row trigger leaves on each row tells a status
//! change from any other update without the OLD table.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use smsbus_core::status::Status;

use crate::message_triggers::{enum_status, Columns};
use crate::raise;

/// One statement's trace and wake-ups, in the column order of the plan.
#[derive(Default)]
struct Batch {
    ids: Vec<i64>,
    from: Vec<Option<&'static str>>,
    to: Vec<&'static str>,
    details: Vec<Option<String>>,
    wake: Vec<String>,
}

const RECORD: &str = "
    WITH event AS (
        INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, detail)
        SELECT e.id, e.from_status::smsbus.status, e.to_status::smsbus.status, $5, e.detail
        FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS e(id, from_status, to_status, detail)
    ), taken AS (
        DELETE FROM smsbus.channel_wakeup w
        WHERE w.channel IN (SELECT x.channel FROM smsbus.channel_wakeup x
                            WHERE x.channel = ANY ($6::text[])
                            FOR UPDATE SKIP LOCKED)
        RETURNING w.channel
    )
    SELECT count(pg_notify('smsbus_queue', t.channel)) FROM taken t";

/// The same for a statement that changed one row.
const RECORD_ONE: &str = "
    WITH event AS (
        INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, detail)
        VALUES ($1, $2::smsbus.status, $3::smsbus.status, $5, $4)
    ), taken AS (
        DELETE FROM smsbus.channel_wakeup w
        WHERE w.channel IN (SELECT x.channel FROM smsbus.channel_wakeup x
                            WHERE x.channel = $6
                            FOR UPDATE SKIP LOCKED)
        RETURNING w.channel
    )
    SELECT count(pg_notify('smsbus_queue', t.channel)) FROM taken t";

thread_local! {
    static PLAN: RefCell<Option<NonNull<pg_sys::_SPI_plan>>> = const { RefCell::new(None) };
    static PLAN_ONE: RefCell<Option<NonNull<pg_sys::_SPI_plan>>> = const { RefCell::new(None) };
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
    let batch = collect(data.tg_newtable, desc, &c, inserting);
    if batch.ids.is_empty() && batch.wake.is_empty() {
        return Ok(None);
    }
    let actor = actor();
    // The trace is the system's: senders cannot write message_event
    // themselves, so this runs as the table's owner, like a SECURITY
    // DEFINER function. An error aborts the (sub)transaction, which puts
    // the user back.
    as_user(owner, || record(&batch, &actor));
    Ok(None)
}

/// Reads the transition table: every row whose status changed (all of them
/// on INSERT) is an event; rows that entered `queued` wake their channel.
fn collect(
    table: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    c: &Columns,
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
            batch.ids.push(
                get(slot, c.id)
                    .and_then(|d| i64::from_datum(d, false))
                    .unwrap_or_default(),
            );
            batch.from.push(previous.map(Status::as_str));
            batch.to.push(status.as_str());
            batch.details.push(detail);
        }
        pg_sys::tuplestore_select_read_pointer(table, 0);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }
    batch
}

/// Who is changing messages: `smsbus.actor` when set (the worker sets it
/// to `worker:<id>`), else the current role.
fn actor() -> String {
    // SAFETY: plain reads of configuration and the current role's name.
    unsafe {
        let setting = pg_sys::GetConfigOption(c"smsbus.actor".as_ptr(), true, false);
        if !setting.is_null() && *setting != 0 {
            return CStr::from_ptr(setting).to_string_lossy().into_owned();
        }
        CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
            .to_string_lossy()
            .into_owned()
    }
}

fn as_user<R>(user: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut saved_user, mut saved_context) = (pg_sys::Oid::INVALID, 0);
    // SAFETY: the same switch fmgr makes for SECURITY DEFINER functions.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            user,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = f();
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}

fn record(batch: &Batch, actor: &str) {
    // A single-row statement (the common INSERT) takes a plan with plain
    // parameters: building and unnesting one-element arrays costs as much
    // as the insert.
    if let ([id], [from], [to], [detail], wake @ ([] | [_])) = (
        &batch.ids[..],
        &batch.from[..],
        &batch.to[..],
        &batch.details[..],
        &batch.wake[..],
    ) {
        let args = [
            id.into_datum(),
            from.into_datum(),
            to.into_datum(),
            detail.clone().into_datum(),
            actor.into_datum(),
            wake.first().cloned().into_datum(),
        ];
        execute(&PLAN_ONE, RECORD_ONE, &SCALAR_TYPES, &args);
    } else {
        let args = [
            batch.ids.clone().into_datum(),
            batch.from.clone().into_datum(),
            batch.to.clone().into_datum(),
            batch.details.clone().into_datum(),
            actor.into_datum(),
            batch.wake.clone().into_datum(),
        ];
        execute(&PLAN, RECORD, &ARRAY_TYPES, &args);
    }
}

const ARRAY_TYPES: [pg_sys::Oid; 6] = [
    pg_sys::INT8ARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTARRAYOID,
];

const SCALAR_TYPES: [pg_sys::Oid; 6] = [
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
];

type PlanCell = std::thread::LocalKey<RefCell<Option<NonNull<pg_sys::_SPI_plan>>>>;

/// Runs `query` (prepared once per backend) with `args`.
fn execute(
    cell: &'static PlanCell,
    query: &str,
    types: &[pg_sys::Oid; 6],
    args: &[Option<pg_sys::Datum>; 6],
) {
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|d| d.unwrap_or(pg_sys::Datum::from(0)))
        .collect();
    let mut nulls: Vec<std::ffi::c_char> = args
        .iter()
        .map(|d| if d.is_some() { b' ' } else { b'n' } as _)
        .collect();
    Spi::connect(|_client| {
        let plan = cell.with(|cell| {
            *cell
                .borrow_mut()
                .get_or_insert_with(|| prepare(query, types))
        });
        // SAFETY: a kept plan with six parameters of the types prepared.
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
            crate::refuse(format!("writing the trace failed (SPI status {status})"));
        }
    })
}

/// Prepares a statement once per backend with a generic plan: a custom
/// plan per statement would cost more than the statement itself.
fn prepare(query: &str, types: &[pg_sys::Oid; 6]) -> NonNull<pg_sys::_SPI_plan> {
    let query = CString::new(query).expect("no NUL in the statement");
    let mut types = *types;
    // SAFETY: called inside SPI_connect; the plan is kept beyond it.
    unsafe {
        let plan = pg_sys::SPI_prepare_cursor(
            query.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
        );
        let plan = NonNull::new(plan)
            .unwrap_or_else(|| crate::refuse("preparing the trace statement failed".into()));
        pg_sys::SPI_keepplan(plan.as_ptr());
        plan
    }
}
