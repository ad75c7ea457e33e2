//! SMS transfer-layer PDUs (3GPP TS 23.040) as a GSM modem exchanges them in
//! PDU mode (3GPP TS 27.005): the SMS-SUBMIT the modem channel sends, and the
//! SMS-DELIVER and SMS-STATUS-REPORT it receives.
//!
//! - [`septets`]: GSM 7-bit packing, with the fill bits after a header.
//! - [`address`]: TP addresses (semi-octet digits, alphanumeric) and
//!   the SMSC address that prefixes a PDU on the AT interface.
//! - [`timestamp`]: TP-SCTS / TP-DT service-centre time stamps.
//! - [`udh`]: user data headers (concatenation, 8- and 16-bit references).
//! - [`submit`]: building SMS-SUBMIT PDUs from a message.
//! - [`incoming`]: decoding SMS-DELIVER and SMS-STATUS-REPORT PDUs.
//!
//! Decoders return [`PduError`] for anything malformed: a PDU comes from a
//! device and is never trusted.

pub mod address;
pub mod incoming;
pub mod septets;
pub mod submit;
pub mod timestamp;
pub mod udh;

/// Why a PDU could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("PDU is not hexadecimal: {0}")]
    NotHex(String),
    #[error("PDU ends inside {0}")]
    Truncated(&'static str),
    #[error("PDU has {0}")]
    Invalid(String),
}

/// Hexadecimal as the AT interface writes PDUs: two upper-case digits per
/// octet.
pub mod hex {
    use super::PduError;

    pub fn encode(octets: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = String::with_capacity(octets.len() * 2);
        for &o in octets {
            out.push(DIGITS[usize::from(o >> 4)] as char);
            out.push(DIGITS[usize::from(o & 0x0F)] as char);
        }
        out
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, PduError> {
        let text = text.trim();
        let bad = || {
            let shown: String = text.chars().take(40).collect();
            PduError::NotHex(shown)
        };
        if !text.len().is_multiple_of(2) {
            return Err(bad());
        }
        text.as_bytes()
            .chunks(2)
            .map(|pair| {
                let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                Some(digit(pair[0])? << 4 | digit(pair[1])?)
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)
    }
}

/// A cursor over PDU octets that names the field it ran out in.
pub(crate) struct Reader<'a> {
    octets: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(octets: &'a [u8]) -> Self {
        Reader { octets, at: 0 }
    }

    pub(crate) fn octet(&mut self, field: &'static str) -> Result<u8, PduError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PduError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.octets.len());
        let end = end.ok_or(PduError::Truncated(field))?;
        let taken = &self.octets[self.at..end];
        self.at = end;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(hex::encode(&[0x00, 0x9A, 0xFF]), "009AFF");
        assert_eq!(hex::decode("009aff").unwrap(), vec![0x00, 0x9A, 0xFF]);
        assert!(matches!(hex::decode("0G"), Err(PduError::NotHex(_))));
        assert!(matches!(hex::decode("ABC"), Err(PduError::NotHex(_))));
        assert!(matches!(hex::decode("é0"), Err(PduError::NotHex(_))));
    }

    #[test]
    fn the_reader_names_the_field_it_ran_out_in() {
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.octet("first octet"), Ok(1));
        assert_eq!(r.take(2, "TP-MR"), Err(PduError::Truncated("TP-MR")));
        assert_eq!(r.take(1, "TP-DA"), Ok(&[2][..]));
    }
}
