//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` for
//! trigger scripts: Lua 5.4's own pattern matching (a port of the matcher
//! of its `lstrlib.c`: same results, same error messages), but bounded.
//!
//! Lua's C matcher never reaches the instruction-count hook that enforces
//! the time limit, and a pattern that backtracks catastrophically
//! (`("a"):rep(40):find(("a-"):rep(40) .. "b")`) runs for longer than the
//! universe has existed, holding its thread and a core. This matcher
//! counts its steps and looks at the run's deadline every
//! [`CHECK_EVERY`] of them, so such a search ends with "time limit
//! exceeded" at the limit like any Lua loop; and what `gsub` builds is
//! bounded by the state's memory limit, as Lua's own buffers are.
//!
//! The functions replace those of the `string` table, which is also the
//! strings' metatable index: `s:find(p)` calls them too.

use std::time::{Duration, Instant};

use mlua::{Lua, MultiValue, Value};

use super::module::Deadline;

/// Captures one pattern may hold (LUA_MAXCAPTURES).
const MAX_CAPTURES: usize = 32;
/// Nested matches (MAXCCALLS): the matcher recurses, as Lua's does.
const MAX_DEPTH: u32 = 200;
/// Steps between looks at the clock.
const CHECK_EVERY: u64 = 1024;
/// Characters that make a pattern more than a plain string.
const SPECIALS: &[u8] = b"^$*+?.([%-";

const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;

/// What stops a match.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// A mistake in the pattern or the replacement, in Lua's own words.
    #[error("{0}")]
    Invalid(String),
    #[error("time limit exceeded ({} s) in string.{function}", limit.as_secs_f64())]
    TimeUp {
        function: &'static str,
        limit: Duration,
    },
    #[error("not enough memory: string.gsub's result would pass the limit of {} MiB", limit / (1024 * 1024))]
    TooLarge { limit: usize },
}

fn invalid(message: impl Into<String>) -> PatternError {
    PatternError::Invalid(message.into())
}

/// What bounds one call: the run's deadline and the state's memory.
#[derive(Clone)]
pub struct Bounds {
    pub deadline: Deadline,
    pub time_limit: Duration,
    pub memory_limit: usize,
}

/// Counts the steps of one call and stops it at the deadline.
struct Clock {
    function: &'static str,
    steps: u64,
    next_look: u64,
    deadline: Option<Instant>,
    limit: Duration,
}

impl Clock {
    fn new(function: &'static str, bounds: &Bounds) -> Clock {
        Clock {
            function,
            steps: 0,
            next_look: 0,
            deadline: bounds.deadline.get(),
            limit: bounds.time_limit,
        }
    }

    fn tick(&mut self, steps: u64) -> Result<(), PatternError> {
        self.steps += steps;
        if self.steps >= self.next_look {
            self.next_look = self.steps + CHECK_EVERY;
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PatternError::TimeUp {
                    function: self.function,
                    limit: self.limit,
                });
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Capture {
    init: usize,
    /// A length, or [`CAP_UNFINISHED`] or [`CAP_POSITION`].
    len: isize,
}

/// One capture's value: a piece of the subject, or a position (`()`).
enum Captured {
    Text(usize, usize),
    Position(usize),
}

/// Lua's `MatchState`, with indices for pointers. Reading past the end of
/// the pattern or the subject gives 0, as C's terminating NUL does.
struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    captures: [Capture; MAX_CAPTURES],
    depth: u32,
    clock: &'a mut Clock,
}

impl<'a> Matcher<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], clock: &'a mut Clock) -> Matcher<'a> {
        Matcher {
            src,
            pat,
            level: 0,
            captures: [Capture { init: 0, len: 0 }; MAX_CAPTURES],
            depth: MAX_DEPTH,
            clock,
        }
    }

    /// Ready for a match at another position.
    fn reset(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    fn pat_at(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    fn src_at(&self, s: usize) -> u8 {
        self.src.get(s).copied().unwrap_or(0)
    }

    /// Where the single-character class at `p` ends.
    fn class_end(&self, mut p: usize) -> Result<usize, PatternError> {
        let c = self.pat_at(p);
        p += 1;
        match c {
            b'%' => {
                if p >= self.pat.len() {
                    return Err(invalid("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.pat_at(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return Err(invalid("malformed pattern (missing ']')"));
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == b'%' && p < self.pat.len() {
                        p += 1; // an escape such as '%]'
                    }
                    if self.pat_at(p) == b']' {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    /// `[...]` at `p`, its `]` at `end`.
    fn match_bracket_class(&self, c: u8, mut p: usize, end: usize) -> bool {
        let mut sign = true;
        if self.pat_at(p + 1) == b'^' {
            sign = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= end {
                return !sign;
            }
            let pc = self.pat[p];
            if pc == b'%' {
                p += 1;
                if match_class(c, self.pat_at(p)) {
                    return sign;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < end {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sign;
                }
            } else if pc == c {
                return sign;
            }
        }
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat_at(p) {
            b'.' => true,
            b'%' => match_class(c, self.pat_at(p + 1)),
            b'[' => self.match_bracket_class(c, p, ep - 1),
            literal => literal == c,
        }
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatternError> {
        if p + 1 >= self.pat.len() {
            return Err(invalid("malformed pattern (missing arguments to '%b')"));
        }
        if self.src_at(s) != self.pat[p] {
            return Ok(None);
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        let mut depth = 1;
        for (i, &c) in self.src.iter().enumerate().skip(s + 1) {
            self.clock.tick(1)?;
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, PatternError> {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.clock.tick(1)?;
            i += 1;
        }
        // The most repetitions that let the rest match.
        loop {
            if let Some(end) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(end));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(
        &mut self,
        mut s: usize,
        p: usize,
        ep: usize,
    ) -> Result<Option<usize>, PatternError> {
        loop {
            if let Some(end) = self.do_match(s, ep + 1)? {
                return Ok(Some(end));
            }
            if !self.single_match(s, p, ep) {
                return Ok(None);
            }
            s += 1;
        }
    }

    fn start_capture(
        &mut self,
        s: usize,
        p: usize,
        what: isize,
    ) -> Result<Option<usize>, PatternError> {
        if self.level >= MAX_CAPTURES {
            return Err(invalid("too many captures"));
        }
        self.captures[self.level] = Capture { init: s, len: what };
        self.level += 1;
        let end = self.do_match(s, p)?;
        if end.is_none() {
            self.level -= 1;
        }
        Ok(end)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatternError> {
        let open = (0..self.level)
            .rev()
            .find(|&l| self.captures[l].len == CAP_UNFINISHED)
            .ok_or_else(|| invalid("invalid pattern capture"))?;
        self.captures[open].len = (s - self.captures[open].init) as isize;
        let end = self.do_match(s, p)?;
        if end.is_none() {
            self.captures[open].len = CAP_UNFINISHED;
        }
        Ok(end)
    }

    /// `%1`..`%9` in a pattern: the text of that capture again.
    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>, PatternError> {
        let l = self.check_capture(digit)?;
        let Capture { init, len } = self.captures[l];
        let Ok(len) = usize::try_from(len) else {
            return Ok(None); // a position capture matches no text
        };
        self.clock.tick(len as u64)?;
        let fits = self.src.len() - s >= len;
        Ok((fits && self.src[init..init + len] == self.src[s..s + len]).then_some(s + len))
    }

    fn check_capture(&self, digit: u8) -> Result<usize, PatternError> {
        let l = digit as isize - b'1' as isize;
        if l < 0 || l as usize >= self.level || self.captures[l as usize].len == CAP_UNFINISHED {
            return Err(invalid(format!("invalid capture index %{}", l + 1)));
        }
        Ok(l as usize)
    }

    /// Matches the pattern from `p` against the subject from `s`; where
    /// the match ends.
    fn do_match(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, PatternError> {
        if self.depth == 0 {
            return Err(invalid("pattern too complex"));
        }
        self.depth -= 1;
        self.clock.tick(1)?;
        let end = loop {
            if p == self.pat.len() {
                break Some(s);
            }
            match self.pat[p] {
                b'(' if self.pat_at(p + 1) == b')' => {
                    break self.start_capture(s, p + 2, CAP_POSITION)?;
                }
                b'(' => break self.start_capture(s, p + 1, CAP_UNFINISHED)?,
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => break (s == self.src.len()).then_some(s),
                b'%' if self.pat_at(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(after) => {
                        s = after;
                        p += 4;
                    }
                    None => break None,
                },
                b'%' if self.pat_at(p + 1) == b'f' => {
                    p += 2;
                    if self.pat_at(p) != b'[' {
                        return Err(invalid("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    if !self.match_bracket_class(previous, p, ep - 1)
                        && self.match_bracket_class(self.src_at(s), p, ep - 1)
                    {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                b'%' if self.pat_at(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pat[p + 1])? {
                        Some(after) => {
                            s = after;
                            p += 2;
                        }
                        None => break None,
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.pat_at(ep);
                    if !self.single_match(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1; // none is enough
                            continue;
                        }
                        break None;
                    }
                    match suffix {
                        b'?' => {
                            if let Some(end) = self.do_match(s + 1, ep + 1)? {
                                break Some(end);
                            }
                            p = ep + 1;
                        }
                        b'+' => break self.max_expand(s + 1, p, ep)?,
                        b'*' => break self.max_expand(s, p, ep)?,
                        b'-' => break self.min_expand(s, p, ep)?,
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        };
        self.depth += 1;
        Ok(end)
    }

    /// Capture `i` of the match `s..e` (with no captures, capture 0 is the
    /// whole match).
    fn capture(&self, i: usize, whole: (usize, usize)) -> Result<Captured, PatternError> {
        if i >= self.level {
            if i != 0 {
                return Err(invalid(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Captured::Text(whole.0, whole.1));
        }
        let Capture { init, len } = self.captures[i];
        match len {
            CAP_UNFINISHED => Err(invalid("unfinished capture")),
            CAP_POSITION => Ok(Captured::Position(init + 1)),
            len => Ok(Captured::Text(init, init + len as usize)),
        }
    }

    /// How many values the match gives: its captures, or the whole match
    /// when there are none (`whole` is None for `find`, which returns the
    /// positions instead).
    fn capture_count(&self, whole: Option<(usize, usize)>) -> usize {
        if self.level == 0 && whole.is_some() {
            1
        } else {
            self.level
        }
    }

    fn captures_to_lua(
        &self,
        lua: &Lua,
        whole: Option<(usize, usize)>,
    ) -> Result<Vec<Value>, Failure> {
        (0..self.capture_count(whole))
            .map(|i| captured_to_lua(lua, self.src, self.capture(i, whole.unwrap_or((0, 0)))?))
            .collect()
    }
}

fn captured_to_lua(lua: &Lua, src: &[u8], captured: Captured) -> Result<Value, Failure> {
    Ok(match captured {
        Captured::Text(start, end) => Value::String(lua.create_string(&src[start..end])?),
        Captured::Position(position) => Value::Integer(position as i64),
    })
}

/// A class letter (`%a`, `%D`, ...) or a literal, in the C locale.
fn match_class(c: u8, class: u8) -> bool {
    let matched = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace includes the vertical tab, Rust's is_ascii_whitespace not.
        b's' => matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' '),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return class == c,
    };
    if class.is_ascii_lowercase() {
        matched
    } else {
        !matched
    }
}

/// A plain substring search, bounded like the rest.
fn find_plain(hay: &[u8], needle: &[u8], clock: &mut Clock) -> Result<Option<usize>, PatternError> {
    let Some((&first, _)) = needle.split_first() else {
        return Ok(Some(0));
    };
    if needle.len() > hay.len() {
        return Ok(None);
    }
    let last_start = hay.len() - needle.len();
    let mut at = 0;
    while at <= last_start {
        let Some(skip) = hay[at..=last_start].iter().position(|&c| c == first) else {
            return Ok(None);
        };
        at += skip;
        clock.tick(needle.len() as u64 + skip as u64 / 64)?;
        if hay[at..at + needle.len()] == *needle {
            return Ok(Some(at));
        }
        at += 1;
    }
    Ok(None)
}

/// Why a call failed: the pattern's own error, or Lua's.
enum Failure {
    Pattern(PatternError),
    Lua(mlua::Error),
}

impl From<PatternError> for Failure {
    fn from(e: PatternError) -> Failure {
        Failure::Pattern(e)
    }
}

impl From<mlua::Error> for Failure {
    fn from(e: mlua::Error) -> Failure {
        Failure::Lua(e)
    }
}

/// What a raw function answers: `true` and its results, or `false` and
/// the message of a pattern error, which the Lua wrapper raises at the
/// caller's line as `luaL_error` would (a plain string, as scripts
/// expect of Lua's errors). Errors of Lua itself (memory, a replacement
/// function's own error) go on as they are.
fn answer(lua: &Lua, result: Result<MultiValue, Failure>) -> mlua::Result<MultiValue> {
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
fn find_or_match(
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
fn gmatch(lua: &Lua, args: &MultiValue, bounds: &Bounds) -> Result<mlua::Function, Failure> {
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
fn gsub(lua: &Lua, args: &MultiValue, bounds: &Bounds) -> Result<MultiValue, Failure> {
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

/// What `gsub` builds, bounded by the state's memory limit (Lua's own
/// buffer would count against it).
struct Output {
    bytes: Vec<u8>,
    limit: usize,
}

impl Output {
    fn push(&mut self, piece: &[u8]) -> Result<(), PatternError> {
        if self.bytes.len() + piece.len() > self.limit {
            return Err(PatternError::TooLarge { limit: self.limit });
        }
        self.bytes.extend_from_slice(piece);
        Ok(())
    }
}

enum Replacement {
    Text(mlua::LuaString),
    Table(mlua::Table),
    Function(mlua::Function),
}

impl Replacement {
    /// Adds the replacement of the match `s..e`; whether it changed
    /// anything (a function or table that gives nil or false keeps the
    /// match).
    fn add(
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A state with Lua's own functions kept as `native.find`, ... and
    /// these installed in `string`, with `limit` from now on.
    fn lua_with_both(limit: Duration) -> Lua {
        let lua = Lua::new();
        lua.load(
            "native = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }",
        )
        .exec()
        .unwrap();
        let deadline: Deadline = Rc::new(Cell::new(Some(Instant::now() + limit)));
        install(
            &lua,
            Bounds {
                deadline,
                time_limit: limit,
                memory_limit: 1 << 20,
            },
        )
        .unwrap();
        lua
    }

    /// Every call gives what Lua's own gives: the same values, or an error
    /// with the same message.
    #[test]
    fn results_and_errors_are_lua_s_own() {
        let lua = lua_with_both(Duration::from_secs(60));
        let mismatches: Vec<String> = lua
            .load(
                r##"
local function show(ok, ...)
    local parts = { tostring(ok) }
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        -- Lua cannot name a function called through pcall ('?'); these
        -- name themselves.
        parts[#parts + 1] = math.type(v) or type(v) == "string" and ("%q"):format(v:gsub("to '%?'", "to '*'")
                                                                              :gsub("to '%a+'", "to '*'"))
                            or type(v)
    end
    return table.concat(parts, ",")
end
local function gmatch_all(gmatch, ...)
    local out = {}
    for a, b, c in gmatch(...) do out[#out + 1] = show(true, a, b, c) end
    return table.concat(out, ";")
end
local subjects = { "", "hello world", "  key = value  ", "THE (quick) [brown] fox", "a.b.c",
                   "x = 1, y = 22, z = 333", "f(a(b)c)d", "THE\0nul", "aaa", "%d" }
local patterns = { "", "o", "l+", "^h", "d$", "^$", "(o)(r)", "()ll()", "%a+", "%A+", "%s*(%S+)%s*",
                   "[%w_]+", "[^%s]+", "[a-c]", "[]]", "[^]]", "%b()", "%f[%w]%w+", "%f[%W]", "(%w+)%s*=%s*(%w+)",
                   ".-", ".-b", "a*", "a-", "a?a?a", "(a)%1", "((a)(a))", "%d+", "[%d%.]+", "%u%l", "%x",
                   "%z", "%p", "%c", "%g+", "[%a-]", "[a-]", "[-a]", "(.)%1", "%", "[a", "(()", "%1", ")",
                   "%bx", "%f", "%fx", "(a", "%g", "[", "[^", "x%", "%0" }
local bad = {}
local function check(what, a, b)
    if a ~= b then bad[#bad + 1] = what .. "\n  native: " .. a .. "\n  ours:   " .. b end
end
for _, s in ipairs(subjects) do
    for _, p in ipairs(patterns) do
        for _, init in ipairs({ 1, 2, -3, 0, 100 }) do
            local label = ("%q %q %d"):format(s, p, init)
            check("find " .. label, show(pcall(native.find, s, p, init)), show(pcall(string.find, s, p, init)))
            check("find plain " .. label, show(pcall(native.find, s, p, init, true)),
                  show(pcall(string.find, s, p, init, true)))
            check("match " .. label, show(pcall(native.match, s, p, init)), show(pcall(string.match, s, p, init)))
            check("gmatch " .. label, show(pcall(gmatch_all, native.gmatch, s, p, init)),
                  show(pcall(gmatch_all, string.gmatch, s, p, init)))
        end
        for _, repl in ipairs({ "<%0>", "%2-%1", "%%", "", "%", "%x", 7,
                                { o = "0", l = false, hello = 1.5 },
                                function(a, b) if a == "l" then return nil end return a .. (b or "") end,
                                function() return {} end }) do
            for _, n in ipairs({ 1, 2, 100 }) do
                local label = ("%q %q %s %d"):format(s, p, tostring(repl), n)
                check("gsub " .. label, show(pcall(native.gsub, s, p, repl, n)), show(pcall(string.gsub, s, p, repl, n)))
            end
            check("gsub all", show(pcall(native.gsub, s, p, repl)), show(pcall(string.gsub, s, p, repl)))
        end
    end
end
for _, args in ipairs({ {}, { "a" }, { nil, "a" }, { 12, 2 }, { "a", "a", 1.5 }, { "a", "a", "x" },
                        { "a", "a", "2" }, { {}, "a" } }) do
    for _, name in ipairs({ "find", "match", "gmatch" }) do
        check(name .. " args", show(pcall(native[name], table.unpack(args, 1, 3))),
              show(pcall(string[name], table.unpack(args, 1, 3))))
    end
    check("gsub args", show(pcall(native.gsub, table.unpack(args, 1, 3))), show(pcall(string.gsub, table.unpack(args, 1, 3))))
end
check("method", show(("hello"):find("l")), show(native.find("hello", "l")))
check("deep", show(pcall(string.find, ("a"):rep(300), ("(a)"):rep(33))), show(pcall(native.find, ("a"):rep(300), ("(a)"):rep(33))))
check("too complex", show(pcall(string.match, ("a"):rep(300), ("a?"):rep(250))),
      show(pcall(native.match, ("a"):rep(300), ("a?"):rep(250))))
return bad
"##,
            )
            .eval()
            .unwrap();
        assert!(
            mismatches.is_empty(),
            "{} mismatches:\n{}",
            mismatches.len(),
            mismatches[..mismatches.len().min(20)].join("\n")
        );
    }

    #[test]
    fn a_catastrophic_pattern_stops_at_the_deadline() {
        let lua = lua_with_both(Duration::from_millis(300));
        let started = Instant::now();
        let error = lua
            .load(r#"return select(2, pcall(string.find, ("a"):rep(40), ("a-"):rep(40) .. "b"))"#)
            .eval::<String>()
            .unwrap();
        assert!(
            error.contains("time limit exceeded (0.3 s) in string.find"),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A plain search that would take minutes is bounded too.
        let error = lua
            .load(r#"return select(2, pcall(string.find, ("a"):rep(1e6), ("a"):rep(5e5) .. "b", 1, true))"#)
            .eval::<String>()
            .unwrap();
        assert!(error.contains("time limit exceeded"), "{error}");
    }

    #[test]
    fn gsub_s_result_is_bounded_by_the_memory_limit() {
        let lua = lua_with_both(Duration::from_secs(60));
        let error = lua
            .load(r#"return select(2, pcall(string.gsub, ("a"):rep(1e4), ".", ("b"):rep(1000)))"#)
            .eval::<String>()
            .unwrap();
        assert!(error.contains("not enough memory"), "{error}");
    }
}
