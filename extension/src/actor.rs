//! Who is changing messages, as the trace names them: `smsbus.actor` when
//! set, else the worker named in the connection's `application_name`
//! (only a member of `smsbus_worker` is believed: see
//! `smsbus_core::actor`), else the current role.
//!
//! SQL that writes the trace itself calls `smsbus._actor()` and
//! `smsbus._actor_login()` for the same answer.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The trace's two columns about who made a change.
pub struct Actor {
    /// `actor`: `worker:<id>`, a name set in `smsbus.actor`, or the role.
    pub name: String,
    /// `session_role`: the session's login role when the actor was not
    /// the role itself (who is behind 'worker:w1').
    pub session_role: Option<String>,
}

pub fn current() -> Actor {
    let named = setting(c"smsbus.actor")
        .filter(|name| !name.is_empty())
        .or_else(worker_of_application_name);
    match named {
        Some(name) => Actor {
            name,
            // SAFETY: the session's login role is set for its lifetime.
            session_role: Some(role_name(unsafe { pg_sys::GetSessionUserId() })),
        },
        None => Actor {
            // SAFETY: the current role is set for the session's lifetime.
            name: role_name(unsafe { pg_sys::GetUserId() }),
            session_role: None,
        },
    }
}

/// `smsbus._actor()`: the trace's `actor` for a change made now.
#[pg_extern(stable, parallel_safe)]
fn _actor() -> String {
    current().name
}

/// `smsbus._actor_login()`: the trace's `session_role` for a change made
/// now (null when the actor is the role itself).
#[pg_extern(stable, parallel_safe)]
fn _actor_login() -> Option<String> {
    current().session_role
}

/// `worker:<id>` from a worker's application name, when the session's
/// login role is a worker's.
fn worker_of_application_name() -> Option<String> {
    let actor = smsbus_core::actor::actor_of(&setting(c"application_name")?)?;
    // SAFETY: a catalog lookup by name (missing_ok), and a membership
    // check of the session's login role (superusers are members of all).
    let is_worker = unsafe {
        let worker = pg_sys::get_role_oid(c"smsbus_worker".as_ptr(), true);
        worker != pg_sys::InvalidOid
            && pg_sys::is_member_of_role(pg_sys::GetSessionUserId(), worker)
    };
    is_worker.then_some(actor)
}

fn setting(name: &CStr) -> Option<String> {
    // SAFETY: a plain read of a setting; missing_ok.
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    // SAFETY: a NUL-terminated setting value, when there is one.
    (!value.is_null()).then(|| {
        unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned()
    })
}

fn role_name(oid: pg_sys::Oid) -> String {
    // SAFETY: the name of a role that exists (this session's).
    unsafe { CStr::from_ptr(pg_sys::GetUserNameFromId(oid, false)) }
        .to_string_lossy()
        .into_owned()
}
