//! Calls the compiled router for a message that has become due.
//!
//! The rules live in `smsbus.route` and `smsbus.block`; `sql/router.sql`
//! compiles them into one PL/pgSQL function, `smsbus._router(message)`,
//! whenever a rule row changes. Here the row triggers call it directly
//! through fmgr, with the row as it will be stored, and read its verdict.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use smsbus_core::status::Status;

use crate::raise;

/// What the router decided for one message.
pub(crate) struct Verdict {
    pub status: Status,
    pub channel: Option<String>,
    pub routed_by: Option<String>,
    pub reason: Option<String>,
}

thread_local! {
    /// The router's OID for the running statement: looked up by name once
    /// per statement, so a recompiled or recreated router is always found.
    static ROUTER: Cell<((pg_sys::LocalTransactionId, pg_sys::CommandId), pg_sys::Oid)> =
        const { Cell::new(((0, 0), pg_sys::InvalidOid)) };
}

fn router_oid(row_type: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: MyProc is this backend's process entry.
    let statement = unsafe { ((*pg_sys::MyProc).lxid, pg_sys::GetCurrentCommandId(false)) };
    let (cached_for, oid) = ROUTER.get();
    if cached_for == statement && oid != pg_sys::InvalidOid {
        return oid;
    }
    // SAFETY: a qualified name list built from a constant.
    let oid = unsafe {
        let name = pg_sys::stringToQualifiedNameList(c"smsbus._router".as_ptr());
        pg_sys::LookupFuncName(name, 1, &row_type, true)
    };
    if oid == pg_sys::InvalidOid {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
            "the router function smsbus._router(smsbus.message) is missing".into(),
            Some("Run SELECT smsbus._compile_router() as an smsbus admin."),
        );
    }
    ROUTER.set((statement, oid));
    oid
}

/// Routes the message in `tuple` (a row of smsbus.message, as it will be
/// stored): blocking rules, then routes, then round robin.
pub(crate) fn route(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> Verdict {
    // SAFETY: `desc` is smsbus.message's descriptor; its row type is the
    // router's argument type, and the tuple was formed with it.
    let result = unsafe {
        let row_type = (*desc).tdtypeid;
        let oid = router_oid(row_type);
        let row = pg_sys::heap_copy_tuple_as_datum(tuple, desc);
        pg_sys::OidFunctionCall1Coll(oid, pg_sys::InvalidOid, row)
    };
    // SAFETY: the router returns a smsbus._routing composite, never null
    // (OidFunctionCall1Coll raises on a null result).
    let verdict = unsafe { PgHeapTuple::from_composite_datum(result) };
    let field = |name: &str| {
        verdict
            .get_by_name::<String>(name)
            .unwrap_or_else(|e| crate::refuse(format!("reading the router's {name}: {e}")))
    };
    let status = field("status")
        .unwrap_or_default()
        .parse::<Status>()
        .unwrap_or_else(|e| crate::refuse(format!("the router answered {e}")));
    Verdict {
        status,
        channel: field("channel"),
        routed_by: field("routed_by"),
        reason: field("reason"),
    }
}
