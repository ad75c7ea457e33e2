//! `smsbus.http{method=, url=, headers=, body=, timeout=}`: one HTTP
//! request from a Lua trigger, on the trigger's own thread (the script
//! waits for it anyway). Every answer is returned, whatever its status; a
//! request that gets no answer (no such host, refused, timed out) is an
//! error.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use ureq::http;

/// What a script asks for.
#[derive(Debug, Default)]
pub struct Request {
    pub method: Option<String>,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-case names; a repeated header's values joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Why a request got no answer. The texts are what the script's
/// `smsbus.http` returns as its error (and what last_error shows when the
/// script lets it end the run).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The script's `method=` is no HTTP method.
    #[error("{0:?} is not an HTTP method")]
    NotAMethod(String),
    /// The request cannot be built (a URL or header that is not valid).
    #[error("{url}: {source}")]
    Invalid {
        url: String,
        #[source]
        source: http::Error,
    },
    /// No answer: no such host, refused, timed out.
    #[error("{url}: {source}")]
    NoAnswer {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// The answer's body broke off.
    #[error("{url}: reading the answer: {source}")]
    Reading {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// Waited when the script gives no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body kept.
const BODY_LIMIT: u64 = 16 * 1024 * 1024;

pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .user_agent(concat!("smsbus/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.into(),
        }
    }
}

impl Client {
    /// Sends `request`, waiting at most its timeout and never past `left`
    /// (what remains of the script's time limit).
    pub fn send(&self, request: Request, left: Duration) -> Result<Response, HttpError> {
        let method = request.method.as_deref().unwrap_or(match request.body {
            Some(_) => "POST",
            None => "GET",
        });
        let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpError::NotAMethod(method.to_owned()))?;
        let mut builder = http::Request::builder().method(method).uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT).min(left);
        let built = builder
            .body(request.body.unwrap_or_default())
            .map_err(|source| HttpError::Invalid {
                url: request.url.clone(),
                source,
            })?;
        let built = self
            .agent
            .configure_request(built)
            .timeout_global(Some(timeout))
            .build();
        let mut response = self
            .agent
            .run(built)
            .map_err(|source| HttpError::NoAnswer {
                url: request.url.clone(),
                source,
            })?;
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let mut body = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(BODY_LIMIT)
            .read_to_end(&mut body)
            .map_err(|source| HttpError::Reading {
                url: request.url.clone(),
                source,
            })?;
        Ok(Response {
            status: response.status().as_u16(),
            headers,
            body,
        })
    }
}
