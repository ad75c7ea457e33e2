//! An inbound (mobile-originated) message given to an account, as the
//! `deliver_sm` its receiver bind gets: from the handset to the number it
//! was sent to, in GSM 7-bit when every character has a code there, else
//! UCS-2, and in `message_payload` when it does not fit one
//! short_message (SMPP 3.4 §5.2.21: 254 octets, and handsets' 140).

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::types::{AnyOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload};
use smsbus_core::gsm7;

use super::receipt::deliver_sm;

/// One inbound row of `smsbus.smpp_outbox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub outbox_id: i64,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    pub body: String,
    pub attempts: i32,
}

/// What fits one short_message: 160 septets or 140 octets of UCS-2.
const SHORT_MESSAGE_OCTETS: usize = 140;
const SHORT_MESSAGE_SEPTETS: usize = 160;

impl Inbound {
    pub fn pdu(&self) -> DeliverSm {
        let (data_coding, data, fits) = match gsm7::encode(&self.body) {
            // Unpacked septets, one an octet, as SMPP carries GSM 7-bit.
            Ok(septets) => {
                let fits = septets.len() <= SHORT_MESSAGE_SEPTETS;
                (DataCoding::McSpecific, septets, fits)
            }
            Err(_) => {
                let octets: Vec<u8> = self
                    .body
                    .encode_utf16()
                    .flat_map(u16::to_be_bytes)
                    .collect();
                let fits = octets.len() <= SHORT_MESSAGE_OCTETS;
                (DataCoding::Ucs2, octets, fits)
            }
        };
        // A plain message (rusmpp's builder would default to another kind).
        let pdu = deliver_sm(self.from_address.as_deref(), self.to_address.as_deref())
            .esm_class(EsmClass::from(0x00))
            .data_coding(data_coding);
        if fits {
            pdu.short_message(OctetString::from_vec(data).expect("at most 160 octets"))
                .build()
        } else {
            pdu.push_tlv(MessageDeliveryRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from(data)),
            ))
            .build()
        }
    }
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
            attempts: 1,
        }
    }

    #[test]
    fn short_texts_go_in_short_message_in_their_alphabet() {
        let pdu = inbound("STOP €").pdu();
        assert_eq!(pdu.source_addr.as_str(), "31612345678");
        assert_eq!(pdu.source_addr_ton, Ton::International);
        assert_eq!(pdu.destination_addr.as_str(), "1234");
        assert_eq!(u8::from(pdu.esm_class), 0);
        assert_eq!(pdu.data_coding, DataCoding::McSpecific);
        assert_eq!(
            pdu.short_message().as_ref(),
            gsm7::encode("STOP €").unwrap()
        );
        let pdu = inbound("Привет").pdu();
        assert_eq!(pdu.data_coding, DataCoding::Ucs2);
        assert_eq!(pdu.short_message().as_ref().len(), 12);
    }

    #[test]
    fn long_texts_go_whole_in_message_payload() {
        let body = "x".repeat(161);
        let pdu = inbound(&body).pdu();
        assert!(pdu.short_message().as_ref().is_empty());
        let payload = pdu.tlvs().iter().find_map(|t| match t.value() {
            Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
            _ => None,
        });
        assert_eq!(payload.unwrap(), body.as_bytes());
    }
}
