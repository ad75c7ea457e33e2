//! What routing needs to know about a channel: whether it exists, is
//! enabled, can send, and has daily quota left, and taking one unit of that
//! quota for a message routed to it.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{pg_sys, PgSqlErrorCode};

use smsbus_core::owner_sql;

use crate::{direct_read, owner, raise};

/// The columns of `smsbus.channel` routing reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub enabled: bool,
    pub can_send: bool,
    pub daily_limit: Option<i32>,
}

/// Whether a message may go to a channel. The numbers are what
/// `smsbus._channel_take` returns to the compiled router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    Taken = 0,
    Missing = 1,
    Disabled = 2,
    CannotSend = 3,
    OverDailyLimit = 4,
}

impl Take {
    fn from_code(code: i32) -> Option<Take> {
        [
            Take::Taken,
            Take::Missing,
            Take::Disabled,
            Take::CannotSend,
            Take::OverDailyLimit,
        ]
        .into_iter()
        .find(|t| *t as i32 == code)
    }

    /// Why a message could not go to `name` (None when it could).
    pub fn reason(self, name: &str) -> Option<String> {
        match self {
            Take::Taken => None,
            Take::Missing => Some(format!("channel \"{name}\" does not exist")),
            Take::Disabled => Some(format!("channel \"{name}\" is disabled")),
            Take::CannotSend => Some(format!("channel \"{name}\" cannot send")),
            Take::OverDailyLimit => Some(format!("channel \"{name}\" reached its daily limit")),
        }
    }
}

struct Plans {
    senders: OwnedPreparedStatement,
    take_quota: OwnedPreparedStatement,
}

thread_local! {
    static PLANS: RefCell<Option<Plans>> = const { RefCell::new(None) };
}

fn with_plans<R>(f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>, &Plans) -> R) -> R {
    Spi::connect_mut(|client| {
        PLANS.with(|cell| {
            let mut plans = cell.borrow_mut();
            if plans.is_none() {
                let text = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
                let int4 = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
                let senders = client
                    .prepare(
                        "SELECT name FROM smsbus.channel WHERE enabled AND can_send ORDER BY name",
                        &[],
                    )
                    .unwrap_or_else(|e| {
                        crate::internal(format!("preparing the sender lookup: {e}"))
                    })
                    .keep();
                let take_quota = client
                    .prepare_mut(owner_sql::TAKE_QUOTA, &[text, int4])
                    .unwrap_or_else(|e| crate::internal(format!("preparing the quota update: {e}")))
                    .keep();
                *plans = Some(Plans {
                    senders,
                    take_quota,
                });
            }
            f(client, plans.as_ref().expect("prepared above"))
        })
    })
}

/// Channel lookups of the running statement, by name. A multi-row INSERT
/// looks each channel up once; the statement's snapshot would give every
/// row the same answer anyway.
struct Cache {
    statement: (pg_sys::LocalTransactionId, pg_sys::CommandId),
    channels: HashMap<String, Option<Channel>>,
    senders: Option<Vec<String>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        statement: (0, 0),
        channels: HashMap::new(),
        senders: None,
    });
}

/// The running statement's cache, emptied when a new statement starts.
fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    // SAFETY: MyProc is this backend's process entry, set for its lifetime.
    let statement = unsafe { ((*pg_sys::MyProc).lxid, pg_sys::GetCurrentCommandId(false)) };
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.statement != statement {
            cache.statement = statement;
            cache.channels.clear();
            cache.senders = None;
        }
        f(&mut cache)
    })
}

/// The channel called `name`, or None when there is none.
pub(crate) fn channel(name: &str) -> Option<Channel> {
    let cached = with_cache(|cache| cache.channels.get(name).copied());
    if let Some(found) = cached {
        return found;
    }
    let found = look_up(name);
    with_cache(|cache| cache.channels.insert(name.to_owned(), found));
    found
}

/// The channels that are enabled and can send, by name.
pub(crate) fn senders() -> Vec<String> {
    if let Some(names) = with_cache(|cache| cache.senders.clone()) {
        return names;
    }
    let names: Vec<String> = with_plans(|client, plans| {
        client
            .select(&plans.senders, None, &[])
            .unwrap_or_else(|e| crate::internal(format!("listing the sending channels: {e}")))
            .filter_map(|row| {
                row.get::<String>(1).unwrap_or_else(|e| {
                    crate::internal(format!("reading the sending channels: {e}"))
                })
            })
            .collect()
    });
    with_cache(|cache| cache.senders = Some(names.clone()));
    names
}

fn look_up(name: &str) -> Option<Channel> {
    let mut found = None;
    // As the statement that routes the message sees the channel.
    direct_read::scan(
        c"channel",
        direct_read::Snapshot::Statement,
        [c"enabled", c"can_send", c"daily_limit"],
        Some((c"name", name)),
        |[enabled, can_send, daily_limit], row| {
            found = Some(Channel {
                enabled: row.get::<bool>(*enabled).unwrap_or(false),
                can_send: row.get::<bool>(*can_send).unwrap_or(false),
                daily_limit: row.get::<i32>(*daily_limit),
            });
            false
        },
    );
    found
}

/// Whether a message may go to `name` now, taking one unit of the
/// channel's daily quota when it may.
pub(crate) fn take(name: &str) -> Take {
    let Some(found) = channel(name) else {
        return Take::Missing;
    };
    if !found.enabled {
        return Take::Disabled;
    }
    if !found.can_send {
        return Take::CannotSend;
    }
    let Some(limit) = found.daily_limit else {
        return Take::Taken;
    };
    // The count is the system's, whoever routes: a sender's INSERT naming
    // the channel, the router's role. So it runs in the owner context.
    let owner = owner::owner_of(direct_read::smsbus_table(c"channel_usage"));
    let taken = owner::as_owner_fixed_path(owner, || {
        with_plans(|client, plans| {
            let rows = client
                .update(&plans.take_quota, Some(1), &[name.into(), limit.into()])
                .unwrap_or_else(|e| {
                    crate::internal(format!("counting the daily limit of {name}: {e}"))
                });
            !rows.is_empty()
        })
    });
    if taken && limit > 0 {
        Take::Taken
    } else {
        Take::OverDailyLimit
    }
}

/// Takes one unit of a channel's quota for a routed message: 0 when the
/// message may go there, else why not (1 missing, 2 disabled, 3 cannot
/// send, 4 over its daily limit). Called by the compiled router.
#[pg_extern(volatile, parallel_unsafe)]
fn _channel_take(channel: &str) -> i32 {
    take(channel) as i32
}

/// The reason `_channel_take` gave code `code` for `channel`, as text.
#[pg_extern(immutable, parallel_safe)]
fn _channel_take_reason(channel: &str, code: i32) -> Option<String> {
    Take::from_code(code)
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown channel take code {code}"),
                None,
            )
        })
        .reason(channel)
}
