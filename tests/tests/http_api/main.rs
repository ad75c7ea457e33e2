//! The HTTP API over real TCP: a worker with `--http-addr`, API keys made
//! with `smsbus.create_api_key`, messages sent and read as an account.
//!
//! - [`messages`]: sending and reading, bad input, idempotent retries;
//! - [`keys`]: who may call: keys, scopes, address ranges, and what the
//!   roles can reach of them;
//! - [`service`]: health, readiness and the OpenAPI document;
//! - [`status_page`]: who may see the status page, and what it shows;
//! - [`browser`]: the status page in headless Chromium;
//! - [`tls`]: the API over HTTPS;
//! - [`compat`]: Kannel's and Jasmin's send endpoints and their dlr-urls;
//! - [`db_role`]: reads as an account's database role, under row security;
//! - here: what they share: a worker serving the API, an account and a key.

use std::time::Duration;

use serde_json::{json, Value};
use smsbus_tests::api_client::{request, Answer};
use smsbus_tests::db::{scalar, TestDb};
pub(crate) use smsbus_tests::net::free_port;
use smsbus_tests::worker::Worker;

mod browser;
mod compat;
mod db_role;
mod keys;
mod messages;
mod service;
mod status_page;
mod tls;

/// A worker serving the API, and its base URL.
pub(crate) struct Served {
    pub c: tokio_postgres::Client,
    pub base: String,
    pub worker: Worker,
    // Kept for its Drop: the database goes after the worker stopped.
    _db: TestDb,
}

/// A database with account `acme` (and `other`), a channel `kpn` (not
/// enabled: messages stay queued) and a worker serving the API.
pub(crate) async fn serve() -> Served {
    serve_with(&[]).await
}

/// The same, the worker started with `flags` too.
pub(crate) async fn serve_with(flags: &[&str]) -> Served {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', false);
         INSERT INTO smsbus.account (name, channel) VALUES ('acme', 'kpn'), ('other', 'kpn');",
    )
    .await
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--worker-id", "w1", "--http-addr", &addr];
    args.extend_from_slice(flags);
    let worker = Worker::start(&db.conninfo(), &args);
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if request("GET", &format!("{base}/healthz"), &[], None)
            .await
            .is_some()
        {
            return Served {
                c,
                base,
                worker,
                _db: db,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker never served the API on {port}");
}

/// A new key of `account` with `scopes`.
pub(crate) async fn key(c: &tokio_postgres::Client, account: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    scalar(
        c,
        "SELECT smsbus.create_api_key($1, $2)",
        &[&account, &scopes],
    )
    .await
}

impl Served {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(
            method,
            path,
            key,
            &[],
            body.map(|b| b.to_string()).as_deref(),
        )
        .await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let bearer = key.map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b));
        }
        headers.extend_from_slice(extra);
        request(method, &format!("{}{path}", self.base), &headers, body)
            .await
            .expect("the API answers")
    }
}

pub(crate) fn message(to: &str, body: &str) -> Value {
    json!({"to": to, "body": body})
}
