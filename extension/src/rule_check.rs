//! Checks the condition of a rule (a route, a blocking rule) when its row is
//! written, with PostgreSQL's own parser and analyser: a mistake is refused
//! at `INSERT INTO smsbus.route`, never found later at send time.
//!
//! A condition is one SQL boolean expression over the message's columns,
//! written unqualified (`to_address LIKE '+31%'`) or as `message.column`.
//! It is parsed in PL/pgSQL-expression mode, so a second statement or a
//! stray `;` is a syntax error, and the parse tree must be a bare
//! expression: no FROM, WHERE, GROUP BY, ... smuggled in after it. It is
//! then analysed as `SELECT <condition> FROM smsbus.message AS message`,
//! which resolves its columns, functions, operators and subqueries exactly
//! as the compiled router will.
//!
//! Errors carry the condition as their internal query and the position of
//! the mistake within it (psql draws the caret under it), like the errors
//! PL/pgSQL reports for its expressions.

use std::cell::Cell;
use std::ffi::{c_void, CStr, CString};
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// A refused condition: what is wrong, and where (1-based; 0 = nowhere in
/// particular).
#[derive(Debug)]
pub(crate) struct ConditionError {
    code: PgSqlErrorCode,
    message: String,
    hint: Option<String>,
    position: i32,
}

impl ConditionError {
    pub(crate) fn new(code: PgSqlErrorCode, message: impl Into<String>, position: i32) -> Self {
        ConditionError {
            code,
            message: message.into(),
            hint: None,
            position,
        }
    }

    pub(crate) fn hint(mut self, hint: &str) -> Self {
        self.hint = Some(hint.to_owned());
        self
    }
}

/// Refuses a condition that is not one boolean expression over the message.
/// `rule` names the rule in the error's context ("route 4").
#[pg_extern(volatile, parallel_unsafe)]
fn _check_condition(condition: &str, rule: &str) {
    if let Err(error) = check(condition) {
        throw(error, condition, &format!("{rule} condition"));
    }
}

pub(crate) fn check(condition: &str) -> Result<(), ConditionError> {
    analysed(condition).map(|_| ())
}

/// The condition parsed and analysed as `SELECT <condition> FROM
/// smsbus.message AS message`, or why it is refused.
pub(crate) fn analysed(condition: &str) -> Result<*mut pg_sys::Query, ConditionError> {
    if condition.trim().is_empty() {
        return Err(ConditionError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            "condition is empty",
            0,
        )
        .hint("Write true to match every message."));
    }
    let text = CString::new(condition).map_err(|_| {
        ConditionError::new(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            "condition contains a NUL byte",
            0,
        )
    })?;
    let select = parse(&text)?;
    analyse(select, &text)
}

/// Parses the text as one PL/pgSQL expression and returns its SelectStmt,
/// refused unless it is a bare expression.
fn parse(text: &CStr) -> Result<*mut pg_sys::RawStmt, ConditionError> {
    let parsed = with_position(|| unsafe {
        pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_PLPGSQL_EXPR)
    })?;
    // SAFETY: raw_parser returns a List of RawStmt in this memory context.
    unsafe {
        let statements = list_items(parsed);
        let [raw] = statements[..] else {
            return Err(not_single(0));
        };
        let raw = raw.cast::<pg_sys::RawStmt>();
        let select = (*raw).stmt.cast::<pg_sys::SelectStmt>();
        if select.is_null() || (*select).type_ != pg_sys::NodeTag::T_SelectStmt {
            return Err(not_single(0));
        }
        let s = &*select;
        let targets = list_items(s.targetList);
        let position = |node: *mut c_void| pg_sys::exprLocation(node.cast()) + 1;
        let clause = |what: &str, node: *mut c_void| {
            ConditionError::new(
                PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
                format!("{what} is not allowed in a condition"),
                if node.is_null() { 0 } else { position(node) },
            )
            .hint("A condition is one boolean expression; query other tables in a subquery, e.g. EXISTS (SELECT 1 FROM ...).")
        };
        let first = |list: *mut pg_sys::List| {
            list_items(list)
                .first()
                .copied()
                .unwrap_or(std::ptr::null_mut())
        };
        if !s.distinctClause.is_null() {
            return Err(clause("DISTINCT", std::ptr::null_mut()));
        }
        if !s.fromClause.is_null() {
            return Err(clause("FROM", first(s.fromClause)));
        }
        if !s.whereClause.is_null() {
            return Err(clause("WHERE", s.whereClause.cast()));
        }
        if !s.groupClause.is_null() {
            return Err(clause("GROUP BY", first(s.groupClause)));
        }
        if !s.havingClause.is_null() {
            return Err(clause("HAVING", s.havingClause.cast()));
        }
        if !s.windowClause.is_null() {
            return Err(clause("WINDOW", std::ptr::null_mut()));
        }
        if !s.sortClause.is_null() {
            return Err(clause("ORDER BY", first(s.sortClause)));
        }
        if !s.limitCount.is_null() || !s.limitOffset.is_null() {
            return Err(clause("LIMIT or OFFSET", std::ptr::null_mut()));
        }
        if !s.lockingClause.is_null() {
            return Err(clause("FOR UPDATE", std::ptr::null_mut()));
        }
        match targets[..] {
            [] => return Err(not_single(0)),
            [target] => {
                let target = target.cast::<pg_sys::ResTarget>();
                if !(*target).name.is_null() {
                    return Err(clause("AS", std::ptr::null_mut()));
                }
            }
            [_, second, ..] => {
                let second = second.cast::<pg_sys::ResTarget>();
                return Err(not_single((*second).location + 1));
            }
        }
        Ok(raw)
    }
}

fn not_single(position: i32) -> ConditionError {
    ConditionError::new(
        PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
        "a condition is one boolean expression",
        position,
    )
}

/// Analyses the expression over the message's columns and checks its type.
fn analyse(raw: *mut pg_sys::RawStmt, text: &CStr) -> Result<*mut pg_sys::Query, ConditionError> {
    let query = with_position(|| unsafe {
        let select = (*raw).stmt.cast::<pg_sys::SelectStmt>();
        let message = pg_sys::makeRangeVar(
            c"smsbus".as_ptr().cast_mut(),
            c"message".as_ptr().cast_mut(),
            -1,
        );
        (*message).alias = pg_sys::makeAlias(c"message".as_ptr(), std::ptr::null_mut());
        (*select).fromClause = pg_sys::lappend(std::ptr::null_mut(), message.cast());
        pg_sys::parse_analyze_fixedparams(
            raw,
            text.as_ptr(),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        )
    })?;
    // SAFETY: parse analysis returned a Query for our one SELECT.
    unsafe {
        let q = &*query;
        if q.hasAggs || q.hasWindowFuncs || q.hasTargetSRFs {
            return Err(ConditionError::new(
                PgSqlErrorCode::ERRCODE_GROUPING_ERROR,
                "aggregate, window and set-returning functions are not allowed in a condition",
                0,
            )
            .hint("Use them inside a subquery."));
        }
        let targets = list_items(q.targetList);
        let [entry] = targets[..] else {
            // `message.*` expands to every column.
            return Err(not_single(0));
        };
        let expr = (*entry.cast::<pg_sys::TargetEntry>())
            .expr
            .cast::<pg_sys::Node>();
        let type_oid = pg_sys::exprType(expr);
        if type_oid != pg_sys::BOOLOID {
            let name = CStr::from_ptr(pg_sys::format_type_be(type_oid))
                .to_string_lossy()
                .into_owned();
            return Err(ConditionError::new(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!("a condition must be of type boolean, not {name}"),
                pg_sys::exprLocation(expr) + 1,
            ));
        }
    }
    Ok(query)
}

/// The elements of a pointer List (empty for NIL).
pub(crate) unsafe fn list_items(list: *mut pg_sys::List) -> Vec<*mut c_void> {
    if list.is_null() {
        return Vec::new();
    }
    let l = &*list;
    (0..l.length as usize)
        .map(|i| (*l.elements.add(i)).ptr_value)
        .collect()
}

thread_local! {
    /// The cursor position of the last error raised under `with_position`.
    static ERROR_POSITION: Cell<i32> = const { Cell::new(0) };
}

/// Runs parser code and turns an error it raises into a ConditionError
/// that keeps PostgreSQL's message, SQLSTATE and error position.
pub(crate) fn with_position<T>(f: impl FnOnce() -> T) -> Result<T, ConditionError> {
    unsafe extern "C-unwind" fn record_position(_: *mut c_void) {
        // Runs inside errfinish, while the error is the current one.
        ERROR_POSITION.set(unsafe { pg_sys::geterrposition() });
    }
    ERROR_POSITION.set(0);
    let mut callback = pg_sys::ErrorContextCallback {
        // SAFETY: the error context stack is this backend's.
        previous: unsafe { pg_sys::error_context_stack },
        callback: Some(record_position),
        arg: std::ptr::null_mut(),
    };
    unsafe { pg_sys::error_context_stack = &mut callback };
    let result = PgTryBuilder::new(AssertUnwindSafe(|| Ok(f())))
        .catch_others(|caught| match caught {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                Err(ConditionError {
                    code: report.sql_error_code(),
                    message: report.message().to_owned(),
                    hint: report.hint().map(str::to_owned),
                    position: ERROR_POSITION.get(),
                })
            }
            other => other.rethrow(),
        })
        .execute();
    unsafe { pg_sys::error_context_stack = callback.previous };
    result
}

/// The longest internal query an error quotes: a longer text is cut to
/// this many characters around the error's position.
const QUERY_CHARACTERS: usize = 1000;
/// The longest message an error keeps (the parser quotes tokens in it).
const MESSAGE_CHARACTERS: usize = 300;

/// `text` cut to [`QUERY_CHARACTERS`] around `position` (1-based, in
/// characters; 0 for none), with "…" where cut, and the position in it.
fn around_position(text: &str, position: i32) -> (String, i32) {
    let length = text.chars().count();
    if length <= QUERY_CHARACTERS {
        return (text.to_owned(), position);
    }
    let at = usize::try_from(position.max(1) - 1).unwrap_or(0);
    let start = at
        .saturating_sub(QUERY_CHARACTERS / 2)
        .min(length - QUERY_CHARACTERS);
    let window: String = text.chars().skip(start).take(QUERY_CHARACTERS).collect();
    let before = if start > 0 { "…" } else { "" };
    let after = if start + QUERY_CHARACTERS < length {
        "…"
    } else {
        ""
    };
    let shifted = if position > 0 {
        (at - start + 1 + before.chars().count()) as i32
    } else {
        0
    };
    (format!("{before}{window}{after}"), shifted)
}

/// `text` cut to `max` characters, with "…" where cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Raises the error with the checked text (a condition, a script) as its
/// internal query and `context` as its context, the way PL/pgSQL reports
/// its expressions' errors.
///
/// pgrx's own error reports carry no position, so this fills an ErrorData
/// and throws it with ThrowErrorData directly. It longjmps out of this
/// frame: everything Rust owns is dropped first, and the strings it passes
/// are palloc'd (PostgreSQL frees them with the transaction).
pub(crate) fn throw(error: ConditionError, text: &str, context: &str) -> ! {
    let (text, position) = around_position(text, error.position);
    let message = cut(&error.message, MESSAGE_CHARACTERS);
    unsafe extern "C-unwind" {
        #[link_name = "ThrowErrorData"]
        fn throw_error_data(edata: *mut pg_sys::ErrorData);
    }
    let pstr = |s: &str| unsafe {
        let c = CString::new(s.replace('\0', "")).unwrap_or_default();
        pg_sys::pstrdup(c.as_ptr())
    };
    let mut data = pg_sys::ErrorData {
        elevel: PgLogLevel::ERROR as i32,
        sqlerrcode: error.code as i32,
        message: pstr(&message),
        hint: error.hint.as_deref().map_or(std::ptr::null_mut(), pstr),
        context: pstr(context),
        internalquery: pstr(&text),
        internalpos: position,
        filename: c"rule_check.rs".as_ptr(),
        lineno: line!() as i32,
        funcname: c"smsbus_check".as_ptr(),
        ..Default::default()
    };
    drop(error);
    // SAFETY: a complete ErrorData; ThrowErrorData copies what it keeps.
    unsafe { throw_error_data(&mut data) };
    unreachable!("ThrowErrorData does not return for an ERROR")
}
