//! What `gsub` puts in place of a match: a string with `%n` escapes, a
//! table's value or a function's result.

use mlua::{Lua, MultiValue, Value};

use super::matcher::{captured_to_lua, invalid, Captured, Failure, Matcher, PatternError};

/// What `gsub` builds, bounded by the state's memory limit (Lua's own
/// buffer would count against it).
pub(super) struct Output {
    pub(super) bytes: Vec<u8>,
    pub(super) limit: usize,
}

impl Output {
    pub(super) fn push(&mut self, piece: &[u8]) -> Result<(), PatternError> {
        if self.bytes.len() + piece.len() > self.limit {
            return Err(PatternError::TooLarge { limit: self.limit });
        }
        self.bytes.extend_from_slice(piece);
        Ok(())
    }
}

pub(super) enum Replacement {
    Text(mlua::LuaString),
    Table(mlua::Table),
    Function(mlua::Function),
}

impl Replacement {
    /// Adds the replacement of the match `s..e`; whether it changed
    /// anything (a function or table that gives nil or false keeps the
    /// match).
    pub(super) fn add(
        &self,
        lua: &Lua,
        m: &Matcher,
        s: usize,
        e: usize,
        out: &mut Output,
    ) -> Result<bool, Failure> {
        let value = match self {
            Replacement::Text(text) => {
                add_text(&text.as_bytes(), m, (s, e), out)?;
                return Ok(true);
            }
            Replacement::Table(table) => {
                let key = captured_to_lua(lua, m.src, m.capture(0, (s, e))?)?;
                table.get::<Value>(key)?
            }
            Replacement::Function(function) => {
                let args = m.captures_to_lua(lua, Some((s, e)))?;
                function.call::<Value>(MultiValue::from_vec(args))?
            }
        };
        match value {
            Value::Nil | Value::Boolean(false) => {
                out.push(&m.src[s..e])?;
                Ok(false)
            }
            v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
                if let Some(text) = lua.coerce_string(v)? {
                    out.push(&text.as_bytes())?;
                }
                Ok(true)
            }
            other => Err(invalid(format!(
                "invalid replacement value (a {})",
                other.type_name()
            ))
            .into()),
        }
    }
}

/// A replacement string with its `%0`..`%9` and `%%`.
fn add_text(
    text: &[u8],
    m: &Matcher,
    whole: (usize, usize),
    out: &mut Output,
) -> Result<(), Failure> {
    let mut rest = text;
    while let Some(escape) = rest.iter().position(|&c| c == b'%') {
        out.push(&rest[..escape])?;
        let code = rest.get(escape + 1).copied().unwrap_or(0);
        match code {
            b'%' => out.push(b"%")?,
            b'0' => out.push(&m.src[whole.0..whole.1])?,
            b'1'..=b'9' => match m.capture((code - b'1') as usize, whole)? {
                Captured::Text(start, end) => out.push(&m.src[start..end])?,
                Captured::Position(p) => out.push(p.to_string().as_bytes())?,
            },
            _ => return Err(invalid("invalid use of '%' in replacement string").into()),
        }
        rest = &rest[(escape + 2).min(rest.len())..];
    }
    out.push(rest)?;
    Ok(())
}
