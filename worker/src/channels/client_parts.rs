//! The parts a client sent a message in, with the user data header of
//! each, kept for an account that passes them through (`account.keep_udh`):
//! `message.client_parts`, `[{"udh": "<hex>", "chars": n}]` in order, each
//! part the next n characters of the body. The SMPP server writes it; the
//! SMPP channel sends those parts as they came (port addressing, special
//! SMS indications, the client's own concatenation reference) instead of
//! cutting the body with a header of its own.

use serde_json::{json, Value};
use smsbus_core::pdu::hex;

/// One part as the client sent it: its user data header (UDHL first) and
/// how many characters of the body it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPart {
    pub udh: Vec<u8>,
    pub chars: usize,
}

/// The `message.client_parts` value of `parts`.
pub fn to_json(parts: &[ClientPart]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|p| json!({"udh": hex::encode(&p.udh), "chars": p.chars}))
            .collect(),
    )
}

/// The parts in a `message.client_parts` value; None when it is not one
/// (an admin may write the column).
pub fn from_json(value: &Value) -> Option<Vec<ClientPart>> {
    value
        .as_array()?
        .iter()
        .map(|p| {
            Some(ClientPart {
                udh: hex::decode(p.get("udh")?.as_str()?).ok()?,
                chars: usize::try_from(p.get("chars")?.as_u64()?).ok()?,
            })
        })
        .collect()
}

/// The body cut as the parts say, each piece with its header; None when
/// they no longer add up to the body (a trigger or replace_sm changed it),
/// and the channel cuts it anew.
pub fn cut<'a>(parts: &'a [ClientPart], body: &'a str) -> Option<Vec<(&'a [u8], &'a str)>> {
    let mut rest = body;
    let mut pieces = Vec::with_capacity(parts.len());
    for part in parts {
        let end = rest
            .char_indices()
            .nth(part.chars)
            .map_or(rest.len(), |(at, _)| at);
        if rest[..end].chars().count() != part.chars {
            return None;
        }
        pieces.push((part.udh.as_slice(), &rest[..end]));
        rest = &rest[end..];
    }
    (rest.is_empty() && !pieces.is_empty()).then_some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(udh: &[u8], chars: usize) -> ClientPart {
        ClientPart {
            udh: udh.to_vec(),
            chars,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let parts = vec![
            part(&[5, 0, 3, 0x77, 2, 1], 12),
            part(&[5, 0, 3, 0x77, 2, 2], 3),
        ];
        let value = to_json(&parts);
        assert_eq!(value[0]["udh"], "050003770201");
        assert_eq!(from_json(&value), Some(parts));
        assert_eq!(from_json(&json!([{"udh": "zz", "chars": 1}])), None);
        assert_eq!(from_json(&json!({"udh": "05"})), None);
    }

    #[test]
    fn cuts_the_body_where_the_client_did_or_not_at_all() {
        let parts = vec![part(&[1], 6), part(&[2], 4)];
        assert_eq!(cut(&parts, "Привет, мир"), None, "11 characters, not 10");
        assert_eq!(
            cut(&parts, "Привет мир"),
            Some(vec![(&[1u8][..], "Привет"), (&[2u8][..], " мир")])
        );
        assert_eq!(cut(&parts, "short"), None);
        assert_eq!(cut(&[], ""), None);
    }
}
