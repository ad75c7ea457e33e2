//! The fields through which deliver_sm, data_sm and submit_sm carry a
//! message or a receipt, so all are read by one piece of code (the SMPP
//! channel reads what providers deliver; the SMPP server what clients
//! submit). data_sm has no short_message: its text, if any, is in
//! message_payload.

use rusmpp::pdus::{DataSm, DeliverSm, SubmitSm};
use rusmpp::tlvs::Tlv;

pub struct Carried<'a> {
    pub esm_class: u8,
    pub data_coding: u8,
    pub source: &'a str,
    pub source_ton: u8,
    pub destination: &'a str,
    pub dest_ton: u8,
    pub short_message: &'a [u8],
    pub tlvs: &'a [Tlv],
}

impl<'a> From<&'a DeliverSm> for Carried<'a> {
    fn from(pdu: &'a DeliverSm) -> Carried<'a> {
        Carried {
            esm_class: u8::from(pdu.esm_class),
            data_coding: u8::from(pdu.data_coding),
            source: pdu.source_addr.as_str(),
            source_ton: u8::from(pdu.source_addr_ton),
            destination: pdu.destination_addr.as_str(),
            dest_ton: u8::from(pdu.dest_addr_ton),
            short_message: pdu.short_message(),
            tlvs: pdu.tlvs(),
        }
    }
}

impl<'a> From<&'a SubmitSm> for Carried<'a> {
    fn from(pdu: &'a SubmitSm) -> Carried<'a> {
        Carried {
            esm_class: u8::from(pdu.esm_class),
            data_coding: u8::from(pdu.data_coding),
            source: pdu.source_addr.as_str(),
            source_ton: u8::from(pdu.source_addr_ton),
            destination: pdu.destination_addr.as_str(),
            dest_ton: u8::from(pdu.dest_addr_ton),
            short_message: pdu.short_message(),
            tlvs: pdu.tlvs(),
        }
    }
}

impl<'a> From<&'a DataSm> for Carried<'a> {
    fn from(pdu: &'a DataSm) -> Carried<'a> {
        Carried {
            esm_class: u8::from(pdu.esm_class),
            data_coding: u8::from(pdu.data_coding),
            source: pdu.source_addr.as_str(),
            source_ton: u8::from(pdu.source_addr_ton),
            destination: pdu.destination_addr.as_str(),
            dest_ton: u8::from(pdu.dest_addr_ton),
            short_message: &[],
            tlvs: pdu.tlvs(),
        }
    }
}
