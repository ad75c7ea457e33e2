//! The text of a request to a provider (its URL, headers and body),
//! written as a template: `${name}` stands for a value (the message's
//! recipient, text, id, a credential, ...) and `$$` for a `$`. Parsed once
//! when the channel's config is read, so that a misspelt name is an error
//! there, naming it; rendered per message with the escaping its place
//! needs, so that no value can break out of a URL component, a form
//! field, a JSON string or XML text.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// How values are escaped where the template puts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As they are (header values of the operator's own choosing).
    None,
    /// A URL's path segment or query component: all but RFC 3986's
    /// unreserved characters percent-encoded.
    Url,
    /// `application/x-www-form-urlencoded`: spaces as `+`.
    Form,
    /// Inside a JSON string (the template has the quotes).
    Json,
    /// XML character data or an attribute value.
    Xml,
}

/// RFC 3986 section 2.3: what a URL component may hold unencoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the WHATWG form encoding leaves as is (space becomes `+`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(String),
}

/// Why a template was refused (named in the channel's config error, with
/// the key it came from).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("`${{` at byte {0} has no closing `}}`")]
    Unclosed(usize),
    #[error("`$` at byte {0} is neither `${{name}}` nor `$$`")]
    LoneDollar(usize),
    #[error("unknown value ${{{name}}}; the values are {known}")]
    Unknown { name: String, known: String },
}

impl Template {
    /// `text`, whose `${...}` must each be one of `known`, or begin with
    /// one of them that ends in `.` (`custom.` names any user field).
    pub fn parse(text: &str, known: &[&str]) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let offset = text.len() - rest.len() + at;
            let after = &rest[at + 1..];
            if let Some(after) = after.strip_prefix('$') {
                literal.push('$');
                rest = after;
            } else if let Some(after) = after.strip_prefix('{') {
                let end = after.find('}').ok_or(TemplateError::Unclosed(offset))?;
                let name = &after[..end];
                let prefixed =
                    |k: &&str| k.ends_with('.') && name.len() > k.len() && name.starts_with(*k);
                let exact = known.contains(&name) && !name.ends_with('.');
                if !exact && !known.iter().any(prefixed) {
                    return Err(TemplateError::Unknown {
                        name: smsbus_core::excerpt::excerpt(name).into_owned(),
                        known: known.join(", "),
                    });
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Value(name.to_owned()));
                rest = &after[end + 1..];
            } else {
                return Err(TemplateError::LoneDollar(offset));
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// The names the template uses.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Value(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The text with each `${name}` replaced by `value(name)`, escaped;
    /// a value that is missing (a message without a sender) is empty.
    pub fn render<'v>(
        &self,
        escape: Escape,
        value: impl Fn(&str) -> Option<Cow<'v, str>>,
    ) -> String {
        self.render_each(|_| escape, value)
    }

    /// The same, each value escaped as `escape_of` its name says (a URL's
    /// base is the operator's own and goes in as it is).
    pub fn render_each<'v>(
        &self,
        escape_of: impl Fn(&str) -> Escape,
        value: impl Fn(&str) -> Option<Cow<'v, str>>,
    ) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(name) => {
                    if let Some(v) = value(name) {
                        push_escaped(&mut out, &v, escape_of(name));
                    }
                }
            }
        }
        out
    }
}

fn push_escaped(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::None => out.push_str(value),
        Escape::Url => out.extend(utf8_percent_encode(value, UNRESERVED)),
        Escape::Form => {
            for piece in utf8_percent_encode(value, FORM) {
                out.push_str(if piece == "%20" { "+" } else { piece });
            }
        }
        Escape::Json => {
            let quoted = serde_json::Value::from(value).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
        Escape::Xml => {
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&apos;"),
                    c => out.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 4] = ["to", "from", "body", "id"];

    fn render(text: &str, escape: Escape) -> String {
        Template::parse(text, &KNOWN)
            .unwrap()
            .render(escape, |name| match name {
                "to" => Some("+31612345678".into()),
                "body" => Some("Tom & Jerry say \"hi\" <3 — 100% ok?\n/€".into()),
                "id" => Some("42".into()),
                _ => None,
            })
    }

    #[test]
    fn values_are_escaped_for_their_place() {
        assert_eq!(
            render("https://api.example/send?to=${to}&text=${body}&ref=${id}", Escape::Url),
            "https://api.example/send?to=%2B31612345678&text=Tom%20%26%20Jerry%20say%20%22hi%22%20%3C3%20%E2%80%94%20100%25%20ok%3F%0A%2F%E2%82%AC&ref=42"
        );
        assert_eq!(
            render("To=${to}&Body=${body}", Escape::Form),
            "To=%2B31612345678&Body=Tom+%26+Jerry+say+%22hi%22+%3C3+%E2%80%94+100%25+ok%3F%0A%2F%E2%82%AC"
        );
        let json = render(
            r#"{"to": "${to}", "text": "${body}", "from": "${from}"}"#,
            Escape::Json,
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["text"], "Tom & Jerry say \"hi\" <3 — 100% ok?\n/€");
        assert_eq!(parsed["from"], "", "a missing value is empty");
        assert_eq!(
            render("<sms><to>${to}</to><text>${body}</text></sms>", Escape::Xml),
            "<sms><to>+31612345678</to><text>Tom &amp; Jerry say &quot;hi&quot; &lt;3 — 100% ok?\n/€</text></sms>"
        );
        assert_eq!(render("Bearer ${id}", Escape::None), "Bearer 42");
    }

    #[test]
    fn dollars_and_mistakes() {
        assert_eq!(
            render("cost: $$5 for ${id}$$", Escape::None),
            "cost: $5 for 42$"
        );
        assert_eq!(render("", Escape::None), "");
        assert_eq!(
            Template::parse("a ${to", &KNOWN),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(
            Template::parse("a $to", &KNOWN),
            Err(TemplateError::LoneDollar(2))
        );
        assert_eq!(
            Template::parse("end $", &KNOWN),
            Err(TemplateError::LoneDollar(4))
        );
        let unknown = Template::parse("${recipient}", &KNOWN).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown value ${recipient}; the values are to, from, body, id"
        );
        assert_eq!(
            Template::parse("${to}${body}x${to}", &KNOWN)
                .unwrap()
                .names()
                .collect::<Vec<_>>(),
            ["to", "body", "to"]
        );
    }

    #[test]
    fn a_value_cannot_become_template_syntax() {
        // A body that looks like a placeholder stays text.
        let rendered = Template::parse("${body}", &KNOWN)
            .unwrap()
            .render(Escape::None, |_| Some("${to} $$".into()));
        assert_eq!(rendered, "${to} $$");
    }
}
