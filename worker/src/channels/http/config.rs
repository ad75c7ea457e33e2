//! An HTTP channel's settings, read from `smsbus.channel.config`: a
//! preset (`twilio`, `vonage`, `infobip`, `generic`, shipped as JSON in
//! `presets/`) with the operator's keys laid over it key by key, read as
//! one generic mapping. Unknown keys are refused, and no error ever
//! quotes a value (credentials live here).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::extract::{Extractor, JsonPath};
use super::reports::ReportMapping;
use super::response::ResponseMapping;
use super::signatures::VonageMethod;
use super::template::{Escape, Template};
use crate::channels::smpp::config::{ReportParts, UnknownOutcome};

/// The values a request template may use (README: HTTP channels).
pub const VALUES: &[&str] = &[
    "to",
    "to_digits",
    "from",
    "from_digits",
    "body",
    "id",
    "encoding",
    "text_type",
    "coding",
    "segments",
    "part",
    "parts",
    "udh",
    "priority",
    "validity_s",
    "validity_ms",
    "validity_min",
    "request_report",
    "report_flag",
    "report_url",
    "inbound_url",
    "channel",
    "base_url",
    "account",
    "username",
    "password",
    "token",
    // `${custom.<key>}`: a user field of the message.
    "custom.",
];

/// The presets, as shipped.
pub const PRESETS: &[(&str, &str)] = &[
    ("twilio", include_str!("presets/twilio.json")),
    ("vonage", include_str!("presets/vonage.json")),
    ("infobip", include_str!("presets/infobip.json")),
    ("generic", include_str!("presets/generic.json")),
];

/// How requests to the provider authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Credentials in the URL or body template, or none.
    None,
    /// `Authorization: Basic` of `username` and `password`.
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: App <token>` (Infobip's API keys).
    App,
    /// An HMAC-SHA256 of the body under `token`, hex, in `hmac_header`.
    Hmac,
}

/// How the provider's webhooks prove they come from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signature {
    /// Not checked: anyone who knows the URL can post reports.
    None,
    /// `X-Twilio-Signature` under `signature_secret` (the Auth Token).
    Twilio,
    /// Vonage's `sig` parameter under `signature_secret`.
    Vonage,
    /// `Authorization: Basic` equal to `signature_secret` (`user:password`).
    Basic,
}

/// How a message longer than one SMS goes to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parts {
    /// One request with the whole text; the provider splits it.
    Provider,
    /// One request per part, each with its text and `${udh}`.
    Split,
}

/// A request template, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    body: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawResponse {
    success_http: Option<Vec<String>>,
    temporary_http: Option<Vec<String>>,
    id: Option<String>,
    status: Option<String>,
    accepted: Vec<String>,
    temporary: Vec<String>,
    error: Option<String>,
    success_body: Option<String>,
    permanent_body: Option<String>,
    temporary_body: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    #[serde(default)]
    entries: Option<String>,
    id: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    delivered: Vec<String>,
    #[serde(default)]
    notdelivered: Vec<String>,
    #[serde(default)]
    expired: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    #[serde(default)]
    entries: Option<String>,
    #[serde(default)]
    id: Option<String>,
    from: String,
    to: String,
    text: String,
    #[serde(default)]
    concat_ref: Option<String>,
    #[serde(default)]
    concat_total: Option<String>,
    #[serde(default)]
    concat_part: Option<String>,
}

/// What smsbus answers a webhook it has recorded.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub status: u16,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub body: String,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 200,
            content_type: String::new(),
            body: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    preset: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    source_addr: Option<String>,
    auth: Auth,
    #[serde(default)]
    hmac_header: Option<String>,
    #[serde(default)]
    webhook_url: String,
    signature: Signature,
    #[serde(default)]
    signature_secret: String,
    #[serde(default)]
    signature_method: Option<VonageMethod>,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    throughput: Option<f64>,
    #[serde(default)]
    connect_timeout_s: Option<f64>,
    #[serde(default)]
    request_timeout_s: Option<f64>,
    #[serde(default)]
    retry_min_s: Option<f64>,
    #[serde(default)]
    retry_max_s: Option<f64>,
    #[serde(default)]
    on_unknown_outcome: Option<UnknownOutcome>,
    #[serde(default)]
    tls_ca: Option<String>,
    #[serde(default)]
    parts: Option<Parts>,
    #[serde(default)]
    report_timeout_s: Option<f64>,
    #[serde(default)]
    report_parts: Option<ReportParts>,
    request: RawRequest,
    #[serde(default)]
    response: RawResponse,
    reports: RawReports,
    inbound: RawInbound,
    #[serde(default)]
    reports_answer: Option<Answer>,
    #[serde(default)]
    inbound_answer: Option<Answer>,
}

/// A request template, parsed.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: reqwest::Method,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub content_type: String,
    pub body: Option<Template>,
    /// How values are escaped in the body (by its content type).
    pub body_escape: Escape,
}

/// Where inbound messages' fields are in the provider's webhook.
#[derive(Debug, Clone)]
pub struct InboundMapping {
    pub entries: Option<JsonPath>,
    pub id: Option<JsonPath>,
    pub from: JsonPath,
    pub to: JsonPath,
    pub text: JsonPath,
    pub concat_ref: Option<JsonPath>,
    pub concat_total: Option<JsonPath>,
    pub concat_part: Option<JsonPath>,
}

/// A channel's settings, checked and compiled. Its `Debug` leaves the
/// credentials out.
#[derive(Clone)]
pub struct HttpConfig {
    pub preset: String,
    pub base_url: String,
    pub account: String,
    pub username: String,
    pub password: String,
    pub token: String,
    pub source_addr: Option<String>,
    pub auth: Auth,
    pub hmac_header: String,
    /// smsbus's HTTP API as the provider reaches it (no trailing `/`).
    pub webhook_url: String,
    pub signature: Signature,
    pub signature_secret: String,
    pub signature_method: VonageMethod,
    pub concurrency: u32,
    pub throughput: f64,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub on_unknown_outcome: UnknownOutcome,
    pub tls_ca: Option<String>,
    pub parts: Parts,
    /// Read by `smsbus._apply_reports` from the row; checked here.
    pub report_parts: ReportParts,
    pub request: RequestTemplate,
    pub response: ResponseMapping,
    pub reports: ReportMapping,
    pub inbound: InboundMapping,
    pub reports_answer: Answer,
    pub inbound_answer: Answer,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("preset", &self.preset)
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .field("signature", &self.signature)
            .field("concurrency", &self.concurrency)
            .field("throughput", &self.throughput)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

/// Why a config was refused: the key and what is wrong, never its value.
fn invalid(what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("invalid HTTP config: {what}")
}

/// `preset` laid under `config`: objects merged key by key, anything
/// else replaced.
fn overlay(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) if slot.is_object() && value.is_object() => overlay(slot, value),
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// The preset named by `config`, with `config` laid over it.
pub fn merged(config: &Value) -> anyhow::Result<Value> {
    let Some(object) = config.as_object() else {
        return Err(invalid("the config must be a JSON object"));
    };
    let name = match object.get("preset") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err(invalid("`preset` must be a string")),
        None => {
            return Err(invalid(
                "`preset` is required (twilio, vonage, infobip or generic)",
            ))
        }
    };
    let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
        return Err(invalid(
            "`preset` must be one of twilio, vonage, infobip, generic",
        ));
    };
    let mut base: Value = serde_json::from_str(text).expect("shipped presets are JSON");
    overlay(&mut base, config);
    Ok(base)
}

fn seconds(name: &str, value: Option<f64>, default: f64, max: f64) -> anyhow::Result<Duration> {
    let v = value.unwrap_or(default);
    if !(v > 0.0 && v <= max) {
        return Err(invalid(format!(
            "`{name}` must be more than 0 and at most {max}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

fn extractor(key: &str, text: &Option<String>) -> anyhow::Result<Option<Extractor>> {
    text.as_deref()
        .map(|t| Extractor::parse(t).map_err(|e| invalid(format!("`{key}`: {e}"))))
        .transpose()
}

fn path(key: &str, text: &str) -> anyhow::Result<JsonPath> {
    JsonPath::parse(text).map_err(|e| invalid(format!("`{key}`: {e}")))
}

fn optional_path(key: &str, text: &Option<String>) -> anyhow::Result<Option<JsonPath>> {
    text.as_deref().map(|t| path(key, t)).transpose()
}

/// `"200-299"` or `"429"`.
fn ranges(key: &str, texts: &[String]) -> anyhow::Result<Vec<RangeInclusive<u16>>> {
    texts
        .iter()
        .map(|text| {
            let (low, high) = text.split_once('-').unwrap_or((text, text));
            match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                (Ok(low), Ok(high)) if (100..=599).contains(&low) && low <= high && high <= 599 => {
                    Ok(low..=high)
                }
                _ => Err(invalid(format!(
                    "`{key}` holds HTTP statuses like \"429\" or ranges like \"500-599\""
                ))),
            }
        })
        .collect()
}

fn template(key: &str, text: &str) -> anyhow::Result<Template> {
    Template::parse(text, VALUES).map_err(|e| invalid(format!("`{key}`: {e}")))
}

impl HttpConfig {
    /// Reads and checks a channel's config; the error says which setting is
    /// wrong.
    pub fn parse(config: &Value) -> anyhow::Result<HttpConfig> {
        let merged = merged(config)?;
        let raw: Raw = crate::channels::config_json::read(&merged).map_err(invalid)?;
        let preset = raw.preset.clone();

        let method =
            reqwest::Method::from_bytes(raw.request.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| invalid("`request.method` is not an HTTP method"))?;
        let content_type = raw.request.content_type.trim().to_owned();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let body_escape = match essence.as_str() {
            "application/x-www-form-urlencoded" => Escape::Form,
            e if e == "application/json" || e.ends_with("+json") => Escape::Json,
            e if e.ends_with("/xml") || e.ends_with("+xml") => Escape::Xml,
            _ => Escape::None,
        };
        let body = if raw.request.body.is_empty() {
            None
        } else {
            Some(template("request.body", &raw.request.body)?)
        };
        if body.is_some() && content_type.is_empty() {
            return Err(invalid("`request.content_type` is required with a body"));
        }
        let mut headers = Vec::new();
        for (name, value) in &raw.request.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("`request.headers` has a name that is not a header name"))?;
            headers.push((name.clone(), template("request.headers", value)?));
        }
        let url = template("request.url", &raw.request.url)?;
        let request = RequestTemplate {
            method,
            url,
            headers,
            content_type,
            body,
            body_escape,
        };

        let defaults = ResponseMapping::default();
        let r = &raw.response;
        let response = ResponseMapping {
            success_http: match &r.success_http {
                Some(t) => ranges("response.success_http", t)?,
                None => defaults.success_http,
            },
            temporary_http: match &r.temporary_http {
                Some(t) => ranges("response.temporary_http", t)?,
                None => defaults.temporary_http,
            },
            id: extractor("response.id", &r.id)?,
            status: extractor("response.status", &r.status)?,
            accepted: r.accepted.clone(),
            temporary: r.temporary.clone(),
            error: extractor("response.error", &r.error)?,
            success_body: extractor("response.success_body", &r.success_body)?,
            permanent_body: extractor("response.permanent_body", &r.permanent_body)?,
            temporary_body: extractor("response.temporary_body", &r.temporary_body)?,
        };
        if response.status.is_some() && response.accepted.is_empty() {
            return Err(invalid(
                "`response.accepted` is required with `response.status`",
            ));
        }

        let p = &raw.reports;
        let reports = ReportMapping {
            entries: optional_path("reports.entries", &p.entries)?,
            id: path("reports.id", &p.id)?,
            status: path("reports.status", &p.status)?,
            error: optional_path("reports.error", &p.error)?,
            delivered: p.delivered.clone(),
            notdelivered: p.notdelivered.clone(),
            expired: p.expired.clone(),
        };
        let i = &raw.inbound;
        let inbound = InboundMapping {
            entries: optional_path("inbound.entries", &i.entries)?,
            id: optional_path("inbound.id", &i.id)?,
            from: path("inbound.from", &i.from)?,
            to: path("inbound.to", &i.to)?,
            text: path("inbound.text", &i.text)?,
            concat_ref: optional_path("inbound.concat_ref", &i.concat_ref)?,
            concat_total: optional_path("inbound.concat_total", &i.concat_total)?,
            concat_part: optional_path("inbound.concat_part", &i.concat_part)?,
        };

        let concurrency = raw.concurrency.unwrap_or(10);
        if !(1..=1000).contains(&concurrency) {
            return Err(invalid("`concurrency` must be 1 to 1000"));
        }
        let throughput = raw.throughput.unwrap_or(0.0);
        if !(throughput >= 0.0 && throughput.is_finite()) {
            return Err(invalid("`throughput` must be 0 (unlimited) or more"));
        }
        let retry_min = seconds("retry_min_s", raw.retry_min_s, 1.0, 3600.0)?;
        let retry_max = seconds("retry_max_s", raw.retry_max_s, 300.0, 86_400.0)?;
        if retry_max < retry_min {
            return Err(invalid("`retry_max_s` must be at least `retry_min_s`"));
        }
        if let Some(t) = raw.report_timeout_s {
            if !(t > 0.0 && t.is_finite()) {
                return Err(invalid("`report_timeout_s` must be more than 0"));
            }
        }
        let webhook_url = raw.webhook_url.trim_end_matches('/').to_owned();
        let is_url = webhook_url.starts_with("http://") || webhook_url.starts_with("https://");
        if !webhook_url.is_empty() && !is_url {
            return Err(invalid("`webhook_url` must start with http:// or https://"));
        }
        let mut signature_secret = raw.signature_secret.clone();
        if raw.signature == Signature::Twilio && signature_secret.is_empty() {
            // Twilio signs with the account's Auth Token, the password
            // when the account SID is the username.
            signature_secret = raw.password.clone();
        }
        match raw.signature {
            Signature::None => {}
            Signature::Twilio if webhook_url.is_empty() => {
                return Err(invalid(
                    "`webhook_url` is required with signature = twilio (Twilio signs the URL it calls)",
                ))
            }
            Signature::Basic if !signature_secret.contains(':') => {
                return Err(invalid(
                    "`signature_secret` must be user:password with signature = basic (or set signature to none)",
                ))
            }
            _ if signature_secret.is_empty() => {
                return Err(invalid(
                    "`signature_secret` is required with this signature (or set signature to none)",
                ))
            }
            _ => {}
        }
        match raw.auth {
            Auth::Basic if raw.username.is_empty() => {
                return Err(invalid("`username` is required with auth = basic"))
            }
            Auth::Bearer | Auth::App | Auth::Hmac if raw.token.is_empty() => {
                return Err(invalid("`token` is required with this auth"))
            }
            _ => {}
        }
        let hmac_header = raw
            .hmac_header
            .clone()
            .unwrap_or_else(|| "X-Signature".into());
        reqwest::header::HeaderName::from_bytes(hmac_header.as_bytes())
            .map_err(|_| invalid("`hmac_header` is not a header name"))?;
        if request.url.names().any(|n| n == "base_url") && raw.base_url.is_empty() {
            return Err(invalid("`base_url` is required by `request.url`"));
        }
        if request.url.names().any(|n| n == "account") && raw.account.is_empty() {
            return Err(invalid("`account` is required by `request.url`"));
        }
        Ok(HttpConfig {
            preset,
            base_url: raw.base_url.trim_end_matches('/').to_owned(),
            account: raw.account,
            username: raw.username,
            password: raw.password,
            token: raw.token,
            source_addr: raw.source_addr,
            auth: raw.auth,
            hmac_header,
            webhook_url,
            signature: raw.signature,
            signature_secret,
            signature_method: raw.signature_method.unwrap_or(VonageMethod::Md5Hash),
            concurrency,
            throughput,
            connect_timeout: seconds("connect_timeout_s", raw.connect_timeout_s, 5.0, 600.0)?,
            request_timeout: seconds("request_timeout_s", raw.request_timeout_s, 30.0, 600.0)?,
            retry_min,
            retry_max,
            on_unknown_outcome: raw.on_unknown_outcome.unwrap_or(UnknownOutcome::Retry),
            tls_ca: raw.tls_ca,
            parts: raw.parts.unwrap_or(Parts::Provider),
            report_parts: raw.report_parts.unwrap_or(ReportParts::All),
            request,
            response,
            reports,
            inbound,
            reports_answer: raw.reports_answer.unwrap_or_default(),
            inbound_answer: raw.inbound_answer.unwrap_or_default(),
        })
    }

    /// The URL of the channel's `hook` (`reports`, `inbound`) as the
    /// provider calls it (empty without `webhook_url`). Channel names need
    /// no escaping in a path: letters, digits, `_`, `.` and `-`.
    pub fn hook_url(&self, channel: &str, hook: &str) -> String {
        if self.webhook_url.is_empty() {
            return String::new();
        }
        format!("{}/v1/providers/{channel}/{hook}", self.webhook_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn twilio() -> Value {
        json!({"preset": "twilio", "account": "AC123", "username": "AC123",
               "password": "tok3n-secret", "webhook_url": "https://smsbus.example/"})
    }

    #[test]
    fn every_preset_reads_with_its_credentials() {
        for (name, extra) in [
            ("twilio", twilio()),
            (
                "vonage",
                json!({"preset": "vonage", "username": "key", "password": "s", "signature_secret": "x"}),
            ),
            (
                "infobip",
                json!({"preset": "infobip", "base_url": "https://x.api.infobip.com", "token": "k",
                       "signature_secret": "infobip:pw"}),
            ),
            (
                "generic",
                json!({"preset": "generic", "base_url": "http://kannel:13013/send",
                       "signature_secret": "bus:pw"}),
            ),
        ] {
            let c = HttpConfig::parse(&extra).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.preset, name);
        }
    }

    #[test]
    fn keys_override_the_preset_one_by_one() {
        let mut config = twilio();
        config["response"] = json!({"id": "/other"});
        config["concurrency"] = json!(64);
        let c = HttpConfig::parse(&config).unwrap();
        assert_eq!(c.concurrency, 64);
        assert!(matches!(&c.response.id, Some(Extractor::Json(p)) if p.to_string() == "/other"));
        // The rest of `response` is still the preset's.
        assert!(c.response.error.is_some());
        assert_eq!(c.webhook_url, "https://smsbus.example");
        assert_eq!(c.signature_secret, "tok3n-secret");
        assert_eq!(
            c.hook_url("tw-1", "reports"),
            "https://smsbus.example/v1/providers/tw-1/reports"
        );
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let err = |extra: Value| {
            let mut config = twilio();
            overlay(&mut config, &extra);
            HttpConfig::parse(&config).unwrap_err().to_string()
        };
        let e = err(json!({"pasword": "tok3n-secret"}));
        assert!(e.contains("pasword") && !e.contains("tok3n"), "{e}");
        let e = err(json!({"password": 12345}));
        assert!(e.contains("password") && !e.contains("12345"), "{e}");
        let e = err(json!({"request": {"body": "To=${tu}"}}));
        assert!(e.contains("request.body") && e.contains("${tu}"), "{e}");
        let e = err(json!({"response": {"id": "regex:(a)(b)"}}));
        assert!(e.contains("response.id"), "{e}");
        let e = err(json!({"concurrency": 0}));
        assert!(e.contains("concurrency"), "{e}");
        let e = err(json!({"webhook_url": ""}));
        assert!(e.contains("webhook_url"), "{e}");
        let e = err(json!({"response": {"temporary_http": ["600"]}}));
        assert!(e.contains("temporary_http"), "{e}");
        let e = HttpConfig::parse(&json!({"preset": "twillio"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("preset"), "{e}");
        let e = HttpConfig::parse(&json!({"preset": "vonage", "username": "k"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("signature_secret"), "{e}");
    }

    /// Each preset reads its provider's documented answer to a send
    /// (docs/provider-apis.md: Twilio's Message resource, Vonage's
    /// two-part answer, Infobip's v3 fixture, Kannel generic's `OK <id>`).
    #[test]
    fn every_preset_reads_its_providers_documented_answer() {
        use crate::channels::http::response::Outcome;
        let now = std::time::SystemTime::now();
        let read = |config: Value, status: u16, body: &str| {
            HttpConfig::parse(&config)
                .unwrap()
                .response
                .outcome(status, None, body, now)
        };
        let twilio = read(
            twilio(),
            201,
            r#"{"account_sid": "ACXX", "sid": "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "status": "queued"}"#,
        );
        assert_eq!(
            twilio,
            Outcome::Accepted {
                ids: vec!["SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()],
                refused: None
            }
        );
        let vonage = read(
            json!({"preset": "vonage", "username": "k", "signature": "none"}),
            200,
            r#"{"message-count": "2", "messages": [
                {"to": "1234567890", "message-id": "62dfdf68-6c7c-479a-a190-5c52f798a787", "status": "0"},
                {"to": "1234567890", "message-id": "72ff9536-62d6-455a-9f0b-65f3c265b423", "status": "0"}]}"#,
        );
        assert!(matches!(vonage, Outcome::Accepted { ids, refused: None } if ids.len() == 2));
        let infobip = read(
            json!({"preset": "infobip", "base_url": "https://x", "token": "k", "signature": "none"}),
            200,
            r#"{"bulkId": "2034072219640523072", "messages": [{
                "messageId": "2250be2d4219-3af1-78856-aabe-1362af1edfd2",
                "status": {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "MESSAGE_ACCEPTED",
                           "description": "Message sent to next instance"},
                "destination": "41793026727", "details": {"messageCount": 1}}]}"#,
        );
        assert_eq!(
            infobip,
            Outcome::Accepted {
                ids: vec!["2250be2d4219-3af1-78856-aabe-1362af1edfd2".into()],
                refused: None
            }
        );
        let refused = read(
            json!({"preset": "infobip", "base_url": "https://x", "token": "k", "signature": "none"}),
            400,
            r#"{"requestError":{"serviceException":{"messageId":"BAD_REQUEST","text":"Bad Request"}}}"#,
        );
        assert_eq!(
            refused,
            Outcome::Permanent {
                reason: "HTTP 400: Bad Request".into()
            }
        );
        let kannel = read(
            json!({"preset": "generic", "base_url": "http://k", "signature": "none"}),
            202,
            "OK 5f2d7c1e-2b1a-4c39-9c1e-7a0d3c4b5e6f",
        );
        assert_eq!(
            kannel,
            Outcome::Accepted {
                ids: vec!["5f2d7c1e-2b1a-4c39-9c1e-7a0d3c4b5e6f".into()],
                refused: None
            }
        );
    }

    #[test]
    fn its_debug_form_shows_no_credential() {
        let shown = format!("{:?}", HttpConfig::parse(&twilio()).unwrap());
        assert!(
            !shown.contains("tok3n-secret") && !shown.contains("AC123"),
            "{shown}"
        );
    }

    #[test]
    fn the_body_is_escaped_by_its_content_type() {
        let c = HttpConfig::parse(&twilio()).unwrap();
        assert_eq!(c.request.body_escape, Escape::Form);
        let c = HttpConfig::parse(
            &json!({"preset": "infobip", "base_url": "https://x", "token": "k",
                                           "signature": "none"}),
        )
        .unwrap();
        assert_eq!(c.request.body_escape, Escape::Json);
    }
}
