//! # smsbus — the PostgreSQL extension
//!
//! The schema lives in SQL (`sql/schema.sql`: types, tables, indexes, roles;
//! `sql/api.sql`: triggers, the state machine's enforcement, the user and
//! worker functions, views). This crate adds what is better in Rust, as SQL
//! functions the schema calls:
//!
//! - [`text`]: `smsbus.sms_encoding(text)`, `smsbus.sms_segments(text, encoding)`
//!   and the checked segment count used on insert.
//! - [`address`]: destination/sender normalisation and TON/NPI.
//! - [`state`]: the state machine's transition check.
//! - [`settings`]: the `smsbus.*` configuration parameters.
//!
//! The path of an INSERT: `sql/api.sql`'s `_before_insert` trigger calls the
//! address and text functions, picks the status, and the per-statement
//! `_after_insert` trigger writes the trace and wakes the channels.

use pgrx::prelude::*;

mod address;
mod settings;
mod state;
mod text;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../../sql/api.sql", name = "api", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
}

/// Raises an SQL error with SQLSTATE 22023 (invalid_parameter_value): the
/// class of every refusal of bad input in this crate.
fn refuse(message: String) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message
    );
}
