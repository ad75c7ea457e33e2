//! Jasmin's HTTP API, `GET|POST /send` (Jasmin's documentation, "HTTP
//! API"; `jasmin/protocols/http/endpoints/send.py` and `validation.py`),
//! answered in its words: `Success "<id>"` (200) or `Error "<why>"`.
//!
//! - Fields, from the query, a form body or a JSON body: `username`,
//!   `password`, `to`, `from`, `coding`, `content` or `hex-content`,
//!   `priority` (0-3), `sdt` (an SMPP time), `validity-period`
//!   (minutes), `dlr` (yes/no), `dlr-url`, `dlr-level` (1 the SMSC's
//!   answer, 2 the handset's receipt, 3 both), `dlr-method` (GET/POST),
//!   `tags` (kept in `custom.jasmin.tags`). Any other field is refused,
//!   as Jasmin refuses it.
//! - Codings: 0 (SMSC default, GSM 7-bit here), 1 (IA5, sent as GSM
//!   7-bit), 2 and 4 (8-bit), 3 (Latin-1), 8 (UCS-2); the others (JIS,
//!   Cyrillic, Hebrew, pictograms, KS C 5601) are refused.
//! - 400 for a bad field, 403 `Authentication failure for username:<u>`
//!   and `User throughput exceeded`, 412 `No route found` for a message
//!   a rule blocked, 500 when the database is away.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{
    fields, hex, latin1, minutes_from_now, send, sign_in, utf16be, Callback, Denied, Outgoing,
    Refused,
};
use crate::http_api::listener::Peer;
use crate::http_api::Api;
use crate::smpp_server::smpp_time;

/// An answer as Jasmin gives it: a status and a line of plain text.
struct Reply {
    status: StatusCode,
    text: String,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain")],
            self.text,
        )
            .into_response()
    }
}

fn error(status: StatusCode, why: &str) -> Reply {
    Reply {
        status,
        text: format!("Error \"{why}\""),
    }
}

fn bad(why: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, why)
}

/// Whether a field's value is one Jasmin takes.
type Valid = fn(&str) -> bool;

/// The fields `/send` takes, and the pattern of each value.
const FIELDS: [(&str, Valid); 15] = [
    ("to", |v| {
        let digits = v.strip_prefix('+').unwrap_or(v);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    }),
    ("from", |_| true),
    ("coding", |v| {
        [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "13", "14",
        ]
        .contains(&v)
    }),
    ("username", |v| (1..=16).contains(&v.chars().count())),
    ("password", |v| (1..=16).contains(&v.chars().count())),
    ("priority", |v| ["0", "1", "2", "3"].contains(&v)),
    ("sdt", |v| {
        matches!(smpp_time::parse(v.as_bytes()), Ok(Some(_)))
    }),
    ("validity-period", |v| {
        !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())
    }),
    ("dlr", |v| v == "yes" || v == "no"),
    ("dlr-url", |v| {
        v.starts_with("http://") || v.starts_with("https://")
    }),
    ("dlr-level", |v| ["1", "2", "3"].contains(&v)),
    ("dlr-method", |v| {
        v.eq_ignore_ascii_case("get") || v.eq_ignore_ascii_case("post")
    }),
    ("tags", |v| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ',')
    }),
    ("content", |_| true),
    ("hex-content", |_| true),
];

/// `/send`.
pub async fn send_message(
    State(api): State<Api>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    match handle(&api, peer.ip(), headers, query, body).await {
        Ok(reply) | Err(reply) => reply.into_response(),
    }
}

/// The request's fields: the query's, then a form's or a JSON object's.
fn arguments(
    headers: &HeaderMap,
    query: Option<String>,
    body: &[u8],
) -> Result<Vec<(String, String)>, Reply> {
    let text =
        |(name, value): (String, Vec<u8>)| (name, String::from_utf8_lossy(&value).into_owned());
    let mut args: Vec<(String, String)> = fields(query.unwrap_or_default().as_bytes())
        .into_iter()
        .map(text)
        .collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type == "application/json" {
        let object: serde_json::Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| {
                bad("Mandatory arguments not found, please refer to the HTTPAPI specifications.")
            })?;
        for (name, value) in object {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            args.push((name, value));
        }
    } else if !body.is_empty() {
        args.extend(fields(body).into_iter().map(text));
    }
    Ok(args)
}

async fn handle(
    api: &Api,
    peer: std::net::IpAddr,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
) -> Result<Reply, Reply> {
    let args = arguments(&headers, query, &body)?;
    if args.is_empty() {
        return Err(bad(
            "Mandatory arguments not found, please refer to the HTTPAPI specifications.",
        ));
    }
    for (name, value) in &args {
        let Some((_, valid)) = FIELDS.iter().find(|(n, _)| n == name) else {
            return Err(bad(&format!("Argument [{name}] is unknown.")));
        };
        if !valid(value) {
            // Jasmin echoes the value; a password is never echoed here.
            let shown = if name == "password" {
                "(not shown)"
            } else {
                value
            };
            return Err(bad(&format!(
                "Argument [{name}] has an invalid value: [{shown}]."
            )));
        }
    }
    let get = |name: &str| {
        args.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    for mandatory in ["to", "username", "password"] {
        if get(mandatory).is_none() {
            return Err(bad(&format!(
                "Mandatory argument [{mandatory}] is not found."
            )));
        }
    }
    let content = match (get("content"), get("hex-content")) {
        (None, None) => return Err(bad("content or hex-content not present.")),
        (Some(_), Some(_)) => {
            return Err(bad(
                "content and hex-content cannot be used both in same request.",
            ))
        }
        (Some(text), None) => Content::Text(text.to_owned()),
        (None, Some(hex)) => Content::Octets(
            decode_hex(hex).ok_or_else(|| bad(&format!("Invalid hex-content data: '{hex}'")))?,
        ),
    };
    let coding = get("coding").unwrap_or("");
    let (body, encoding) = body_of(content, coding).ok_or_else(|| {
        bad(&format!(
            "Argument [coding] has an invalid value: [{coding}]."
        ))
    })?;

    let user = get("username").unwrap_or_default();
    let account = match sign_in(api, user, get("password").unwrap_or_default(), Some(peer)).await {
        Ok(account) => account,
        Err(Denied::Credentials) => {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!("Authentication failure for username:{user}"),
            ))
        }
        Err(Denied::Throttled) => {
            return Err(error(StatusCode::FORBIDDEN, "User throughput exceeded"))
        }
        Err(Denied::Unavailable) => return Err(unavailable()),
    };

    let wants_report =
        get("dlr") == Some("yes") || get("dlr-url").is_some() || get("dlr-level").is_some();
    let callback = if wants_report {
        let url =
            get("dlr-url").ok_or_else(|| bad("Mandatory argument [dlr-url] is not found."))?;
        let mask = match get("dlr-level").unwrap_or("1") {
            "1" => 8 | 16,
            "2" => 1 | 2,
            _ => 1 | 2 | 8 | 16,
        };
        let method = if get("dlr-method").is_some_and(|m| m.eq_ignore_ascii_case("get")) {
            "GET"
        } else {
            "POST"
        };
        Some(Callback {
            style: "jasmin",
            url: url.to_owned(),
            method,
            mask,
        })
    } else {
        None
    };
    let tags: Option<Vec<&str>> =
        get("tags").map(|t| t.split(',').filter(|t| !t.is_empty()).collect());
    let message = Outgoing {
        to: get("to").unwrap_or_default().to_owned(),
        body,
        from: get("from").map(str::to_owned),
        scheduled: get("sdt")
            .and_then(|sdt| smpp_time::parse(sdt.as_bytes()).ok().flatten())
            .map(|t| t.to_string()),
        validity: get("validity-period")
            .and_then(|m| m.parse().ok())
            .map(minutes_from_now),
        priority: get("priority").and_then(|p| p.parse().ok()),
        request_report: callback.as_ref().map(|c| c.mask & 3 != 0),
        encoding: encoding.map(str::to_owned),
        custom: tags.map(|tags| serde_json::json!({"jasmin": {"tags": tags}})),
        ..Outgoing::default()
    };
    let inserted = match send(
        api,
        &account,
        std::slice::from_ref(&message),
        callback.as_ref(),
    )
    .await
    {
        Ok(inserted) => inserted,
        Err(Refused::Unavailable) => return Err(unavailable()),
        Err(Refused::Message { text, column }) => {
            let argument = match column.as_deref() {
                Some("to_address") => "to",
                Some("from_address") => "from",
                Some("body") | Some("encoding") => "content",
                _ => return Err(bad(&text)),
            };
            let value = get(argument).unwrap_or_default();
            return Err(bad(&format!(
                "Argument [{argument}] has an invalid value: [{value}]."
            )));
        }
    };
    let message = &inserted[0];
    if message.status == "blocked" {
        return Err(error(StatusCode::PRECONDITION_FAILED, "No route found"));
    }
    Ok(Reply {
        status: StatusCode::OK,
        text: format!("Success \"{}\"", message.id),
    })
}

fn unavailable() -> Reply {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Cannot send submit_sm, check SMPPClientManagerPB log file for details",
    )
}

/// What `content` or `hex-content` gave.
enum Content {
    Text(String),
    Octets(Vec<u8>),
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The body and smsbus encoding of the content in Jasmin's `coding`;
/// None for a coding smsbus does not send.
fn body_of(content: Content, coding: &str) -> Option<(String, Option<&'static str>)> {
    match (content, coding) {
        (Content::Text(text), "") => Some((text, None)),
        (Content::Text(text), "0" | "1") => Some((text, Some("gsm7"))),
        (Content::Text(text), "3") => Some((text, Some("latin1"))),
        (Content::Text(text), "8") => Some((text, Some("ucs2"))),
        (Content::Text(text), "2" | "4") => Some((hex(text.as_bytes()), Some("binary"))),
        (Content::Octets(octets), "8") => Some((utf16be(&octets)?, Some("ucs2"))),
        (Content::Octets(octets), "3") => Some((latin1(&octets), Some("latin1"))),
        (Content::Octets(octets), "" | "0" | "1" | "2" | "4") => {
            Some((hex(&octets), Some("binary")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_give_the_body_and_encoding() {
        let text = |t: &str| Content::Text(t.to_owned());
        assert_eq!(body_of(text("hi"), ""), Some(("hi".to_owned(), None)));
        assert_eq!(
            body_of(text("hi"), "0"),
            Some(("hi".to_owned(), Some("gsm7")))
        );
        assert_eq!(
            body_of(text("hé"), "3"),
            Some(("hé".to_owned(), Some("latin1")))
        );
        assert_eq!(
            body_of(text("Пр"), "8"),
            Some(("Пр".to_owned(), Some("ucs2")))
        );
        assert_eq!(body_of(text("hi"), "5"), None, "JIS");
        assert_eq!(
            body_of(Content::Octets(vec![0x04, 0x1f]), "8"),
            Some(("П".to_owned(), Some("ucs2")))
        );
        assert_eq!(
            body_of(Content::Octets(vec![0xde, 0xad]), "4"),
            Some(("dead".to_owned(), Some("binary")))
        );
        assert_eq!(decode_hex("0A0b"), Some(vec![0x0a, 0x0b]));
        assert_eq!(decode_hex("0G"), None);
        assert_eq!(decode_hex("abc"), None);
    }
}
