//! Reading a channel's settings from `smsbus.channel.config` with errors
//! that name the key and what it must be, never what it holds.
//!
//! A channel's config carries credentials (an SMPP password, a SIM's PIN),
//! and its errors land in `channel_state.last_error`, which senders read,
//! and in `smsbus-worker check`. serde_json's own errors quote the value
//! (`invalid type: integer `4321`, expected a string`), so the config is
//! read through the deserializer here instead, whose error type keeps only
//! the key's path, the kind of value found and what serde expected: the
//! value itself never reaches an error, for any key, secret or not. Keys
//! are the operator's text too: an unknown one is quoted cut short.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Unexpected};
use serde_json::Value;

/// Longest key quoted in an error.
const MAX_KEY: usize = 40;

/// Why a channel's config cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ConfigError {
    /// Where: keys and list positions from the top, e.g. `init[2]`.
    path: Vec<String>,
    problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// The config is not a JSON object.
    NotAnObject {
        found: &'static str,
    },
    /// A value of the wrong JSON type.
    WrongType {
        expected: String,
        found: &'static str,
    },
    /// A value of the right type that is out of range.
    OutOfRange {
        expected: String,
    },
    /// A word that is not one of the allowed ones.
    NotOneOf {
        allowed: &'static [&'static str],
    },
    /// A key the settings do not have.
    UnknownKey {
        known: &'static [&'static str],
    },
    Missing,
    WrongLength {
        expected: String,
    },
    /// Anything else serde reports; its text may quote the value, so it
    /// is not kept.
    Unreadable,
}

impl ConfigError {
    fn new(problem: Problem) -> ConfigError {
        ConfigError {
            path: Vec::new(),
            problem,
        }
    }

    /// The same error, one level further down: under `key`.
    fn under(mut self, key: String) -> ConfigError {
        self.path.insert(0, key);
        self
    }

    fn describe(&self) -> String {
        let at = self.path_text();
        match &self.problem {
            Problem::NotAnObject { found } => {
                format!("the config must be a JSON object, not {found}")
            }
            Problem::WrongType { expected, found } => {
                format!("{at} must be {}, not {found}", plain(expected))
            }
            Problem::OutOfRange { expected } => {
                format!("{at} is out of range: it must be {}", plain(expected))
            }
            Problem::NotOneOf { allowed } => format!("{at} must be one of {}", quoted(allowed)),
            Problem::UnknownKey { known } => {
                format!("unknown key {at}; the keys are {}", known.join(", "))
            }
            Problem::Missing => format!("{at} is required"),
            Problem::WrongLength { expected } => format!("{at} must have {expected}"),
            Problem::Unreadable => format!("{at} cannot be read"),
        }
    }

    /// `` `init[2]` ``, each key cut to [`MAX_KEY`] characters.
    fn path_text(&self) -> String {
        let mut text = String::new();
        for step in &self.path {
            if step.starts_with('[') || text.is_empty() {
                text.push_str(step);
            } else {
                text.push('.');
                text.push_str(step);
            }
        }
        format!("`{text}`")
    }
}

/// Reads `T` from a channel's config.
pub fn read<T: DeserializeOwned>(config: &Value) -> Result<T, ConfigError> {
    if !config.is_object() {
        return Err(ConfigError::new(Problem::NotAnObject {
            found: kind_of(config),
        }));
    }
    T::deserialize(Reader(config))
}

/// A key as an error may quote it: cut, and with control characters
/// escaped.
fn key_text(key: &str) -> String {
    let mut text: String = key
        .chars()
        .take(MAX_KEY)
        .flat_map(char::escape_default)
        .collect();
    if key.chars().nth(MAX_KEY).is_some() {
        text.push('…');
    }
    text
}

/// serde's names of primitive types, in words.
fn plain(expected: &str) -> String {
    match expected {
        "u8" => "an integer from 0 to 255".into(),
        "u16" => "an integer from 0 to 65535".into(),
        "u32" => "an integer from 0 to 4294967295".into(),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        other => other.into(),
    }
}

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The kind of a value serde did not expect, without the value.
fn kind_of_unexpected(unexpected: &Unexpected) -> &'static str {
    match unexpected {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "a number",
        Unexpected::Float(_) => "a fractional number",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit | Unexpected::Option => "null",
        Unexpected::Seq => "a list",
        Unexpected::Map => "an object",
        _ => "another kind of value",
    }
}

impl de::Error for ConfigError {
    fn custom<T: fmt::Display>(_text: T) -> Self {
        // The text may quote the value: it is dropped.
        ConfigError::new(Problem::Unreadable)
    }

    fn invalid_type(unexpected: Unexpected, expected: &dyn de::Expected) -> Self {
        ConfigError::new(Problem::WrongType {
            expected: expected.to_string(),
            found: kind_of_unexpected(&unexpected),
        })
    }

    fn invalid_value(_unexpected: Unexpected, expected: &dyn de::Expected) -> Self {
        ConfigError::new(Problem::OutOfRange {
            expected: expected.to_string(),
        })
    }

    fn invalid_length(_len: usize, expected: &dyn de::Expected) -> Self {
        ConfigError::new(Problem::WrongLength {
            expected: expected.to_string(),
        })
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        ConfigError::new(Problem::NotOneOf { allowed: expected })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        ConfigError::new(Problem::UnknownKey { known: expected }).under(key_text(field))
    }

    fn missing_field(field: &'static str) -> Self {
        ConfigError::new(Problem::Missing).under(field.to_owned())
    }
}

/// A JSON value read with [`ConfigError`]s.
struct Reader<'a>(&'a Value);

impl<'de> Deserializer<'de> for Reader<'de> {
    type Error = ConfigError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter(),
                index: 0,
            }),
            Value::Object(map) => visitor.visit_map(Entries {
                entries: map.iter(),
                current: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        // Settings' enums are words.
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(ConfigError::new(Problem::WrongType {
                expected: format!("one of {}", quoted(variants)),
                found: kind_of(self.0),
            })),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// A list's items, each error placed at its index.
struct Items<'a> {
    items: std::slice::Iter<'a, Value>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'de> {
    type Error = ConfigError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ConfigError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Reader(item))
            .map(Some)
            .map_err(|e| e.under(format!("[{index}]")))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An object's entries, each error placed under its key.
struct Entries<'a> {
    entries: serde_json::map::Iter<'a>,
    current: Option<(&'a String, &'a Value)>,
}

impl<'de> de::MapAccess<'de> for Entries<'de> {
    type Error = ConfigError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some((key, value));
        let key_reader: de::value::BorrowedStrDeserializer<'de, ConfigError> =
            de::value::BorrowedStrDeserializer::new(key);
        seed.deserialize(key_reader).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let Some((key, value)) = self.current.take() else {
            return Err(ConfigError::new(Problem::Unreadable));
        };
        seed.deserialize(Reader(value))
            .map_err(|e| e.under(key_text(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        password: String,
        port: u16,
        rate: f64,
        pin: Option<String>,
        mode: Mode,
        init: Vec<String>,
        on: bool,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                password: String::new(),
                port: 2775,
                rate: 0.0,
                pin: None,
                mode: Mode::Fast,
                init: Vec::new(),
                on: false,
            }
        }
    }

    fn error(config: Value) -> String {
        read::<Settings>(&config).unwrap_err().to_string()
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let s: Settings = read(&json!({
            "password": "secret", "port": 2776, "rate": 5, "pin": "1234",
            "mode": "slow", "init": ["ATZ"], "on": true
        }))
        .unwrap();
        assert_eq!(s.port, 2776);
        assert_eq!(s.rate, 5.0);
        assert_eq!(s.pin.as_deref(), Some("1234"));
        assert_eq!(s.mode, Mode::Slow);
        assert_eq!(s.init, vec!["ATZ".to_owned()]);
        let s: Settings = read(&json!({"pin": null})).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn errors_name_the_key_and_the_type_never_the_value() {
        assert_eq!(
            error(json!({"password": 4321})),
            "`password` must be a string, not a number"
        );
        assert_eq!(
            error(json!({"pin": 98765})),
            "`pin` must be a string, not a number"
        );
        assert_eq!(
            error(json!({"port": 99999})),
            "`port` is out of range: it must be an integer from 0 to 65535"
        );
        assert_eq!(
            error(json!({"port": -1234})),
            "`port` is out of range: it must be an integer from 0 to 65535"
        );
        assert_eq!(
            error(json!({"port": "2775"})),
            "`port` must be an integer from 0 to 65535, not a string"
        );
        assert_eq!(
            error(json!({"rate": "fast"})),
            "`rate` must be a number, not a string"
        );
        assert_eq!(
            error(json!({"mode": "s3cret-mode"})),
            "`mode` must be one of \"fast\", \"slow\""
        );
        assert_eq!(
            error(json!({"mode": 7})),
            "`mode` must be one of \"fast\", \"slow\", not a number"
        );
        assert_eq!(
            error(json!({"init": ["ATZ", 4321]})),
            "`init[1]` must be a string, not a number"
        );
        assert_eq!(
            error(json!({"on": "yes"})),
            "`on` must be a boolean, not a string"
        );
        assert_eq!(
            error(json!("password=4321")),
            "the config must be a JSON object, not a string"
        );
    }

    #[test]
    fn unknown_keys_are_named_cut_short_and_their_values_never_shown() {
        let e = error(json!({"passwd": "hunter2"}));
        assert!(
            e.starts_with("unknown key `passwd`; the keys are password, port"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let long = "k".repeat(500);
        let e = error(json!({ long.clone(): 1 }));
        assert!(e.contains(&format!("`{}…`", "k".repeat(MAX_KEY))), "{e}");
        assert!(!e.contains(&long), "{e}");
        let e = error(json!({"a\nb": 1}));
        assert!(e.contains("`a\\nb`"), "{e}");
    }
}
