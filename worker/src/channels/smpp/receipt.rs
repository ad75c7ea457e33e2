//! Delivery receipts: which deliver_sm is one, what it says, and the
//! message id it is about, written the way the channel stores references.
//!
//! The id and state come from the receipted_message_id and message_state
//! TLVs when present, else from the receipt text of SMPP 3.4 Appendix B
//! (`id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
//! stat:DDDDDDD err:E text:...`).

use rusmpp::tlvs::TlvValue;

use super::carried::Carried;
use super::config::DlrIdFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportStatus {
    Delivered,
    NotDelivered,
    /// An intermediate state (ENROUTE, ACCEPTD): kept in the trace only.
    Enroute,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Delivered => "delivered",
            ReportStatus::NotDelivered => "notdelivered",
            ReportStatus::Enroute => "enroute",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The id as the channel stores references (see [`reference`]).
    pub reference: String,
    /// Another spelling to try when `reference` matches nothing
    /// (`dlr_id_format = auto`: the id in the other base).
    pub alternate: Option<String>,
    pub status: ReportStatus,
    /// `stat:UNDELIV err:001`, for last_error and the trace.
    pub detail: String,
}

/// Whether esm_class marks a delivery receipt or an intermediate
/// notification (SMPP 3.4 §5.2.12: bits 5-2 = 0001 or 1000).
pub fn is_receipt(esm_class: u8) -> bool {
    matches!(esm_class & 0x3C, 0x04 | 0x20)
}

/// What a delivery receipt lacks, with its text. Surfaces in the log; the
/// receipt is acknowledged and dropped (`delivery::take_receipt`), since
/// refusing it would only bring it back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("receipt without a message id: {text:?}")]
    NoMessageId { text: String },
    #[error("receipt without a state: {text:?}")]
    NoState { text: String },
}

/// Reads a receipt; the error says what is missing.
pub fn parse(pdu: &Carried<'_>, format: DlrIdFormat) -> Result<Receipt, ReceiptError> {
    let mut tlv_id = None;
    let mut tlv_state = None;
    let mut payload = None;
    for tlv in pdu.tlvs {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref()),
            Some(TlvValue::ReceiptedMessageId(id)) => tlv_id = Some(id.as_str().to_owned()),
            Some(TlvValue::MessageState(state)) => tlv_state = Some(u8::from(*state)),
            _ => {}
        }
    }
    let body = if pdu.short_message.is_empty() {
        payload.unwrap_or_default()
    } else {
        pdu.short_message
    };
    let text = String::from_utf8_lossy(body);
    let fields = TextFields::parse(&text);
    let (raw_id, from_tlv) = match (tlv_id, fields.id) {
        (Some(id), _) if !id.is_empty() => (id, true),
        (_, Some(id)) => (id.to_owned(), false),
        _ => {
            return Err(ReceiptError::NoMessageId {
                text: text.into_owned(),
            })
        }
    };
    let status = match (tlv_state, fields.stat) {
        (Some(state), _) => status_of_state(state),
        (None, Some(stat)) => status_of_stat(stat),
        (None, None) => {
            return Err(ReceiptError::NoState {
                text: text.into_owned(),
            })
        }
    };
    let mut detail = match (fields.stat, tlv_state) {
        (Some(stat), _) => format!("stat:{stat}"),
        (None, Some(state)) => format!("message_state:{state}"),
        (None, None) => String::new(),
    };
    if let Some(err) = fields.err {
        detail.push_str(&format!(" err:{err}"));
    }
    let (reference, alternate) = receipt_reference(&raw_id, from_tlv, format);
    Ok(Receipt {
        reference,
        alternate,
        status,
        detail,
    })
}

/// message_state TLV values (SMPP 3.4 §5.2.28).
fn status_of_state(state: u8) -> ReportStatus {
    match state {
        2 => ReportStatus::Delivered,
        0 | 1 | 6 => ReportStatus::Enroute,
        _ => ReportStatus::NotDelivered,
    }
}

/// `stat:` words (SMPP 3.4 Appendix B, and the ones SMSCs add).
fn status_of_stat(stat: &str) -> ReportStatus {
    match stat.to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => ReportStatus::Delivered,
        "ENROUTE" | "ACCEPTD" | "ACCEPTED" | "BUFFRED" | "BUFFERED" | "SCHEDUL" => {
            ReportStatus::Enroute
        }
        _ => ReportStatus::NotDelivered,
    }
}

struct TextFields<'a> {
    id: Option<&'a str>,
    stat: Option<&'a str>,
    err: Option<&'a str>,
}

impl<'a> TextFields<'a> {
    fn parse(text: &'a str) -> TextFields<'a> {
        TextFields {
            id: field(text, "id:"),
            stat: field(text, "stat:"),
            err: field(text, "err:"),
        }
    }
}

/// The value after `key` (case-insensitive, at a word start) up to the next
/// space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(key) {
        let start = from + at;
        if start == 0 || text.as_bytes()[start - 1] == b' ' {
            let value = &text[start + key.len()..];
            let end = value.find(' ').unwrap_or(value.len());
            return Some(&value[..end]).filter(|v| !v.is_empty());
        }
        from = start + key.len();
    }
    None
}

/// How a submit_sm_resp message id is stored as the part's reference.
pub fn reference(message_id: &str, format: DlrIdFormat) -> String {
    let id = message_id.trim();
    match format {
        DlrIdFormat::Auto | DlrIdFormat::String => id.to_owned(),
        DlrIdFormat::Dec | DlrIdFormat::DecHex => decimal(id, 10).unwrap_or_else(|| id.to_owned()),
        DlrIdFormat::Hex => hex(id).unwrap_or_else(|| id.to_owned()),
        DlrIdFormat::HexDec => decimal(id, 16).unwrap_or_else(|| id.to_owned()),
    }
}

/// How a receipt's id is looked up: the stored spelling, and an alternate.
fn receipt_reference(id: &str, from_tlv: bool, format: DlrIdFormat) -> (String, Option<String>) {
    let id = id.trim();
    let same = |s: Option<String>| s.unwrap_or_else(|| id.to_owned());
    match format {
        DlrIdFormat::String => (id.to_owned(), None),
        DlrIdFormat::Dec => (same(decimal(id, 10)), None),
        DlrIdFormat::Hex => (same(hex(id)), None),
        // The TLV repeats the submit_sm_resp id; the text uses the other base.
        DlrIdFormat::HexDec if from_tlv => (same(decimal(id, 16)), None),
        DlrIdFormat::HexDec => (same(decimal(id, 10)), None),
        DlrIdFormat::DecHex if from_tlv => (same(decimal(id, 10)), None),
        DlrIdFormat::DecHex => (same(decimal(id, 16)), None),
        DlrIdFormat::Auto => {
            let alternate = if id.bytes().all(|b| b.is_ascii_digit()) {
                id.parse::<u128>().ok().map(|n| format!("{n:x}"))
            } else {
                decimal(id, 16)
            };
            (id.to_owned(), alternate.filter(|a| a != id))
        }
    }
}

fn decimal(id: &str, radix: u32) -> Option<String> {
    u128::from_str_radix(id, radix).ok().map(|n| n.to_string())
}

fn hex(id: &str) -> Option<String> {
    u128::from_str_radix(id, 16).ok().map(|n| format!("{n:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::pdus::DeliverSm;
    use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::values::{EsmClass, MessageState};
    use std::str::FromStr;

    fn receipt(pdu: DeliverSm, format: DlrIdFormat) -> Result<Receipt, ReceiptError> {
        parse(&Carried::from(&pdu), format)
    }

    fn pdu(text: &str, tlvs: Vec<MessageDeliveryRequestTlvValue>) -> DeliverSm {
        DeliverSm::builder()
            .esm_class(EsmClass::from(0x04))
            .short_message(OctetString::from_str(text).unwrap())
            .tlvs(tlvs)
            .build()
    }

    // The example of SMPP 3.4 Appendix B.
    const APPENDIX_B: &str = "id:0123456789 sub:001 dlvrd:001 submit date:0409221410 done date:0409221412 stat:DELIVRD err:000 text:Hello";

    #[test]
    fn reads_the_appendix_b_text() {
        let r = receipt(pdu(APPENDIX_B, vec![]), DlrIdFormat::String).unwrap();
        assert_eq!(r.reference, "0123456789");
        assert_eq!(r.status, ReportStatus::Delivered);
        assert_eq!(r.detail, "stat:DELIVRD err:000");
        let undeliv = APPENDIX_B.replace("DELIVRD", "UNDELIV");
        let r = receipt(pdu(&undeliv, vec![]), DlrIdFormat::String).unwrap();
        assert_eq!(r.status, ReportStatus::NotDelivered);
        let enroute = APPENDIX_B.replace("DELIVRD", "ENROUTE");
        assert_eq!(
            receipt(pdu(&enroute, vec![]), DlrIdFormat::String)
                .unwrap()
                .status,
            ReportStatus::Enroute
        );
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let r = receipt(
            pdu(
                APPENDIX_B,
                vec![
                    MessageDeliveryRequestTlvValue::ReceiptedMessageId(
                        COctetString::from_str("abc").unwrap(),
                    ),
                    MessageDeliveryRequestTlvValue::MessageState(MessageState::Undeliverable),
                ],
            ),
            DlrIdFormat::String,
        )
        .unwrap();
        assert_eq!(r.reference, "abc");
        assert_eq!(r.status, ReportStatus::NotDelivered);
    }

    #[test]
    fn hex_and_decimal_ids() {
        // submit_sm_resp "1a2b" (hex); the receipt text says 6699 (decimal).
        assert_eq!(reference("1A2B", DlrIdFormat::HexDec), "6699");
        let text = APPENDIX_B.replace("0123456789", "6699");
        let r = receipt(pdu(&text, vec![]), DlrIdFormat::HexDec).unwrap();
        assert_eq!(r.reference, "6699");
        // auto: stored as given, the other base offered as an alternate.
        assert_eq!(reference("1a2b", DlrIdFormat::Auto), "1a2b");
        let r = receipt(pdu(&text, vec![]), DlrIdFormat::Auto).unwrap();
        assert_eq!(
            (r.reference.as_str(), r.alternate.as_deref()),
            ("6699", Some("1a2b"))
        );
        assert_eq!(reference("000A", DlrIdFormat::Hex), "a");
        assert_eq!(reference("0042", DlrIdFormat::Dec), "42");
    }

    #[test]
    fn refuses_a_receipt_without_id_or_state() {
        assert!(receipt(pdu("stat:DELIVRD", vec![]), DlrIdFormat::String).is_err());
        assert!(receipt(pdu("id:12 sub:001", vec![]), DlrIdFormat::String).is_err());
    }

    #[test]
    fn esm_class_receipt_bits() {
        assert!(is_receipt(0x04));
        assert!(is_receipt(0x20));
        assert!(!is_receipt(0x00));
        assert!(!is_receipt(0x40));
    }
}
