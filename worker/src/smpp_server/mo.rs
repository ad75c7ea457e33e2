//! An inbound (mobile-originated) message given to an account, as the
//! `deliver_sm` its receiver bind gets: from the handset to the number it
//! was sent to, in GSM 7-bit when every character has a code there, else
//! UCS-2, and 8-bit data as the octets it came as; one that does not fit one part (160 septets, 140 octets) goes
//! whole in `message_payload`, or in parts with a concatenation UDH or
//! the SAR TLVs, as the account's `long_message` says.

use rusmpp::pdus::builders::DeliverSmBuilder;
use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::types::{AnyOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload};
use smsbus_core::gsm7;
use smsbus_core::text::{octets, split_after_header, Encoding, CONCAT_HEADER_OCTETS};

use super::receipt::deliver_sm;

/// One inbound row of `smsbus.smpp_outbox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub outbox_id: i64,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    pub body: String,
    /// The body is 8-bit data in hexadecimal digits.
    pub binary: bool,
    pub attempts: i32,
}

/// What fits one short_message: 160 septets or 140 octets of UCS-2.
const SHORT_MESSAGE_OCTETS: usize = 140;
const SHORT_MESSAGE_SEPTETS: usize = 160;

/// How a long inbound message goes to an account (`account.long_message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongMessage {
    /// Whole, in message_payload.
    Payload,
    /// In parts with a concatenation UDH (8-bit reference).
    Udh,
    /// In parts with the SAR TLVs.
    Sar,
}

impl LongMessage {
    pub fn from_setting(setting: &str) -> LongMessage {
        match setting {
            "udh" => LongMessage::Udh,
            "sar" => LongMessage::Sar,
            _ => LongMessage::Payload,
        }
    }
}

impl Inbound {
    /// The deliver_sm that carry the message: one, or one per part.
    pub fn pdus(&self, long: LongMessage) -> Vec<DeliverSm> {
        let encoding = if self.binary {
            Encoding::Binary
        } else if gsm7::encode(&self.body).is_ok() {
            Encoding::Gsm7
        } else {
            Encoding::Ucs2
        };
        let whole = encode(&self.body, encoding);
        let fits = match encoding {
            Encoding::Gsm7 => whole.len() <= SHORT_MESSAGE_SEPTETS,
            _ => whole.len() <= SHORT_MESSAGE_OCTETS,
        };
        if fits {
            return vec![self.pdu(encoding, 0x00).short_message(short(whole)).build()];
        }
        let ranges =
            split_after_header(&self.body, encoding, CONCAT_HEADER_OCTETS).unwrap_or_default();
        if long == LongMessage::Payload || !(2..=255).contains(&ranges.len()) {
            return vec![self
                .pdu(encoding, 0x00)
                .push_tlv(MessageDeliveryRequestTlvValue::MessagePayload(
                    MessagePayload::new(AnyOctetString::from(whole)),
                ))
                .build()];
        }
        // The reference ties the parts together at the client; the outbox
        // id keeps it different for consecutive messages.
        let reference = (self.outbox_id & 0xFF) as u8;
        let total = ranges.len() as u8;
        ranges
            .into_iter()
            .enumerate()
            .map(|(i, range)| {
                let seq = i as u8 + 1;
                let data = encode(&self.body[range], encoding);
                match long {
                    LongMessage::Sar => self
                        .pdu(encoding, 0x00)
                        .short_message(short(data))
                        .push_tlv(MessageDeliveryRequestTlvValue::SarMsgRefNum(u16::from(
                            reference,
                        )))
                        .push_tlv(MessageDeliveryRequestTlvValue::SarTotalSegments(total))
                        .push_tlv(MessageDeliveryRequestTlvValue::SarSegmentSeqnum(seq))
                        .build(),
                    _ => {
                        let mut sm = vec![5, 0x00, 3, reference, total, seq];
                        sm.extend(data);
                        self.pdu(encoding, 0x40).short_message(short(sm)).build()
                    }
                }
            })
            .collect()
    }

    fn pdu(&self, encoding: Encoding, esm_class: u8) -> DeliverSmBuilder {
        // esm_class given: rusmpp's builder would default to another kind.
        deliver_sm(self.from_address.as_deref(), self.to_address.as_deref())
            .esm_class(EsmClass::from(esm_class))
            .data_coding(DataCoding::from(encoding.data_coding()))
    }
}

/// GSM 7-bit as unpacked septets, one an octet, as SMPP carries it;
/// UCS-2, big-endian; or 8-bit data. What a channel recorded as binary
/// but is not whole hexadecimal octets goes as the UCS-2 of its text,
/// never not at all.
fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    octets(text, encoding)
        .or_else(|_| octets(text, Encoding::Ucs2))
        .unwrap_or_default()
}

fn short(data: Vec<u8>) -> OctetString<0, 255> {
    OctetString::from_vec(data).expect("a part fits short_message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::TlvValue;
    use rusmpp::values::Ton;

    fn inbound(body: &str) -> Inbound {
        Inbound {
            outbox_id: 1,
            from_address: Some("+31612345678".into()),
            to_address: Some("1234".into()),
            body: body.into(),
            binary: false,
            attempts: 1,
        }
    }

    #[test]
    fn eight_bit_data_goes_as_its_octets() {
        let message = Inbound {
            binary: true,
            ..inbound("0b0504158100000102")
        };
        let pdu = message.pdus(LongMessage::Payload).remove(0);
        assert_eq!(pdu.data_coding, DataCoding::from(0x04));
        assert_eq!(
            pdu.short_message().as_ref(),
            &[0x0B, 0x05, 0x04, 0x15, 0x81, 0x00, 0x00, 0x01, 0x02]
        );
        let long = Inbound {
            binary: true,
            ..inbound(&"ff".repeat(141))
        };
        let udh = long.pdus(LongMessage::Udh);
        assert_eq!(udh.len(), 2);
        assert_eq!(udh[0].short_message().as_ref().len(), 140);
        assert_eq!(udh[1].short_message().as_ref().len(), 6 + 7);
    }

    #[test]
    fn short_texts_go_in_short_message_in_their_alphabet() {
        let pdu = inbound("STOP €").pdus(LongMessage::Payload).remove(0);
        assert_eq!(pdu.source_addr.as_str(), "31612345678");
        assert_eq!(pdu.source_addr_ton, Ton::International);
        assert_eq!(pdu.destination_addr.as_str(), "1234");
        assert_eq!(u8::from(pdu.esm_class), 0);
        assert_eq!(pdu.data_coding, DataCoding::McSpecific);
        assert_eq!(
            pdu.short_message().as_ref(),
            gsm7::encode("STOP €").unwrap()
        );
        let pdu = inbound("Привет").pdus(LongMessage::Payload).remove(0);
        assert_eq!(pdu.data_coding, DataCoding::Ucs2);
        assert_eq!(pdu.short_message().as_ref().len(), 12);
    }

    #[test]
    fn long_texts_go_whole_in_message_payload() {
        let body = "x".repeat(161);
        let pdus = inbound(&body).pdus(LongMessage::Payload);
        assert_eq!(pdus.len(), 1);
        let pdu = &pdus[0];
        assert!(pdu.short_message().as_ref().is_empty());
        let payload = pdu.tlvs().iter().find_map(|t| match t.value() {
            Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
            _ => None,
        });
        assert_eq!(payload.unwrap(), body.as_bytes());
    }
}

#[cfg(test)]
mod parts {
    use super::*;
    use rusmpp::tlvs::TlvValue;

    #[test]
    fn long_texts_go_in_parts_when_the_account_asks() {
        let message = Inbound {
            outbox_id: 7,
            from_address: Some("+31612345678".into()),
            to_address: Some("1234".into()),
            body: "y".repeat(200),
            binary: false,
            attempts: 1,
        };
        let udh = message.pdus(LongMessage::Udh);
        assert_eq!(udh.len(), 2);
        assert_eq!(u8::from(udh[0].esm_class), 0x40);
        assert_eq!(&udh[1].short_message().as_ref()[..6], &[5, 0, 3, 7, 2, 2]);
        let text: Vec<u8> = udh
            .iter()
            .flat_map(|p| p.short_message().as_ref()[6..].to_vec())
            .collect();
        assert_eq!(text, "y".repeat(200).as_bytes());
        let sar = message.pdus(LongMessage::Sar);
        assert_eq!(sar.len(), 2);
        assert_eq!(u8::from(sar[1].esm_class), 0);
        let tlvs: Vec<_> = sar[1].tlvs().iter().filter_map(|t| t.value()).collect();
        assert!(tlvs.contains(&&TlvValue::SarSegmentSeqnum(2)));
        assert!(tlvs.contains(&&TlvValue::SarTotalSegments(2)));
    }
}
