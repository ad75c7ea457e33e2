//! Lua's matcher (`lstrlib.c`'s `match` and its helpers), counting its
//! steps against the run's deadline.

use std::time::{Duration, Instant};

use mlua::{Lua, Value};

use super::Bounds;

/// Captures one pattern may hold (LUA_MAXCAPTURES).
const MAX_CAPTURES: usize = 32;
/// Nested matches (MAXCCALLS): the matcher recurses, as Lua's does.
const MAX_DEPTH: u32 = 200;
/// Steps between looks at the clock.
const CHECK_EVERY: u64 = 1024;
/// Characters that make a pattern more than a plain string.
pub(super) const SPECIALS: &[u8] = b"^$*+?.([%-";

const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;

/// What stops a match.
#[derive(Debug, thiserror::Error)]
pub(super) enum PatternError {
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

pub(super) fn invalid(message: impl Into<String>) -> PatternError {
    PatternError::Invalid(message.into())
}

/// Counts the steps of one call and stops it at the deadline.
pub(super) struct Clock {
    function: &'static str,
    steps: u64,
    next_look: u64,
    deadline: Option<Instant>,
    limit: Duration,
}

impl Clock {
    pub(super) fn new(function: &'static str, bounds: &Bounds) -> Clock {
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
pub(super) enum Captured {
    Text(usize, usize),
    Position(usize),
}

/// Lua's `MatchState`, with indices for pointers. Reading past the end of
/// the pattern or the subject gives 0, as C's terminating NUL does.
pub(super) struct Matcher<'a> {
    pub(super) src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    captures: [Capture; MAX_CAPTURES],
    depth: u32,
    clock: &'a mut Clock,
}

impl<'a> Matcher<'a> {
    pub(super) fn new(src: &'a [u8], pat: &'a [u8], clock: &'a mut Clock) -> Matcher<'a> {
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
    pub(super) fn reset(&mut self) {
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
    pub(super) fn do_match(
        &mut self,
        mut s: usize,
        mut p: usize,
    ) -> Result<Option<usize>, PatternError> {
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
    pub(super) fn capture(
        &self,
        i: usize,
        whole: (usize, usize),
    ) -> Result<Captured, PatternError> {
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

    pub(super) fn captures_to_lua(
        &self,
        lua: &Lua,
        whole: Option<(usize, usize)>,
    ) -> Result<Vec<Value>, Failure> {
        (0..self.capture_count(whole))
            .map(|i| captured_to_lua(lua, self.src, self.capture(i, whole.unwrap_or((0, 0)))?))
            .collect()
    }
}

pub(super) fn captured_to_lua(lua: &Lua, src: &[u8], captured: Captured) -> Result<Value, Failure> {
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
pub(super) fn find_plain(
    hay: &[u8],
    needle: &[u8],
    clock: &mut Clock,
) -> Result<Option<usize>, PatternError> {
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
pub(super) enum Failure {
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
