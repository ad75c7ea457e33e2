//! The REST provider simulator: real HTTP over TCP speaking each preset's
//! documented API (docs/provider-apis.md), so tests and benchmarks drive
//! the real HTTP channel driver and smsbus's webhook endpoints.
//!
//! - Twilio: `POST /2010-04-01/Accounts/{sid}/Messages.json`, a form with
//!   Basic auth; 201 with the Message resource (`sid`); status callbacks
//!   as signed forms (`X-Twilio-Signature`) to `StatusCallback`.
//! - Vonage: `POST /sms/json`, a form; 200 with `messages[]`, one entry
//!   (and id) per part; delivery receipts as JSON, signed with `sig`
//!   (MD5 hash) to `callback`, one per part.
//! - Infobip: `POST /sms/3/messages`, JSON with `App` auth; 200 with
//!   `messages[]` and our `messageId`; reports as `{"results": [...]}`
//!   with Basic credentials to `webhooks.delivery.url`.
//! - Kannel generic: `GET /send?from=&to=&text=&dlr-url=`; `OK <id>`;
//!   reports as a GET with `dlr-mid` and `dlr-mask`, Basic credentials.
//!
//! What it answers is scripted per request ([`Answer`]): accepted,
//! refused for good or for now, 429 with `Retry-After`, no answer at all
//! (a timeout), slowly, or accepted with the report posted before the
//! answer. Tests also post reports and inbound messages themselves,
//! signed right or wrong ([`Provider::report`], [`Provider::inbound`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};
use smsbus_worker::channels::http::reports::form_urlencoded_pairs;
use smsbus_worker::channels::http::signatures::{self, VonageMethod};

/// Which provider the simulator plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Twilio,
    Vonage,
    Infobip,
    Generic,
}

impl Preset {
    /// The preset of a name (`twilio`, `vonage`, `infobip`, `generic`).
    pub fn named(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    pub const ALL: [Preset; 4] = [
        Preset::Twilio,
        Preset::Vonage,
        Preset::Infobip,
        Preset::Generic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Twilio => "twilio",
            Preset::Vonage => "vonage",
            Preset::Infobip => "infobip",
            Preset::Generic => "generic",
        }
    }
}

/// The account the simulator knows.
pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const USERNAME: &str = "smsbus";
pub const PASSWORD: &str = "pr0vider-secret";
/// What the provider signs its webhooks with (Basic: `user:password`).
pub const SIGNATURE_SECRET: &str = "hook:s1gnature";

/// What the simulator does with one send.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Accept,
    /// Accepted, its report posted (and answered) before the answer.
    AcceptReportFirst,
    /// Refused for good, in the provider's words.
    Permanent,
    /// Refused for now (Vonage: status 1 in a 200; others: 503).
    Temporary,
    /// 429, with `Retry-After` seconds when given.
    TooMany(Option<u64>),
    /// No answer until the client gives up.
    Hang,
    /// Accepted after a pause.
    Slow(Duration),
}

/// A message the simulator took.
#[derive(Clone, Debug)]
pub struct Taken {
    pub to: String,
    pub from: String,
    pub text: String,
    /// Its ids, one per part where the provider reports per part.
    pub ids: Vec<String>,
    /// Where its reports go (empty: none asked).
    pub report_url: String,
    pub authorization: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Answer>,
    /// The status word each auto report carries; None: none sent.
    auto_report: Option<String>,
    taken: Vec<Taken>,
    requests: u64,
    /// The statuses smsbus answered the simulator's webhooks with.
    hook_answers: Vec<u16>,
}

pub struct Provider {
    pub preset: Preset,
    /// `http://127.0.0.1:<port>`, or `https://localhost:<port>`.
    pub url: String,
    /// With TLS: the throwaway CA that signed its certificate.
    tls: Option<crate::smsc::tls::Tls>,
    shared: Arc<Mutex<Shared>>,
    client: reqwest::Client,
    ids: Arc<AtomicU64>,
}

fn client() -> reqwest::Client {
    let tls = smsbus_worker::channels::tls::client_config(None).expect("system roots");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .build()
        .expect("an HTTP client")
}

#[derive(Clone)]
struct Ctx {
    preset: Preset,
    shared: Arc<Mutex<Shared>>,
    client: reqwest::Client,
    ids: Arc<AtomicU64>,
}

impl Provider {
    /// Listens on a free local port.
    pub async fn start(preset: Preset) -> Provider {
        Provider::listen(preset, "127.0.0.1:0", None).await
    }

    /// The same on `addr` (`smsbus-provider`, `make run`).
    pub async fn start_on(preset: Preset, addr: &str) -> Provider {
        Provider::listen(preset, addr, None).await
    }

    /// The same over TLS, its certificate signed by a throwaway CA
    /// ([`Provider::ca_file`]).
    pub async fn start_tls(preset: Preset) -> Provider {
        let tls = crate::smsc::tls::Tls::generate().expect("a throwaway CA");
        Provider::listen(preset, "127.0.0.1:0", Some(tls)).await
    }

    /// The PEM file of the CA of a TLS simulator.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }

    async fn listen(preset: Preset, addr: &str, tls: Option<crate::smsc::tls::Tls>) -> Provider {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let shared = Arc::new(Mutex::new(Shared {
            auto_report: Some(delivered_word(preset).to_owned()),
            ..Shared::default()
        }));
        let ctx = Ctx {
            preset,
            shared: shared.clone(),
            client: client(),
            ids: Arc::new(AtomicU64::new(1)),
        };
        let app = axum::Router::new().fallback(serve).with_state(ctx.clone());
        // The simulator lives as long as the test's runtime.
        match &tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            Some(tls) => {
                let listener = smsbus_worker::http_api::listener::TlsListener::new(
                    listener,
                    tls.acceptor.clone(),
                )
                .expect("a TLS listener");
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
        }
        Provider {
            preset,
            url,
            tls,
            shared,
            client: ctx.client,
            ids: ctx.ids,
        }
    }

    /// The config of a channel of this preset sending here, its webhooks
    /// at `webhook_url` (smsbus's HTTP API), with `extra` laid over it.
    pub fn channel_config(&self, webhook_url: &str, extra: Value) -> Value {
        let mut config = match self.preset {
            Preset::Twilio => json!({"preset": "twilio", "account": ACCOUNT,
                                     "username": ACCOUNT, "password": PASSWORD}),
            Preset::Vonage => json!({"preset": "vonage", "username": USERNAME,
                                     "password": PASSWORD, "signature_secret": SIGNATURE_SECRET}),
            Preset::Infobip => json!({"preset": "infobip", "token": PASSWORD,
                                      "signature_secret": SIGNATURE_SECRET}),
            Preset::Generic => json!({"preset": "generic", "signature_secret": SIGNATURE_SECRET}),
        };
        config["base_url"] = json!(match self.preset {
            Preset::Generic => format!("{}/send", self.url),
            _ => self.url.clone(),
        });
        config["webhook_url"] = json!(webhook_url);
        config["request_timeout_s"] = json!(2);
        config["retry_min_s"] = json!(0.2);
        config["retry_max_s"] = json!(1);
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        config
    }

    /// The answers to the next sends, in order; then it accepts.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.lock().unwrap().script.extend(answers);
    }

    /// Reports posted after each accepted send carry `word` (None: none
    /// are posted).
    pub fn auto_report(&self, word: Option<&str>) {
        self.shared.lock().unwrap().auto_report = word.map(str::to_owned);
    }

    pub fn taken(&self) -> Vec<Taken> {
        self.shared.lock().unwrap().taken.clone()
    }

    /// Sends answered so far (of any kind).
    pub fn requests(&self) -> u64 {
        self.shared.lock().unwrap().requests
    }

    /// The statuses smsbus answered the simulator's own reports with.
    pub fn hook_answers(&self) -> Vec<u16> {
        self.shared.lock().unwrap().hook_answers.clone()
    }

    /// Posts a report on `id` with status `word` to `url`, signed (or
    /// signed wrong); smsbus's answer's status.
    pub async fn report(&self, url: &str, id: &str, word: &str, sign: Signing) -> u16 {
        post_report(&self.client, self.preset, url, id, word, sign).await
    }

    /// Posts an inbound message to smsbus's `/inbound` of `url`'s channel.
    pub async fn inbound(
        &self,
        url: &str,
        from: &str,
        to: &str,
        text: &str,
        id: &str,
        sign: Signing,
    ) -> u16 {
        let (fields, json_body) = match self.preset {
            Preset::Twilio => (
                vec![
                    ("MessageSid", id.to_owned()),
                    ("AccountSid", ACCOUNT.to_owned()),
                    ("From", from.to_owned()),
                    ("To", to.to_owned()),
                    ("Body", text.to_owned()),
                    ("NumSegments", "1".to_owned()),
                ],
                false,
            ),
            Preset::Vonage => (
                vec![
                    ("msisdn", from.to_owned()),
                    ("to", to.to_owned()),
                    ("messageId", id.to_owned()),
                    ("text", text.to_owned()),
                    ("type", "text".to_owned()),
                    ("message-timestamp", "2026-12-04 12:00:00".to_owned()),
                ],
                true,
            ),
            Preset::Infobip => {
                let body = json!({"results": [{"messageId": id, "from": from, "to": to,
                                   "text": text, "smsCount": 1}],
                                   "messageCount": 1, "pendingMessageCount": 0});
                return send_json(&self.client, url, &body, basic(sign)).await;
            }
            Preset::Generic => (
                vec![
                    ("from", from.to_owned()),
                    ("to", to.to_owned()),
                    ("text", text.to_owned()),
                    ("foreign-id", id.to_owned()),
                ],
                false,
            ),
        };
        send_fields(&self.client, self.preset, url, fields, json_body, sign).await
    }

    /// A fresh id in this provider's style.
    pub fn new_id(&self) -> String {
        new_id(self.preset, &self.ids)
    }
}

/// How a webhook the simulator posts is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    Right,
    Wrong,
    Unsigned,
}

fn delivered_word(preset: Preset) -> &'static str {
    match preset {
        Preset::Twilio | Preset::Vonage => "delivered",
        Preset::Infobip => "DELIVERED_TO_HANDSET",
        Preset::Generic => "1",
    }
}

fn new_id(preset: Preset, ids: &AtomicU64) -> String {
    let n = ids.fetch_add(1, Ordering::SeqCst);
    match preset {
        Preset::Twilio => format!("SM{n:032x}"),
        Preset::Vonage => format!("0B{n:014X}"),
        Preset::Infobip => format!("ib-{n}"),
        Preset::Generic => format!("k{n}"),
    }
}

fn basic(sign: Signing) -> Option<String> {
    let secret = match sign {
        Signing::Right => SIGNATURE_SECRET,
        Signing::Wrong => "hook:wrong",
        Signing::Unsigned => return None,
    };
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    ))
}

async fn send_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    authorization: Option<String>,
) -> u16 {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        request = request.header("Authorization", a);
    }
    match request.send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

fn form(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(n, v)| format!("{}={}", enc(n), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A webhook of fields, as the preset posts it: Twilio a signed form,
/// Vonage signed JSON, Kannel a GET with Basic credentials.
async fn send_fields(
    client: &reqwest::Client,
    preset: Preset,
    url: &str,
    mut fields: Vec<(&str, String)>,
    json_body: bool,
    sign: Signing,
) -> u16 {
    let request = match preset {
        Preset::Twilio => {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let token = if sign == Signing::Wrong {
                "wrong"
            } else {
                PASSWORD
            };
            let signature = signatures::twilio_signature(token, url, &pairs);
            let mut r = client
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form(&fields));
            if sign != Signing::Unsigned {
                r = r.header("X-Twilio-Signature", signature);
            }
            r
        }
        Preset::Vonage => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            fields.push(("timestamp", now.to_string()));
            fields.push(("nonce", format!("n-{now}-{}", fields.len())));
            if sign != Signing::Unsigned {
                let pairs: Vec<(&str, &str)> =
                    fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let secret = if sign == Signing::Wrong {
                    "wrong"
                } else {
                    SIGNATURE_SECRET
                };
                let sig = signatures::vonage_signature(secret, VonageMethod::Md5Hash, &pairs);
                fields.push(("sig", sig));
            }
            if json_body {
                let object: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), Value::String(v.clone())))
                    .collect();
                client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(Value::Object(object).to_string())
            } else {
                client.get(format!("{url}?{}", form(&fields)))
            }
        }
        Preset::Infobip | Preset::Generic => {
            let mut r = client.get(format!("{url}?{}", form(&fields)));
            if let Some(a) = basic(sign) {
                r = r.header("Authorization", a);
            }
            r
        }
    };
    match request.send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

async fn post_report(
    client: &reqwest::Client,
    preset: Preset,
    url: &str,
    id: &str,
    word: &str,
    sign: Signing,
) -> u16 {
    match preset {
        Preset::Twilio => {
            let fields = vec![
                ("AccountSid", ACCOUNT.to_owned()),
                ("MessageSid", id.to_owned()),
                ("SmsSid", id.to_owned()),
                ("MessageStatus", word.to_owned()),
                ("SmsStatus", word.to_owned()),
            ];
            send_fields(client, preset, url, fields, false, sign).await
        }
        Preset::Vonage => {
            let fields = vec![
                (
                    "err-code",
                    if word == "delivered" { "0" } else { "1" }.to_owned(),
                ),
                ("messageId", id.to_owned()),
                ("msisdn", "447700900000".to_owned()),
                ("network-code", "23410".to_owned()),
                ("price", "0.03330000".to_owned()),
                ("scts", "2612041200".to_owned()),
                ("status", word.to_owned()),
                ("to", "smsbus".to_owned()),
            ];
            send_fields(client, preset, url, fields, true, sign).await
        }
        Preset::Infobip => {
            let body = json!({"results": [{
                "bulkId": "bulk-1", "messageId": id, "to": "41793026727",
                "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": word,
                           "description": "simulated"},
                "error": {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
                          "description": "No Error", "permanent": false},
                "messageCount": 1}]});
            send_json(client, url, &body, basic(sign)).await
        }
        Preset::Generic => {
            let fields = vec![
                ("dlr-mid", id.to_owned()),
                ("dlr-mask", word.to_owned()),
                ("dlr-err", "000".to_owned()),
            ];
            send_fields(client, preset, url, fields, false, sign).await
        }
    }
}

/// What a send request carried, by the preset's field names.
struct Sent {
    to: String,
    from: String,
    text: String,
    report_url: String,
    /// Infobip: the id we asked for.
    our_id: Option<String>,
}

fn read_send(preset: Preset, query: Option<&str>, body: &[u8]) -> Option<Sent> {
    let field = |pairs: &[(String, String)], name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match preset {
        Preset::Twilio => {
            let pairs: Vec<(String, String)> = form_urlencoded_pairs(body).collect();
            Some(Sent {
                to: field(&pairs, "To"),
                from: field(&pairs, "From"),
                text: field(&pairs, "Body"),
                report_url: field(&pairs, "StatusCallback"),
                our_id: None,
            })
        }
        Preset::Vonage => {
            let pairs: Vec<(String, String)> = form_urlencoded_pairs(body).collect();
            Some(Sent {
                to: field(&pairs, "to"),
                from: field(&pairs, "from"),
                text: field(&pairs, "text"),
                report_url: field(&pairs, "callback"),
                our_id: None,
            })
        }
        Preset::Infobip => {
            let json: Value = serde_json::from_slice(body).ok()?;
            let m = &json["messages"][0];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            Some(Sent {
                to: text(&m["destinations"][0]["to"]),
                from: text(&m["sender"]),
                text: text(&m["content"]["text"]),
                report_url: text(&m["webhooks"]["delivery"]["url"]),
                our_id: m["destinations"][0]["messageId"]
                    .as_str()
                    .map(str::to_owned),
            })
        }
        Preset::Generic => {
            let pairs: Vec<(String, String)> =
                form_urlencoded_pairs(query.unwrap_or("").as_bytes()).collect();
            Some(Sent {
                to: field(&pairs, "to"),
                from: field(&pairs, "from"),
                text: field(&pairs, "text"),
                report_url: field(&pairs, "dlr-url"),
                our_id: None,
            })
        }
    }
}

fn expected_path(preset: Preset, path: &str) -> bool {
    match preset {
        Preset::Twilio => path == format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json"),
        Preset::Vonage => path == "/sms/json",
        Preset::Infobip => path == "/sms/3/messages",
        Preset::Generic => path == "/send",
    }
}

fn authorized(preset: Preset, headers: &HeaderMap) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    match preset {
        Preset::Twilio => given == format!("Basic {}", b64(format!("{ACCOUNT}:{PASSWORD}"))),
        Preset::Vonage => given == format!("Basic {}", b64(format!("{USERNAME}:{PASSWORD}"))),
        Preset::Infobip => given == format!("App {PASSWORD}"),
        Preset::Generic => true,
    }
}

async fn serve(State(ctx): State<Ctx>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let preset = ctx.preset;
    if !expected_path(preset, parts.uri.path()) {
        return (StatusCode::NOT_FOUND, "no such resource").into_response();
    }
    if !authorized(preset, &parts.headers) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code": 20003, "message": "Authenticate"}"#,
        )
            .into_response();
    }
    let answer = {
        let mut shared = ctx.shared.lock().unwrap();
        shared.requests += 1;
        shared.script.pop_front().unwrap_or(Answer::Accept)
    };
    let Some(sent) = read_send(preset, parts.uri.query(), &body) else {
        return (StatusCode::BAD_REQUEST, "unreadable").into_response();
    };
    match answer {
        Answer::Accept | Answer::AcceptReportFirst => {}
        Answer::Slow(pause) => tokio::time::sleep(pause).await,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Answer::Permanent => return refusal(preset, false),
        Answer::Temporary => return refusal(preset, true),
        Answer::TooMany(after) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            if let Some(after) = after {
                r.headers_mut()
                    .insert("Retry-After", after.to_string().parse().unwrap());
            }
            return r;
        }
    }
    // One id per part where the provider reports per part (Vonage).
    let parts_count = match preset {
        Preset::Vonage => {
            let encoding = smsbus_core::text::detect(&sent.text);
            smsbus_core::text::segments(&sent.text, encoding).unwrap_or(1)
        }
        _ => 1,
    };
    let ids: Vec<String> = match &sent.our_id {
        Some(ours) => vec![ours.clone()],
        None => (0..parts_count).map(|_| new_id(preset, &ctx.ids)).collect(),
    };
    let word = {
        let mut shared = ctx.shared.lock().unwrap();
        shared.taken.push(Taken {
            to: sent.to.clone(),
            from: sent.from.clone(),
            text: sent.text.clone(),
            ids: ids.clone(),
            report_url: sent.report_url.clone(),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: std::time::Instant::now(),
        });
        shared.auto_report.clone()
    };
    if let (Some(word), false) = (word, sent.report_url.is_empty()) {
        let reports = ids.clone();
        let (client, shared, url) = (ctx.client.clone(), ctx.shared.clone(), sent.report_url);
        let post = async move {
            for id in reports {
                let status = post_report(&client, preset, &url, &id, &word, Signing::Right).await;
                shared.lock().unwrap().hook_answers.push(status);
            }
        };
        if answer == Answer::AcceptReportFirst {
            post.await;
        } else {
            tokio::spawn(post);
        }
    }
    accepted(preset, &sent.to, &ids)
}

fn accepted(preset: Preset, to: &str, ids: &[String]) -> Response {
    match preset {
        Preset::Twilio => (
            StatusCode::CREATED,
            axum::Json(
                json!({"account_sid": ACCOUNT, "sid": ids[0], "status": "queued",
                              "to": to, "num_segments": "1", "error_code": null}),
            ),
        )
            .into_response(),
        Preset::Vonage => axum::Json(json!({
            "message-count": ids.len().to_string(),
            "messages": ids.iter().map(|id| json!({"to": to, "message-id": id, "status": "0",
                "remaining-balance": "38.07243628", "message-price": "0.04120000",
                "network": "23420"})).collect::<Vec<_>>()}))
        .into_response(),
        Preset::Infobip => axum::Json(json!({"bulkId": "bulk-1", "messages": [{
            "messageId": ids[0],
            "status": {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED",
                       "description": "Message sent to next instance"},
            "destination": to, "details": {"messageCount": 1}}]}))
        .into_response(),
        Preset::Generic => (StatusCode::ACCEPTED, format!("OK {}", ids[0])).into_response(),
    }
}

fn refusal(preset: Preset, temporary: bool) -> Response {
    match (preset, temporary) {
        (Preset::Twilio, false) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 21211,
                "message": "The 'To' number is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})),
        )
            .into_response(),
        (Preset::Vonage, false) => axum::Json(json!({"message-count": "1",
            "messages": [{"status": "7", "error-text": "Number barred."}]}))
        .into_response(),
        (Preset::Vonage, true) => axum::Json(json!({"message-count": "1",
            "messages": [{"status": "1",
                          "error-text": "You are sending SMS faster than the account limit."}]}))
        .into_response(),
        (Preset::Infobip, false) => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"requestError": {"serviceException": {"messageId": "BAD_REQUEST",
                "text": "Bad Request"}}}),
            ),
        )
            .into_response(),
        (Preset::Generic, false) => {
            (StatusCode::ACCEPTED, "failure: number barred").into_response()
        }
        (Preset::Generic, true) => (StatusCode::ACCEPTED, "retry later").into_response(),
        (_, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"message": "Service Unavailable"}"#,
        )
            .into_response(),
    }
}
