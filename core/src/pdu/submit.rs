//! SMS-SUBMIT (TS 23.040 §9.2.2.2) for `AT+CMGS` in PDU mode: the SMSC
//! address (`00`: the modem's own), then the TPDU, whose length in octets
//! is what `AT+CMGS=<length>` announces.
//!
//! A long body goes as several SMS-SUBMITs, each with a concatenation
//! header (8-bit reference) and a part cut by [`crate::text::split`], which
//! never splits a GSM escape pair or a UTF-16 surrogate pair.

use super::{address, septets, udh};
use crate::address::Address;
use crate::gsm7;
use crate::text::{self, Encoding, TextError};

const MTI_SUBMIT: u8 = 0x01;
const VPF_RELATIVE: u8 = 0x10;
const SRR: u8 = 0x20;
const UDHI: u8 = 0x40;

/// What an SMS-SUBMIT carries besides its destination and text.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions<'a> {
    /// An SMSC number to use instead of the one stored in the modem.
    pub smsc: Option<&'a str>,
    /// Ask for an SMS-STATUS-REPORT (TP-SRR).
    pub status_report: bool,
    /// Relative validity period; None leaves it to the SMSC.
    pub validity_minutes: Option<u32>,
    /// The reference the parts of a long message share.
    pub concat_reference: u8,
}

/// One SMS-SUBMIT as written after the `>` prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitPdu {
    /// SMSC address field, then the TPDU.
    pub octets: Vec<u8>,
    /// Octets of the TPDU alone: the `<length>` of `AT+CMGS`.
    pub tpdu_length: usize,
}

impl SubmitPdu {
    pub fn hex(&self) -> String {
        super::hex::encode(&self.octets)
    }
}

/// TP-VP in the relative format (§9.2.3.12.1), rounded down so a message
/// is never kept past its validity; below 5 minutes is 5 minutes.
pub fn relative_validity(minutes: u32) -> u8 {
    let vp = match minutes {
        0..=720 => (minutes / 5).max(1) - 1,
        721..=1440 => 143 + (minutes - 720) / 30,
        1441..=43_199 => 166 + minutes / 1440,
        _ => (192 + minutes / 10_080).min(255),
    };
    vp as u8
}

/// The SMS-SUBMITs for `body` to `to`. Latin-1 has no TP-DCS of its own:
/// such a body goes as UCS-2, which carries every Latin-1 character. A
/// binary body goes as 8-bit data (TP-DCS 0x04).
pub fn build(
    to: &Address,
    body: &str,
    encoding: Encoding,
    options: &SubmitOptions<'_>,
) -> Result<Vec<SubmitPdu>, TextError> {
    let encoding = match encoding {
        Encoding::Latin1 => Encoding::Ucs2,
        other => other,
    };
    let parts = text::split(body, encoding)?;
    let total = parts.len();
    let smsc = address::encode_smsc(options.smsc);
    let destination = address::encode(to);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let header = (total > 1)
                .then(|| udh::concat_header(options.concat_reference, total as u8, (i + 1) as u8));
            let (length, user_data) = user_data(&body[range], encoding, header.as_ref())?;
            let mut first = MTI_SUBMIT;
            if options.validity_minutes.is_some() {
                first |= VPF_RELATIVE;
            }
            if options.status_report {
                first |= SRR;
            }
            if header.is_some() {
                first |= UDHI;
            }
            let mut tpdu = vec![first, 0x00];
            tpdu.extend(&destination);
            tpdu.push(0x00); // TP-PID: plain short message
                             // TP-DCS, general coding group, uncompressed, no class: the
                             // same values as SMPP's data_coding 0, 8 and 4.
            tpdu.push(encoding.data_coding());
            if let Some(minutes) = options.validity_minutes {
                tpdu.push(relative_validity(minutes));
            }
            tpdu.push(length);
            tpdu.extend(user_data);
            let tpdu_length = tpdu.len();
            let mut octets = smsc.clone();
            octets.extend(tpdu);
            Ok(SubmitPdu {
                octets,
                tpdu_length,
            })
        })
        .collect()
}

/// TP-UDL and TP-UD of one part: septets (header included) for GSM 7-bit,
/// octets for UCS-2 and 8-bit data.
fn user_data(
    part: &str,
    encoding: Encoding,
    header: Option<&[u8; 6]>,
) -> Result<(u8, Vec<u8>), TextError> {
    let header: &[u8] = header.map_or(&[], |h| h.as_slice());
    let mut out = header.to_vec();
    let length = match encoding {
        Encoding::Gsm7 => {
            let text = gsm7::encode(part).map_err(|character| TextError::Unencodable {
                encoding,
                character,
                code: u32::from(character),
                position: part.chars().position(|c| c == character).unwrap_or(0) + 1,
            })?;
            let (header_septets, fill) = if header.is_empty() {
                (0, 0)
            } else {
                (
                    septets::header_septets(header.len()),
                    septets::fill_bits(header.len()),
                )
            };
            out.extend(septets::pack(&text, fill));
            header_septets + text.len()
        }
        _ => {
            out.extend(text::octets(part, encoding)?);
            out.len()
        }
    };
    Ok((length as u8, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::destination;

    #[test]
    fn the_classic_submit_example() {
        // 00 11 00 0B 91 6407281553F8 00 00 AA 0A E8329BFD4697D9EC37:
        // default SMSC, relative validity of 4 days, "hellohello".
        let to = destination("+46708251358").unwrap();
        let options = SubmitOptions {
            validity_minutes: Some(4 * 1440),
            ..Default::default()
        };
        let pdus = build(&to, "hellohello", Encoding::Gsm7, &options).unwrap();
        assert_eq!(pdus.len(), 1);
        assert_eq!(
            pdus[0].hex(),
            "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
        );
        assert_eq!(pdus[0].tpdu_length, 23);
    }

    #[test]
    fn status_report_and_no_validity() {
        let to = destination("+46708251358").unwrap();
        let options = SubmitOptions {
            status_report: true,
            ..Default::default()
        };
        let pdus = build(&to, "hellohello", Encoding::Gsm7, &options).unwrap();
        assert_eq!(
            pdus[0].hex(),
            "0021000B916407281553F800000AE8329BFD4697D9EC37"
        );
    }

    #[test]
    fn ucs2_is_big_endian_utf16() {
        let to = destination("+46708251358").unwrap();
        let pdus = build(&to, "Привет", Encoding::Ucs2, &SubmitOptions::default()).unwrap();
        assert_eq!(
            pdus[0].hex(),
            "0001000B916407281553F800080C041F04400438043204350442"
        );
    }

    #[test]
    fn a_long_gsm_message_is_cut_with_concatenation_headers() {
        let to = destination("+46708251358").unwrap();
        let body = "x".repeat(200);
        let options = SubmitOptions {
            concat_reference: 0x42,
            ..Default::default()
        };
        let pdus = build(&to, &body, Encoding::Gsm7, &options).unwrap();
        assert_eq!(pdus.len(), 2);
        // First octet 0x41 (UDHI), UDL 7 + 153 = 160 septets, the header, then
        // the text after one fill bit.
        let first = &pdus[0].octets;
        assert_eq!(first[1], 0x41);
        let udl_at = 1 + 2 + 8 + 2;
        assert_eq!(first[udl_at], 160);
        assert_eq!(&first[udl_at + 1..udl_at + 7], &[5, 0, 3, 0x42, 2, 1]);
        assert_eq!(first[udl_at + 7], b'x' << 1);
        assert_eq!(first.len() - 1, pdus[0].tpdu_length);
        assert_eq!(pdus[0].tpdu_length, udl_at + 140);
        let second = &pdus[1].octets;
        assert_eq!(second[udl_at], 7 + 47);
        assert_eq!(&second[udl_at + 1..udl_at + 7], &[5, 0, 3, 0x42, 2, 2]);
    }

    #[test]
    fn relative_validity_rounds_down() {
        assert_eq!(relative_validity(0), 0);
        assert_eq!(relative_validity(5), 0);
        assert_eq!(relative_validity(12), 1);
        assert_eq!(relative_validity(720), 143);
        assert_eq!(relative_validity(750), 144);
        assert_eq!(relative_validity(1440), 167);
        assert_eq!(relative_validity(2 * 1440), 168);
        assert_eq!(relative_validity(4 * 1440), 170);
        assert_eq!(relative_validity(30 * 1440), 196);
        assert_eq!(relative_validity(5 * 10_080), 197);
        assert_eq!(relative_validity(u32::MAX), 255);
    }

    #[test]
    fn latin1_goes_as_ucs2_and_unencodable_text_is_refused() {
        let to = destination("+46708251358").unwrap();
        let pdus = build(&to, "é", Encoding::Latin1, &SubmitOptions::default()).unwrap();
        assert_eq!(pdus[0].hex(), "0001000B916407281553F800080200E9");
        assert!(build(&to, "Привет", Encoding::Gsm7, &SubmitOptions::default()).is_err());
    }

    #[test]
    fn binary_goes_as_eight_bit_data() {
        // A vCard port header (TS 23.040 §9.2.3.24.4: IEI 05, ports 0x23F4
        // from 0) with two octets of data, TP-DCS 0x04, TP-UDL in octets.
        let to = destination("+46708251358").unwrap();
        let body = "06050423F40000CAFE";
        let pdus = build(&to, body, Encoding::Binary, &SubmitOptions::default()).unwrap();
        assert_eq!(
            pdus[0].hex(),
            "0001000B916407281553F800040906050423F40000CAFE"
        );
        let long = "AB".repeat(200);
        let pdus = build(&to, &long, Encoding::Binary, &SubmitOptions::default()).unwrap();
        assert_eq!(pdus.len(), 2);
        let udl_at = 1 + 2 + 8 + 2;
        assert_eq!(pdus[0].octets[udl_at], 140, "6 header octets + 134");
        assert_eq!(pdus[1].octets[udl_at], 6 + 66);
        assert!(build(&to, "ABC", Encoding::Binary, &SubmitOptions::default()).is_err());
    }
}
