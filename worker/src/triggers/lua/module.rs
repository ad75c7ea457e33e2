//! The `smsbus` module of README.md#lua-triggers, as a script sees it: `send`,
//! `query`, `execute`, `message`, `http`, `log` (and `print`, which logs).
//!
//! Each call is a Rust function that answers `(true, value)` or
//! `(false, error)`; a few lines of Lua around it raise the error at the
//! script's own line (`error(..., 2)`), so `last_error` points at the
//! call that failed. `pcall` and `xpcall` are wrapped the same way, to
//! take a savepoint when database work happens inside them.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{Lua, MultiValue, Table, Value, Variadic};
use serde_json::{Map, Value as Json};
use tokio::sync::{mpsc, oneshot};

use super::calls::{BadArgument, Call, CallFailure, FromLua, Param, Reply, Request, SEND_FIELDS};
use super::http;
use super::values::{from_lua, to_lua};

/// The message being processed, while `process` runs.
pub struct Run {
    pub events: mpsc::Sender<FromLua>,
    pub message_id: i64,
    /// Open `pcall`s, innermost last: whether each took its savepoint.
    pub frames: Vec<bool>,
}

pub type RunSlot = Rc<RefCell<Option<Run>>>;

/// When the current run must end (None between runs).
pub type Deadline = Rc<Cell<Option<Instant>>>;

const PRELUDE: &str = r##"
local raw = ...
local error, select, tostring, concat = error, select, tostring, table.concat

local function call(name)
    local f = raw[name]
    return function(...)
        local ok, value = f(...)
        if not ok then error("smsbus." .. name .. ": " .. value, 2) end
        return value
    end
end

smsbus = {
    send = call("send"),
    query = call("query"),
    execute = call("execute"),
    message = call("message"),
    http = call("http"),
}

function smsbus.log(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    raw.log(concat(parts, "\t"))
end
print = smsbus.log

local pcall_, xpcall_, enter, leave = pcall, xpcall, raw.pcall_enter, raw.pcall_leave
function pcall(...) enter() return leave(pcall_(...)) end
function xpcall(...) enter() return leave(xpcall_(...)) end
"##;

/// Installs `smsbus` (and the `pcall` wrappers) in `lua`.
pub fn install(lua: &Lua, trigger: &str, run: &RunSlot, deadline: &Deadline) -> mlua::Result<()> {
    let raw = lua.create_table()?;

    let slot = run.clone();
    raw.set(
        "query",
        lua.create_function(move |lua, (sql, params): (Value, Variadic<Value>)| {
            answer(
                lua,
                sql_call(lua, &sql, &params)
                    .map(|(sql, params)| Call::Query { sql, params })
                    .map_err(CallFailure::from),
                &slot,
            )
        })?,
    )?;
    let slot = run.clone();
    raw.set(
        "execute",
        lua.create_function(move |lua, (sql, params): (Value, Variadic<Value>)| {
            answer(
                lua,
                sql_call(lua, &sql, &params)
                    .map(|(sql, params)| Call::Execute { sql, params })
                    .map_err(CallFailure::from),
                &slot,
            )
        })?,
    )?;
    let slot = run.clone();
    raw.set(
        "send",
        lua.create_function(move |lua, fields: Value| {
            answer(
                lua,
                send_call(lua, fields).map_err(CallFailure::from),
                &slot,
            )
        })?,
    )?;
    let slot = run.clone();
    raw.set(
        "message",
        lua.create_function(move |lua, id: Value| {
            let call = match id {
                Value::Integer(id) => Ok(Call::Message(id)),
                other => Err(CallFailure::from(BadArgument(format!(
                    "expects a message id, not {}",
                    other.type_name()
                )))),
            };
            answer(lua, call, &slot)
        })?,
    )?;
    let client = http::Client::default();
    let until = deadline.clone();
    raw.set(
        "http",
        lua.create_function(move |lua, spec: Value| {
            let left = until.get().map_or(http::DEFAULT_TIMEOUT, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let request = match http_request(spec) {
                Ok(request) => request,
                Err(e) => return failure(lua, e),
            };
            match client.send(request, left) {
                Ok(response) => {
                    let table = lua.create_table()?;
                    table.set("status", response.status)?;
                    table.set("headers", lua.create_table_from(response.headers)?)?;
                    table.set("body", lua.create_string(&response.body)?)?;
                    Ok((true, Value::Table(table)))
                }
                Err(e) => failure(lua, e),
            }
        })?,
    )?;
    let (name, slot) = (trigger.to_owned(), run.clone());
    raw.set(
        "log",
        lua.create_function(move |_, text: String| {
            let message = slot.borrow().as_ref().map(|r| r.message_id);
            tracing::info!(trigger = %name, message, "{text}");
            Ok(())
        })?,
    )?;
    let slot = run.clone();
    raw.set(
        "pcall_enter",
        lua.create_function(move |_, ()| {
            if let Some(run) = slot.borrow_mut().as_mut() {
                run.frames.push(false);
            }
            Ok(())
        })?,
    )?;
    let slot = run.clone();
    raw.set(
        "pcall_leave",
        lua.create_function(move |lua, results: MultiValue| {
            let took = slot
                .borrow_mut()
                .as_mut()
                .and_then(|run| run.frames.pop())
                .unwrap_or(false);
            if !took {
                return Ok(results);
            }
            let keep = matches!(results.front(), Some(Value::Boolean(true)));
            match request(&slot, Call::EndSavepoint { keep }) {
                Err(e) if keep => Ok(MultiValue::from_vec(vec![
                    Value::Boolean(false),
                    Value::String(lua.create_string(e.to_string())?),
                ])),
                _ => Ok(results),
            }
        })?,
    )?;

    lua.load(PRELUDE).set_name("=smsbus").call::<()>(raw)
}

/// Sends `call` to the chain's task and turns its answer into
/// `(ok, value)` for the prelude.
fn answer(
    lua: &Lua,
    call: Result<Call, CallFailure>,
    slot: &RunSlot,
) -> mlua::Result<(bool, Value)> {
    let reply = call.and_then(|call| request(slot, call));
    let value = match reply {
        Err(e) => return failure(lua, e),
        Ok(Reply::Rows(rows)) => {
            let table = lua.create_table_with_capacity(rows.len(), 0)?;
            for row in &rows {
                table.raw_push(to_lua(lua, row)?)?;
            }
            Value::Table(table)
        }
        Ok(Reply::Count(n)) => Value::Integer(n as i64),
        Ok(Reply::Id(id)) => Value::Integer(id),
        Ok(Reply::Message(row)) => match row {
            Some(row) => to_lua(lua, &row)?,
            None => Value::Nil,
        },
        Ok(Reply::Done) => Value::Nil,
    };
    Ok((true, value))
}

/// `(false, text)` for the prelude, which raises the text as the error.
fn failure(lua: &Lua, e: impl std::fmt::Display) -> mlua::Result<(bool, Value)> {
    Ok((false, Value::String(lua.create_string(e.to_string())?)))
}

/// Asks the chain's task, and waits: this thread has nothing else to do.
pub fn request(slot: &RunSlot, call: Call) -> Result<Reply, CallFailure> {
    let (events, open_savepoints) = {
        let mut run = slot.borrow_mut();
        let run = run.as_mut().ok_or(CallFailure::NoRun)?;
        let open = run.frames.iter().filter(|took| !**took).count();
        run.frames.iter_mut().for_each(|took| *took = true);
        (run.events.clone(), open)
    };
    let (reply, answer) = oneshot::channel();
    let request = Request {
        call,
        open_savepoints,
        reply,
    };
    events
        .blocking_send(FromLua::Call(request))
        .map_err(|_| CallFailure::GivenUp)?;
    answer.blocking_recv().map_err(|_| CallFailure::GivenUp)?
}

fn sql_call(lua: &Lua, sql: &Value, params: &[Value]) -> Result<(String, Vec<Param>), BadArgument> {
    let Value::String(sql) = sql else {
        return Err(bad(format!("expects SQL text, not {}", sql.type_name())));
    };
    let sql = sql
        .to_str()
        .map_err(|_| bad("the SQL is not UTF-8"))?
        .to_owned();
    let params = params
        .iter()
        .enumerate()
        .map(|(i, value)| param(lua, value).map_err(|e| bad(format!("parameter ${}: {e}", i + 1))))
        .collect::<Result<_, _>>()?;
    Ok((sql, params))
}

/// A Lua value as an SQL parameter in text form.
fn param(lua: &Lua, value: &Value) -> Result<Param, BadArgument> {
    Ok(Param(match value {
        Value::Nil => None,
        Value::Boolean(b) => Some(b.to_string()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.to_str().map_err(|_| bad("not UTF-8"))?.to_owned()),
        // As JSON, for a json or jsonb parameter.
        Value::Table(_) => Some(
            from_lua(lua, value.clone())
                .map_err(|e| bad(e.to_string()))?
                .to_string(),
        ),
        other => {
            return Err(bad(format!(
                "a {} cannot be a parameter",
                other.type_name()
            )))
        }
    }))
}

fn send_call(lua: &Lua, fields: Value) -> Result<Call, BadArgument> {
    let Value::Table(_) = &fields else {
        return Err(bad(format!(
            "expects a table {{to=, body=, ...}}, not {}",
            fields.type_name()
        )));
    };
    let Json::Object(fields) = from_lua(lua, fields).map_err(|e| bad(e.to_string()))? else {
        return Err(bad("expects a table {to=, body=, ...}"));
    };
    if let Some(unknown) = fields.keys().find(|k| !SEND_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field {unknown:?} (known: {})",
            SEND_FIELDS.join(", ")
        )));
    }
    Ok(Call::Send(fields))
}

fn http_request(spec: Value) -> Result<http::Request, BadArgument> {
    let Value::Table(spec) = spec else {
        return Err(bad(format!(
            "expects a table {{url=, ...}}, not {}",
            spec.type_name()
        )));
    };
    let field = |key: &str| spec.get::<Value>(key).map_err(|e| bad(e.to_string()));
    let text = |key: &str| -> Result<Option<String>, BadArgument> {
        match field(key)? {
            Value::Nil => Ok(None),
            Value::String(s) => Ok(Some(s.to_string_lossy())),
            other => Err(bad(format!(
                "{key} must be a string, not {}",
                other.type_name()
            ))),
        }
    };
    let url = text("url")?.ok_or_else(|| bad("url is missing"))?;
    let method = text("method")?;
    let body = match field("body")? {
        Value::Nil => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => {
            return Err(bad(format!(
                "body must be a string, not {}",
                other.type_name()
            )))
        }
    };
    let timeout = match field("timeout")? {
        Value::Nil => None,
        Value::Integer(n) if n > 0 => Some(Duration::from_secs(n as u64)),
        Value::Number(n) if n > 0.0 && n.is_finite() => Some(Duration::from_secs_f64(n)),
        other => {
            return Err(bad(format!(
                "timeout must be a positive number of seconds, not {other:?}"
            )))
        }
    };
    let mut headers = Vec::new();
    match field("headers")? {
        Value::Nil => {}
        Value::Table(table) => {
            for pair in table.pairs::<String, String>() {
                headers.push(pair.map_err(|e| {
                    bad(format!("headers: names and values must be strings ({e})"))
                })?);
            }
        }
        other => {
            return Err(bad(format!(
                "headers must be a table, not {}",
                other.type_name()
            )))
        }
    }
    Ok(http::Request {
        method,
        url,
        headers,
        body,
        timeout,
    })
}

fn bad(text: impl Into<String>) -> BadArgument {
    BadArgument(text.into())
}

/// A message row as the table `process` gets.
pub fn message_table(lua: &Lua, message: &Map<String, Json>) -> mlua::Result<Table> {
    match to_lua(lua, &Json::Object(message.clone()))? {
        Value::Table(table) => Ok(table),
        _ => Err(mlua::Error::runtime("a message row is an object")),
    }
}
