//! Arming a message for its triggers
//! (docs/ARCHITECTURE.md#the-trigger-runner): a message that reaches a
//! permanent status gets `trigger_status = 'pending'` when an enabled
//! trigger is for that status and its direction, else `notriggers`. The
//! enabled triggers are read once per statement; a statement that armed
//! any message wakes the worker with one NOTIFY `smsbus_triggers` (sent by
//! the statement trigger, see message_trace).

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use smsbus_core::status::Status;

/// One enabled trigger's reach: its statuses (None: every permanent one)
/// and direction (None: both).
struct Reach {
    statuses: Option<Vec<String>>,
    direction: Option<String>,
}

struct Cache {
    statement: (pg_sys::LocalTransactionId, pg_sys::CommandId),
    triggers: Option<Vec<Reach>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache { statement: (0, 0), triggers: None }) };
    /// Set when a row was armed; the statement trigger notifies and clears.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static PLAN: RefCell<Option<OwnedPreparedStatement>> = const { RefCell::new(None) };
}

/// The trigger status a message gets on entering `status`.
pub(crate) fn trigger_status_for(status: Status, inbound: bool) -> &'static str {
    if !status.is_permanent() {
        return "none";
    }
    let direction = if inbound { "in" } else { "out" };
    let armed = with_triggers(|triggers| {
        triggers.iter().any(|t| {
            t.direction.as_deref().is_none_or(|d| d == direction)
                && t.statuses
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == status.as_str()))
        })
    });
    if armed {
        ARMED.set(true);
        "pending"
    } else {
        "notriggers"
    }
}

/// Whether a row was armed since the last call (which clears it).
pub(crate) fn take_armed() -> bool {
    ARMED.replace(false)
}

fn with_triggers<R>(f: impl FnOnce(&[Reach]) -> R) -> R {
    // SAFETY: MyProc is this backend's process entry, set for its lifetime.
    let statement = unsafe { ((*pg_sys::MyProc).lxid, pg_sys::GetCurrentCommandId(false)) };
    let cached = CACHE.with(|cache| {
        let cache = cache.borrow();
        cache.statement == statement && cache.triggers.is_some()
    });
    if !cached {
        let triggers = look_up();
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.statement = statement;
            cache.triggers = Some(triggers);
        });
    }
    CACHE.with(|cache| f(cache.borrow().triggers.as_deref().unwrap_or(&[])))
}

fn look_up() -> Vec<Reach> {
    Spi::connect(|client| {
        PLAN.with(|cell| {
            let mut plan = cell.borrow_mut();
            if plan.is_none() {
                let prepared = client
                    .prepare(
                        "SELECT on_status, direction FROM smsbus._trigger_arming()",
                        &[],
                    )
                    .unwrap_or_else(|e| {
                        crate::internal(format!("preparing the trigger lookup: {e}"))
                    })
                    .keep();
                *plan = Some(prepared);
            }
            client
                .select(plan.as_ref().expect("prepared above"), None, &[])
                .unwrap_or_else(|e| crate::internal(format!("reading the enabled triggers: {e}")))
                .map(|row| {
                    // A value that does not decode is smsbus's failure, not
                    // "every status" or "both directions".
                    fn decode<T>(e: pgrx::spi::SpiError) -> T {
                        crate::internal(format!("reading the enabled triggers: {e}"))
                    }
                    Reach {
                        statuses: row.get::<Vec<String>>(1).unwrap_or_else(decode),
                        direction: row.get::<String>(2).unwrap_or_else(decode),
                    }
                })
                .collect()
        })
    })
}
