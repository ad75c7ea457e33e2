//! The rows of `smsbus.message` as the queue's triggers read and change
//! them: the columns' positions ([`Columns`]), a row PostgreSQL handed over
//! ([`Row`]), the changes to write back with one `heap_modify_tuple`
//! ([`Edit`]), and the `smsbus.status` enum's values. Shared by the row
//! triggers ([`crate::message_triggers`]) and the trace
//! ([`crate::message_trace`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::num::NonZeroUsize;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use smsbus_core::status::Status;

use crate::{internal, raise, refuse};

/// Attribute positions (0-based) of the columns the triggers touch, read
/// from the table's descriptor on each call, so a future `ALTER TABLE`
/// cannot make them stale.
#[derive(Default)]
pub(crate) struct Columns {
    pub id: usize,
    pub to_address: usize,
    pub body: usize,
    pub from_address: usize,
    pub channel: usize,
    pub scheduled_at: usize,
    pub valid_until: usize,
    pub encoding: usize,
    pub idempotency_key: usize,
    pub direction: usize,
    pub status: usize,
    pub previous_status: usize,
    pub trigger_status: usize,
    pub segments: usize,
    pub to_ton: usize,
    pub to_npi: usize,
    pub from_ton: usize,
    pub from_npi: usize,
    pub reference: usize,
    pub attempts: usize,
    pub last_error: usize,
    pub routed_by: usize,
    pub created_at: usize,
    pub updated_at: usize,
    pub sent_at: usize,
    pub delivered_at: usize,
    pub received_at: usize,
    pub claimed_by: usize,
    pub claimed_until: usize,
    pub status_type: pg_sys::Oid,
    pub trigger_status_type: pg_sys::Oid,
}

const COLUMN_COUNT: usize = 29;

impl Columns {
    pub fn of(desc: pg_sys::TupleDesc) -> Columns {
        let mut c = Columns::default();
        let mut found = 0;
        // SAFETY: `desc` is the trigger relation's live descriptor.
        let natts = unsafe { (*desc).natts } as usize;
        for i in 0..natts {
            let att = unsafe { &*(*desc).attrs.as_ptr().add(i) };
            if att.attisdropped {
                continue;
            }
            let name = unsafe { CStr::from_ptr(att.attname.data.as_ptr()) };
            let slot = match name.to_bytes() {
                b"id" => &mut c.id,
                b"to_address" => &mut c.to_address,
                b"body" => &mut c.body,
                b"from_address" => &mut c.from_address,
                b"channel" => &mut c.channel,
                b"scheduled_at" => &mut c.scheduled_at,
                b"valid_until" => &mut c.valid_until,
                b"encoding" => &mut c.encoding,
                b"idempotency_key" => &mut c.idempotency_key,
                b"direction" => &mut c.direction,
                b"status" => {
                    c.status_type = att.atttypid;
                    &mut c.status
                }
                b"previous_status" => &mut c.previous_status,
                b"trigger_status" => {
                    c.trigger_status_type = att.atttypid;
                    &mut c.trigger_status
                }
                b"segments" => &mut c.segments,
                b"to_ton" => &mut c.to_ton,
                b"to_npi" => &mut c.to_npi,
                b"from_ton" => &mut c.from_ton,
                b"from_npi" => &mut c.from_npi,
                b"reference" => &mut c.reference,
                b"attempts" => &mut c.attempts,
                b"last_error" => &mut c.last_error,
                b"routed_by" => &mut c.routed_by,
                b"created_at" => &mut c.created_at,
                b"updated_at" => &mut c.updated_at,
                b"sent_at" => &mut c.sent_at,
                b"delivered_at" => &mut c.delivered_at,
                b"received_at" => &mut c.received_at,
                b"claimed_by" => &mut c.claimed_by,
                b"claimed_until" => &mut c.claimed_until,
                _ => continue,
            };
            *slot = i;
            found += 1;
        }
        if found != COLUMN_COUNT {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("smsbus.message has {found} of the {COLUMN_COUNT} columns smsbus needs: reinstall the extension"),
                None,
            );
        }
        c
    }
}

/// A row as PostgreSQL handed it to the trigger.
pub(crate) struct Row {
    pub tuple: pg_sys::HeapTuple,
    pub desc: pg_sys::TupleDesc,
}

impl Row {
    pub fn datum(&self, column: usize) -> Option<pg_sys::Datum> {
        // SAFETY: tuple and descriptor come from the same trigger call;
        // column is below natts (Columns::of checked the names).
        unsafe {
            pgrx::heap_getattr_raw(
                self.tuple,
                NonZeroUsize::new(column + 1).unwrap(),
                self.desc,
            )
        }
    }

    pub fn get<T: FromDatum>(&self, column: usize) -> Option<T> {
        // SAFETY: the callers ask for the column's own SQL type.
        self.datum(column)
            .and_then(|d| unsafe { T::from_datum(d, false) })
    }

    pub fn text(&self, column: usize) -> Option<String> {
        self.get::<String>(column)
    }

    pub fn status(&self, column: usize) -> Status {
        let datum = self
            .datum(column)
            .unwrap_or_else(|| refuse("status is required".into()));
        enum_status(datum)
    }
}

/// The changes a trigger makes, written back with one `heap_modify_tuple`.
pub(crate) struct Edit {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
    replace: Vec<bool>,
}

impl Edit {
    pub fn new(desc: pg_sys::TupleDesc) -> Edit {
        let natts = unsafe { (*desc).natts } as usize;
        Edit {
            values: vec![pg_sys::Datum::from(0); natts],
            nulls: vec![false; natts],
            replace: vec![false; natts],
        }
    }

    pub fn set<T: IntoDatum>(&mut self, column: usize, value: Option<T>) {
        let datum = value.and_then(IntoDatum::into_datum);
        self.nulls[column] = datum.is_none();
        self.values[column] = datum.unwrap_or(pg_sys::Datum::from(0));
        self.replace[column] = true;
    }

    pub fn null(&mut self, column: usize) {
        self.set::<i32>(column, None);
    }

    pub fn datum(&mut self, column: usize, datum: Option<pg_sys::Datum>) {
        self.nulls[column] = datum.is_none();
        self.values[column] = datum.unwrap_or(pg_sys::Datum::from(0));
        self.replace[column] = true;
    }

    /// Keeps `column` as it was in `old`.
    pub fn keep(&mut self, old: &Row, column: usize) {
        self.datum(column, old.datum(column));
    }

    /// Whether the edit sets `column` to NULL.
    pub fn sets_null(&self, column: usize) -> bool {
        self.replace[column] && self.nulls[column]
    }

    pub fn apply(mut self, row: &Row) -> pg_sys::HeapTuple {
        // SAFETY: the arrays have natts entries; the datums were made for
        // the columns' types in this memory context.
        unsafe {
            pg_sys::heap_modify_tuple(
                row.tuple,
                row.desc,
                self.values.as_mut_ptr(),
                self.nulls.as_mut_ptr(),
                self.replace.as_mut_ptr(),
            )
        }
    }
}

pub(crate) fn now() -> pg_sys::TimestampTz {
    // now(): the transaction's start, like the SQL the users write.
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
}

pub(crate) fn timestamptz_text(ts: pg_sys::TimestampTz) -> String {
    // The server's own output (DateStyle, TimeZone), as in its messages.
    unsafe {
        pgrx::direct_function_call::<&CStr>(
            pg_sys::timestamptz_out,
            &[Some(pg_sys::Datum::from(ts))],
        )
    }
    .map(|s| s.to_string_lossy().into_owned())
    .unwrap_or_default()
}

thread_local! {
    /// Enum value OIDs and their labels. pg_enum rows never change once
    /// made, so neither does this map; a recreated type has new OIDs.
    static STATUS_BY_OID: RefCell<HashMap<pg_sys::Oid, Status>> = RefCell::new(HashMap::new());
    static OID_BY_LABEL: RefCell<HashMap<(pg_sys::Oid, &'static str), pg_sys::Oid>> = RefCell::new(HashMap::new());
}

pub(crate) fn enum_status(datum: pg_sys::Datum) -> Status {
    let oid = pg_sys::Oid::from(datum.value() as u32);
    if let Some(s) = STATUS_BY_OID.with(|m| m.borrow().get(&oid).copied()) {
        return s;
    }
    let label = unsafe { pgrx::direct_function_call::<&CStr>(pg_sys::enum_out, &[Some(datum)]) }
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let status: Status = label
        .parse()
        .unwrap_or_else(|e: smsbus_core::status::UnknownStatus| refuse(e.to_string()));
    STATUS_BY_OID.with(|m| m.borrow_mut().insert(oid, status));
    status
}

pub(crate) fn enum_value(type_oid: pg_sys::Oid, label: &'static str) -> pg_sys::Datum {
    let key = (type_oid, label);
    if let Some(oid) = OID_BY_LABEL.with(|m| m.borrow().get(&key).copied()) {
        return oid.into_datum().unwrap_or(pg_sys::Datum::from(0));
    }
    let c_label = CString::new(label).unwrap_or_default();
    let oid = unsafe {
        pgrx::direct_function_call::<pg_sys::Oid>(
            pg_sys::enum_in,
            &[c_label.as_c_str().into_datum(), type_oid.into_datum()],
        )
    }
    .unwrap_or_else(|| internal(format!("no enum value {label}")));
    OID_BY_LABEL.with(|m| m.borrow_mut().insert(key, oid));
    oid.into_datum().unwrap_or(pg_sys::Datum::from(0))
}
