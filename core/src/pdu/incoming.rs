//! Decoding what a modem hands over in PDU mode (`+CMT`, `+CMGR`, `+CMGL`,
//! `+CDS`): an SMS-DELIVER (TS 23.040 §9.2.2.1) or an SMS-STATUS-REPORT
//! (§9.2.2.3), each after the SMSC address.
//!
//! TS 27.005 puts the SMSC address before every TPDU and gives the TPDU's
//! length beside it; some modems leave the SMSC address out of `+CDS`.
//! Given the announced length, [`decode`] tells the two apart.

use super::address::{self, PduAddress};
use super::timestamp::Timestamp;
use super::udh::{self, Concat};
use super::{hex, septets, PduError, Reader};
use crate::gsm7;

const MTI_MASK: u8 = 0x03;
const MTI_DELIVER: u8 = 0x00;
const MTI_STATUS_REPORT: u8 = 0x02;
const UDHI: u8 = 0x40;

/// A decoded PDU from the modem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Deliver(Deliver),
    StatusReport(StatusReport),
}

/// An SMS-DELIVER: a message to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deliver {
    pub smsc: Option<String>,
    pub originator: PduAddress,
    pub protocol_id: u8,
    pub data_coding: u8,
    /// None when the service centre wrote an impossible time.
    pub timestamp: Option<Timestamp>,
    pub concat: Option<Concat>,
    pub content: Content,
}

/// The user data of a message, after its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// 8-bit data or a compressed text, kept as it came.
    Binary(Vec<u8>),
}

/// An SMS-STATUS-REPORT: what became of a message we submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    pub smsc: Option<String>,
    /// TP-MR of the SMS-SUBMIT it reports on (the `+CMGS: <mr>`).
    pub reference: u8,
    pub recipient: PduAddress,
    pub submitted: Option<Timestamp>,
    pub discharged: Option<Timestamp>,
    /// TP-ST (§9.2.3.15).
    pub status: u8,
}

/// What a TP-ST says about the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    Delivered,
    /// A temporary error; the service centre is still trying.
    Pending,
    Failed,
}

impl StatusReport {
    pub fn outcome(&self) -> ReportOutcome {
        match self.status {
            0x00..=0x1F => ReportOutcome::Delivered,
            0x20..=0x3F => ReportOutcome::Pending,
            _ => ReportOutcome::Failed,
        }
    }

    /// The TP-ST and its meaning, for the trace and `last_error`.
    pub fn describe(&self) -> String {
        let meaning = match self.status {
            0x00 => "received by the recipient",
            0x01 => "forwarded, delivery not confirmed",
            0x02 => "replaced by the service centre",
            0x20 | 0x60 => "congestion",
            0x21 | 0x61 => "recipient busy",
            0x22 | 0x62 => "no response from the recipient",
            0x23 | 0x63 => "service rejected",
            0x24 | 0x64 => "quality of service not available",
            0x25 | 0x65 => "error in the recipient",
            0x40 => "remote procedure error",
            0x41 => "incompatible destination",
            0x42 => "connection rejected by the recipient",
            0x43 => "not obtainable",
            0x44 => "quality of service not available",
            0x45 => "no interworking available",
            0x46 => "validity period expired",
            0x47 => "deleted by the sender",
            0x48 => "deleted by the service centre",
            0x49 => "message does not exist",
            0x03..=0x1F => "delivered (service centre specific)",
            0x26..=0x3F => "temporary error (service centre specific)",
            0x4A..=0x5F => "permanent error (service centre specific)",
            0x66..=0x7F => "temporary error, given up (service centre specific)",
            _ => "reserved status",
        };
        format!("TP-ST 0x{:02X}: {meaning}", self.status)
    }
}

/// Decodes a PDU as the modem printed it. `tpdu_length` is the `<length>`
/// the modem announced (octets of the TPDU alone); with it, a PDU that
/// lacks the SMSC address is read correctly.
pub fn decode(pdu_hex: &str, tpdu_length: Option<usize>) -> Result<Incoming, PduError> {
    let octets = hex::decode(pdu_hex)?;
    let mut reader = Reader::new(&octets);
    let smsc = match tpdu_length {
        Some(n) if n == octets.len() => None,
        Some(n) if n > octets.len() => return Err(PduError::Truncated("the TPDU")),
        _ => address::read_smsc(&mut reader)?,
    };
    let first = reader.octet("the first octet")?;
    match first & MTI_MASK {
        MTI_DELIVER => deliver(first, smsc, &mut reader).map(Incoming::Deliver),
        MTI_STATUS_REPORT => status_report(smsc, &mut reader).map(Incoming::StatusReport),
        mti => Err(PduError::Invalid(format!(
            "message type {mti} (an SMS-DELIVER is 0, an SMS-STATUS-REPORT 2)"
        ))),
    }
}

fn deliver(first: u8, smsc: Option<String>, reader: &mut Reader<'_>) -> Result<Deliver, PduError> {
    let originator = address::read(reader, "TP-OA")?;
    let protocol_id = reader.octet("TP-PID")?;
    let data_coding = reader.octet("TP-DCS")?;
    let timestamp = Timestamp::decode(reader.take(7, "TP-SCTS")?).ok();
    let length = usize::from(reader.octet("TP-UDL")?);
    let alphabet = Alphabet::of(data_coding);
    let octets = match alphabet {
        Alphabet::Gsm7 => (length * 7).div_ceil(8),
        _ => length,
    };
    let user_data = reader.take(octets, "TP-UD")?;
    let (concat, header) = if first & UDHI != 0 {
        udh::parse(user_data)?
    } else {
        (None, 0)
    };
    let content = match alphabet {
        Alphabet::Gsm7 => {
            let header_septets = if header == 0 {
                0
            } else {
                septets::header_septets(header)
            };
            let count = length.checked_sub(header_septets).ok_or(PduError::Invalid(
                "a header longer than the user data".into(),
            ))?;
            let fill = if header == 0 {
                0
            } else {
                septets::fill_bits(header)
            };
            let text = septets::unpack(&user_data[header..], fill, count)
                .ok_or(PduError::Truncated("TP-UD"))?;
            Content::Text(gsm7::decode(&text))
        }
        Alphabet::Ucs2 => {
            let units = user_data[header..]
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            Content::Text(
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect(),
            )
        }
        Alphabet::Binary => Content::Binary(user_data[header..].to_vec()),
    };
    Ok(Deliver {
        smsc,
        originator,
        protocol_id,
        data_coding,
        timestamp,
        concat,
        content,
    })
}

fn status_report(smsc: Option<String>, reader: &mut Reader<'_>) -> Result<StatusReport, PduError> {
    let reference = reader.octet("TP-MR")?;
    let recipient = address::read(reader, "TP-RA")?;
    let submitted = Timestamp::decode(reader.take(7, "TP-SCTS")?).ok();
    let discharged = Timestamp::decode(reader.take(7, "TP-DT")?).ok();
    let status = reader.octet("TP-ST")?;
    // TP-PI and what it announces (PID, DCS, user data) tell us nothing we
    // use; they are not read.
    Ok(StatusReport {
        smsc,
        reference,
        recipient,
        submitted,
        discharged,
        status,
    })
}

/// The alphabet a TP-DCS selects (TS 23.038 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alphabet {
    Gsm7,
    Ucs2,
    Binary,
}

impl Alphabet {
    fn of(dcs: u8) -> Alphabet {
        match dcs >> 4 {
            // General data coding and automatic deletion groups.
            0x0..=0x7 => {
                if dcs & 0x20 != 0 {
                    // Compressed: we cannot read it; keep it whole.
                    Alphabet::Binary
                } else {
                    match (dcs >> 2) & 0x03 {
                        1 => Alphabet::Binary,
                        2 => Alphabet::Ucs2,
                        _ => Alphabet::Gsm7,
                    }
                }
            }
            // Message waiting indication: discard/store, GSM 7-bit.
            0xC | 0xD => Alphabet::Gsm7,
            0xE => Alphabet::Ucs2,
            0xF if dcs & 0x04 != 0 => Alphabet::Binary,
            // 0xF with 7-bit, and the reserved groups 0x8–0xB.
            _ => Alphabet::Gsm7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver_of(pdu: &str, length: Option<usize>) -> Deliver {
        match decode(pdu, length).unwrap() {
            Incoming::Deliver(d) => d,
            other => panic!("not a deliver: {other:?}"),
        }
    }

    #[test]
    fn the_classic_deliver_example() {
        // SMSC +27381000015, from 27838890001, 1999-03-29 15:16:59 +02:00,
        // "hellohello".
        let pdu = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37";
        let d = deliver_of(pdu, Some(28));
        assert_eq!(d.smsc.as_deref(), Some("+27381000015"));
        assert_eq!(d.originator.text, "27838890001");
        assert_eq!(
            d.timestamp.unwrap().to_string(),
            "1999-03-29T15:16:59+02:00"
        );
        assert_eq!(d.content, Content::Text("hellohello".into()));
        assert_eq!(d.concat, None);
        // Without the announced length the SMSC address is assumed present.
        assert_eq!(deliver_of(pdu, None), d);
    }

    #[test]
    fn a_status_report_without_the_smsc_address() {
        // A +CDS as some modems print it: no SMSC address, 25 octets.
        let pdu = "06000B910221815716F2709021510121807090215101718000";
        let Incoming::StatusReport(r) = decode(pdu, Some(25)).unwrap() else {
            panic!("not a status report");
        };
        assert_eq!(r.smsc, None);
        assert_eq!(r.reference, 0);
        assert_eq!(r.recipient.text, "+20121875612");
        assert_eq!(
            r.submitted.unwrap().to_string(),
            "2007-09-12T15:10:12+02:00"
        );
        assert_eq!(
            r.discharged.unwrap().to_string(),
            "2007-09-12T15:10:17+02:00"
        );
        assert_eq!(r.status, 0);
        assert_eq!(r.outcome(), ReportOutcome::Delivered);
        assert_eq!(r.describe(), "TP-ST 0x00: received by the recipient");
    }

    #[test]
    fn status_report_outcomes() {
        let report = |status| StatusReport {
            smsc: None,
            reference: 1,
            recipient: PduAddress {
                text: "1".into(),
                type_of_address: 0x81,
            },
            submitted: None,
            discharged: None,
            status,
        };
        assert_eq!(report(0x22).outcome(), ReportOutcome::Pending);
        assert_eq!(report(0x46).outcome(), ReportOutcome::Failed);
        assert_eq!(report(0x62).outcome(), ReportOutcome::Failed);
        assert_eq!(
            report(0x46).describe(),
            "TP-ST 0x46: validity period expired"
        );
    }

    #[test]
    fn ucs2_alphanumeric_and_concatenated() {
        // From "Test", UCS-2 "Привет", part 2 of 3 with reference 0x1234.
        let pdu = "0044".to_owned()
            + "07D0D4F29C0E"
            + "0008"
            + "42117091857402"
            + "13"
            + "06080412340302"
            + "041F04400438043204350442";
        let d = deliver_of(&pdu, None);
        assert_eq!(d.originator.text, "Test");
        assert!(d.originator.is_alphanumeric());
        assert_eq!(
            d.concat,
            Some(Concat {
                reference: 0x1234,
                total: 3,
                sequence: 2
            })
        );
        assert_eq!(d.content, Content::Text("Привет".into()));
    }

    #[test]
    fn gsm7_after_a_header_skips_the_fill_bit() {
        // UDL 7 + 2 septets; header 05 00 03 01 02 01; "Hi" after one fill bit.
        let pdu = "0040".to_owned()
            + "04812143"
            + "0000"
            + "42117091857402"
            + "09"
            + "050003010201"
            + "9069";
        let d = deliver_of(&pdu, None);
        assert_eq!(
            d.concat,
            Some(Concat {
                reference: 1,
                total: 2,
                sequence: 1
            })
        );
        assert_eq!(d.content, Content::Text("Hi".into()));
        assert_eq!(d.originator.text, "1234");
    }

    #[test]
    fn binary_is_kept() {
        let pdu = "0004".to_owned() + "04812143" + "0004" + "42117091857402" + "03" + "00FF7F";
        assert_eq!(
            deliver_of(&pdu, None).content,
            Content::Binary(vec![0, 0xFF, 0x7F])
        );
    }

    #[test]
    fn malformed_pdus_are_refused_with_the_field() {
        assert!(matches!(decode("zz", None), Err(PduError::NotHex(_))));
        assert_eq!(
            decode("", None),
            Err(PduError::Truncated("the SMSC address"))
        );
        assert_eq!(decode("0004", None), Err(PduError::Truncated("TP-OA")));
        let pdu = "0004".to_owned() + "04812143" + "0000" + "42117091857402" + "0A" + "E832";
        assert_eq!(decode(&pdu, None), Err(PduError::Truncated("TP-UD")));
        assert!(matches!(
            decode("0001000000", None),
            Err(PduError::Invalid(_))
        ));
        assert_eq!(
            decode("0004", Some(9)),
            Err(PduError::Truncated("the TPDU"))
        );
        // A header announcing more septets than the user data holds.
        let pdu =
            "0040".to_owned() + "04812143" + "0000" + "42117091857402" + "03" + "050003010201";
        assert!(decode(&pdu, None).is_err());
    }

    #[test]
    fn a_garbled_time_stamp_does_not_lose_the_message() {
        let pdu = "0004".to_owned() + "04812143" + "0000" + "FFFFFFFFFFFFFF" + "02" + "E834";
        let d = deliver_of(&pdu, None);
        assert_eq!(d.timestamp, None);
        assert_eq!(d.content, Content::Text("hi".into()));
    }
}
