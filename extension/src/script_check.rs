//! Checks the script of an SQL trigger when its row is written: parsed and
//! analysed by PostgreSQL with the message id as `$1` (bigint), so a typo,
//! an unknown table or column, or a wrong type is refused at
//! `INSERT INTO smsbus.trigger`, with the position of the mistake, not
//! found when a message reaches the trigger.
//!
//! The script runs inside the transaction that records the trigger's
//! outcome, so transaction control (BEGIN, COMMIT, ROLLBACK, ...) is
//! refused too. Statements are analysed one by one against the database as
//! it is: a statement that needs an object an earlier one of the same
//! script creates is refused (create it beforehand).

use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::rule_check::{list_items, throw, with_position, ConditionError};

#[pg_extern(volatile, parallel_unsafe)]
fn _check_sql_script(script: &str, trigger: &str) {
    if let Err(error) = check(script) {
        throw(error, script, &format!("trigger {trigger} script"));
    }
}

fn check(script: &str) -> Result<(), ConditionError> {
    let text = CString::new(script).map_err(|_| {
        ConditionError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            "script contains a NUL byte",
            0,
        )
    })?;
    let parsed = with_position(|| unsafe {
        pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT)
    })?;
    // SAFETY: raw_parser returns a List of RawStmt in this memory context.
    let statements = unsafe { list_items(parsed) };
    if statements.is_empty() {
        return Err(ConditionError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            "script is empty",
            0,
        )
        .hint("An SQL trigger runs its statements with the message id as $1."));
    }
    let types = [pg_sys::INT8OID];
    for raw in statements {
        let raw = raw.cast::<pg_sys::RawStmt>();
        // SAFETY: a RawStmt from the list above.
        let (node, location) = unsafe { ((*raw).stmt, (*raw).stmt_location) };
        // SAFETY: a parse node of the statement.
        if unsafe { (*node).type_ } == pg_sys::NodeTag::T_TransactionStmt {
            return Err(ConditionError::new(
                PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION,
                "transaction control is not allowed in a trigger script",
                location + 1,
            )
            .hint("The script runs in the transaction that records the trigger's outcome."));
        }
        with_position(|| unsafe {
            pg_sys::parse_analyze_fixedparams(
                raw,
                text.as_ptr(),
                types.as_ptr(),
                types.len() as i32,
                std::ptr::null_mut(),
            )
        })?;
    }
    Ok(())
}

/// The statements of a checked script, each as its own text, for the
/// worker to run one by one with the message id as `$1` (the extended
/// query protocol takes one statement at a time).
#[pg_extern(immutable, parallel_safe)]
fn _split_sql_script(script: &str) -> Vec<String> {
    let Ok(text) = CString::new(script) else {
        return Vec::new();
    };
    let parsed =
        unsafe { pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT) };
    // SAFETY: raw_parser returns a List of RawStmt in this memory context.
    let statements = unsafe { list_items(parsed) };
    statements
        .into_iter()
        .map(|raw| {
            // SAFETY: a RawStmt from the list above; its location and length
            // are byte offsets into `script` (length 0: to the end).
            let (start, len) = unsafe {
                let raw = raw.cast::<pg_sys::RawStmt>();
                (
                    (*raw).stmt_location.max(0) as usize,
                    (*raw).stmt_len.max(0) as usize,
                )
            };
            let end = if len == 0 {
                script.len()
            } else {
                (start + len).min(script.len())
            };
            script.get(start..end).unwrap_or("").trim().to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Compiles a Lua trigger script without running it: a syntax error is
/// refused when the row is written, with the line. Nothing of the script
/// runs inside the database.
#[pg_extern(volatile, parallel_safe)]
fn _check_lua_script(script: &str, trigger: &str) {
    let lua = mlua::Lua::new();
    let compiled = lua
        .load(script)
        .set_name(format!("trigger {trigger}"))
        .into_function();
    if let Err(e) = compiled {
        let message = match e {
            mlua::Error::SyntaxError { message, .. } => message,
            other => other.to_string(),
        };
        // Lua writes `[string "trigger t"]:2: 'then' expected near '='`.
        let located = message
            .split_once("\"]:")
            .and_then(|(_, rest)| rest.split_once(": "))
            .filter(|(line, _)| line.bytes().all(|b| b.is_ascii_digit()));
        let text = match located {
            Some((line, what)) => {
                format!("Lua syntax error in trigger {trigger}, line {line}: {what}")
            }
            None => format!("Lua syntax error in trigger {trigger}: {message}"),
        };
        crate::raise(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            text,
            Some("The script must compile as Lua 5.4 and define function process(message)."),
        );
    }
}
