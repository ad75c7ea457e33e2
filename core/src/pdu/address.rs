//! TP addresses (TS 23.040 §9.1.2.5) and the SMSC address (TS 24.011
//! §8.2.5.1) that precedes a TPDU on the AT interface (TS 27.005 §3).
//!
//! A TP address is: the number of useful semi-octets, the type of address
//! (`1 TON(3) NPI(4)`), then the digits two per octet, low nibble first,
//! padded with 0xF; or, for an alphanumeric address (TON 5), GSM 7-bit
//! packed text. The SMSC address instead counts octets (type included).

use super::{septets, PduError, Reader};
use crate::address::{Address, AddressKind};
use crate::gsm7;

/// Type of address: international number, ISDN/E.164 plan.
pub const INTERNATIONAL: u8 = 0x91;
/// Type of address: unknown type of number, ISDN/E.164 plan. What a phone
/// sends for a number dialled without `+`; networks route it as dialled.
pub const UNKNOWN: u8 = 0x81;
/// Type of address: alphanumeric (TON 5), GSM 7-bit.
pub const ALPHANUMERIC: u8 = 0xD0;

const TON_INTERNATIONAL: u8 = 1;
const TON_ALPHANUMERIC: u8 = 5;

/// An address read from a PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PduAddress {
    /// Digits (`+` first for an international number) or alphanumeric text.
    pub text: String,
    pub type_of_address: u8,
}

impl PduAddress {
    pub fn ton(&self) -> u8 {
        (self.type_of_address >> 4) & 0x07
    }

    pub fn npi(&self) -> u8 {
        self.type_of_address & 0x0F
    }

    pub fn is_alphanumeric(&self) -> bool {
        self.ton() == TON_ALPHANUMERIC
    }
}

/// The TP-DA of an SMS-SUBMIT for a normalised destination.
pub fn encode(to: &Address) -> Vec<u8> {
    match to.kind {
        AddressKind::Alphanumeric => {
            // Only senders are alphanumeric in smsbus, but the format
            // allows it and the encoding is total.
            let text = gsm7::encode(&to.text).unwrap_or_default();
            let packed = septets::pack(&text, 0);
            let semi_octets = (text.len() * 7).div_ceil(4);
            let mut out = vec![semi_octets as u8, ALPHANUMERIC];
            out.extend(packed);
            out
        }
        AddressKind::International => digits_field(to.text.trim_start_matches('+'), INTERNATIONAL),
        AddressKind::National | AddressKind::ShortCode => digits_field(&to.text, UNKNOWN),
    }
}

fn digits_field(digits: &str, type_of_address: u8) -> Vec<u8> {
    let mut out = vec![digits.len() as u8, type_of_address];
    out.extend(semi_octets(digits));
    out
}

/// Digits two per octet, low nibble first, an odd count padded with 0xF.
fn semi_octets(digits: &str) -> Vec<u8> {
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let nibble = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                b'*' => 0xA,
                b'#' => 0xB,
                _ => 0xF,
            };
            let high = pair.get(1).map_or(0xF, |&c| nibble(c));
            high << 4 | nibble(pair[0])
        })
        .collect()
}

fn digits_of(octets: &[u8], count: usize) -> Result<String, PduError> {
    let mut out = String::with_capacity(count);
    for i in 0..count {
        let octet = octets[i / 2];
        let nibble = if i % 2 == 0 { octet & 0x0F } else { octet >> 4 };
        out.push(match nibble {
            0..=9 => (b'0' + nibble) as char,
            0xA => '*',
            0xB => '#',
            0xC => 'a',
            0xD => 'b',
            0xE => 'c',
            _ => return Err(PduError::Invalid("a filler digit inside an address".into())),
        });
    }
    Ok(out)
}

/// Reads a TP address (TP-OA, TP-RA).
pub(crate) fn read(reader: &mut Reader<'_>, field: &'static str) -> Result<PduAddress, PduError> {
    let semi_octets = usize::from(reader.octet(field)?);
    let type_of_address = reader.octet(field)?;
    let octets = reader.take(semi_octets.div_ceil(2), field)?;
    let ton = (type_of_address >> 4) & 0x07;
    let text = if ton == TON_ALPHANUMERIC {
        let count = semi_octets * 4 / 7;
        let septets = septets::unpack(octets, 0, count).ok_or(PduError::Truncated(field))?;
        gsm7::decode(&septets)
    } else {
        let digits = digits_of(octets, semi_octets)?;
        if ton == TON_INTERNATIONAL {
            format!("+{digits}")
        } else {
            digits
        }
    };
    Ok(PduAddress {
        text,
        type_of_address,
    })
}

/// Reads the SMSC address that precedes the TPDU; None when its length is
/// 0 (the modem's default SMSC).
pub(crate) fn read_smsc(reader: &mut Reader<'_>) -> Result<Option<String>, PduError> {
    let octets = usize::from(reader.octet("the SMSC address")?);
    if octets == 0 {
        return Ok(None);
    }
    let type_of_address = reader.octet("the SMSC address")?;
    let digits = reader.take(octets - 1, "the SMSC address")?;
    // The count is in octets; a trailing 0xF nibble is padding.
    let mut count = digits.len() * 2;
    if digits.last().is_some_and(|o| o >> 4 == 0xF) {
        count -= 1;
    }
    let number = digits_of(digits, count)?;
    Ok(Some(
        if (type_of_address >> 4) & 0x07 == TON_INTERNATIONAL {
            format!("+{number}")
        } else {
            number
        },
    ))
}

/// The SMSC address field for an override number, or `00` (use the
/// modem's stored SMSC) when there is none.
pub fn encode_smsc(smsc: Option<&str>) -> Vec<u8> {
    let Some(number) = smsc else {
        return vec![0];
    };
    let (digits, type_of_address) = match number.strip_prefix('+') {
        Some(d) => (d, INTERNATIONAL),
        None => (number, UNKNOWN),
    };
    let packed = semi_octets(digits);
    let mut out = vec![packed.len() as u8 + 1, type_of_address];
    out.extend(packed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{destination, sender};
    use crate::pdu::hex;

    #[test]
    fn international_destination_as_in_the_classic_submit_example() {
        // 0B 91 6407281553F8: +46708251358.
        let to = destination("+46708251358").unwrap();
        assert_eq!(hex::encode(&encode(&to)), "0B916407281553F8");
    }

    #[test]
    fn national_and_short_numbers_go_as_dialled() {
        // The example's note: 0708251358 with type 81 is 0A 81 7080523185.
        let to = destination("0708251358").unwrap();
        assert_eq!(hex::encode(&encode(&to)), "0A817080523185");
        let to = destination("1234").unwrap();
        assert_eq!(hex::encode(&encode(&to)), "04812143");
    }

    #[test]
    fn alphanumeric_address_is_packed_text() {
        // "Test" packs to D4F29C0E: 28 bits, 7 useful semi-octets.
        let from = sender("Test").unwrap();
        assert_eq!(hex::encode(&encode(&from)), "07D0D4F29C0E");
        let octets = hex::decode("07D0D4F29C0E").unwrap();
        let address = read(&mut Reader::new(&octets), "TP-OA").unwrap();
        assert_eq!(address.text, "Test");
        assert!(address.is_alphanumeric());
    }

    #[test]
    fn reads_numbers_back() {
        let octets = hex::decode("0B916407281553F8").unwrap();
        let address = read(&mut Reader::new(&octets), "TP-OA").unwrap();
        assert_eq!(address.text, "+46708251358");
        assert_eq!((address.ton(), address.npi()), (1, 1));
        // TON 4 (subscriber) is kept as plain digits.
        let octets = hex::decode("0BC87238880900F1").unwrap();
        assert_eq!(
            read(&mut Reader::new(&octets), "TP-OA").unwrap().text,
            "27838890001"
        );
    }

    #[test]
    fn smsc_address_counts_octets() {
        let octets = hex::decode("07917283010010F5").unwrap();
        let smsc = read_smsc(&mut Reader::new(&octets)).unwrap();
        assert_eq!(smsc.as_deref(), Some("+27381000015"));
        assert_eq!(
            hex::encode(&encode_smsc(Some("+27381000015"))),
            "07917283010010F5"
        );
        assert_eq!(encode_smsc(None), vec![0]);
        assert_eq!(read_smsc(&mut Reader::new(&[0])).unwrap(), None);
    }

    #[test]
    fn truncated_and_padded_addresses_are_refused() {
        let octets = hex::decode("0B9164072815").unwrap();
        assert_eq!(
            read(&mut Reader::new(&octets), "TP-OA"),
            Err(PduError::Truncated("TP-OA"))
        );
        // Twelve semi-octets announced, the last one is the filler.
        let octets = hex::decode("0C916407281553F8").unwrap();
        assert!(matches!(
            read(&mut Reader::new(&octets), "TP-OA"),
            Err(PduError::Invalid(_))
        ));
    }
}
