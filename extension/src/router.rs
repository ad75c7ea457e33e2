//! Calls the compiled router for a message that has become due.
//!
//! The rules live in `smsbus.route` and `smsbus.block`; `sql/router_compile.sql`
//! compiles them into PL/pgSQL whenever a rule row changes:
//! `smsbus._router(message)` (blocks, routes, round robin) and
//! `smsbus._router_blocks(message)` (the blocks alone, for messages that
//! name their channel; IMMUTABLE and constant when there are no blocks).
//! The row triggers call them directly through fmgr, with the row as it
//! will be stored, and read the verdict. A message that names its channel
//! and meets no blocking rules never leaves Rust.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use smsbus_core::status::Status;

use crate::channels::{self, Take};
use crate::raise;

/// `smsbus._in_extension_script()`: whether CREATE or ALTER EXTENSION is
/// running, whose search_path is the extension's schema rather than the
/// one rules are written under.
#[pg_extern(stable, parallel_safe)]
fn _in_extension_script() -> bool {
    // SAFETY: a plain flag PostgreSQL sets around extension scripts.
    unsafe { pg_sys::creating_extension }
}

/// What the router decided for one message.
pub(crate) struct Verdict {
    pub status: Status,
    pub channel: Option<String>,
    pub routed_by: Option<String>,
    pub reason: Option<String>,
}

/// The compiled functions, looked up by name once and kept until any
/// function changes (a recompiled router is replaced in place, and its
/// volatility tells whether there are blocking rules).
#[derive(Clone, Copy)]
struct Compiled {
    row_type: pg_sys::Oid,
    router: pg_sys::Oid,
    /// None when there are no blocking rules.
    blocks: Option<pg_sys::Oid>,
}

thread_local! {
    static COMPILED: Cell<Option<Compiled>> = const { Cell::new(None) };
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// Counts the calls of forget_compiled, so a lookup that met one while
    /// it ran is not kept.
    static CHANGES: Cell<u64> = const { Cell::new(0) };
    /// Where this backend's round robin goes next.
    static NEXT_TURN: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Called by PostgreSQL when any function changes, here or in another
/// backend (at its commit), and when a transaction that changed one rolls
/// back.
unsafe extern "C-unwind" fn forget_compiled(
    _arg: pg_sys::Datum,
    _cache: std::ffi::c_int,
    _hash: u32,
) {
    COMPILED.set(None);
    CHANGES.set(CHANGES.get().wrapping_add(1));
}

fn look_up(name: &std::ffi::CStr, row_type: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: a qualified name list built from a constant.
    let oid = unsafe {
        let names = pg_sys::stringToQualifiedNameList(name.as_ptr());
        pg_sys::LookupFuncName(names, 1, &row_type, true)
    };
    if oid == pg_sys::InvalidOid {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
            format!(
                "the router function {}(smsbus.message) is missing",
                name.to_string_lossy()
            ),
            Some("Run SELECT smsbus._compile_router() as an smsbus admin."),
        );
    }
    if schema_has_rules_role() && !compiled_by_smsbus(oid) {
        // Only smsbus._define_router writes these; anything else would run
        // its code as whoever inserts.
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "the router function {}(smsbus.message) was not compiled by smsbus: it must be \
                 SECURITY DEFINER and belong to smsbus_rules",
                name.to_string_lossy()
            ),
            Some("Run SELECT smsbus._compile_router() as an smsbus admin."),
        );
    }
    oid
}

/// Whether the database's smsbus schema is one whose compiled rules belong
/// to smsbus_rules (0.2.0 on; it has smsbus._rules_search_path(name[])).
/// Before `ALTER EXTENSION smsbus UPDATE` they belong to smsbus_admin,
/// and messages are still routed (the worker warns of the old version).
fn schema_has_rules_role() -> bool {
    // SAFETY: a qualified name list built from a constant.
    unsafe {
        let names = pg_sys::stringToQualifiedNameList(c"smsbus._rules_search_path".as_ptr());
        let argument = pg_sys::NAMEARRAYOID;
        pg_sys::LookupFuncName(names, 1, &argument, true) != pg_sys::InvalidOid
    }
}

/// Whether function `oid` is as smsbus._define_router writes it: SECURITY
/// DEFINER, owned by smsbus_rules.
fn compiled_by_smsbus(oid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID, released before returning.
    unsafe {
        let rules = pg_sys::get_role_oid(c"smsbus_rules".as_ptr(), true);
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            pg_sys::Datum::from(oid),
        );
        if tuple.is_null() {
            return false;
        }
        let proc = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_proc;
        let ok = (*proc).prosecdef && rules != pg_sys::InvalidOid && (*proc).proowner == rules;
        pg_sys::ReleaseSysCache(tuple);
        ok
    }
}

fn compiled(row_type: pg_sys::Oid) -> Compiled {
    if let Some(c) = COMPILED.get().filter(|c| c.row_type == row_type) {
        return c;
    }
    if !WATCHING.get() {
        // SAFETY: registered once per backend, as the API asks.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::PROCOID as i32,
                Some(forget_compiled),
                pg_sys::Datum::from(0),
            );
        }
        WATCHING.set(true);
    }
    let changes = CHANGES.get();
    let blocks = look_up(c"smsbus._router_blocks", row_type);
    // SAFETY: a function OID just looked up.
    let constant = unsafe { pg_sys::func_volatile(blocks) } as u8 == pg_sys::PROVOLATILE_IMMUTABLE;
    let c = Compiled {
        row_type,
        router: look_up(c"smsbus._router", row_type),
        blocks: (!constant).then_some(blocks),
    };
    if CHANGES.get() == changes {
        COMPILED.set(Some(c));
    }
    c
}

/// Routes the message in `tuple` (a row of smsbus.message, as it will be
/// stored, naming `channel` or not).
pub(crate) fn route(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    channel: Option<&str>,
) -> Verdict {
    // SAFETY: `desc` is smsbus.message's descriptor.
    let compiled = compiled(unsafe { (*desc).tdtypeid });
    match channel {
        None => call(compiled.router, tuple, desc)
            .unwrap_or_else(|| crate::internal("the router returned no status".into())),
        Some(name) => compiled
            .blocks
            .and_then(|blocks| call(blocks, tuple, desc))
            .unwrap_or_else(|| given(name)),
    }
}

/// A message that names its channel goes there if the channel can take it.
fn given(name: &str) -> Verdict {
    let take = channels::take(name);
    Verdict {
        status: match take {
            Take::Taken => Status::Queued,
            Take::OverDailyLimit => Status::DailyLimit,
            _ => Status::NoChannel,
        },
        channel: None,
        routed_by: Some("channel given".into()),
        reason: take.reason(name),
    }
}

/// Calls a compiled function; None when its verdict has no status.
fn call(
    function: pg_sys::Oid,
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
) -> Option<Verdict> {
    // SAFETY: the function takes smsbus.message, whose descriptor `desc`
    // is and with which the tuple was formed; it returns a smsbus._routing
    // composite, never null (OidFunctionCall1Coll raises on null).
    let result = unsafe {
        let row = pg_sys::heap_copy_tuple_as_datum(tuple, desc);
        pg_sys::OidFunctionCall1Coll(function, pg_sys::InvalidOid, row)
    };
    let verdict = unsafe { PgHeapTuple::from_composite_datum(result) };
    let field = |name: &str| {
        verdict
            .get_by_name::<String>(name)
            .unwrap_or_else(|e| crate::internal(format!("reading the router's {name}: {e}")))
    };
    let status = field("status")?
        .parse::<Status>()
        .unwrap_or_else(|e| crate::internal(format!("the router answered {e}")));
    Some(Verdict {
        status,
        channel: field("channel"),
        routed_by: field("routed_by"),
        reason: field("reason"),
    })
}

/// Round robin for a message no route matched: the next channel (in name
/// order) that can take it, quota taken; null when none can. Each backend
/// keeps its own turn, starting at a place of its own.
#[pg_extern(volatile, parallel_unsafe)]
fn _round_robin_take() -> Option<String> {
    let names = channels::senders();
    if names.is_empty() {
        return None;
    }
    // SAFETY: MyProcPid is set for the backend's lifetime.
    let start = NEXT_TURN
        .get()
        .unwrap_or(unsafe { pg_sys::MyProcPid } as usize);
    NEXT_TURN.set(Some(start.wrapping_add(1)));
    (0..names.len())
        .map(|i| &names[start.wrapping_add(i) % names.len()])
        .find(|name| channels::take(name) == Take::Taken)
        .cloned()
}
