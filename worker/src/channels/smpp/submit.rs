//! submit_sm PDUs from a claimed message: addresses with their TON/NPI,
//! data coding, receipts, validity, priority, and long messages cut into
//! parts (concatenation UDH with 8- or 16-bit reference, SAR TLVs, or one
//! message_payload) — or in the parts its SMPP client sent, each with the
//! client's own header (`message.client_parts`).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rusmpp::pdus::SubmitSm;
use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, MessagePayload, Npi, PriorityFlag, RegisteredDelivery, ServiceType, Ton,
};
use smsbus_core::address;
use smsbus_core::text::{
    octets, split_after_header, Encoding, CONCAT16_HEADER_OCTETS, CONCAT_HEADER_OCTETS,
};

use super::config::{LongMessage, SmppConfig};
use crate::channels::{client_parts, OutMessage};

/// Why a message cannot be put into submit_sm PDUs: a permanent failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

fn fail(what: impl Into<String>) -> BuildError {
    BuildError(what.into())
}

/// The submit_sm PDUs of `message`, one per part, in order.
pub fn build(
    message: &OutMessage,
    config: &SmppConfig,
    now: SystemTime,
) -> Result<Vec<SubmitSm>, BuildError> {
    let encoding = wire_encoding(message, config);
    let (dest, dest_ton, dest_npi) = destination(message)?;
    let (source, source_ton, source_npi) = source(message, config)?;
    let validity = match message.valid_until {
        Some(until) => relative_validity(until.duration_since(now).unwrap_or(Duration::ZERO))?,
        None => EmptyOrFullCOctetString::empty(),
    };
    let registered = RegisteredDelivery::from(u8::from(message.request_report));
    let service_type = ServiceType::new(
        COctetString::from_str(&config.service_type)
            .map_err(|e| fail(format!("service_type: {e}")))?,
    );
    let template = |esm_class: u8, short_message: Vec<u8>| -> Result<SubmitSm, BuildError> {
        Ok(SubmitSm::builder()
            .service_type(service_type.clone())
            .source_addr_ton(source_ton)
            .source_addr_npi(source_npi)
            .source_addr(source.clone())
            .dest_addr_ton(dest_ton)
            .dest_addr_npi(dest_npi)
            .destination_addr(dest.clone())
            .esm_class(EsmClass::from(esm_class))
            .priority_flag(PriorityFlag::from(message.priority.clamp(0, 3) as u8))
            .validity_period(validity.clone())
            .registered_delivery(registered)
            .data_coding(data_coding(encoding))
            .short_message(
                OctetString::from_vec(short_message)
                    .map_err(|e| fail(format!("short_message: {e}")))?,
            )
            .build())
    };

    if let Some(pieces) = message
        .client_parts
        .as_deref()
        .and_then(|parts| client_parts::cut(parts, &message.body))
    {
        // The client's own parts, each with its own header, as it sent them.
        return pieces
            .into_iter()
            .map(|(udh, text)| {
                let mut sm = udh.to_vec();
                sm.extend(encode(text, encoding)?);
                template(if udh.is_empty() { 0 } else { 0x40 }, sm)
            })
            .collect();
    }
    let whole = encode(&message.body, encoding)?;
    if config.long_message == LongMessage::Payload && whole.len() > 140 {
        let mut pdu = template(0, Vec::new())?;
        pdu.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from(whole)),
        ));
        return Ok(vec![pdu]);
    }
    let header = if config.long_message == LongMessage::Udh16 {
        CONCAT16_HEADER_OCTETS
    } else {
        CONCAT_HEADER_OCTETS
    };
    let ranges =
        split_after_header(&message.body, encoding, header).map_err(|e| fail(e.to_string()))?;
    if ranges.len() == 1 {
        return Ok(vec![template(0, whole)?]);
    }
    if ranges.len() > 255 {
        return Err(fail(format!(
            "body needs {} parts; a concatenated message has at most 255",
            ranges.len()
        )));
    }
    let total = ranges.len() as u8;
    // The reference ties the parts together at the handset; the message id
    // keeps it different for consecutive messages to one recipient.
    let reference = (message.id & 0xFFFF) as u16;
    let mut pdus = Vec::with_capacity(ranges.len());
    for (i, range) in ranges.into_iter().enumerate() {
        let seq = i as u8 + 1;
        let data = encode(&message.body[range], encoding)?;
        let pdu = match config.long_message {
            LongMessage::Udh | LongMessage::Payload => {
                let mut sm = vec![5, 0x00, 3, reference as u8, total, seq];
                sm.extend(data);
                template(0x40, sm)?
            }
            LongMessage::Udh16 => {
                let [hi, lo] = reference.to_be_bytes();
                let mut sm = vec![6, 0x08, 4, hi, lo, total, seq];
                sm.extend(data);
                template(0x40, sm)?
            }
            LongMessage::Sar => {
                let mut pdu = template(0, data)?;
                pdu.push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(reference));
                pdu.push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(total));
                pdu.push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(seq));
                pdu
            }
        };
        pdus.push(pdu);
    }
    Ok(pdus)
}

/// The encoding on the wire: the message's own, except that GSM-alphabet
/// text goes out as Latin-1 where the channel asks for it (and as UCS-2
/// when a character, such as €, is not in Latin-1).
fn wire_encoding(message: &OutMessage, config: &SmppConfig) -> Encoding {
    if message.encoding == Encoding::Gsm7 && config.gsm_text_encoding() == Encoding::Latin1 {
        if message.body.chars().all(|c| u32::from(c) <= 0xFF) {
            return Encoding::Latin1;
        }
        return Encoding::Ucs2;
    }
    message.encoding
}

fn data_coding(encoding: Encoding) -> DataCoding {
    DataCoding::from(encoding.data_coding())
}

/// The octets of `text`: GSM 7-bit unpacked (one septet per octet, as SMPP
/// carries data_coding 0), UTF-16BE, Latin-1, or a binary body's octets.
fn encode(text: &str, encoding: Encoding) -> Result<Vec<u8>, BuildError> {
    octets(text, encoding).map_err(|e| fail(e.to_string()))
}

type Addr = (COctetString<1, 21>, Ton, Npi);

fn destination(message: &OutMessage) -> Result<Addr, BuildError> {
    let text = message.to_address.as_str();
    let (ton, npi) = match (message.to_ton, message.to_npi) {
        (Some(ton), Some(npi)) => (ton as u8, npi as u8),
        _ => {
            let a = address::destination(text).map_err(|e| fail(e.to_string()))?;
            (a.kind.ton(), a.kind.npi())
        }
    };
    wire_address(text, ton, npi, "to_address")
}

fn source(message: &OutMessage, config: &SmppConfig) -> Result<Addr, BuildError> {
    match (&message.from_address, &config.source_addr) {
        (Some(from), _) => {
            let (ton, npi) = match (message.from_ton, message.from_npi) {
                (Some(ton), Some(npi)) => (ton as u8, npi as u8),
                _ => kind_of_sender(from)?,
            };
            wire_address(from, ton, npi, "from_address")
        }
        (None, Some(from)) => {
            let (ton, npi) = kind_of_sender(from)?;
            wire_address(from, ton, npi, "the channel's source_addr")
        }
        // Let the SMSC fill in the account's default sender.
        (None, None) => Ok((COctetString::empty(), Ton::Unknown, Npi::Unknown)),
    }
}

fn kind_of_sender(text: &str) -> Result<(u8, u8), BuildError> {
    let a = address::sender(text).map_err(|e| fail(e.to_string()))?;
    Ok((a.kind.ton(), a.kind.npi()))
}

/// International numbers travel without their `+`; the TON says what they are.
fn wire_address(text: &str, ton: u8, npi: u8, what: &str) -> Result<Addr, BuildError> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    let value = COctetString::from_str(digits)
        .map_err(|e| fail(format!("{what} {text:?} cannot be sent over SMPP: {e}")))?;
    Ok((value, Ton::from(ton), Npi::from(npi)))
}

/// SMPP relative time format `YYMMDDhhmmss000R` (SMPP 3.4 §7.1.1.2), with
/// days up to 99 and then 30-day months.
fn relative_validity(left: Duration) -> Result<EmptyOrFullCOctetString<17>, BuildError> {
    // Under a minute left: ask for one minute, the least SMSCs honour.
    let secs = left.as_secs().max(60);
    let (mut days, rest) = (secs / 86_400, secs % 86_400);
    let mut months = 0;
    if days > 99 {
        months = days / 30;
        days %= 30;
    }
    let (years, months) = (months / 12, months % 12);
    let years = years.min(99);
    let text = format!(
        "{years:02}{months:02}{days:02}{:02}{:02}{:02}000R",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    EmptyOrFullCOctetString::from_str(&text).map_err(|e| fail(format!("validity_period: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(body: &str) -> OutMessage {
        OutMessage {
            id: 0x1234,
            to_address: "+31612345678".into(),
            from_address: Some("MyShop".into()),
            body: body.into(),
            encoding: smsbus_core::text::detect(body),
            segments: 1,
            priority: 0,
            request_report: true,
            valid_until: None,
            due_at: SystemTime::now(),
            to_ton: Some(1),
            to_npi: Some(1),
            from_ton: Some(5),
            from_npi: Some(0),
            client_parts: None,
            custom: None,
        }
    }

    #[test]
    fn a_clients_own_parts_go_as_they_came_while_they_match_the_body() {
        use crate::channels::client_parts::ClientPart;
        let mut m = message("First part, second part.");
        m.client_parts = Some(vec![
            ClientPart {
                udh: vec![5, 0, 3, 0x77, 2, 1],
                chars: 12,
            },
            ClientPart {
                udh: vec![5, 0, 3, 0x77, 2, 2],
                chars: 12,
            },
        ]);
        let pdus = build(&m, &config(json!({})), SystemTime::now()).unwrap();
        assert_eq!(pdus.len(), 2);
        for (pdu, seq, text) in [(&pdus[0], 1, "First part, "), (&pdus[1], 2, "second part.")] {
            assert_eq!(u8::from(pdu.esm_class), 0x40);
            let mut expected = vec![5, 0, 3, 0x77, 2, seq];
            expected.extend(gsm7_octets(text));
            assert_eq!(pdu.short_message().as_ref(), expected.as_slice());
        }
        // A port-addressed binary message in one part keeps its header.
        let mut port = message("CAFE");
        port.encoding = Encoding::Binary;
        port.client_parts = Some(vec![ClientPart {
            udh: vec![6, 5, 4, 0x23, 0xF4, 0, 0],
            chars: 4,
        }]);
        let pdus = build(&port, &config(json!({})), SystemTime::now()).unwrap();
        assert_eq!(
            pdus[0].short_message().as_ref(),
            &[6, 5, 4, 0x23, 0xF4, 0, 0, 0xCA, 0xFE]
        );
        // A body changed since is cut anew, with the channel's own header.
        m.body = "Another text".into();
        let pdus = build(&m, &config(json!({})), SystemTime::now()).unwrap();
        assert_eq!(pdus.len(), 1);
        assert_eq!(u8::from(pdus[0].esm_class), 0);
    }

    fn gsm7_octets(text: &str) -> Vec<u8> {
        smsbus_core::gsm7::encode(text).unwrap()
    }

    fn config(extra: serde_json::Value) -> SmppConfig {
        let mut c = json!({"host": "h", "system_id": "me"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        SmppConfig::parse(&c).unwrap()
    }

    #[test]
    fn a_short_message_is_one_pdu_with_its_addresses() {
        let pdus = build(&message("Hello €"), &config(json!({})), SystemTime::now()).unwrap();
        assert_eq!(pdus.len(), 1);
        let p = &pdus[0];
        assert_eq!(p.destination_addr.as_str(), "31612345678");
        assert_eq!(p.dest_addr_ton, Ton::International);
        assert_eq!(p.dest_addr_npi, Npi::Isdn);
        assert_eq!(p.source_addr.as_str(), "MyShop");
        assert_eq!(p.source_addr_ton, Ton::Alphanumeric);
        assert_eq!(u8::from(p.registered_delivery), 1);
        assert_eq!(p.data_coding, DataCoding::McSpecific);
        // € is the escape 0x1B followed by 0x65 (TS 23.038 §6.2.1.1).
        assert_eq!(&p.short_message()[..], b"Hello \x1b\x65");
    }

    #[test]
    fn long_messages_carry_a_concatenation_header() {
        let body = "x".repeat(200);
        let pdus = build(&message(&body), &config(json!({})), SystemTime::now()).unwrap();
        assert_eq!(pdus.len(), 2);
        assert_eq!(u8::from(pdus[0].esm_class), 0x40);
        assert_eq!(&pdus[0].short_message()[..6], &[5, 0, 3, 0x34, 2, 1]);
        assert_eq!(pdus[0].short_message().len(), 6 + 153);
        assert_eq!(&pdus[1].short_message()[..6], &[5, 0, 3, 0x34, 2, 2]);

        let pdus = build(
            &message(&body),
            &config(json!({"long_message": "udh16"})),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(&pdus[0].short_message()[..7], &[6, 8, 4, 0x12, 0x34, 2, 1]);
        assert_eq!(pdus[0].short_message().len(), 7 + 152);

        let pdus = build(
            &message(&body),
            &config(json!({"long_message": "sar"})),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(pdus.len(), 2);
        assert_eq!(pdus[0].tlvs().len(), 3);
        assert_eq!(u8::from(pdus[0].esm_class), 0);

        let pdus = build(
            &message(&body),
            &config(json!({"long_message": "payload"})),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(pdus.len(), 1);
        assert!(pdus[0].short_message().is_empty());
    }

    #[test]
    fn validity_is_relative() {
        let v = relative_validity(Duration::from_secs(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)).unwrap();
        assert_eq!(v.as_str(), "000002030405000R");
        let v = relative_validity(Duration::from_secs(400 * 86_400)).unwrap();
        assert_eq!(v.as_str(), "010110000000000R");
    }

    #[test]
    fn latin1_when_the_channel_asks_for_it() {
        let pdus = build(
            &message("Grüße"),
            &config(json!({"default_coding": "latin1"})),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(pdus[0].data_coding, DataCoding::Latin1);
        assert_eq!(
            &pdus[0].short_message()[..],
            "Grüße"
                .chars()
                .map(|c| c as u8)
                .collect::<Vec<_>>()
                .as_slice()
        );
    }
}
