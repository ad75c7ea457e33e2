//! # smsbus — the PostgreSQL extension
//!
//! The schema lives in SQL, a file a concern: `sql/schema.sql` (types,
//! tables, indexes, roles), `queue.sql` (the queue's triggers), `send.sql`,
//! `archive.sql` (the archive's months and retention),
//! `accounts.sql`, `smpp_server.sql`, `smpp_outbox.sql`,
//! `router_check.sql`, `router_compile.sql`, `router_explain.sql`,
//! `triggers.sql`, `outbox.sql`, `inbox.sql`, `maintenance.sql`,
//! `views.sql`, `backups.sql`, `comments.sql` (what `\d+` says) and
//! `privileges.sql`. This crate adds what is better in Rust, as SQL
//! functions the schema calls:
//!
//! - [`message_triggers`]: the row triggers of `smsbus.message`: validation,
//!   normalisation, encoding and segments on INSERT; on UPDATE the state
//!   machine (its transitions are `smsbus_core::status`) and the system's
//!   columns.
//! - [`message_row`]: the queue's rows as the triggers read and change them.
//! - [`message_trace`]: the per-statement trigger that writes the trace and
//!   wakes the channels whose owners wait; [`direct_insert`]: the trace's
//!   rows written without an SQL statement; [`direct_read`]: the channel
//!   and wake-up rows read likewise.
//! - [`actor`]: who the trace says made a change (a worker by its id).
//! - [`owner`]: the owner context those writes (and daily quotas) run in:
//!   the tables' owner's rights under a fixed `search_path`.
//! - [`router`]: calls the compiled router (`sql/router_compile.sql`) for a message
//!   that became due; [`channels`]: channel lookups and daily quotas for it;
//!   [`rule_eval`]: runs of conditions built from PostgreSQL's own
//!   functions and operators, evaluated on the row (`smsbus._first_match`,
//!   `_route_first`).
//! - [`rule_check`]: checks rule conditions with PostgreSQL's parser and
//!   analyser when a rule row is written; [`script_check`]: SQL trigger
//!   scripts likewise.
//! - [`passwords`]: account passwords as salted argon2id hashes.
//! - [`arming`]: `trigger_status` of a message that reaches a permanent
//!   status, from the enabled triggers (`sql/triggers.sql`).
//! - [`text`]: `smsbus.sms_encoding(text)`, `smsbus.sms_segments(text, encoding)`.
//! - [`state`]: `smsbus.status_is_permanent(status)` and transition hints.
//! - [`settings`]: the `smsbus.*` configuration parameters.
//!
//! The path of an INSERT: the BEFORE INSERT row trigger normalises the row
//! and picks its status; the per-statement AFTER trigger writes the trace
//! and wakes the channels whose owners wait. UPDATEs take the same two
//! steps with the state machine in the row trigger
//! (docs/ARCHITECTURE.md#the-path-of-a-message).

use pgrx::prelude::*;

mod actor;
mod arming;
mod channels;
mod direct_insert;
mod direct_read;
mod message_row;
mod message_trace;
mod message_triggers;
mod owner;
mod passwords;
mod router;
mod rule_check;
mod rule_eval;
mod script_check;
mod settings;
mod state;
mod text;

::pgrx::pg_module_magic!(name, version);

// The SQL the extension installs, one concern a file (sql/); each file
// grants its own functions and privileges.sql, last, takes EXECUTE from
// PUBLIC. The order: the schema first; each file after what it needs.
extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../../sql/queue.sql",
    name = "queue",
    requires = [
        "schema",
        _message_before_insert,
        _message_before_update,
        _message_after_change,
        _actor_login
    ]
);
extension_sql_file!("../../sql/send.sql", name = "send", requires = ["schema"]);
extension_sql_file!(
    "../../sql/archive.sql",
    name = "archive",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/router_check.sql",
    name = "router_check",
    requires = ["schema", _check_condition, _restoring]
);
extension_sql_file!(
    "../../sql/router_compile.sql",
    name = "router_compile",
    requires = [
        "schema",
        "router_check",
        _channel_take,
        _channel_take_reason,
        _round_robin_take,
        _condition_kind,
        _restoring,
        _in_extension_script
    ]
);
extension_sql_file!(
    "../../sql/router_explain.sql",
    name = "router_explain",
    requires = ["router_compile"]
);
extension_sql_file!(
    "../../sql/triggers.sql",
    name = "triggers",
    requires = [
        "schema",
        _check_condition,
        _check_sql_script,
        _check_lua_script,
        _split_sql_script,
        _restoring
    ]
);
extension_sql_file!(
    "../../sql/accounts.sql",
    name = "accounts",
    requires = [
        "schema",
        "router_check",
        _password_hash,
        _password_matches,
        _restoring
    ]
);
extension_sql_file!(
    "../../sql/api_keys.sql",
    name = "api_keys",
    requires = ["accounts"]
);
extension_sql_file!(
    "../../sql/webhooks.sql",
    name = "webhooks",
    requires = ["accounts"]
);
extension_sql_file!(
    "../../sql/smpp_server.sql",
    name = "smpp_server",
    requires = ["accounts", _restoring]
);
extension_sql_file!(
    "../../sql/smpp_outbox.sql",
    name = "smpp_outbox",
    requires = ["smpp_server"]
);
extension_sql_file!(
    "../../sql/outbox.sql",
    name = "outbox",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/inbox.sql",
    name = "inbox",
    requires = ["schema", _actor, _actor_login]
);
extension_sql_file!(
    "../../sql/maintenance.sql",
    name = "maintenance",
    requires = ["schema"]
);
extension_sql_file!("../../sql/views.sql", name = "views", requires = ["schema"]);
extension_sql_file!(
    "../../sql/backups.sql",
    name = "backups",
    requires = ["triggers"]
);
extension_sql_file!(
    "../../sql/comments.sql",
    name = "comments",
    requires = [
        "triggers",
        "send",
        "archive",
        "accounts",
        "api_keys",
        "webhooks",
        "smpp_server",
        "router_explain",
        "views",
        sms_encoding,
        sms_segments,
        status_is_permanent
    ]
);
extension_sql_file!("../../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx puts a Rust backtrace into an error's DETAIL when the server
    // runs with RUST_BACKTRACE set; clients must never see one (they name
    // the server's files and code). Backtrace::capture reads this first.
    // SAFETY: the backend is single-threaded while it loads the library.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    settings::register();
}

/// Raises an SQL error with SQLSTATE 22023 (invalid_parameter_value): the
/// class of most refusals of bad input in this crate.
fn refuse(message: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
}

/// Raises an SQL error with SQLSTATE XX000 (internal_error): smsbus itself
/// failed (a statement of its own, a missing object), not the input.
fn internal(message: String) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message, None)
}

/// Raises an SQL error with the given SQLSTATE, message and hint.
fn raise(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    let mut report = pgrx::pg_sys::panic::ErrorReport::new(code, message, pgrx::function_name!());
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}
