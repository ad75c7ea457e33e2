//! Messages a provider posts (mobile originated), read by the channel's
//! inbound mapping: the webhook's body as JSON (a form or query string as
//! an object of its fields), its entries when it carries several, and in
//! each the sender, the recipient, the text, the provider's id, and for a
//! part of a long message its set and place (Vonage sends each part on
//! its own; Twilio and Infobip join them first).

use serde_json::Value;

use super::config::InboundMapping;
use super::extract::JsonPath;
use crate::channels::inbox::{Inbound, Part};

/// A message the mapping cannot use: refused with 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboundError {
    #[error("the request holds no message")]
    Empty,
    #[error("message {0} has no {1}")]
    Missing(usize, &'static str),
    #[error("message {0} has a part number that is not 1 to 255 of 1 to 255")]
    BadPart(usize),
}

impl InboundMapping {
    /// The messages in `body`, each with the provider's id as its
    /// reference (so one posted twice is recorded once).
    pub fn messages(&self, body: &Value) -> Result<Vec<Inbound>, InboundError> {
        let entries = match &self.entries {
            Some(path) => path.nodes(body),
            None => vec![body],
        };
        if entries.is_empty() {
            return Err(InboundError::Empty);
        }
        entries
            .into_iter()
            .enumerate()
            .map(|(n, entry)| {
                let first = |path: &JsonPath| path.values(entry).into_iter().next();
                let required = |path: &JsonPath, what| {
                    first(path)
                        .filter(|v| !v.is_empty())
                        .ok_or(InboundError::Missing(n + 1, what))
                };
                let from = required(&self.from, "sender")?;
                let to = required(&self.to, "recipient")?;
                let text = first(&self.text).ok_or(InboundError::Missing(n + 1, "text"))?;
                let reference = self.id.as_ref().and_then(first).filter(|v| !v.is_empty());
                let number = |path: &Option<JsonPath>| {
                    path.as_ref()
                        .and_then(first)
                        .and_then(|v| v.trim().parse::<i32>().ok())
                };
                let part = match (
                    number(&self.concat_ref),
                    number(&self.concat_total),
                    number(&self.concat_part),
                ) {
                    (Some(reference), Some(total), Some(seq)) if total > 1 => {
                        if !(1..=255).contains(&total) || !(1..=total).contains(&seq) {
                            return Err(InboundError::BadPart(n + 1));
                        }
                        Some(Part {
                            reference: reference.rem_euclid(65_536),
                            total,
                            seq,
                        })
                    }
                    _ => None,
                };
                let mut custom = serde_json::Map::new();
                if let Some(id) = &reference {
                    custom.insert("provider_id".into(), id.clone().into());
                }
                Ok(Inbound {
                    from,
                    to,
                    body: text,
                    // Parts are stored once per place in their set; the
                    // id of a part is not the message's.
                    reference: if part.is_some() { None } else { reference },
                    custom: Some(custom.into()),
                    part,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::http::config::HttpConfig;
    use serde_json::json;

    fn mapping(preset: serde_json::Value) -> InboundMapping {
        HttpConfig::parse(&preset).unwrap().inbound
    }

    #[test]
    fn twilio_form_fields() {
        let m = mapping(json!({"preset": "twilio", "account": "A", "username": "A",
                               "password": "p", "webhook_url": "https://x"}));
        let body = json!({"MessageSid": "SM1", "From": "+15551234567", "To": "+15557654321",
                          "Body": "Hello", "NumSegments": "1"});
        let got = m.messages(&body).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0].from.as_str(),
                got[0].to.as_str(),
                got[0].body.as_str()
            ),
            ("+15551234567", "+15557654321", "Hello")
        );
        assert_eq!(got[0].reference.as_deref(), Some("SM1"));
    }

    #[test]
    fn vonage_parts_carry_their_set() {
        let m = mapping(json!({"preset": "vonage", "username": "k", "signature": "none"}));
        // The documented example of a part of a 3-part message.
        let body = json!({"api-key": "abcd1234", "msisdn": "447700900001", "to": "447700900000",
                          "messageId": "0A0000000123ABCD1", "text": "Hello world", "type": "text",
                          "concat": "true", "concat-ref": "1", "concat-total": "3", "concat-part": "2"});
        let got = m.messages(&body).unwrap();
        let part = got[0].part.unwrap();
        assert_eq!((part.reference, part.total, part.seq), (1, 3, 2));
        assert_eq!(got[0].reference, None);
        let bad = json!({"msisdn": "1", "to": "2", "text": "x", "concat-ref": "1",
                         "concat-total": "3", "concat-part": "4"});
        assert_eq!(m.messages(&bad).unwrap_err(), InboundError::BadPart(1));
    }

    #[test]
    fn infobip_posts_several_at_once() {
        let m = mapping(
            json!({"preset": "infobip", "base_url": "https://x", "token": "k",
                               "signature": "none"}),
        );
        // The documented fixture, with a second entry.
        let body = json!({"results": [
            {"messageId": "817790313235066447", "from": "385916242493", "to": "385921004026",
             "text": "QUIZ Correct answer is Paris", "cleanText": "Correct answer is Paris",
             "keyword": "QUIZ", "receivedAt": "2023-08-01T16:10:00+05:30", "smsCount": 1},
            {"messageId": "2", "from": "385916242493", "to": "385921004026", "text": ""}],
            "messageCount": 2, "pendingMessageCount": 0});
        let got = m.messages(&body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, "QUIZ Correct answer is Paris");
        assert_eq!(got[1].body, "");
        assert_eq!(
            m.messages(&json!({"results": []})).unwrap_err(),
            InboundError::Empty
        );
        assert_eq!(
            m.messages(&json!({"results": [{"to": "1", "text": "x"}]}))
                .unwrap_err(),
            InboundError::Missing(1, "sender")
        );
    }
}
