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
//!
//! - this file: [`Provider`], its presets, scripts and what it took.
//! - `api`: what it answers to a send, as each provider does.
//! - `hooks`: what it posts to smsbus (reports, inbound messages), signed
//!   as each provider signs.

mod api;
mod hooks;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use api::serve;
use hooks::{basic, post_report, send_fields, send_json};

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
