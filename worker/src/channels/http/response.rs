//! What a provider's answer to a send means: accepted (with the
//! provider's id of each part), refused for good, refused for now (with
//! when to try again), or not known, decided by the channel's mapping
//! from the HTTP status, the `Retry-After` header and the body.
//!
//! The order of the decision:
//! 1. a status the mapping calls temporary (by default 408, 425, 429 and
//!    5xx): try again, after `Retry-After` when the provider says;
//! 2. any other status outside its success range (by default 2xx): refused
//!    for good, with the provider's error text when the mapping finds one;
//! 3. a success status: Kannel-style body patterns first (temporary, then
//!    permanent failure, then success); then the parts' statuses (Vonage
//!    answers 200 with a status per part: "0" accepted, "1" throttled,
//!    ...); then the ids.
//!
//! A success status with a body the mapping does not recognise is not
//! known: the message may have gone out, so it is never simply sent again
//! (the channel's `on_unknown_outcome` decides, as for SMPP).

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use super::extract::Extractor;

/// How a channel reads its provider's answers.
#[derive(Clone, Debug)]
pub struct ResponseMapping {
    pub success_http: Vec<RangeInclusive<u16>>,
    pub temporary_http: Vec<RangeInclusive<u16>>,
    /// The provider's id of each part (`/sid`, `/messages/*/message-id`).
    pub id: Option<Extractor>,
    /// Each part's status, in the order of the ids (`/messages/*/status`).
    pub status: Option<Extractor>,
    /// Part statuses that mean accepted; any other not in `temporary`
    /// is a refusal for good.
    pub accepted: Vec<String>,
    pub temporary: Vec<String>,
    /// The provider's words for a refusal (`/message`, `/messages/*/error-text`).
    pub error: Option<Extractor>,
    /// Kannel's `status-success-regex`, `-permfail-`, `-tempfail-`.
    pub success_body: Option<Extractor>,
    pub permanent_body: Option<Extractor>,
    pub temporary_body: Option<Extractor>,
}

impl Default for ResponseMapping {
    fn default() -> Self {
        ResponseMapping {
            success_http: vec![200..=299],
            temporary_http: vec![408..=408, 425..=425, 429..=429, 500..=599],
            id: None,
            status: None,
            accepted: Vec::new(),
            temporary: Vec::new(),
            error: None,
            success_body: None,
            permanent_body: None,
            temporary_body: None,
        }
    }
}

/// What an answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken. `refused` names parts the provider did not take when it
    /// took others (they cannot be sent alone again).
    Accepted {
        ids: Vec<String>,
        refused: Option<String>,
    },
    Temporary {
        reason: String,
        retry_after: Option<Duration>,
    },
    Permanent {
        reason: String,
    },
    Unknown {
        reason: String,
    },
}

/// Most bytes of a provider's words kept in a reason.
const REASON_MAX: usize = 200;

impl ResponseMapping {
    /// What `status` with `retry_after` (the header, if any) and `body`
    /// means; `now` for a `Retry-After` given as a date.
    pub fn outcome(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &str,
        now: SystemTime,
    ) -> Outcome {
        let said = || self.words(body);
        if in_ranges(&self.temporary_http, status) {
            return Outcome::Temporary {
                reason: with_words(format!("HTTP {status}"), said()),
                retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
            };
        }
        if !in_ranges(&self.success_http, status) {
            return Outcome::Permanent {
                reason: with_words(format!("HTTP {status}"), said()),
            };
        }
        if self
            .temporary_body
            .as_ref()
            .is_some_and(|e| e.matches(body))
        {
            return Outcome::Temporary {
                reason: with_words("temporary failure".into(), said()),
                retry_after: None,
            };
        }
        if self
            .permanent_body
            .as_ref()
            .is_some_and(|e| e.matches(body))
        {
            return Outcome::Permanent {
                reason: with_words("permanent failure".into(), said()),
            };
        }
        if let Some(success) = &self.success_body {
            if !success.matches(body) {
                return Outcome::Unknown {
                    reason: format!(
                        "HTTP {status} with an answer the mapping does not recognise: {}",
                        excerpt(body)
                    ),
                };
            }
        }
        let ids = self.id.as_ref().map(|e| e.values(body)).unwrap_or_default();
        let Some(status_of) = &self.status else {
            return if self.id.is_some() && ids.is_empty() {
                Outcome::Unknown {
                    reason: format!("HTTP {status} without a message id: {}", excerpt(body)),
                }
            } else {
                Outcome::Accepted { ids, refused: None }
            };
        };
        let statuses = status_of.values(body);
        if statuses.is_empty() {
            return Outcome::Unknown {
                reason: format!("HTTP {status} without a status: {}", excerpt(body)),
            };
        }
        let taken: Vec<bool> = statuses.iter().map(|s| self.accepted.contains(s)).collect();
        let first_refusal = statuses.iter().zip(&taken).position(|(_, &ok)| !ok);
        match first_refusal {
            None => Outcome::Accepted { ids, refused: None },
            Some(part) => {
                let code = &statuses[part];
                let reason = with_words(format!("status {code}"), said());
                if taken.iter().any(|&ok| ok) {
                    // Vonage lists an id only for the parts it took.
                    let refused = format!("part {} of {}: {reason}", part + 1, statuses.len());
                    Outcome::Accepted {
                        ids,
                        refused: Some(refused),
                    }
                } else if self.temporary.contains(code) {
                    Outcome::Temporary {
                        reason,
                        retry_after: None,
                    }
                } else {
                    Outcome::Permanent { reason }
                }
            }
        }
    }

    /// The provider's words for a refusal, when the mapping finds them.
    fn words(&self, body: &str) -> Option<String> {
        let found = self.error.as_ref()?.values(body);
        (!found.is_empty()).then(|| excerpt(&found.join("; ")))
    }
}

fn in_ranges(ranges: &[RangeInclusive<u16>], status: u16) -> bool {
    ranges.iter().any(|r| r.contains(&status))
}

fn with_words(reason: String, words: Option<String>) -> String {
    match words {
        Some(words) => format!("{reason}: {words}"),
        None => reason,
    }
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(REASON_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &text[..end];
    let clean: String = cut
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < text.len() {
        format!("{}…", clean.trim_end())
    } else {
        clean.trim_end().to_owned()
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): seconds, or an HTTP date;
/// at most an hour (a longer wait is the channel's backoff's business).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str) -> Option<Extractor> {
        Some(Extractor::parse(text).unwrap())
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    fn now() -> SystemTime {
        httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap()
    }

    /// Twilio: 201 with `sid`; 4xx with `code`/`message`; 429 (docs/provider-apis.md 1.2).
    fn twilio() -> ResponseMapping {
        ResponseMapping {
            id: ex("/sid"),
            error: ex("/message"),
            ..ResponseMapping::default()
        }
    }

    /// Vonage's SMS API: always 200, a status per part (2.2).
    fn vonage() -> ResponseMapping {
        ResponseMapping {
            id: ex("/messages/*/message-id"),
            status: ex("/messages/*/status"),
            accepted: strings(&["0"]),
            temporary: strings(&["1", "5", "9", "10"]),
            error: ex("/messages/*/error-text"),
            ..ResponseMapping::default()
        }
    }

    #[test]
    fn twilio_answers() {
        let created = r#"{"sid": "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "status": "queued", "num_segments": "1"}"#;
        assert_eq!(
            twilio().outcome(201, None, created, now()),
            Outcome::Accepted {
                ids: strings(&["SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]),
                refused: None
            }
        );
        let invalid = r#"{"code": 21211, "message": "The 'To' number 5551234567 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            twilio().outcome(400, None, invalid, now()),
            Outcome::Permanent {
                reason: "HTTP 400: The 'To' number 5551234567 is not a valid phone number.".into()
            }
        );
        assert_eq!(
            twilio().outcome(
                429,
                Some("7"),
                r#"{"code": 20429, "message": "Too Many Requests"}"#,
                now()
            ),
            Outcome::Temporary {
                reason: "HTTP 429: Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            twilio().outcome(503, None, "<html>gateway</html>", now()),
            Outcome::Temporary {
                retry_after: None,
                ..
            }
        ));
        // 2xx without the id it should have: not known whether it went.
        assert!(matches!(
            twilio().outcome(200, None, "{}", now()),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn vonage_answers_part_by_part() {
        let two = r#"{"message-count": "2", "messages": [
            {"to": "1234567890", "message-id": "62dfdf68-6c7c-479a-a190-5c52f798a787", "status": "0"},
            {"to": "1234567890", "message-id": "72ff9536-62d6-455a-9f0b-65f3c265b423", "status": "0"}]}"#;
        assert_eq!(
            vonage().outcome(200, None, two, now()),
            Outcome::Accepted {
                ids: strings(&[
                    "62dfdf68-6c7c-479a-a190-5c52f798a787",
                    "72ff9536-62d6-455a-9f0b-65f3c265b423"
                ]),
                refused: None
            }
        );
        let barred =
            r#"{"message-count":"1","messages":[{"status":"7","error-text":"Number barred."}]}"#;
        assert_eq!(
            vonage().outcome(200, None, barred, now()),
            Outcome::Permanent {
                reason: "status 7: Number barred.".into()
            }
        );
        let throttled = r#"{"message-count":"1","messages":[{"status":"1","error-text":"You are sending SMS faster than the account limit."}]}"#;
        assert_eq!(
            vonage().outcome(200, None, throttled, now()),
            Outcome::Temporary {
                reason: "status 1: You are sending SMS faster than the account limit.".into(),
                retry_after: None
            }
        );
        // The first part went, the second was throttled: sent, and said so.
        let partial = r#"{"message-count":"2","messages":[
            {"to":"1234567890","message-id":"0A01","status":"0"},{"status":"1","error-text":"Throttled"}]}"#;
        assert_eq!(
            vonage().outcome(200, None, partial, now()),
            Outcome::Accepted {
                ids: strings(&["0A01"]),
                refused: Some("part 2 of 2: status 1: Throttled".into())
            }
        );
        assert!(matches!(
            vonage().outcome(200, None, "not json", now()),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn kannel_generic_patterns() {
        // Kannel's generic type ignores the status code, so its preset
        // takes every status as success and reads the body.
        let mapping = ResponseMapping {
            success_http: vec![100..=599],
            temporary_http: Vec::new(),
            id: ex("regex:ID: ([0-9A-Za-z-]+)"),
            success_body: ex("regex:^0: Accepted"),
            permanent_body: ex("regex:^(Number barred|Invalid)"),
            temporary_body: ex("regex:^Throttled"),
            ..ResponseMapping::default()
        };
        assert_eq!(
            mapping.outcome(202, None, "0: Accepted for delivery ID: abc-123", now()),
            Outcome::Accepted {
                ids: strings(&["abc-123"]),
                refused: None
            }
        );
        assert!(matches!(
            mapping.outcome(200, None, "Throttled, slow down", now()),
            Outcome::Temporary { .. }
        ));
        assert!(matches!(
            mapping.outcome(500, None, "Invalid sender", now()),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(
            mapping.outcome(200, None, "Who knows", now()),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_and_bounded() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999", now()),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
    }

    #[test]
    fn reasons_are_short_and_one_line() {
        let long = format!("{{\"message\": \"{}\\nnext line\"}}", "é".repeat(300));
        let Outcome::Permanent { reason } = twilio().outcome(400, None, &long, now()) else {
            panic!("a 400 is permanent");
        };
        assert!(reason.len() < REASON_MAX + 20, "{}", reason.len());
        assert!(!reason.contains('\n'));
        assert!(reason.ends_with('…'));
    }
}
