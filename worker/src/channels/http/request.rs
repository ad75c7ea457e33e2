//! The requests a message becomes: the channel's templates filled with the
//! message's values (one request, or one per part when the provider does
//! not split long messages itself), and the authentication the channel
//! uses. A form field or query parameter whose value comes out empty (a
//! message without a validity, one that asks no report) is left out, so
//! the provider applies its default instead of refusing an empty value.

use std::borrow::Cow;
use std::time::SystemTime;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use smsbus_core::text::{self, Encoding};

use super::config::{Auth, HttpConfig, Parts};
use super::template::Escape;
use crate::channels::OutMessage;

/// One request, ready to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<(String, String)>,
}

/// Why a message cannot be put into a request: it fails for good.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenderError {
    #[error("the message's text cannot be split into parts: {0}")]
    Split(String),
}

/// The values of one request: the message's, and the part's when it goes
/// in parts.
struct Values<'a> {
    config: &'a HttpConfig,
    channel: &'a str,
    message: &'a OutMessage,
    body: &'a str,
    part: usize,
    parts: usize,
    udh: String,
    now: SystemTime,
}

fn digits(address: &str) -> &str {
    address.strip_prefix('+').unwrap_or(address)
}

impl Values<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        let m = self.message;
        let c = self.config;
        let from = m.from_address.as_deref().or(c.source_addr.as_deref());
        let left = m
            .valid_until
            .map(|until| until.duration_since(self.now).unwrap_or_default());
        let owned = |s: String| Some(Cow::Owned(s));
        let shown = |s: &str| (!s.is_empty()).then(|| Cow::Owned(s.to_owned()));
        match name {
            "to" => Some(Cow::Borrowed(m.to_address.as_str())),
            "to_digits" => Some(Cow::Borrowed(digits(&m.to_address))),
            "from" => from.map(Cow::Borrowed),
            "from_digits" => from.map(|f| Cow::Borrowed(digits(f))),
            "body" => Some(Cow::Borrowed(self.body)),
            "id" => owned(m.id.to_string()),
            "encoding" => Some(Cow::Borrowed(m.encoding.as_str())),
            "text_type" => Some(Cow::Borrowed(match m.encoding {
                Encoding::Ucs2 => "unicode",
                _ => "text",
            })),
            // Kannel's %c: 0 for 7-bit, 2 for UCS-2.
            "coding" => Some(Cow::Borrowed(match m.encoding {
                Encoding::Ucs2 => "2",
                _ => "0",
            })),
            "segments" => owned(m.segments.to_string()),
            "part" => owned(self.part.to_string()),
            "parts" => owned(self.parts.to_string()),
            "udh" => shown(&self.udh),
            "priority" => owned(m.priority.to_string()),
            // At least a second (a minute): a validity that comes out 0
            // would mean "the provider's default" to many.
            "validity_s" => left.map(|l| Cow::Owned(l.as_secs().max(1).to_string())),
            "validity_ms" => left.map(|l| Cow::Owned(l.as_millis().max(1000).to_string())),
            "validity_min" => left.map(|l| Cow::Owned((l.as_secs() / 60).max(1).to_string())),
            "request_report" => Some(Cow::Borrowed(if m.request_report {
                "true"
            } else {
                "false"
            })),
            "report_flag" => Some(Cow::Borrowed(if m.request_report { "1" } else { "0" })),
            "report_url" if m.request_report => shown(&c.hook_url(self.channel, "reports")),
            "report_url" => None,
            "inbound_url" => shown(&c.hook_url(self.channel, "inbound")),
            "channel" => Some(Cow::Borrowed(self.channel)),
            "base_url" => Some(Cow::Borrowed(c.base_url.as_str())),
            "account" => Some(Cow::Borrowed(c.account.as_str())),
            "username" => Some(Cow::Borrowed(c.username.as_str())),
            "password" => Some(Cow::Borrowed(c.password.as_str())),
            "token" => Some(Cow::Borrowed(c.token.as_str())),
            _ => {
                // A user field: text as it is, numbers and booleans as
                // written, objects and lists as JSON; null or absent: none.
                let key = name.strip_prefix("custom.")?;
                match m.custom.as_ref()?.get(key)? {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(text) => Some(Cow::Borrowed(text.as_str())),
                    other => owned(other.to_string()),
                }
            }
        }
    }
}

/// `a=1&b=&c=3` without `b=`.
fn without_empty_fields(form: &str) -> String {
    form.split('&')
        .filter(|pair| !pair.is_empty() && !pair.ends_with('='))
        .collect::<Vec<_>>()
        .join("&")
}

/// The URL with empty query parameters left out.
fn tidy_url(url: String) -> String {
    match url.split_once('?') {
        Some((base, query)) => {
            let query = without_empty_fields(query);
            if query.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{query}")
            }
        }
        None => url,
    }
}

/// The requests that send `message` through the channel.
pub fn render(
    config: &HttpConfig,
    channel: &str,
    message: &OutMessage,
    now: SystemTime,
) -> Result<Vec<Rendered>, RenderError> {
    let pieces: Vec<(String, String)> = match config.parts {
        Parts::Split if message.segments > 1 => {
            let ranges = text::split(&message.body, message.encoding)
                .map_err(|e| RenderError::Split(e.to_string()))?;
            let total = ranges.len();
            // The concatenation header (3GPP TS 23.040 9.2.3.24.1): an
            // 8-bit reference from the message id, the count, the number.
            let reference = (message.id % 256) as u8;
            ranges
                .into_iter()
                .enumerate()
                .map(|(n, range)| {
                    let udh = format!("050003{reference:02X}{total:02X}{:02X}", n + 1);
                    (message.body[range].to_owned(), udh)
                })
                .collect()
        }
        _ => vec![(message.body.clone(), String::new())],
    };
    let parts = pieces.len();
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(n, (body, udh))| {
            let values = Values {
                config,
                channel,
                message,
                body: &body,
                part: n + 1,
                parts,
                udh,
                now,
            };
            one(config, &values)
        })
        .collect())
}

fn one(config: &HttpConfig, values: &Values<'_>) -> Rendered {
    let t = &config.request;
    let get = |name: &str| values.get(name);
    // The base URL is configuration, a URL already: as it is.
    let url_escape = |name: &str| {
        if name == "base_url" {
            Escape::None
        } else {
            Escape::Url
        }
    };
    let url = tidy_url(t.url.render_each(url_escape, get));
    let body = t.body.as_ref().map(|body| {
        let text = body.render(t.body_escape, get);
        let text = if t.body_escape == Escape::Form {
            without_empty_fields(&text)
        } else {
            text
        };
        (t.content_type.clone(), text)
    });
    let mut headers: Vec<(String, String)> = t
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.render(Escape::None, get)))
        .collect();
    match config.auth {
        Auth::None => {}
        Auth::Basic => {
            let pair = format!("{}:{}", config.username, config.password);
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            headers.push(("Authorization".into(), format!("Basic {encoded}")));
        }
        Auth::Bearer => headers.push(("Authorization".into(), format!("Bearer {}", config.token))),
        Auth::App => headers.push(("Authorization".into(), format!("App {}", config.token))),
        Auth::Hmac => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(config.token.as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(body.as_ref().map_or(&b""[..], |(_, b)| b.as_bytes()));
            let digest = mac.finalize().into_bytes();
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            headers.push((config.hmac_header.clone(), hex));
        }
    }
    Rendered {
        method: t.method.clone(),
        url,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn message(body: &str) -> OutMessage {
        let encoding = text::detect(body);
        OutMessage {
            id: 42,
            to_address: "+31612345678".into(),
            from_address: Some("Acme & Co".into()),
            body: body.into(),
            encoding,
            segments: text::segments(body, encoding).unwrap() as i32,
            priority: 0,
            request_report: true,
            valid_until: None,
            due_at: SystemTime::now(),
            to_ton: None,
            to_npi: None,
            from_ton: None,
            from_npi: None,
            client_parts: None,
            custom: None,
        }
    }

    fn config(extra: serde_json::Value) -> HttpConfig {
        HttpConfig::parse(&extra).unwrap()
    }

    #[test]
    fn twilio_gets_a_form_with_basic_auth_and_its_status_callback() {
        let c = config(
            json!({"preset": "twilio", "account": "AC1", "username": "AC1",
                              "password": "pw", "webhook_url": "https://bus.example"}),
        );
        let now = SystemTime::now();
        let mut m = message("Hi & bye=1");
        m.valid_until = Some(now + Duration::from_secs(3600));
        let r = render(&c, "tw", &m, now).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].method, reqwest::Method::POST);
        assert_eq!(
            r[0].url,
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
        );
        let (kind, body) = r[0].body.clone().unwrap();
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            body,
            "To=%2B31612345678&From=Acme+%26+Co&Body=Hi+%26+bye%3D1\
             &StatusCallback=https%3A%2F%2Fbus.example%2Fv1%2Fproviders%2Ftw%2Freports\
             &ValidityPeriod=3600"
        );
        assert!(r[0]
            .headers
            .contains(&("Authorization".into(), "Basic QUMxOnB3".into())));
    }

    #[test]
    fn empty_fields_are_left_out() {
        let c = config(
            json!({"preset": "twilio", "account": "AC1", "username": "AC1",
                              "password": "pw", "webhook_url": "https://bus.example"}),
        );
        let mut m = message("Hi");
        m.request_report = false;
        m.from_address = None;
        let r = render(&c, "tw", &m, SystemTime::now()).unwrap();
        assert_eq!(r[0].body.clone().unwrap().1, "To=%2B31612345678&Body=Hi");
    }

    #[test]
    fn infobip_gets_json_that_no_text_breaks_out_of() {
        let c = config(
            json!({"preset": "infobip", "base_url": "https://x.api.infobip.com",
                              "token": "key", "signature": "none"}),
        );
        let r = render(&c, "ib", &message("say \"hi\"\n\\"), SystemTime::now()).unwrap();
        let (_, body) = r[0].body.clone().unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["messages"][0]["content"]["text"], "say \"hi\"\n\\");
        assert_eq!(json["messages"][0]["destinations"][0]["to"], "31612345678");
        assert_eq!(
            json["messages"][0]["destinations"][0]["messageId"],
            "smsbus-42"
        );
        assert!(r[0]
            .headers
            .contains(&("Authorization".into(), "App key".into())));
    }

    #[test]
    fn a_provider_that_does_not_split_gets_each_part_with_its_header() {
        let c = config(json!({"preset": "generic", "base_url": "http://k/send",
                              "signature": "none", "parts": "split",
                              "request": {"url": "${base_url}?to=${to}&text=${body}&udh=${udh}"}}));
        let body = "x".repeat(200);
        let r = render(&c, "k", &message(&body), SystemTime::now()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].method, reqwest::Method::GET);
        assert!(r[0]
            .url
            .ends_with(&format!("text={}&udh=0500032A0201", "x".repeat(153))));
        assert!(r[1]
            .url
            .ends_with(&format!("text={}&udh=0500032A0202", "x".repeat(47))));
    }

    #[test]
    fn user_fields_fill_templates() {
        let c = config(
            json!({"preset": "generic", "base_url": "http://k/send", "signature": "none",
                              "request": {"method": "POST", "url": "${base_url}",
                                          "content_type": "application/json",
                                          "body": "{\"ref\":\"${custom.order}\",\"n\":${custom.n},\"x\":\"${custom.none}\"}"}}),
        );
        let mut m = message("x");
        m.custom = Some(json!({"order": "A\"1", "n": 7, "none": null}));
        let body = render(&c, "k", &m, SystemTime::now()).unwrap()[0]
            .body
            .clone()
            .unwrap()
            .1;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json, json!({"ref": "A\"1", "n": 7, "x": ""}));
        let e = HttpConfig::parse(
            &json!({"preset": "generic", "base_url": "http://k", "signature": "none",
                                           "request": {"url": "${base_url}?o=${custom.}"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("${custom.}"), "{e}");
    }

    #[test]
    fn hmac_auth_signs_the_body() {
        let c = config(
            json!({"preset": "generic", "base_url": "http://k/send", "signature": "none",
                              "auth": "hmac", "token": "key",
                              "request": {"method": "POST", "url": "${base_url}",
                                          "content_type": "application/json",
                                          "body": "{\"to\":\"${to}\"}"}}),
        );
        let r = render(&c, "k", &message("x"), SystemTime::now()).unwrap();
        let body = r[0].body.clone().unwrap().1;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"key").unwrap();
        mac.update(body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(r[0].headers.contains(&("X-Signature".into(), hex)));
    }
}
