//! Short-message payloads as the simulator reads and writes them: data
//! coding, the concatenation user data header (TS 23.040 §9.2.3.24.1 and
//! .8), SAR TLVs and message_payload.

use std::str::FromStr;

use rusmpp::pdus::{DataSm, DeliverSm};
use rusmpp::tlvs::{
    MessageDeliveryRequestTlvValue, MessageSubmissionRequestTlvValue, Tlv, TlvValue,
};
use rusmpp::types::{AnyOctetString, COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload, Npi, Ton};
use smsbus_core::gsm7;
use smsbus_core::text::{split, Encoding};

/// How the parts of a message are tied together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConcatInfo {
    pub reference: u16,
    pub total: u8,
    pub seq: u8,
}

/// A decoded short message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    pub concat: Option<ConcatInfo>,
    /// "udh8", "udh16", "sar", "payload" or "single".
    pub how: &'static str,
}

/// Decodes a submit_sm/deliver_sm payload.
pub fn decode(
    data_coding: u8,
    esm_class: u8,
    short_message: &[u8],
    tlvs: &[Tlv],
) -> Result<Decoded, String> {
    let mut payload = short_message;
    let mut concat = None;
    let mut how = "single";
    let mut sar = (None, None, None);
    for tlv in tlvs {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) => {
                if !short_message.is_empty() {
                    return Err("both short_message and message_payload are set".into());
                }
                payload = p.value.as_ref();
                how = "payload";
            }
            Some(TlvValue::SarMsgRefNum(r)) => sar.0 = Some(*r),
            Some(TlvValue::SarTotalSegments(t)) => sar.1 = Some(*t),
            Some(TlvValue::SarSegmentSeqnum(s)) => sar.2 = Some(*s),
            _ => {}
        }
    }
    if let (Some(reference), Some(total), Some(seq)) = sar {
        concat = Some(ConcatInfo {
            reference,
            total,
            seq,
        });
        how = "sar";
    }
    if esm_class & 0x40 != 0 {
        let (info, rest, kind) = parse_udh(payload)?;
        payload = rest;
        if info.is_some() {
            concat = info;
            how = kind;
        }
    }
    let text = match data_coding {
        0 => gsm7::decode(payload),
        1 => payload.iter().map(|&b| char::from(b & 0x7F)).collect(),
        3 => payload.iter().map(|&b| char::from(b)).collect(),
        8 => {
            if !payload.len().is_multiple_of(2) {
                return Err("UCS-2 payload of odd length".into());
            }
            let units: Vec<u16> = payload
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            // A part may end in the middle of a surrogate pair only if the
            // sender split it wrongly: show that as U+FFFD, as a phone would.
            String::from_utf16_lossy(&units)
        }
        // 8-bit data, recorded as its hexadecimal digits, as smsbus keeps it.
        2 | 4 => payload.iter().map(|b| format!("{b:02x}")).collect(),
        other => {
            return Err(format!("data_coding {other} is not text"));
        }
    };
    Ok(Decoded { text, concat, how })
}

/// Splits a user data header off `payload`: the concatenation element, if
/// any, the rest, and which kind of reference it had.
fn parse_udh(payload: &[u8]) -> Result<(Option<ConcatInfo>, &[u8], &'static str), String> {
    let udhl = *payload.first().ok_or("UDHI set but no user data")? as usize;
    if payload.len() < udhl + 1 {
        return Err(format!(
            "UDH length {udhl} exceeds the payload ({})",
            payload.len()
        ));
    }
    let mut header = &payload[1..=udhl];
    let mut found = (None, "udh");
    while header.len() >= 2 {
        let (iei, len) = (header[0], header[1] as usize);
        let data = header
            .get(2..2 + len)
            .ok_or("UDH element longer than the header")?;
        match (iei, len) {
            (0x00, 3) => {
                found = (
                    Some(ConcatInfo {
                        reference: u16::from(data[0]),
                        total: data[1],
                        seq: data[2],
                    }),
                    "udh8",
                )
            }
            (0x08, 4) => {
                found = (
                    Some(ConcatInfo {
                        reference: u16::from_be_bytes([data[0], data[1]]),
                        total: data[2],
                        seq: data[3],
                    }),
                    "udh16",
                )
            }
            _ => {}
        }
        header = &header[2 + len..];
    }
    Ok((found.0, &payload[udhl + 1..], found.1))
}

/// How an inbound message is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concat {
    Udh8,
    Udh16,
    Sar,
}

/// An inbound (mobile-originated) message for [`super::Smsc::deliver`].
#[derive(Clone, Debug)]
pub struct InboundText {
    pub from: String,
    pub to: String,
    pub text: String,
    pub encoding: Encoding,
    pub concat: Concat,
    pub reference: u16,
    /// Send the parts last first.
    pub reversed: bool,
    /// Send it as one data_sm with the text in message_payload.
    pub data_sm: bool,
}

impl InboundText {
    pub fn new(from: &str, to: &str, text: &str) -> InboundText {
        InboundText {
            from: from.to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
            encoding: smsbus_core::text::detect(text),
            concat: Concat::Udh8,
            reference: 42,
            reversed: false,
            data_sm: false,
        }
    }

    /// The message as one data_sm, its whole text in message_payload.
    pub fn data_sm(&self) -> Result<DataSm, String> {
        let (from, from_ton) = address(&self.from)?;
        let (to, to_ton) = address(&self.to)?;
        Ok(DataSm::builder()
            .source_addr_ton(from_ton)
            .source_addr(from)
            .dest_addr_ton(to_ton)
            .destination_addr(to)
            .data_coding(data_coding(self.encoding))
            .tlvs(vec![MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from(encode(&self.text, self.encoding)?)),
            )])
            .build())
    }

    /// The deliver_sm PDUs that carry this message.
    pub fn deliver_sms(&self) -> Result<Vec<DeliverSm>, String> {
        let ranges = split(&self.text, self.encoding).map_err(|e| e.to_string())?;
        let total = ranges.len();
        let mut pdus = Vec::with_capacity(total);
        for (i, range) in ranges.into_iter().enumerate() {
            let mut data = encode(&self.text[range], self.encoding)?;
            let mut esm_class = 0u8;
            let mut tlvs: Vec<MessageDeliveryRequestTlvValue> = Vec::new();
            if total > 1 {
                let (seq, total) = (i as u8 + 1, total as u8);
                match self.concat {
                    Concat::Udh8 => {
                        let mut udh = vec![5, 0x00, 3, self.reference as u8, total, seq];
                        udh.append(&mut data);
                        data = udh;
                        esm_class |= 0x40;
                    }
                    Concat::Udh16 => {
                        let [hi, lo] = self.reference.to_be_bytes();
                        let mut udh = vec![6, 0x08, 4, hi, lo, total, seq];
                        udh.append(&mut data);
                        data = udh;
                        esm_class |= 0x40;
                    }
                    Concat::Sar => {
                        tlvs.push(MessageDeliveryRequestTlvValue::SarMsgRefNum(self.reference));
                        tlvs.push(MessageDeliveryRequestTlvValue::SarTotalSegments(total));
                        tlvs.push(MessageDeliveryRequestTlvValue::SarSegmentSeqnum(seq));
                    }
                }
            }
            let (from, from_ton) = address(&self.from)?;
            let (to, to_ton) = address(&self.to)?;
            pdus.push(
                DeliverSm::builder()
                    .source_addr_ton(from_ton)
                    .source_addr_npi(if from_ton == Ton::Alphanumeric {
                        Npi::Unknown
                    } else {
                        Npi::Isdn
                    })
                    .source_addr(from)
                    .dest_addr_ton(to_ton)
                    .dest_addr_npi(Npi::Isdn)
                    .destination_addr(to)
                    .esm_class(EsmClass::from(esm_class))
                    .data_coding(data_coding(self.encoding))
                    .short_message(
                        OctetString::from_vec(data).map_err(|e| format!("short_message: {e}"))?,
                    )
                    .tlvs(tlvs)
                    .build(),
            );
        }
        if self.reversed {
            pdus.reverse();
        }
        Ok(pdus)
    }
}

pub fn data_coding(encoding: Encoding) -> DataCoding {
    DataCoding::from(encoding.data_coding())
}

/// The octets of `text` in `encoding` (GSM 7-bit unpacked, one septet per
/// octet, as SMPP carries it).
pub fn encode(text: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
    smsbus_core::text::octets(text, encoding).map_err(|e| e.to_string())
}

/// An address with its TON: `+` numbers are international.
pub fn address(text: &str) -> Result<(COctetString<1, 21>, Ton), String> {
    let (digits, ton) = match text.strip_prefix('+') {
        Some(rest) => (rest, Ton::International),
        None if text.chars().all(|c| c.is_ascii_digit()) => (text, Ton::Unknown),
        None => (text, Ton::Alphanumeric),
    };
    let value = COctetString::from_str(digits).map_err(|e| format!("address {text:?}: {e}"))?;
    Ok((value, ton))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_8_bit_concatenation_header() {
        // TS 23.040 §9.2.3.24.1: IEI 00, length 3, reference, total, sequence.
        let mut pdu = vec![5, 0x00, 3, 0x2A, 2, 1];
        pdu.extend(gsm7::encode("Hello").unwrap());
        let d = decode(0, 0x40, &pdu, &[]).unwrap();
        assert_eq!(d.text, "Hello");
        assert_eq!(
            d.concat,
            Some(ConcatInfo {
                reference: 0x2A,
                total: 2,
                seq: 1
            })
        );
        assert_eq!(d.how, "udh8");
    }

    #[test]
    fn inbound_parts_round_trip() {
        let text = "Привет! ".repeat(20);
        let mut m = InboundText::new("+31612345678", "1234", &text);
        m.concat = Concat::Udh16;
        let pdus = m.deliver_sms().unwrap();
        assert_eq!(pdus.len(), 3);
        let mut joined = String::new();
        for p in &pdus {
            let d = decode(
                u8::from(p.data_coding),
                u8::from(p.esm_class),
                p.short_message(),
                p.tlvs(),
            )
            .unwrap();
            assert_eq!(d.how, "udh16");
            joined.push_str(&d.text);
        }
        assert_eq!(joined, text);
    }
}
