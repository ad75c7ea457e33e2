//! Mobile-originated deliver_sm: the text in its data coding, the sender
//! and recipient, and the concatenation details (UDH or SAR) of a part.

use rusmpp::tlvs::TlvValue;
use smsbus_core::gsm7;

use super::carried::Carried;

/// Which part of a concatenated message a deliver_sm carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartOf {
    pub reference: u16,
    pub total: u8,
    pub seq: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub from: String,
    pub to: String,
    pub text: String,
    /// Set when the payload was not text (kept as hexadecimal in `text`).
    pub binary: bool,
    pub data_coding: u8,
    pub part: Option<PartOf>,
    /// The user data header as it came (UDHL first), when UDHI was set.
    pub udh: Option<Vec<u8>>,
}

/// What is wrong with an inbound message. Surfaces in the log, and the
/// PDU is refused with ESME_RX_P_APPN (`delivery::take_inbound`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    #[error("UCS-2 text of odd length ({octets} octets)")]
    OddUcs2 { octets: usize },
    #[error("UDHI set but no user data")]
    NoUserData,
    #[error("user data header of {header} octets in a payload of {payload}")]
    HeaderTooLong { header: usize, payload: usize },
    #[error("user data header element longer than the header")]
    ElementTooLong,
    #[error("part {seq} of {total} is not a valid part")]
    InvalidPart { seq: u8, total: u8 },
}

/// Reads an inbound message; the error says what is wrong with it.
pub fn decode(pdu: &Carried<'_>) -> Result<Decoded, InboundError> {
    let mut payload: &[u8] = pdu.short_message;
    let mut sar = (None, None, None);
    for tlv in pdu.tlvs {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) if payload.is_empty() => payload = p.value.as_ref(),
            Some(TlvValue::SarMsgRefNum(r)) => sar.0 = Some(*r),
            Some(TlvValue::SarTotalSegments(t)) => sar.1 = Some(*t),
            Some(TlvValue::SarSegmentSeqnum(s)) => sar.2 = Some(*s),
            _ => {}
        }
    }
    let mut part = match sar {
        (Some(reference), Some(total), Some(seq)) => Some(PartOf {
            reference,
            total,
            seq,
        }),
        _ => None,
    };
    let mut udh = None;
    if pdu.esm_class & 0x40 != 0 {
        let (udh_part, rest) = split_udh(payload)?;
        udh = Some(payload[..payload.len() - rest.len()].to_vec());
        payload = rest;
        part = udh_part.or(part);
    }
    let data_coding = pdu.data_coding;
    let (text, binary) = text_of(data_coding, payload)?;
    Ok(Decoded {
        from: address(pdu.source, pdu.source_ton),
        to: address(pdu.destination, pdu.dest_ton),
        text,
        binary,
        data_coding,
        part: part.filter(|p| p.total > 1),
        udh,
    })
}

/// International numbers get their `+` back.
pub fn address(text: &str, ton: u8) -> String {
    if ton == 1 && !text.is_empty() && !text.starts_with('+') {
        format!("+{text}")
    } else {
        text.to_owned()
    }
}

/// The text of a payload by data coding (SMPP 3.4 §5.2.19; GSM 03.38
/// data coding groups for the 0xF0 and 0x00-0x0F message classes).
fn text_of(data_coding: u8, payload: &[u8]) -> Result<(String, bool), InboundError> {
    let alphabet = match data_coding {
        0x00 | 0x01 => Alphabet::Gsm7,
        0x03 => Alphabet::Latin1,
        0x08 => Alphabet::Ucs2,
        // General data coding group, uncompressed: bits 3-2 are the alphabet.
        0x10..=0x1F if data_coding & 0x0C == 0x00 => Alphabet::Gsm7,
        0x10..=0x1F if data_coding & 0x0C == 0x08 => Alphabet::Ucs2,
        0xF0..=0xFF if data_coding & 0x04 == 0 => Alphabet::Gsm7,
        _ => Alphabet::Binary,
    };
    Ok(match alphabet {
        // Some SMSCs send data_coding 1 (IA5) for plain ASCII; GSM 7-bit
        // unpacked agrees with ASCII on letters and digits, and decoding
        // it as GSM keeps @ and the rest right for the SMSCs that mean GSM.
        Alphabet::Gsm7 if data_coding == 0x01 => (
            payload.iter().map(|&b| char::from(b & 0x7F)).collect(),
            false,
        ),
        Alphabet::Gsm7 => (gsm7::decode(payload), false),
        Alphabet::Latin1 => (payload.iter().map(|&b| char::from(b)).collect(), false),
        Alphabet::Ucs2 => {
            if !payload.len().is_multiple_of(2) {
                return Err(InboundError::OddUcs2 {
                    octets: payload.len(),
                });
            }
            let units: Vec<u16> = payload
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            (String::from_utf16_lossy(&units), false)
        }
        Alphabet::Binary => (payload.iter().map(|b| format!("{b:02x}")).collect(), true),
    })
}

enum Alphabet {
    Gsm7,
    Latin1,
    Ucs2,
    Binary,
}

/// Splits the user data header off, returning its concatenation element
/// (TS 23.040 §9.2.3.24.1 and .8) if any.
fn split_udh(payload: &[u8]) -> Result<(Option<PartOf>, &[u8]), InboundError> {
    let udhl = *payload.first().ok_or(InboundError::NoUserData)? as usize;
    if payload.len() < udhl + 1 {
        return Err(InboundError::HeaderTooLong {
            header: udhl,
            payload: payload.len(),
        });
    }
    let mut header = &payload[1..=udhl];
    let mut part = None;
    while header.len() >= 2 {
        let (iei, len) = (header[0], header[1] as usize);
        let Some(data) = header.get(2..2 + len) else {
            return Err(InboundError::ElementTooLong);
        };
        match (iei, len) {
            (0x00, 3) => {
                part = Some(PartOf {
                    reference: u16::from(data[0]),
                    total: data[1],
                    seq: data[2],
                })
            }
            (0x08, 4) => {
                part = Some(PartOf {
                    reference: u16::from_be_bytes([data[0], data[1]]),
                    total: data[2],
                    seq: data[3],
                })
            }
            _ => {}
        }
        header = &header[2 + len..];
    }
    if let Some(p) = part {
        if p.seq == 0 || p.seq > p.total {
            return Err(InboundError::InvalidPart {
                seq: p.seq,
                total: p.total,
            });
        }
    }
    Ok((part, &payload[udhl + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::pdus::DeliverSm;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::values::{DataCoding, EsmClass, Ton};
    use std::str::FromStr;

    fn read(pdu: DeliverSm) -> Result<Decoded, InboundError> {
        decode(&Carried::from(&pdu))
    }

    fn pdu(esm: u8, dc: DataCoding, sm: Vec<u8>) -> DeliverSm {
        DeliverSm::builder()
            .source_addr_ton(Ton::International)
            .source_addr(COctetString::from_str("31612345678").unwrap())
            .destination_addr(COctetString::from_str("1234").unwrap())
            .esm_class(EsmClass::from(esm))
            .data_coding(dc)
            .short_message(OctetString::from_vec(sm).unwrap())
            .build()
    }

    #[test]
    fn gsm_text_with_extension_characters() {
        let d = read(pdu(
            0,
            DataCoding::McSpecific,
            gsm7::encode("a€[]").unwrap(),
        ))
        .unwrap();
        assert_eq!(d.text, "a€[]");
        assert_eq!(d.from, "+31612345678");
        assert_eq!(d.to, "1234");
        assert_eq!(d.part, None);
    }

    #[test]
    fn ucs2_part_with_udh() {
        let mut sm = vec![5, 0, 3, 7, 2, 2];
        sm.extend("Привет".encode_utf16().flat_map(u16::to_be_bytes));
        let d = read(pdu(0x40, DataCoding::Ucs2, sm)).unwrap();
        assert_eq!(d.text, "Привет");
        assert_eq!(
            d.part,
            Some(PartOf {
                reference: 7,
                total: 2,
                seq: 2
            })
        );
    }

    #[test]
    fn binary_is_kept_as_hex_and_bad_headers_are_refused() {
        let d = read(pdu(0, DataCoding::OctetUnspecified, vec![0xDE, 0xAD])).unwrap();
        assert_eq!((d.text.as_str(), d.binary), ("dead", true));
        assert!(read(pdu(0x40, DataCoding::McSpecific, vec![9, 1])).is_err());
        assert!(read(pdu(
            0x40,
            DataCoding::McSpecific,
            vec![5, 0, 3, 7, 2, 3, 65]
        ))
        .is_err());
        assert!(read(pdu(0, DataCoding::Ucs2, vec![0, 65, 66])).is_err());
    }
}
