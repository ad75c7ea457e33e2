//! Destination and sender addresses: validation, normalisation and the type
//! of number (TON) and numbering plan (NPI) that SMPP and TS 23.040 carry
//! beside them.
//!
//! | written as | normalised | kind | TON | NPI |
//! | --- | --- | --- | --- | --- |
//! | `+31 6 1234-5678`, `0031612345678` | `+31612345678` | international | 1 | 1 (E.164) |
//! | `06 12345678` (7–15 digits) | `0612345678` | national | 2 | 1 |
//! | `1234` (3–6 digits, no leading 0) | `1234` | short code | 3 | 0 |
//! | `MyShop` (sender only, ≤ 11 GSM septets) | `MyShop` | alphanumeric | 5 | 0 |

use crate::gsm7;

/// What kind of address a string is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    International,
    National,
    ShortCode,
    Alphanumeric,
}

impl AddressKind {
    /// SMPP `*_addr_ton` / TS 23.040 type of number.
    pub fn ton(self) -> u8 {
        match self {
            AddressKind::International => 1,
            AddressKind::National => 2,
            AddressKind::ShortCode => 3,
            AddressKind::Alphanumeric => 5,
        }
    }

    /// SMPP `*_addr_npi` / TS 23.040 numbering plan.
    pub fn npi(self) -> u8 {
        match self {
            AddressKind::International | AddressKind::National => 1,
            AddressKind::ShortCode | AddressKind::Alphanumeric => 0,
        }
    }
}

/// An address as smsbus stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub text: String,
    pub kind: AddressKind,
}

/// E.164 allows at most 15 digits after the `+`; the shortest numbers in
/// service (Niue, Tokelau) have 7.
const INTERNATIONAL_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
const NATIONAL_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
const SHORT_CODE_DIGITS: std::ops::RangeInclusive<usize> = 3..=6;
/// An alphanumeric TP-OA holds 11 septets (TS 23.040 §9.1.2.5).
pub const MAX_ALPHANUMERIC_SEPTETS: usize = 11;

/// Why an address was refused. The messages name the field (`to_address`,
/// `from_address`) because they surface as SQL errors at INSERT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} \"{}\" is not a phone number: use digits with an optional leading + (spaces, dashes, dots and parentheses are ignored)", crate::excerpt::excerpt(.text))]
    NotANumber { field: &'static str, text: String },
    #[error("{field} \"{}\" has {digits} digits after the country code prefix; an international number has 7 to 15", crate::excerpt::excerpt(.text))]
    InternationalLength {
        field: &'static str,
        text: String,
        digits: usize,
    },
    #[error("{field} \"{}\": a country code never starts with 0", crate::excerpt::excerpt(.text))]
    CountryCodeZero { field: &'static str, text: String },
    #[error("{field} \"{}\" has {digits} digits; a short code has 3 to 6 and a national number 7 to 15", crate::excerpt::excerpt(.text))]
    NumberLength {
        field: &'static str,
        text: String,
        digits: usize,
    },
    #[error("from_address \"{}\" is {septets} GSM characters long; an alphanumeric sender holds at most 11", crate::excerpt::excerpt(.text))]
    AlphanumericTooLong { text: String, septets: usize },
    #[error("from_address \"{}\": an alphanumeric sender must use the GSM 03.38 alphabet, {character:?} is not in it", crate::excerpt::excerpt(.text))]
    AlphanumericCharacter { text: String, character: char },
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{A0}')
}

/// Parses a phone number (international, national or short code).
fn parse_number(field: &'static str, raw: &str) -> Result<Address, AddressError> {
    let compact: String = raw.chars().filter(|&c| !is_separator(c)).collect();
    let (international, digits) = if let Some(rest) = compact.strip_prefix('+') {
        (true, rest)
    } else if let Some(rest) = compact.strip_prefix("00") {
        // 00 is the ITU-recommended international prefix.
        (true, rest)
    } else {
        (false, compact.as_str())
    };
    if digits.is_empty() && !international {
        return Err(AddressError::Empty { field });
    }
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(AddressError::NotANumber {
            field,
            text: raw.to_owned(),
        });
    }
    let n = digits.len();
    if international {
        if !INTERNATIONAL_DIGITS.contains(&n) {
            return Err(AddressError::InternationalLength {
                field,
                text: raw.to_owned(),
                digits: n,
            });
        }
        if digits.starts_with('0') {
            return Err(AddressError::CountryCodeZero {
                field,
                text: raw.to_owned(),
            });
        }
        return Ok(Address {
            text: format!("+{digits}"),
            kind: AddressKind::International,
        });
    }
    let kind = if SHORT_CODE_DIGITS.contains(&n) && !digits.starts_with('0') {
        AddressKind::ShortCode
    } else if NATIONAL_DIGITS.contains(&n) {
        AddressKind::National
    } else {
        return Err(AddressError::NumberLength {
            field,
            text: raw.to_owned(),
            digits: n,
        });
    };
    Ok(Address {
        text: digits.to_owned(),
        kind,
    })
}

fn looks_numeric(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_digit() || c == '+' || is_separator(c))
}

/// Validates and normalises a destination address.
pub fn destination(raw: &str) -> Result<Address, AddressError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(AddressError::Empty {
            field: "to_address",
        });
    }
    parse_number("to_address", trimmed)
}

/// Validates and normalises a sender address: a number, or an alphanumeric
/// sender of at most 11 GSM septets (kept as written, trimmed).
pub fn sender(raw: &str) -> Result<Address, AddressError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(AddressError::Empty {
            field: "from_address",
        });
    }
    if looks_numeric(trimmed) {
        return parse_number("from_address", trimmed);
    }
    let mut septets = 0;
    for c in trimmed.chars() {
        septets += gsm7::septets(c).ok_or_else(|| AddressError::AlphanumericCharacter {
            text: trimmed.to_owned(),
            character: c,
        })?;
    }
    if septets > MAX_ALPHANUMERIC_SEPTETS {
        return Err(AddressError::AlphanumericTooLong {
            text: trimmed.to_owned(),
            septets,
        });
    }
    Ok(Address {
        text: trimmed.to_owned(),
        kind: AddressKind::Alphanumeric,
    })
}

/// Classifies an address that came from the network (an inbound message's
/// originator or recipient). Nothing is refused: what the peer sent is kept
/// as it was, and the kind is a best guess.
pub fn classify_received(raw: &str) -> AddressKind {
    match sender(raw) {
        Ok(a) => a.kind,
        Err(_) if raw.trim_start().starts_with('+') => AddressKind::International,
        Err(_) if looks_numeric(raw) => AddressKind::National,
        Err(_) => AddressKind::Alphanumeric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> (String, AddressKind) {
        let a = destination(s).unwrap();
        (a.text, a.kind)
    }

    #[test]
    fn international_numbers() {
        use AddressKind::International as I;
        assert_eq!(dest("+31612345678"), ("+31612345678".into(), I));
        assert_eq!(dest(" +31 6 1234-5678 "), ("+31612345678".into(), I));
        assert_eq!(dest("+1 (555) 010.9999"), ("+15550109999".into(), I));
        assert_eq!(dest("0044 20 7946 0958"), ("+442079460958".into(), I));
        assert_eq!(dest("+6831234"), ("+6831234".into(), I));
        assert_eq!(I.ton(), 1);
        assert_eq!(I.npi(), 1);
    }

    #[test]
    fn national_numbers_and_short_codes() {
        assert_eq!(
            dest("0612345678"),
            ("0612345678".into(), AddressKind::National)
        );
        assert_eq!(
            dest("06-1234 5678"),
            ("0612345678".into(), AddressKind::National)
        );
        assert_eq!(dest("5551234"), ("5551234".into(), AddressKind::National));
        assert_eq!(dest("1234"), ("1234".into(), AddressKind::ShortCode));
        assert_eq!(dest("112"), ("112".into(), AddressKind::ShortCode));
        assert_eq!(dest("898882"), ("898882".into(), AddressKind::ShortCode));
        assert_eq!(
            (AddressKind::ShortCode.ton(), AddressKind::ShortCode.npi()),
            (3, 0)
        );
        assert_eq!(
            (AddressKind::National.ton(), AddressKind::National.npi()),
            (2, 1)
        );
    }

    #[test]
    fn bad_destinations() {
        let err = |s: &str| destination(s).unwrap_err().to_string();
        assert_eq!(err(""), "to_address is empty");
        assert_eq!(err("   "), "to_address is empty");
        assert_eq!(
            err("+31 6 abc"),
            "to_address \"+31 6 abc\" is not a phone number: use digits with an optional leading + (spaces, dashes, dots and parentheses are ignored)"
        );
        assert_eq!(
            err("+3161234567890123"),
            "to_address \"+3161234567890123\" has 16 digits after the country code prefix; an international number has 7 to 15"
        );
        assert_eq!(
            err("+123"),
            "to_address \"+123\" has 3 digits after the country code prefix; an international number has 7 to 15"
        );
        assert_eq!(
            err("+0123456789"),
            "to_address \"+0123456789\": a country code never starts with 0"
        );
        assert_eq!(
            err("12"),
            "to_address \"12\" has 2 digits; a short code has 3 to 6 and a national number 7 to 15"
        );
        assert_eq!(
            err("01234"),
            "to_address \"01234\" has 5 digits; a short code has 3 to 6 and a national number 7 to 15"
        );
        assert!(err("MyShop").contains("is not a phone number"));
        assert!(err("+31+612345678").contains("is not a phone number"));
    }

    #[test]
    fn senders() {
        let s = |x: &str| sender(x).map(|a| (a.text, a.kind));
        assert_eq!(
            s("MyShop"),
            Ok(("MyShop".into(), AddressKind::Alphanumeric))
        );
        assert_eq!(
            s(" Shop 24 "),
            Ok(("Shop 24".into(), AddressKind::Alphanumeric))
        );
        assert_eq!(
            s("ElevenChars"),
            Ok(("ElevenChars".into(), AddressKind::Alphanumeric))
        );
        assert_eq!(
            s("+31 20 123 4567"),
            Ok(("+31201234567".into(), AddressKind::International))
        );
        assert_eq!(s("4455"), Ok(("4455".into(), AddressKind::ShortCode)));
        assert_eq!(
            (
                AddressKind::Alphanumeric.ton(),
                AddressKind::Alphanumeric.npi()
            ),
            (5, 0)
        );
    }

    #[test]
    fn bad_senders() {
        let err = |s: &str| sender(s).unwrap_err().to_string();
        assert_eq!(
            err("TwelveCharsX"),
            "from_address \"TwelveCharsX\" is 12 GSM characters long; an alphanumeric sender holds at most 11"
        );
        // € is an escaped character: two septets.
        assert_eq!(
            err("Shop€€€€€"),
            "from_address \"Shop€€€€€\" is 14 GSM characters long; an alphanumeric sender holds at most 11"
        );
        assert_eq!(
            err("Магазин"),
            "from_address \"Магазин\": an alphanumeric sender must use the GSM 03.38 alphabet, 'М' is not in it"
        );
        assert_eq!(err(""), "from_address is empty");
        assert!(err("+12").contains("an international number has 7 to 15"));
    }

    #[test]
    fn received_addresses_are_never_refused() {
        assert_eq!(
            classify_received("+31612345678"),
            AddressKind::International
        );
        assert_eq!(classify_received("+12"), AddressKind::International);
        assert_eq!(classify_received("Bank"), AddressKind::Alphanumeric);
        assert_eq!(
            classify_received("A very long sender name"),
            AddressKind::Alphanumeric
        );
        assert_eq!(classify_received("12"), AddressKind::National);
    }
}
