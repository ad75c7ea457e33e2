//! A delivery receipt for a client, as the `deliver_sm` an SMSC sends
//! (SMPP 3.4 §5.2.12 and Appendix B): esm_class 0x04, the text
//! `id:... sub:... dlvrd:... submit date:... done date:... stat:... err:...
//! text:...`, and the receipted_message_id, message_state and (for a
//! failure with a code) network_error_code TLVs. It goes from the
//! message's destination to its source, as the handset's answer would.

use std::str::FromStr;

use rusmpp::pdus::builders::DeliverSmBuilder;
use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{ErrorCodeNetworkType, EsmClass, MessageState, NetworkErrorCode, Npi, Ton};
use smsbus_core::address;

/// One row of `smsbus.smpp_outbox`, as `_claim_outbox` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub outbox_id: i64,
    /// The message's id in the account's format (what submit_sm_resp said).
    pub message_id: String,
    pub status: String,
    pub to_address: Option<String>,
    pub from_address: Option<String>,
    /// `YYMMDDhhmm`, UTC.
    pub submit_date: String,
    pub done_date: String,
    pub error_code: String,
    pub sample: String,
    pub segments: i32,
    /// The part it is for (the account's report_parts 'each'); None: the
    /// whole message.
    pub part: Option<i16>,
    /// Times it was taken, this time included.
    pub attempts: i32,
}

/// What a message's status is in SMPP: the receipt's `stat:` word and
/// the message_state (SMPP 3.4 §5.2.28, Appendix B).
pub fn smpp_state(status: &str) -> (&'static str, MessageState) {
    match status {
        "delivered" => ("DELIVRD", MessageState::Delivered),
        "notdelivered" => ("UNDELIV", MessageState::Undeliverable),
        "expired" => ("EXPIRED", MessageState::Expired),
        "noreport" => ("UNKNOWN", MessageState::Unknown),
        // On its way: not yet final.
        "scheduled" | "queued" | "sending" | "sent" => ("ENROUTE", MessageState::Enroute),
        // failed, blocked, nochannel, dailylimit: smsbus or the provider
        // would not take it.
        _ => ("REJECTD", MessageState::Rejected),
    }
}

impl Receipt {
    fn state(&self) -> (&'static str, MessageState) {
        smpp_state(&self.status)
    }

    /// The Appendix B text.
    pub fn text(&self) -> String {
        let (stat, _) = self.state();
        // A part's receipt counts that one part.
        let submitted = if self.part.is_some() {
            1
        } else {
            self.segments.clamp(1, 999)
        };
        let delivered = if stat == "DELIVRD" { submitted } else { 0 };
        format!(
            "id:{} sub:{submitted:03} dlvrd:{delivered:03} submit date:{} done date:{} stat:{stat} err:{} text:{}",
            self.message_id, self.submit_date, self.done_date, self.error_code, self.sample
        )
    }

    pub fn pdu(&self) -> DeliverSm {
        let (_, state) = self.state();
        let mut tlvs = vec![
            MessageDeliveryRequestTlvValue::ReceiptedMessageId(
                COctetString::from_str(&self.message_id).unwrap_or_else(|_| COctetString::empty()),
            ),
            MessageDeliveryRequestTlvValue::MessageState(state),
        ];
        if let Ok(code @ 1..) = self.error_code.parse::<u16>() {
            tlvs.push(MessageDeliveryRequestTlvValue::NetworkErrorCode(
                NetworkErrorCode::new(ErrorCodeNetworkType::SmppError, code),
            ));
        }
        // The receipt text is ASCII; 254 octets is short_message's limit.
        let mut text = self.text().into_bytes();
        text.truncate(254);
        // SMPP 3.4 §5.2.12: 0x04 a delivery receipt, 0x20 an intermediate
        // notification (the provider has it, it is on its way).
        let esm_class = if self.status == "sent" { 0x20 } else { 0x04 };
        deliver_sm(self.to_address.as_deref(), self.from_address.as_deref())
            .esm_class(EsmClass::from(esm_class))
            .short_message(OctetString::from_vec(text).expect("at most 254 octets"))
            .tlvs(tlvs)
            .build()
    }
}

/// A deliver_sm from `from` to `to`, with their TON and NPI.
pub(super) fn deliver_sm(from: Option<&str>, to: Option<&str>) -> DeliverSmBuilder {
    let (source, source_ton, source_npi) = wire_address(from);
    let (dest, dest_ton, dest_npi) = wire_address(to);
    DeliverSm::builder()
        .source_addr_ton(source_ton)
        .source_addr_npi(source_npi)
        .source_addr(source)
        .dest_addr_ton(dest_ton)
        .dest_addr_npi(dest_npi)
        .destination_addr(dest)
}

/// An address as SMPP carries it: international numbers without their
/// `+`, with the TON and NPI that say what they are; what cannot be
/// carried is left empty (the client still has receipted_message_id).
fn wire_address(text: Option<&str>) -> (COctetString<1, 21>, Ton, Npi) {
    let Some(text) = text else {
        return (COctetString::empty(), Ton::Unknown, Npi::Unknown);
    };
    let (ton, npi) = address::sender(text)
        .map(|a| (Ton::from(a.kind.ton()), Npi::from(a.kind.npi())))
        .unwrap_or((Ton::Unknown, Npi::Unknown));
    match COctetString::from_str(text.strip_prefix('+').unwrap_or(text)) {
        Ok(value) => (value, ton, npi),
        Err(_) => (COctetString::empty(), Ton::Unknown, Npi::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::TlvValue;

    fn receipt(status: &str, error_code: &str) -> Receipt {
        Receipt {
            outbox_id: 1,
            message_id: "12345".into(),
            status: status.into(),
            to_address: Some("+31612345678".into()),
            from_address: Some("ACME".into()),
            submit_date: "2612031130".into(),
            done_date: "2612031131".into(),
            error_code: error_code.into(),
            sample: "Hello there, this is".into(),
            segments: 2,
            part: None,
            attempts: 1,
        }
    }

    #[test]
    fn a_parts_receipt_counts_one_part() {
        let part = Receipt {
            part: Some(2),
            ..receipt("notdelivered", "001")
        };
        assert!(
            part.text().starts_with("id:12345 sub:001 dlvrd:000 "),
            "{}",
            part.text()
        );
        let part = Receipt {
            part: Some(1),
            ..receipt("delivered", "000")
        };
        assert!(
            part.text().starts_with("id:12345 sub:001 dlvrd:001 "),
            "{}",
            part.text()
        );
    }

    #[test]
    fn the_text_is_appendix_b() {
        assert_eq!(
            receipt("delivered", "000").text(),
            "id:12345 sub:002 dlvrd:002 submit date:2612031130 done date:2612031131 stat:DELIVRD err:000 text:Hello there, this is"
        );
        assert_eq!(
            receipt("notdelivered", "001").text(),
            "id:12345 sub:002 dlvrd:000 submit date:2612031130 done date:2612031131 stat:UNDELIV err:001 text:Hello there, this is"
        );
        for (status, stat) in [
            ("expired", "EXPIRED"),
            ("noreport", "UNKNOWN"),
            ("failed", "REJECTD"),
            ("blocked", "REJECTD"),
            ("nochannel", "REJECTD"),
        ] {
            assert!(receipt(status, "000")
                .text()
                .contains(&format!("stat:{stat} ")));
        }
    }

    #[test]
    fn the_pdu_goes_back_from_the_destination_with_its_tlvs() {
        let pdu = receipt("notdelivered", "011").pdu();
        assert_eq!(u8::from(pdu.esm_class), 0x04);
        assert_eq!(pdu.source_addr.as_str(), "31612345678");
        assert_eq!(pdu.source_addr_ton, Ton::International);
        assert_eq!(pdu.destination_addr.as_str(), "ACME");
        assert_eq!(pdu.dest_addr_ton, Ton::Alphanumeric);
        let tlvs: Vec<_> = pdu.tlvs().iter().filter_map(|t| t.value()).collect();
        assert!(tlvs.contains(&&TlvValue::ReceiptedMessageId(
            COctetString::from_str("12345").unwrap()
        )));
        assert!(tlvs.contains(&&TlvValue::MessageState(MessageState::Undeliverable)));
        assert!(
            tlvs.contains(&&TlvValue::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::SmppError,
                11
            )))
        );
        // A success names no error code.
        let ok = receipt("delivered", "000").pdu();
        assert_eq!(ok.tlvs().len(), 2);
    }
}
