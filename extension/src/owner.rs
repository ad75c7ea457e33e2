//! The owner context: what the extension does with the rights of its
//! tables' owner, whoever set it off — the trace, wake-ups, daily quotas.
//!
//! It is a trust boundary (README: Security model). Inside
//! it, nothing a user can create or replace may be reached:
//! - the role switches as for a SECURITY DEFINER function, and back;
//! - statements are planned and run under a fixed `search_path`
//!   ([`FIXED_SEARCH_PATH`]), so the caller's own path (`SET search_path =
//!   myschema, pg_catalog`) cannot put a function or operator of theirs
//!   ahead of the system's;
//! - the statements' texts name every function, operator and type with
//!   its schema (`smsbus_core::owner_sql`, checked by a unit test), so not even
//!   an object in a schema of that path could stand in.
//!
//! An error inside unwinds through the (sub)transaction's abort, which
//! restores both the role and the setting, as it does for SECURITY DEFINER.

use pgrx::{pg_sys, PgLogLevel};

/// The `search_path` owner-context statements are planned and run under.
pub(crate) const FIXED_SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, smsbus, pg_temp";

/// Runs `f` as `owner`. For code that resolves no names: heap access,
/// direct inserts into tables without triggers.
pub(crate) fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut saved_user, mut saved_context) = (pg_sys::Oid::INVALID, 0);
    // SAFETY: the same switch fmgr makes for SECURITY DEFINER functions.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = f();
    // SAFETY: puts back what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}

/// Runs `f` as `owner` under [`FIXED_SEARCH_PATH`]: for SPI statements
/// and for anything that may fire a trigger.
pub(crate) fn as_owner_fixed_path<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    as_owner(owner, || with_fixed_search_path(f))
}

/// Runs `f` with `search_path` set to [`FIXED_SEARCH_PATH`], restored
/// afterwards (a GUC nest level, as fmgr keeps for `SET` clauses).
pub(crate) fn with_fixed_search_path<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the steps fmgr_security_definer takes for a function's SET
    // clause; an error in between is undone by the transaction's abort.
    let nest_level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            FIXED_SEARCH_PATH.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            PgLogLevel::ERROR as i32,
            false,
        );
        level
    };
    let result = f();
    // SAFETY: closes the nest level opened above.
    unsafe { pg_sys::AtEOXact_GUC(true, nest_level) };
    result
}

/// The owner of relation `relid`.
pub(crate) fn owner_of(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: a relcache lookup of a table of ours; the lock is kept to the
    // end of the transaction, as any statement on it keeps it.
    unsafe {
        let relation = pg_sys::table_open(relid, pg_sys::AccessShareLock as i32);
        let owner = (*(*relation).rd_rel).relowner;
        pg_sys::table_close(relation, pg_sys::NoLock as i32);
        owner
    }
}
