//! Kannel's send-sms interface, `GET|POST /cgi-bin/sendsms` (Kannel's
//! user guide, "SMS Push (send-sms)"; `gw/smsbox.c`), answered in its
//! words:
//!
//! - GET: the CGI variables `username` (or `user`), `password` (or
//!   `pass`), `to` (receivers separated by spaces), `text`, `from`,
//!   `charset`, `coding` (0 7-bit, 1 8-bit, 2 UCS-2), `smsc` (the
//!   channel), `validity` and `deferred` (minutes), `priority` (0-3),
//!   `dlr-mask` and `dlr-url`, `account` and `binfo` (kept in
//!   `custom.kannel`).
//! - POST: the body is the text (`text/plain`, or `application/octet-stream`
//!   for 8-bit), the rest `X-Kannel-*` headers.
//! - 202 `0: Accepted for delivery`; 202 `3: Queued for later delivery`
//!   when no channel takes it yet (nochannel, dailylimit: it waits for
//!   smsbus.reroute); 403 `Not routable. Do not try again.` when a rule
//!   blocked it; 403 `Authorization failed for sendsms`; 400 with
//!   Kannel's text for a bad field; 503 `Temporal failure, try again
//!   later.` when the database is away.
//!
//! What smsbus does not do is refused rather than ignored: `udh`,
//! `mclass`, `mwi`, and non-zero `pid`, `rpi`, `alt-dcs`, `compress`.
//! Kannel's XML POST is not taken.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{
    fields, hex, latin1, minutes_from_now, send, sign_in, utf16be, Callback, Denied, Outgoing,
    Refused,
};
use crate::http_api::listener::Peer;
use crate::http_api::Api;

/// An answer as smsbox gives it: a status and a line of text.
struct Reply {
    status: StatusCode,
    text: String,
}

impl IntoResponse for Reply {
    /// Plain text, never cached.
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (header::CONTENT_TYPE, "text/html"),
                (header::PRAGMA, "no-cache"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            self.text,
        )
            .into_response()
    }
}

fn answer(status: StatusCode, text: &str) -> Reply {
    Reply {
        status,
        text: text.to_owned(),
    }
}

fn bad(text: &str) -> Reply {
    answer(StatusCode::BAD_REQUEST, text)
}

/// Where a request's fields come from: the query (GET), or `X-Kannel-*`
/// headers beside a body (POST).
enum Source {
    Query(Vec<(String, Vec<u8>)>),
    Headers(HeaderMap),
}

impl Source {
    /// The first of `names` the request gives.
    fn get(&self, names: &[&str]) -> Option<Vec<u8>> {
        names.iter().find_map(|name| match self {
            Source::Query(fields) => fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
            Source::Headers(headers) => headers
                .get(format!("x-kannel-{name}"))
                .map(|v| v.as_bytes().to_vec()),
        })
    }

    fn text(&self, names: &[&str]) -> Option<String> {
        self.get(names)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// An integer as smsbox reads it (`sscanf("%d")`): a value that is not
    /// a number is as if it were not given.
    fn integer(&self, name: &str) -> Option<i64> {
        let text = self.text(&[name])?;
        let text = text.trim();
        let digits = text
            .char_indices()
            .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+')))
            .count();
        text[..digits].parse().ok()
    }
}

/// A checked integer field: None when not given, else its value in
/// `range` or the refusal Kannel gives.
fn ranged(
    source: &Source,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
    refusal: &str,
) -> Result<Option<i64>, Reply> {
    match source.integer(name) {
        None => Ok(None),
        Some(v) if range.contains(&v) => Ok(Some(v)),
        Some(_) => Err(bad(refusal)),
    }
}

/// How the text's octets are coded (`coding`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coding {
    Unset,
    SevenBit,
    EightBit,
    Ucs2,
}

/// The body and smsbus encoding of the text's octets in `charset`.
fn body_of(
    octets: &[u8],
    charset: Option<&str>,
    coding: Coding,
) -> Option<(String, Option<&'static str>)> {
    if coding == Coding::EightBit {
        return Some((hex(octets), Some("binary")));
    }
    let default = if coding == Coding::Ucs2 {
        "utf-16be"
    } else {
        "utf-8"
    };
    let text = match charset.unwrap_or(default).to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => String::from_utf8(octets.to_vec()).ok()?,
        "iso-8859-1" | "iso8859-1" | "latin1" => latin1(octets),
        "utf-16be" | "utf-16" | "ucs-2" | "ucs2" => utf16be(octets)?,
        _ => return None,
    };
    let encoding = match coding {
        Coding::SevenBit => Some("gsm7"),
        Coding::Ucs2 => Some("ucs2"),
        _ => None,
    };
    Some((text, encoding))
}

/// `/cgi-bin/sendsms`.
pub async fn sendsms(
    State(api): State<Api>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    match handle(&api, peer.ip(), method, headers, query, body).await {
        Ok(reply) | Err(reply) => reply.into_response(),
    }
}

async fn handle(
    api: &Api,
    peer: std::net::IpAddr,
    method: Method,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
) -> Result<Reply, Reply> {
    let posted = method == Method::POST && !body.is_empty();
    let mut default_coding = Coding::Unset;
    let (source, text, charset) = if posted {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut parts = content_type.split(';').map(str::trim);
        match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
            "text/plain" => {}
            "application/octet-stream" => default_coding = Coding::EightBit,
            _ => return Err(bad("Invalid content-type")),
        }
        let charset = parts
            .find_map(|p| p.strip_prefix("charset="))
            .map(|c| c.trim_matches('"').to_owned());
        (Source::Headers(headers), body.to_vec(), charset)
    } else {
        let source = Source::Query(fields(query.unwrap_or_default().as_bytes()));
        let text = source.get(&["text"]).unwrap_or_default();
        let charset = source.text(&["charset"]);
        (source, text, charset)
    };

    let user = source.text(&["username", "user"]).unwrap_or_default();
    let password = source.text(&["password", "pass"]).unwrap_or_default();
    let account = match sign_in(api, &user, &password, Some(peer)).await {
        Ok(account) => account,
        Err(Denied::Credentials) => {
            return Err(answer(
                StatusCode::FORBIDDEN,
                "Authorization failed for sendsms",
            ))
        }
        Err(Denied::Throttled) => {
            return Err(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporal failure, try again later.",
            ))
        }
        Err(Denied::Unavailable) => return Err(unavailable()),
    };

    let receivers = match source.text(&["to"]) {
        None if posted => return Err(bad("Missing receiver(s) number(s), rejected")),
        None => return Err(bad("Missing receiver number, rejected")),
        Some(to) if to.trim().is_empty() => {
            return Err(bad("Empty receiver number not allowed, rejected"))
        }
        Some(to) => to,
    };
    let receivers: Vec<&str> = receivers.split_whitespace().collect();
    if receivers.iter().any(|r| {
        !r.chars()
            .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
    }) {
        return Err(bad(
            "Number(s) has/have been denied by white- and/or black-lists.",
        ));
    }
    if source.get(&["udh"]).is_some() {
        return Err(bad("UDH field is not supported by smsbus, rejected"));
    }
    // Flash messages and message-waiting indications smsbus cannot send:
    // refused, whatever the value, rather than sent as plain text.
    if ranged(&source, "mclass", 0..=3, "MClass field misformed, rejected")?.is_some() {
        return Err(bad("MClass field is not supported by smsbus, rejected"));
    }
    if ranged(&source, "mwi", 0..=7, "MWI field misformed, rejected")?.is_some() {
        return Err(bad("MWI field is not supported by smsbus, rejected"));
    }
    for (name, range, refusal) in [
        ("pid", 0..=255, "PID field misformed, rejected"),
        ("rpi", 0..=2, "RPI field misformed, rejected"),
        ("alt-dcs", 0..=1, "Alt-DCS field misformed, rejected"),
        ("compress", 0..=1, "Compress field misformed, rejected"),
    ] {
        if ranged(&source, name, range, refusal)?.is_some_and(|v| v != 0) {
            return Err(bad(&format!(
                "{} field is not supported by smsbus, rejected",
                &refusal[..refusal.find(' ').unwrap_or(refusal.len())]
            )));
        }
    }
    let coding = match ranged(
        &source,
        "coding",
        -1..=2,
        "Coding field misformed, rejected",
    )? {
        Some(0) => Coding::SevenBit,
        Some(1) => Coding::EightBit,
        Some(2) => Coding::Ucs2,
        _ => default_coding,
    };
    let validity = ranged(
        &source,
        "validity",
        -1..=i64::from(i32::MAX),
        "Validity field misformed, rejected",
    )?
    .filter(|&m| m >= 0);
    let deferred = ranged(
        &source,
        "deferred",
        -1..=i64::from(i32::MAX),
        "Deferred field misformed, rejected",
    )?
    .filter(|&m| m >= 0);
    let priority = ranged(
        &source,
        "priority",
        0..=3,
        "Priority field misformed, rejected",
    )?;
    let mask = ranged(
        &source,
        "dlr-mask",
        0..=63,
        "DLR-Mask field misformed, rejected",
    )?
    .or(ranged(
        &source,
        "dlrmask",
        0..=63,
        "DLR-Mask field misformed, rejected",
    )?);
    let dlr_url = source
        .text(&["dlr-url", "dlrurl"])
        .filter(|u| !u.is_empty());
    if let Some(url) = &dlr_url {
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.chars().any(char::is_whitespace)
        {
            return Err(bad("DLR-URL field misformed, rejected"));
        }
    }
    let billing = source.text(&["account"]);
    if billing
        .as_deref()
        .is_some_and(|a| a.len() > 64 || a.contains(['[', ']', '\n', '\r']))
    {
        return Err(bad("Account field misformed or too long, rejected"));
    }
    let binfo = source.text(&["binfo"]);
    let (body, encoding) = body_of(&text, charset.as_deref(), coding)
        .ok_or_else(|| bad("Charset or body misformed, rejected"))?;

    // Reports that smsbus gives: delivered, not delivered, taken and
    // refused by the SMSC (never 4, buffered).
    let callback = match (mask.map(|m| (m & 27) as i32), dlr_url) {
        (Some(mask), Some(url)) if mask != 0 => Some(Callback {
            style: "kannel",
            url,
            method: "GET",
            mask,
        }),
        _ => None,
    };
    let custom = (billing.is_some() || binfo.is_some())
        .then(|| serde_json::json!({"kannel": {"account": billing, "binfo": binfo}}));
    let messages: Vec<Outgoing> = receivers
        .iter()
        .map(|to| Outgoing {
            to: (*to).to_owned(),
            body: body.clone(),
            from: source.text(&["from"]).filter(|f| !f.is_empty()),
            channel: source.text(&["smsc"]).filter(|c| !c.is_empty()),
            scheduled: deferred.map(minutes_from_now),
            validity: validity.map(minutes_from_now),
            priority: priority.map(|p| p as i16),
            // Kannel asks the SMSC for a receipt when the mask wants one.
            request_report: mask.map(|m| m & 7 != 0),
            encoding: encoding.map(str::to_owned),
            custom: custom.clone(),
        })
        .collect();
    let inserted = match send(api, &account, &messages, callback.as_ref()).await {
        Ok(inserted) => inserted,
        Err(Refused::Unavailable) => return Err(unavailable()),
        Err(Refused::Message { text, column }) => {
            let about_receiver =
                column.as_deref() == Some("to_address") || text.contains("to_address");
            return Err(bad(&match about_receiver {
                true => "Number(s) has/have been denied by white- and/or black-lists.".to_owned(),
                false => format!("{text}, rejected"),
            }));
        }
    };
    if inserted.iter().all(|m| m.status == "blocked") {
        return Ok(answer(
            StatusCode::FORBIDDEN,
            "Not routable. Do not try again.",
        ));
    }
    if inserted
        .iter()
        .any(|m| m.status == "nochannel" || m.status == "dailylimit")
    {
        return Ok(answer(StatusCode::ACCEPTED, "3: Queued for later delivery"));
    }
    Ok(answer(StatusCode::ACCEPTED, "0: Accepted for delivery"))
}

fn unavailable() -> Reply {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporal failure, try again later.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets_and_codings_give_the_body_and_encoding() {
        assert_eq!(
            body_of("héllo".as_bytes(), None, Coding::Unset),
            Some(("héllo".to_owned(), None))
        );
        assert_eq!(
            body_of(b"caf\xe9", Some("ISO-8859-1"), Coding::SevenBit),
            Some(("café".to_owned(), Some("gsm7")))
        );
        assert_eq!(
            body_of(&[0x04, 0x1f, 0x04, 0x40], None, Coding::Ucs2),
            Some(("Пр".to_owned(), Some("ucs2")))
        );
        assert_eq!(
            body_of(&[0xde, 0xad], None, Coding::EightBit),
            Some(("dead".to_owned(), Some("binary")))
        );
        assert_eq!(body_of(b"\xff", None, Coding::Unset), None, "not UTF-8");
        assert_eq!(body_of(b"x", Some("koi8-r"), Coding::Unset), None);
        assert_eq!(body_of(&[0x04], None, Coding::Ucs2), None, "odd UTF-16");
    }

    #[test]
    fn integers_are_read_as_smsbox_reads_them() {
        let source = Source::Query(fields(b"a=12&b=-1&c=x&d=7abc&e="));
        assert_eq!(source.integer("a"), Some(12));
        assert_eq!(source.integer("b"), Some(-1));
        assert_eq!(source.integer("c"), None);
        assert_eq!(source.integer("d"), Some(7));
        assert_eq!(source.integer("e"), None);
        assert_eq!(source.integer("missing"), None);
    }
}
