//! A local HTTP endpoint for trigger scripts, webhooks and callbacks to
//! call: it records every request and answers with the status and body
//! it is told (201 and a small JSON body at first).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status it was answered with.
    pub answered: u16,
}

impl Seen {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct HttpServer {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<AtomicU16>,
    body: Arc<Mutex<String>>,
}

impl HttpServer {
    /// Listens on a free local port, on a thread of its own.
    pub fn start() -> HttpServer {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("a local HTTP port");
        let url = format!(
            "http://{}",
            server.server_addr().to_ip().expect("an IP address")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(201));
        let body = Arc::new(Mutex::new(r#"{"accepted": true}"#.to_owned()));
        let (record, answer_with, reply) = (seen.clone(), status.clone(), body.clone());
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let answered = answer_with.load(Ordering::SeqCst);
                record.lock().unwrap().push(Seen {
                    method: request.method().to_string(),
                    url: request.url().to_owned(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                    answered,
                });
                let text = reply.lock().unwrap().clone();
                let answer = tiny_http::Response::from_string(text)
                    .with_status_code(answered)
                    .with_header(
                        "X-Reply: yes"
                            .parse::<tiny_http::Header>()
                            .expect("a header"),
                    );
                let _ = request.respond(answer);
            }
        });
        HttpServer {
            url,
            seen,
            status,
            body,
        }
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Answers with `status` from now on.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Answers with `body` from now on.
    pub fn reply_with(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }
}
