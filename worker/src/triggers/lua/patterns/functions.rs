//! The raw `find`, `match`, `gmatch` and `gsub`, with Lua's argument
//! checks and error messages.

use mlua::{Lua, MultiValue, Value};

use super::matcher::{find_plain, invalid, Clock, Failure, Matcher, SPECIALS};
use super::replace::{Output, Replacement};
use super::Bounds;

/// What a raw function answers: `true` and its results, or `false` and
/// the message of a pattern error, which the Lua wrapper raises at the
/// caller's line as `luaL_error` would (a plain string, as scripts
/// expect of Lua's errors). Errors of Lua itself (memory, a replacement
/// function's own error) go on as they are.
pub(super) fn answer(lua: &Lua, result: Result<MultiValue, Failure>) -> mlua::Result<MultiValue> {
    match result {
        Ok(mut values) => {
            values.push_front(Value::Boolean(true));
            Ok(values)
        }
        Err(Failure::Pattern(e)) => Ok(MultiValue::from_vec(vec![
            Value::Boolean(false),
            Value::String(lua.create_string(e.to_string())?),
        ])),
        Err(Failure::Lua(e)) => Err(e),
    }
}

/// Lua's `posrelatI`: a 1-based, possibly negative, start as an offset.
fn start_offset(init: i64, len: usize) -> usize {
    let start = if init > 0 {
        init as u64
    } else if init == 0 || init < -(len as i64) {
        1
    } else {
        (len as i64 + init + 1) as u64
    };
    usize::try_from(start - 1).unwrap_or(usize::MAX)
}

fn arg(args: &MultiValue, i: usize) -> Option<&Value> {
    args.get(i)
}

fn type_name(value: Option<&Value>) -> &'static str {
    value.map_or("no value", Value::type_name)
}

fn bad_argument(n: usize, function: &str, problem: String) -> Failure {
    invalid(format!(
        "bad argument #{} to '{function}' ({problem})",
        n + 1
    ))
    .into()
}

fn check_string(
    lua: &Lua,
    args: &MultiValue,
    i: usize,
    function: &str,
) -> Result<mlua::LuaString, Failure> {
    match arg(args, i) {
        Some(value) => lua.coerce_string(value.clone())?,
        None => None,
    }
    .ok_or_else(|| {
        bad_argument(
            i,
            function,
            format!("string expected, got {}", type_name(arg(args, i))),
        )
    })
}

fn opt_integer(
    lua: &Lua,
    args: &MultiValue,
    i: usize,
    function: &str,
    default: i64,
) -> Result<i64, Failure> {
    let value = match arg(args, i) {
        None | Some(Value::Nil) => return Ok(default),
        Some(value) => value,
    };
    lua.coerce_integer(value.clone())?.ok_or_else(|| {
        let problem = match value {
            Value::Number(_) => "number has no integer representation".to_owned(),
            other => format!("number expected, got {}", other.type_name()),
        };
        bad_argument(i, function, problem)
    })
}

/// `string.find` (`find`) and `string.match`.
pub(super) fn find_or_match(
    lua: &Lua,
    args: &MultiValue,
    find: bool,
    bounds: &Bounds,
) -> Result<MultiValue, Failure> {
    let name = if find { "find" } else { "match" };
    let subject = check_string(lua, args, 0, name)?;
    let pattern = check_string(lua, args, 1, name)?;
    let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
    let init = start_offset(opt_integer(lua, args, 2, name, 1)?, src.len());
    let fail = || Ok(MultiValue::from_vec(vec![Value::Nil]));
    if init > src.len() {
        return fail();
    }
    let mut clock = Clock::new(name, bounds);
    let plain = arg(args, 3).is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
    if find && (plain || !pat.iter().any(|c| SPECIALS.contains(c))) {
        return match find_plain(&src[init..], &pat, &mut clock)? {
            Some(at) => Ok(MultiValue::from_vec(vec![
                Value::Integer((init + at + 1) as i64),
                Value::Integer((init + at + pat.len()) as i64),
            ])),
            None => fail(),
        };
    }
    let (anchored, pat) = match pat.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, &pat[..]),
    };
    let mut matcher = Matcher::new(&src, pat, &mut clock);
    let mut start = init;
    loop {
        matcher.reset();
        if let Some(end) = matcher.do_match(start, 0)? {
            let values = if find {
                let mut values = vec![Value::Integer(start as i64 + 1), Value::Integer(end as i64)];
                values.extend(matcher.captures_to_lua(lua, None)?);
                values
            } else {
                matcher.captures_to_lua(lua, Some((start, end)))?
            };
            return Ok(MultiValue::from_vec(values));
        }
        start += 1;
        if start > src.len() || anchored {
            return fail();
        }
    }
}

/// `string.gmatch`: an iterator over the matches.
pub(super) fn gmatch(
    lua: &Lua,
    args: &MultiValue,
    bounds: &Bounds,
) -> Result<mlua::Function, Failure> {
    let subject = check_string(lua, args, 0, "gmatch")?;
    let pattern = check_string(lua, args, 1, "gmatch")?;
    let len = subject.as_bytes().len();
    let mut next = start_offset(opt_integer(lua, args, 2, "gmatch", 1)?, len).min(len + 1);
    let mut last_match = None;
    let bounds = bounds.clone();
    let iterator = lua.create_function_mut(move |lua, ()| {
        let found = (|| -> Result<MultiValue, Failure> {
            let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
            let mut clock = Clock::new("gmatch", &bounds);
            let mut matcher = Matcher::new(&src, &pat, &mut clock);
            while next <= src.len() {
                matcher.reset();
                let start = next;
                next += 1;
                if let Some(end) = matcher.do_match(start, 0)? {
                    if Some(end) != last_match {
                        next = end;
                        last_match = Some(end);
                        return Ok(MultiValue::from_vec(
                            matcher.captures_to_lua(lua, Some((start, end)))?,
                        ));
                    }
                }
            }
            Ok(MultiValue::new())
        })();
        answer(lua, found)
    })?;
    Ok(iterator)
}

/// `string.gsub`.
pub(super) fn gsub(lua: &Lua, args: &MultiValue, bounds: &Bounds) -> Result<MultiValue, Failure> {
    let subject = check_string(lua, args, 0, "gsub")?;
    let pattern = check_string(lua, args, 1, "gsub")?;
    let replacement = match arg(args, 2) {
        Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
            Replacement::Text(lua.coerce_string(v.clone())?.ok_or_else(|| {
                bad_argument(2, "gsub", "string/function/table expected".to_owned())
            })?)
        }
        Some(Value::Table(t)) => Replacement::Table(t.clone()),
        Some(Value::Function(f)) => Replacement::Function(f.clone()),
        other => {
            return Err(bad_argument(
                2,
                "gsub",
                format!("string/function/table expected, got {}", type_name(other)),
            ))
        }
    };
    let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
    let max = opt_integer(lua, args, 3, "gsub", src.len() as i64 + 1)?;
    let (anchored, pat) = match pat.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, &pat[..]),
    };
    let mut clock = Clock::new("gsub", bounds);
    let mut matcher = Matcher::new(&src, pat, &mut clock);
    let mut out = Output {
        bytes: Vec::new(),
        limit: bounds.memory_limit,
    };
    let (mut at, mut last_match, mut count, mut changed) = (0, None, 0i64, false);
    while count < max {
        matcher.reset();
        match matcher.do_match(at, 0)? {
            Some(end) if Some(end) != last_match => {
                count += 1;
                changed |= replacement.add(lua, &matcher, at, end, &mut out)?;
                at = end;
                last_match = Some(end);
            }
            _ if at < src.len() => {
                out.push(&src[at..at + 1])?;
                at += 1;
            }
            _ => break,
        }
        if anchored {
            break;
        }
    }
    let result = if changed {
        out.push(&src[at..])?;
        Value::String(lua.create_string(&out.bytes)?)
    } else {
        Value::String(subject.clone())
    };
    Ok(MultiValue::from_vec(vec![result, Value::Integer(count)]))
}
