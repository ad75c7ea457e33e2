//! A client's `submit_sm` or `data_sm` read as the message row it will
//! become, or refused with the SMPP status that says why — checked here
//! with the same address and text rules the extension applies
//! (`smsbus_core`), so the database refuses only what this cannot know
//! (the account's source pattern, `smsbus.max_segments`).

use rusmpp::pdus::{DataSm, SubmitMulti, SubmitSm};
use rusmpp::values::DestAddress;
use rusmpp::CommandStatus;
use smsbus_core::address;
use smsbus_core::text::{self, Encoding};

use super::smpp_time;
use crate::channels::client_parts::ClientPart;
use crate::channels::smpp::carried::Carried;
use crate::channels::smpp::inbound::{self, InboundError, PartOf};

/// What an accepted submission inserts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub to: String,
    /// None: the account's default source, else the channel's.
    pub from: Option<String>,
    pub body: String,
    pub encoding: Encoding,
    pub priority: i16,
    /// SQL text of a time ([`smpp_time`]): a timestamptz, or `+interval`.
    pub scheduled: Option<String>,
    pub validity: Option<String>,
    /// The client's registered_delivery (SMPP 3.4 §5.2.17).
    pub registered_delivery: u8,
    /// Which part of a long message this is ([`super::concat`]).
    pub part: Option<PartOf>,
    /// The parts it came in with their user data headers, for an account
    /// that passes them through (`message.client_parts`); empty when it
    /// came without one.
    pub client_parts: Vec<ClientPart>,
}

impl Submission {
    /// The parts it takes of the account's credit: the segments the
    /// extension will count (a text it will refuse counts one).
    pub fn parts(&self) -> i32 {
        text::segments(&self.body, self.encoding).map_or(1, |n| n as i32)
    }

    /// The delivery receipts asked for (`message.receipts`): the SMSC
    /// delivery receipt bits of registered_delivery (1 every final
    /// outcome, 2 failures, 3 successes) and the intermediate notification
    /// bit (0x10); None for none.
    pub fn receipts(&self) -> Option<i16> {
        match self.registered_delivery & 0x13 {
            0 => None,
            bits => Some(i16::from(bits)),
        }
    }
}

/// Why a submission is refused: the status for the response and a reason
/// for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub status: CommandStatus,
    pub reason: String,
}

fn refuse(status: CommandStatus, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// The fields submit_sm and data_sm share beyond what [`Carried`] holds.
struct Request<'a> {
    carried: Carried<'a>,
    priority: u8,
    schedule: &'a [u8],
    validity: &'a [u8],
    registered_delivery: u8,
}

pub fn from_submit_sm(pdu: &SubmitSm) -> Result<Submission, Refusal> {
    read(Request {
        carried: Carried::from(pdu),
        priority: u8::from(pdu.priority_flag),
        schedule: pdu.schedule_delivery_time.as_ref(),
        validity: pdu.validity_period.as_ref(),
        registered_delivery: u8::from(pdu.registered_delivery),
    })
}

/// One destination of a submit_multi: as the client named it (for the
/// response's unsuccess_sme), and the submission to it or why not.
pub struct MultiDestination {
    pub ton: u8,
    pub npi: u8,
    pub address: String,
    pub read: Result<Submission, Refusal>,
}

/// submit_multi (SMPP 3.4 §4.5): one submission per SME address, each read
/// as a submit_sm to it. Distribution lists are the SMSC's own: smsbus has
/// none. A long message goes whole, in message_payload: parts of one to
/// several destinations would have to be put together per destination.
pub fn from_submit_multi(pdu: &SubmitMulti) -> Vec<MultiDestination> {
    pdu.dest_address()
        .iter()
        .map(|dest| match dest {
            DestAddress::SmeAddress(sme) => {
                let carried = Carried {
                    esm_class: u8::from(pdu.esm_class),
                    data_coding: u8::from(pdu.data_coding),
                    source: pdu.source_addr.as_str(),
                    source_ton: u8::from(pdu.source_addr_ton),
                    destination: sme.destination_addr.as_str(),
                    dest_ton: u8::from(sme.dest_addr_ton),
                    short_message: pdu.short_message().as_ref(),
                    tlvs: pdu.tlvs(),
                };
                let read = read(Request {
                    carried,
                    priority: u8::from(pdu.priority_flag),
                    schedule: pdu.schedule_delivery_time.as_ref(),
                    validity: pdu.validity_period.as_ref(),
                    registered_delivery: u8::from(pdu.registered_delivery),
                })
                .and_then(|s| match s.part {
                    None => Ok(s),
                    Some(_) => Err(refuse(
                        CommandStatus::EsmeRinvesmclass,
                        "submit_multi takes a long message whole, in message_payload, not in parts",
                    )),
                });
                MultiDestination {
                    ton: u8::from(sme.dest_addr_ton),
                    npi: u8::from(sme.dest_addr_npi),
                    address: sme.destination_addr.as_str().to_owned(),
                    read,
                }
            }
            DestAddress::DistributionListName(list) => MultiDestination {
                ton: 0,
                npi: 0,
                address: list.dl_name.as_str().to_owned(),
                read: Err(refuse(
                    CommandStatus::EsmeRinvdstadr,
                    format!(
                        "distribution list {:?}: smsbus has none",
                        list.dl_name.as_str()
                    ),
                )),
            },
        })
        .collect()
}

/// data_sm has no priority or times: it is sent now, at normal priority.
pub fn from_data_sm(pdu: &DataSm) -> Result<Submission, Refusal> {
    read(Request {
        carried: Carried::from(pdu),
        priority: 0,
        schedule: &[],
        validity: &[],
        registered_delivery: u8::from(pdu.registered_delivery),
    })
}

fn read(request: Request<'_>) -> Result<Submission, Refusal> {
    let esm_class = request.carried.esm_class;
    // Bits 5-2 are the message type: 0x04 is an SMSC delivery receipt,
    // which travels the other way. (0x08 and 0x10, the ESME's own
    // acknowledgements, are sent on as text.)
    if esm_class & 0x3C == 0x04 {
        return Err(refuse(
            CommandStatus::EsmeRinvesmclass,
            format!("esm_class 0x{esm_class:02X} is a delivery receipt, not a message"),
        ));
    }
    if request.priority > 3 {
        return Err(refuse(
            CommandStatus::EsmeRinvprtflg,
            format!("priority_flag {} is not 0-3", request.priority),
        ));
    }
    // JIS, Cyrillic, Hebrew, pictograms, Kanji, KS C 5601: text in an
    // alphabet smsbus does not carry, which must not travel as 8-bit data.
    let data_coding = request.carried.data_coding;
    if matches!(data_coding, 0x05..=0x07 | 0x09..=0x0F) {
        return Err(refuse(
            CommandStatus::EsmeRinvdcs,
            format!(
                "data_coding 0x{data_coding:02X} is an alphabet smsbus does not carry \
                 (GSM 7-bit, IA5, Latin-1, UCS-2 or 8-bit data)"
            ),
        ));
    }
    let decoded = inbound::decode(&request.carried).map_err(|e| match e {
        InboundError::OddUcs2 { .. } => refuse(CommandStatus::EsmeRinvmsglen, e.to_string()),
        _ => refuse(CommandStatus::EsmeRinvesmclass, e.to_string()),
    })?;
    // 8-bit data is kept as its hexadecimal digits, in the binary encoding.
    let encoding = match decoded.data_coding {
        _ if decoded.binary => Encoding::Binary,
        0x03 => Encoding::Latin1,
        0x08 => Encoding::Ucs2,
        dc if dc & 0xF0 == 0x10 && dc & 0x0C == 0x08 => Encoding::Ucs2,
        _ => Encoding::Gsm7,
    };
    let to = address::destination(&decoded.to)
        .map_err(|e| refuse(CommandStatus::EsmeRinvdstadr, e.to_string()))?;
    let from = if decoded.from.is_empty() {
        None
    } else {
        let from = address::sender(&decoded.from)
            .map_err(|e| refuse(CommandStatus::EsmeRinvsrcadr, e.to_string()))?;
        Some(from.text)
    };
    text::segments(&decoded.text, encoding)
        .map_err(|e| refuse(CommandStatus::EsmeRinvmsglen, e.to_string()))?;
    let scheduled = smpp_time::parse(request.schedule).map_err(|e| {
        refuse(
            CommandStatus::EsmeRinvsched,
            format!("schedule_delivery_time: {e}"),
        )
    })?;
    let validity = smpp_time::parse(request.validity).map_err(|e| {
        refuse(
            CommandStatus::EsmeRinvexpiry,
            format!("validity_period: {e}"),
        )
    })?;
    Ok(Submission {
        to: to.text,
        from,
        encoding,
        priority: i16::from(request.priority),
        scheduled: scheduled.map(|t| t.to_string()),
        validity: validity.map(|t| t.to_string()),
        registered_delivery: request.registered_delivery,
        // A "part" 1 of 1 is the whole message.
        part: decoded.part.filter(|p| p.total > 1),
        client_parts: decoded
            .udh
            .map(|udh| ClientPart {
                udh,
                chars: decoded.text.chars().count(),
            })
            .into_iter()
            .collect(),
        body: decoded.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
    use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
    use rusmpp::values::{DataCoding, EsmClass, MessagePayload, PriorityFlag, Ton};
    use smsbus_core::gsm7;
    use std::str::FromStr;

    fn submit(
        to: &str,
        from: &str,
        dc: DataCoding,
        sm: Vec<u8>,
    ) -> rusmpp::pdus::builders::SubmitSmBuilder {
        SubmitSm::builder()
            .source_addr(COctetString::from_str(from).unwrap())
            .dest_addr_ton(Ton::International)
            .destination_addr(COctetString::from_str(to).unwrap())
            .data_coding(dc)
            .short_message(OctetString::from_vec(sm).unwrap())
    }

    #[test]
    fn gsm_text_becomes_the_body_with_international_numbers() {
        let s = from_submit_sm(
            &submit(
                "31612345678",
                "ACME",
                DataCoding::McSpecific,
                gsm7::encode("Hi €[]").unwrap(),
            )
            .build(),
        )
        .unwrap();
        assert_eq!(s.to, "+31612345678");
        assert_eq!(s.from.as_deref(), Some("ACME"));
        assert_eq!(s.body, "Hi €[]");
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert_eq!((s.scheduled, s.validity), (None, None));
    }

    #[test]
    fn ucs2_with_emoji_and_a_payload_too_long_for_short_message() {
        let text = "Привет 👋 ".repeat(30);
        let octets: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let pdu = submit("31612345678", "", DataCoding::Ucs2, vec![])
            .tlvs(vec![MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_vec(octets)),
            )])
            .build();
        let s = from_submit_sm(&pdu).unwrap();
        assert_eq!(s.body, text);
        assert_eq!(s.encoding, Encoding::Ucs2);
        assert_eq!(s.from, None);
    }

    #[test]
    fn an_alphabet_smsbus_does_not_carry_is_refused() {
        for dc in [0x05, 0x06, 0x0E] {
            let pdu = submit("31612345678", "ACME", DataCoding::from(dc), vec![0x41]).build();
            assert_eq!(
                from_submit_sm(&pdu).unwrap_err().status,
                CommandStatus::EsmeRinvdcs
            );
        }
    }

    #[test]
    fn eight_bit_data_is_kept_as_hexadecimal_digits() {
        for dc in [0x04, 0x02, 0xF5] {
            let pdu = submit(
                "31612345678",
                "ACME",
                DataCoding::from(dc),
                vec![0x0B, 0xFF, 0],
            )
            .build();
            let s = from_submit_sm(&pdu).unwrap();
            assert_eq!((s.body.as_str(), s.encoding), ("0bff00", Encoding::Binary));
        }
    }

    #[test]
    fn times_and_priority_are_read() {
        let pdu = submit("31612345678", "ACME", DataCoding::McSpecific, b"x".to_vec())
            .priority_flag(PriorityFlag::from(2))
            .schedule_delivery_time(EmptyOrFullCOctetString::from_str("261202193000104+").unwrap())
            .validity_period(EmptyOrFullCOctetString::from_str("000001000000000R").unwrap())
            .build();
        let s = from_submit_sm(&pdu).unwrap();
        assert_eq!(s.priority, 2);
        assert_eq!(s.scheduled.as_deref(), Some("2026-12-02 19:30:00.1+01:00"));
        assert_eq!(
            s.validity.as_deref(),
            Some("+0 years 0 mons 1 days 0 hours 0 mins 0 secs")
        );
    }

    #[test]
    fn refusals_carry_the_status_that_names_the_field() {
        let status = |pdu: SubmitSm| from_submit_sm(&pdu).unwrap_err().status;
        let plain = || submit("31612345678", "ACME", DataCoding::McSpecific, b"x".to_vec());
        assert_eq!(
            status(
                submit(
                    "not a number",
                    "ACME",
                    DataCoding::McSpecific,
                    b"x".to_vec()
                )
                .build()
            ),
            CommandStatus::EsmeRinvdstadr
        );
        assert_eq!(
            status(
                submit(
                    "31612345678",
                    "TOOLONGALPHANAME",
                    DataCoding::McSpecific,
                    b"x".to_vec()
                )
                .build()
            ),
            CommandStatus::EsmeRinvsrcadr
        );
        assert_eq!(
            status(plain().esm_class(EsmClass::from(0x04)).build()),
            CommandStatus::EsmeRinvesmclass
        );
        // A part of a long message is read with its place in it.
        let part = from_submit_sm(
            &submit(
                "31612345678",
                "ACME",
                DataCoding::McSpecific,
                vec![5, 0, 3, 1, 2, 1, 0x41],
            )
            .esm_class(EsmClass::from(0x40))
            .build(),
        )
        .unwrap();
        assert_eq!(part.body, "A");
        assert_eq!(
            part.part,
            Some(PartOf {
                reference: 1,
                total: 2,
                seq: 1
            })
        );
        // A header that claims more than the data holds is refused.
        assert_eq!(
            status(
                submit(
                    "31612345678",
                    "ACME",
                    DataCoding::McSpecific,
                    vec![9, 0, 3, 1, 2, 1]
                )
                .esm_class(EsmClass::from(0x40))
                .build()
            ),
            CommandStatus::EsmeRinvesmclass
        );
        assert_eq!(
            status(plain().priority_flag(PriorityFlag::from(7)).build()),
            CommandStatus::EsmeRinvprtflg
        );
        assert_eq!(
            status(
                plain()
                    .validity_period(EmptyOrFullCOctetString::from_str("261302193000104+").unwrap())
                    .build()
            ),
            CommandStatus::EsmeRinvexpiry
        );
        assert_eq!(
            status(
                plain()
                    .schedule_delivery_time(
                        EmptyOrFullCOctetString::from_str("26120219300010X+").unwrap()
                    )
                    .build()
            ),
            CommandStatus::EsmeRinvsched
        );
    }
}
