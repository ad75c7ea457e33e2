//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` for
//! trigger scripts: Lua 5.4's own pattern matching (a port of the matcher
//! of its `lstrlib.c`: same results, same error messages), but bounded.
//!
//! Lua's C matcher never reaches the instruction-count hook that enforces
//! the time limit, and a pattern that backtracks catastrophically
//! (`("a"):rep(40):find(("a-"):rep(40) .. "b")`) runs for longer than the
//! universe has existed, holding its thread and a core. This matcher
//! counts its steps and looks at the run's deadline every
//! `CHECK_EVERY` steps, so such a search ends with "time limit
//! exceeded" at the limit like any Lua loop; and what `gsub` builds is
//! bounded by the state's memory limit, as Lua's own buffers are.
//!
//! The functions replace those of the `string` table, which is also the
//! strings' metatable index: `s:find(p)` calls them too.
//!
//! - `matcher`: Lua's `MatchState` and `match`, with the step clock;
//! - `functions`: the four raw functions, with Lua's argument checks;
//! - `replace`: what `gsub` puts in place of a match, bounded in size;
//! - `tests`: the matcher against Lua's own results and the bounds;
//! - here: installing them behind Lua wrappers that raise at the
//!   caller's line.

mod functions;
mod matcher;
mod replace;
#[cfg(test)]
mod tests;

use std::time::Duration;

use mlua::{Lua, MultiValue, Value};

use super::module::Deadline;
use functions::{answer, find_or_match, gmatch, gsub};

/// What bounds one call: the run's deadline and the state's memory.
#[derive(Clone)]
pub struct Bounds {
    pub deadline: Deadline,
    pub time_limit: Duration,
    pub memory_limit: usize,
}

/// Raises a raw function's error at the line that called the wrapper:
/// `checked` is tail-called, so level 2 is that caller.
const WRAPPERS: &str = r#"
local raw, string = ...
local error = error
local function checked(ok, ...)
    if ok then return ... end
    error((...), 2)
end
local find, match, gmatch, gsub = raw.find, raw.match, raw.gmatch, raw.gsub
function string.find(...) return checked(find(...)) end
function string.match(...) return checked(match(...)) end
function string.gsub(...) return checked(gsub(...)) end
function string.gmatch(...)
    local ok, next_match = gmatch(...)
    if not ok then error(next_match, 2) end
    return function() return checked(next_match()) end
end
"#;

/// Replaces the pattern functions of the `string` table with these.
pub fn install(lua: &Lua, bounds: Bounds) -> mlua::Result<()> {
    let raw = lua.create_table()?;
    let b = bounds.clone();
    raw.set(
        "find",
        lua.create_function(move |lua, args: MultiValue| {
            answer(lua, find_or_match(lua, &args, true, &b))
        })?,
    )?;
    let b = bounds.clone();
    raw.set(
        "match",
        lua.create_function(move |lua, args: MultiValue| {
            answer(lua, find_or_match(lua, &args, false, &b))
        })?,
    )?;
    let b = bounds.clone();
    raw.set(
        "gmatch",
        lua.create_function(move |lua, args: MultiValue| {
            let iterator =
                gmatch(lua, &args, &b).map(|f| MultiValue::from_vec(vec![Value::Function(f)]));
            answer(lua, iterator)
        })?,
    )?;
    raw.set(
        "gsub",
        lua.create_function(move |lua, args: MultiValue| answer(lua, gsub(lua, &args, &bounds)))?,
    )?;
    let string: mlua::Table = lua.globals().get("string")?;
    lua.load(WRAPPERS)
        .set_name("=string")
        .call::<()>((raw, string))
}
