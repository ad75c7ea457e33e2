//! Finding values in what a provider sends back: its answer to a send, and
//! the reports and inbound messages it posts. A mapping names each value
//! either by a JSON path or by a regular expression, parsed once when the
//! channel's config is read; applying one to hostile input never panics
//! and never takes more than linear time (the `regex` crate has no
//! backtracking).
//!
//! A JSON path is an RFC 6901 pointer in which `*` stands for every
//! element of an array (or every value of an object): `/sid`,
//! `/messages/*/message-id`, `/results/0/status/groupName`. A regex yields
//! its first capture group, or the whole match without one, for every
//! match: one provider id per part where the provider lists several.

use std::fmt;

use serde_json::Value;

/// How a mapping finds a value.
#[derive(Clone, Debug)]
pub enum Extractor {
    Json(JsonPath),
    Regex(regex::Regex),
}

/// Why a mapping's path or pattern was refused (named in the channel's
/// config error, with the key it came from).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtractorError {
    #[error("a JSON path starts with `/`")]
    NoLeadingSlash,
    #[error("`~` in a JSON path is followed by 0 or 1")]
    BadEscape,
    #[error("not a regular expression: {0}")]
    Regex(String),
    #[error("a regular expression has at most one capture group")]
    Groups,
}

/// Most bytes of a pattern: a mapping is configuration, not data.
const PATTERN_MAX: usize = 1024;
/// Most values one extraction returns (ids of a message's parts).
pub const VALUES_MAX: usize = 255;

impl Extractor {
    /// `json:/path` or `regex:pattern`; a bare `/path` is a JSON path.
    pub fn parse(text: &str) -> Result<Extractor, ExtractorError> {
        if let Some(pattern) = text.strip_prefix("regex:") {
            if pattern.len() > PATTERN_MAX {
                return Err(ExtractorError::Regex("longer than 1024 bytes".into()));
            }
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build()
                .map_err(|e| ExtractorError::Regex(e.to_string()))?;
            if regex.captures_len() > 2 {
                return Err(ExtractorError::Groups);
            }
            return Ok(Extractor::Regex(regex));
        }
        JsonPath::parse(text.strip_prefix("json:").unwrap_or(text)).map(Extractor::Json)
    }

    /// Every value found in `body`, as text (JSON strings as they are,
    /// numbers and booleans as written; nulls, arrays and objects are
    /// not values). A JSON path on a body that is not JSON finds none.
    pub fn values(&self, body: &str) -> Vec<String> {
        match self {
            Extractor::Json(path) => match serde_json::from_str::<Value>(body) {
                Ok(json) => path.values(&json),
                Err(_) => Vec::new(),
            },
            Extractor::Regex(regex) => regex
                .captures_iter(body)
                .take(VALUES_MAX)
                .filter_map(|c| c.get(1).or_else(|| c.get(0)))
                .map(|m| m.as_str().to_owned())
                .collect(),
        }
    }

    /// Whether `body` has anything this finds (a success or failure
    /// mapping matches).
    pub fn matches(&self, body: &str) -> bool {
        match self {
            Extractor::Regex(regex) => regex.is_match(body),
            Extractor::Json(_) => !self.values(body).is_empty(),
        }
    }
}

/// A JSON pointer with `*` steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// An object's member, or an array's element when it is a number.
    Key(String),
    /// Every element or member.
    Each,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, ExtractorError> {
        if text.is_empty() {
            return Ok(JsonPath(Vec::new()));
        }
        let rest = text
            .strip_prefix('/')
            .ok_or(ExtractorError::NoLeadingSlash)?;
        rest.split('/')
            .map(|token| {
                if token == "*" {
                    return Ok(Step::Each);
                }
                unescape(token).map(Step::Key)
            })
            .collect::<Result<_, _>>()
            .map(JsonPath)
    }

    /// The scalars the path reaches in `json`, in document order.
    pub fn values(&self, json: &Value) -> Vec<String> {
        self.nodes(json).into_iter().filter_map(scalar).collect()
    }

    /// Whatever the path reaches in `json` (objects too: a webhook's
    /// entries), in document order.
    pub fn nodes<'j>(&self, json: &'j Value) -> Vec<&'j Value> {
        let mut found = vec![json];
        for step in &self.0 {
            found = found
                .into_iter()
                .flat_map(|value| -> Vec<&Value> {
                    match (step, value) {
                        (Step::Each, Value::Array(items)) => items.iter().collect(),
                        (Step::Each, Value::Object(members)) => members.values().collect(),
                        (Step::Key(key), Value::Object(members)) => {
                            members.get(key).into_iter().collect()
                        }
                        (Step::Key(key), Value::Array(items)) => key
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| items.get(i))
                            .into_iter()
                            .collect(),
                        _ => Vec::new(),
                    }
                })
                .take(VALUES_MAX)
                .collect();
        }
        found
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.0 {
            match step {
                Step::Each => f.write_str("/*")?,
                Step::Key(key) => write!(f, "/{}", key.replace('~', "~0").replace('/', "~1"))?,
            }
        }
        Ok(())
    }
}

fn unescape(token: &str) -> Result<String, ExtractorError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(ExtractorError::BadEscape),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(extractor: &str, body: &str) -> Vec<String> {
        Extractor::parse(extractor).unwrap().values(body)
    }

    #[test]
    fn json_paths_reach_what_providers_answer() {
        // Twilio's answer to a send (docs/provider-apis.md 1.2).
        let twilio = r#"{"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued", "num_segments": "1"}"#;
        assert_eq!(
            values("/sid", twilio),
            ["SM1f0e8ae6ade43cb3c0ce4525424e404f"]
        );
        // Vonage's: one entry per part (2.2).
        let vonage = r#"{"message-count": "2", "messages": [
            {"to": "447700900000", "message-id": "0A0000000123ABCD1", "status": "0"},
            {"to": "447700900000", "message-id": "0A0000000123ABCD2", "status": "0"}]}"#;
        assert_eq!(
            values("json:/messages/*/message-id", vonage),
            ["0A0000000123ABCD1", "0A0000000123ABCD2"]
        );
        assert_eq!(values("/messages/1/status", vonage), ["0"]);
        // Infobip's (3.2).
        let infobip = r#"{"bulkId": "2034072219640523072", "messages": [{"messageId": "2250be2d4219-3af1-78856-aabe-1362af1edfd2",
            "status": {"groupId": 1, "groupName": "PENDING", "id": 26}, "to": "41793026727"}]}"#;
        assert_eq!(values("/messages/*/status/groupName", infobip), ["PENDING"]);
        assert_eq!(values("/messages/0/status/groupId", infobip), ["1"]);
    }

    #[test]
    fn json_path_escapes_and_edges() {
        let body = r#"{"a/b": {"m~n": true}, "": "empty key", "list": [null, [1], {"x": 2}]}"#;
        assert_eq!(values("/a~1b/m~0n", body), ["true"]);
        assert_eq!(values("/", body), ["empty key"]);
        // Nulls, arrays and objects are not values.
        assert!(values("/list/0", body).is_empty());
        assert!(values("/list/1", body).is_empty());
        assert_eq!(values("/list/*/x", body), ["2"]);
        assert!(values("/list/-1", body).is_empty());
        assert!(values("/missing/deeper", body).is_empty());
        assert!(values("/sid", "not json at all").is_empty());
        assert_eq!(
            JsonPath::parse("/a~1b/*/m~0n").unwrap().to_string(),
            "/a~1b/*/m~0n"
        );
        assert_eq!(
            Extractor::parse("sid").unwrap_err(),
            ExtractorError::NoLeadingSlash
        );
        assert_eq!(
            Extractor::parse("/a~2").unwrap_err(),
            ExtractorError::BadEscape
        );
        assert_eq!(
            Extractor::parse("/a~").unwrap_err(),
            ExtractorError::BadEscape
        );
    }

    #[test]
    fn regexes_take_their_group_for_every_match() {
        // Kannel's generic-foreign-id-regex style.
        assert_eq!(
            values("regex:id: ([0-9a-f]+)", "OK id: 0a1b\nOK id: 2c3d"),
            ["0a1b", "2c3d"]
        );
        assert_eq!(
            values("regex:^0: Accepted", "0: Accepted for delivery"),
            ["0: Accepted"]
        );
        assert!(values("regex:^OK", "ERR 12").is_empty());
        assert!(matches!(
            Extractor::parse("regex:(a)(b)"),
            Err(ExtractorError::Groups)
        ));
        assert!(Extractor::parse("regex:(?:a)(b)").is_ok());
        assert!(matches!(
            Extractor::parse("regex:("),
            Err(ExtractorError::Regex(_))
        ));
        assert!(matches!(
            Extractor::parse(&format!("regex:{}", "a".repeat(2000))),
            Err(ExtractorError::Regex(_))
        ));
    }

    #[test]
    fn hostile_bodies_are_bounded() {
        // Many parts: at most VALUES_MAX values.
        let many = format!("[{}]", vec![r#"{"id": "x"}"#; 10_000].join(","));
        assert_eq!(values("/*/id", &many).len(), VALUES_MAX);
        assert_eq!(values("regex:x", &"x".repeat(10_000)).len(), VALUES_MAX);
        // Deep nesting is refused by the JSON parser, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(values("/*/*/*", &deep).is_empty());
        // A pathological pattern for backtracking engines runs in linear time.
        assert!(values("regex:(a+)+$", &format!("{}b", "a".repeat(50_000))).is_empty());
    }
}
