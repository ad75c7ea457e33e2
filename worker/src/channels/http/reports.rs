//! Delivery reports a provider posts, read by the channel's mapping: the
//! webhook's body as JSON (a form or a query string becomes an object of
//! its fields, so one kind of path serves every provider), its entries
//! (Infobip sends several reports at once under `/results/*`), and in
//! each the provider's id of the part, its status word and error.
//!
//! Status words become what smsbus records for a part: delivered, not
//! delivered, or on its way (`enroute`: the message stays `sent` and the
//! trace says so). Expired is not delivered, with "expired" in the detail.
//! A word the mapping does not know is on its way too, kept in the trace:
//! answering the provider with an error would only make it send the same
//! report again, and the message still ends as `noreport` if nothing
//! final follows.

use serde_json::{Map, Value};

use super::extract::JsonPath;

/// How a channel reads its provider's delivery reports.
#[derive(Clone, Debug)]
pub struct ReportMapping {
    /// Where the reports are, when a request carries several.
    pub entries: Option<JsonPath>,
    pub id: JsonPath,
    pub status: JsonPath,
    pub error: Option<JsonPath>,
    pub delivered: Vec<String>,
    pub notdelivered: Vec<String>,
    pub expired: Vec<String>,
}

/// What a report says of a part, as `smsbus.message_part.status` has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartStatus {
    Delivered,
    NotDelivered,
    Enroute,
}

impl PartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PartStatus::Delivered => "delivered",
            PartStatus::NotDelivered => "notdelivered",
            PartStatus::Enroute => "enroute",
        }
    }
}

/// One report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The provider's id of the part, as its answer to the send gave it.
    pub reference: String,
    pub status: PartStatus,
    /// For the trace: the provider's word, and its error when it gave one.
    pub detail: String,
}

/// A report the mapping cannot use: refused with 400, so the provider (or
/// whoever sent it) sees the mistake.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    #[error("the request holds no report")]
    Empty,
    #[error("report {0} has no message id")]
    NoId(usize),
    #[error("report {0} has no status")]
    NoStatus(usize),
}

impl ReportMapping {
    pub fn reports(&self, body: &Value) -> Result<Vec<Report>, ReportError> {
        let entries = match &self.entries {
            Some(path) => path.nodes(body),
            None => vec![body],
        };
        if entries.is_empty() {
            return Err(ReportError::Empty);
        }
        entries
            .into_iter()
            .enumerate()
            .map(|(n, entry)| {
                let first = |path: &JsonPath| {
                    path.values(entry)
                        .into_iter()
                        .next()
                        .filter(|v| !v.is_empty())
                };
                let reference = first(&self.id).ok_or(ReportError::NoId(n + 1))?;
                let word = first(&self.status).ok_or(ReportError::NoStatus(n + 1))?;
                let status = if self.delivered.contains(&word) {
                    PartStatus::Delivered
                } else if self.notdelivered.contains(&word) || self.expired.contains(&word) {
                    PartStatus::NotDelivered
                } else {
                    PartStatus::Enroute
                };
                let mut detail = if self.expired.contains(&word) {
                    format!("expired: {word}")
                } else {
                    word
                };
                if let Some(error) = self.error.as_ref().and_then(first) {
                    detail.push_str(&format!(" (error {error})"));
                }
                Ok(Report {
                    reference,
                    status,
                    detail,
                })
            })
            .collect()
    }
}

/// A webhook's body as JSON: JSON as it came; a form (or, for a GET, the
/// query string) as an object of its fields, the first of a repeated one.
pub fn as_json(content_type: Option<&str>, body: &[u8], query: Option<&str>) -> Option<Value> {
    let is_json = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| {
            c.trim().eq_ignore_ascii_case("application/json") || c.trim().ends_with("+json")
        });
    if is_json {
        return serde_json::from_slice(body).ok();
    }
    let form = if body.is_empty() {
        query.unwrap_or("").as_bytes()
    } else {
        body
    };
    let mut fields = Map::new();
    for (name, value) in form_urlencoded_pairs(form) {
        fields.entry(name).or_insert(Value::String(value));
    }
    Some(Value::Object(fields))
}

/// `application/x-www-form-urlencoded` pairs (`+` as space, then percent
/// decoding, lossy UTF-8).
pub fn form_urlencoded_pairs(form: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    form.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            (decode(name), decode(value))
        })
}

fn decode(bytes: &[u8]) -> String {
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> JsonPath {
        JsonPath::parse(text).unwrap()
    }

    fn words(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn twilio_status_callbacks() {
        // docs/provider-apis.md 1.3: a form POST.
        let mapping = ReportMapping {
            entries: None,
            id: path("/MessageSid"),
            status: path("/MessageStatus"),
            error: Some(path("/ErrorCode")),
            delivered: words(&["delivered", "read"]),
            notdelivered: words(&["undelivered", "failed", "canceled"]),
            expired: Vec::new(),
        };
        let body = b"AccountSid=ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx&From=%2B15017250604&MessageSid=SM1342fe1b2c904d1ab04f0fc7a58abca9&MessageStatus=sent&SmsSid=SM1342fe1b2c904d1ab04f0fc7a58abca9&SmsStatus=sent";
        let json = as_json(Some("application/x-www-form-urlencoded"), body, None).unwrap();
        assert_eq!(json["From"], "+15017250604");
        assert_eq!(
            mapping.reports(&json).unwrap(),
            [Report {
                reference: "SM1342fe1b2c904d1ab04f0fc7a58abca9".into(),
                status: PartStatus::Enroute,
                detail: "sent".into()
            }]
        );
        let failed = as_json(
            None,
            b"MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30036",
            None,
        )
        .unwrap();
        assert_eq!(
            mapping.reports(&failed).unwrap()[0],
            Report {
                reference: "SM1".into(),
                status: PartStatus::NotDelivered,
                detail: "undelivered (error 30036)".into()
            }
        );
    }

    #[test]
    fn vonage_receipts_by_get_or_json() {
        // 2.3: the id is messageId here; expired is its own word.
        let mapping = ReportMapping {
            entries: None,
            id: path("/messageId"),
            status: path("/status"),
            error: Some(path("/err-code")),
            delivered: words(&["delivered"]),
            notdelivered: words(&["failed", "rejected"]),
            expired: words(&["expired"]),
        };
        let json = br#"{"err-code": "0", "message-timestamp": "2018-10-25 12:10:29", "messageId": "0B00000127FDBC63",
                        "msisdn": "447547232824", "network-code": "23410", "price": "0.03330000", "scts": "1810251310",
                        "status": "delivered", "to": "Nexmo CLI"}"#;
        let body = as_json(Some("application/json; charset=utf-8"), json, None).unwrap();
        assert_eq!(
            mapping.reports(&body).unwrap()[0].status,
            PartStatus::Delivered
        );
        let get = as_json(
            None,
            b"",
            Some("messageId=0B00000127FDBC64&status=expired&err-code=5"),
        )
        .unwrap();
        assert_eq!(
            mapping.reports(&get).unwrap()[0],
            Report {
                reference: "0B00000127FDBC64".into(),
                status: PartStatus::NotDelivered,
                detail: "expired: expired (error 5)".into()
            }
        );
        // A word it does not know: on its way, kept for the trace.
        let odd = as_json(None, b"messageId=X&status=unknown", None).unwrap();
        assert_eq!(
            mapping.reports(&odd).unwrap()[0].status,
            PartStatus::Enroute
        );
    }

    #[test]
    fn infobip_sends_several_at_once() {
        // 3.3: results[], status.name per report.
        let mapping = ReportMapping {
            entries: Some(path("/results/*")),
            id: path("/messageId"),
            status: path("/status/name"),
            error: Some(path("/error/name")),
            delivered: words(&["DELIVERED_TO_HANDSET"]),
            notdelivered: words(&["UNDELIVERABLE_REJECTED_OPERATOR", "REJECTED_DESTINATION"]),
            expired: words(&["EXPIRED_EXPIRED"]),
        };
        let body: Value = serde_json::from_str(
            r#"{"results": [
                {"messageId": "MESSAGE-ID-123-xyz", "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5,
                 "name": "DELIVERED_TO_HANDSET"}, "error": {"id": 0, "name": "NO_ERROR", "permanent": false}},
                {"messageId": "MESSAGE-ID-124-xyz", "status": {"groupId": 3, "name": "DELIVERED_TO_OPERATOR"}},
                {"messageId": "MESSAGE-ID-125-xyz", "status": {"groupId": 4, "name": "EXPIRED_EXPIRED"}}]}"#,
        )
        .unwrap();
        let reports = mapping.reports(&body).unwrap();
        assert_eq!(
            reports.iter().map(|r| r.status).collect::<Vec<_>>(),
            [
                PartStatus::Delivered,
                PartStatus::Enroute,
                PartStatus::NotDelivered
            ]
        );
        assert_eq!(reports[0].detail, "DELIVERED_TO_HANDSET (error NO_ERROR)");
        assert_eq!(
            mapping.reports(&serde_json::json!({"results": []})),
            Err(ReportError::Empty)
        );
        assert_eq!(
            mapping.reports(&serde_json::json!({"results": [{"status": {"name": "X"}}]})),
            Err(ReportError::NoId(1))
        );
        assert_eq!(
            mapping.reports(&serde_json::json!({"results": [{"messageId": "1"}, {"messageId": "2", "status": {}}]})),
            Err(ReportError::NoStatus(1))
        );
    }

    #[test]
    fn forms_decode_as_browsers_encode() {
        let json = as_json(None, b"a=1+2%2B3&b=%E2%82%AC&a=again&flag&bad=%ZZ", None).unwrap();
        assert_eq!(json["a"], "1 2+3", "the first of a repeated field");
        assert_eq!(json["b"], "€");
        assert_eq!(json["flag"], "");
        assert_eq!(json["bad"], "%ZZ");
        assert_eq!(as_json(Some("application/json"), b"{not json", None), None);
    }
}
