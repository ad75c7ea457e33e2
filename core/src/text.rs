//! Choosing an encoding for a body and cutting it into segments.
//!
//! A single SMS carries 140 octets of user data: 160 GSM 7-bit septets, 70
//! UCS-2 units or 140 Latin-1 octets. A concatenated message gives 6 octets of
//! each part to the user data header (8-bit reference, TS 23.040 §9.2.3.24.1),
//! leaving 153 septets, 67 units or 134 octets. A GSM escape pair and a UTF-16
//! surrogate pair are never split across two parts: a receiver would show
//! garbage on both sides of the cut.
//!
//! 8-bit data (data_coding 4: ringtones, WAP push, application ports) is
//! carried as a body of hexadecimal digits, two per octet, the form smsbus
//! already keeps binary inbound messages in; it counts two units an octet.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::gsm7;

/// The alphabet a message is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 03.38 default alphabet with its extension table (data_coding 0).
    Gsm7,
    /// UCS-2 / UTF-16 big-endian (data_coding 8).
    Ucs2,
    /// ISO-8859-1 (data_coding 3), for providers that ask for it.
    Latin1,
    /// 8-bit data (data_coding 4), the body written as hexadecimal digits.
    Binary,
}

impl Encoding {
    pub const ALL: [Encoding; 4] = [
        Encoding::Gsm7,
        Encoding::Ucs2,
        Encoding::Latin1,
        Encoding::Binary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
            Encoding::Latin1 => "latin1",
            Encoding::Binary => "binary",
        }
    }

    /// Units (septets, UTF-16 units, octets, hex digits) a single-part
    /// message holds.
    pub fn single_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
            Encoding::Latin1 => 140,
            Encoding::Binary => 280,
        }
    }

    /// Units each part of a concatenated message holds.
    pub fn part_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
            Encoding::Latin1 => 134,
            Encoding::Binary => 268,
        }
    }

    /// Units `c` costs in this encoding, or None when it cannot carry it.
    pub fn units(self, c: char) -> Option<usize> {
        match self {
            Encoding::Gsm7 => gsm7::septets(c),
            Encoding::Ucs2 => Some(c.len_utf16()),
            Encoding::Latin1 => (u32::from(c) <= 0xFF).then_some(1),
            Encoding::Binary => c.is_ascii_hexdigit().then_some(1),
        }
    }

    /// The data_coding of SMPP (and the TP-DCS of GSM) for this encoding.
    pub fn data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
            Encoding::Latin1 => 0x03,
            Encoding::Binary => 0x04,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = TextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| TextError::UnknownEncoding(s.to_owned()))
    }
}

/// Why a body cannot be sent as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("unknown encoding \"{}\" (expected gsm7, ucs2, latin1 or binary)", crate::excerpt::excerpt(.0))]
    UnknownEncoding(String),
    #[error("body cannot be encoded in {encoding}: character {character:?} (U+{code:04X}) at position {position}")]
    Unencodable {
        encoding: Encoding,
        character: char,
        code: u32,
        /// 1-based character position in the body.
        position: usize,
    },
    #[error("a binary body is hexadecimal digits, two an octet: {digits} digits is not a whole number of octets")]
    OddBinary { digits: usize },
}

/// The encoding smsbus picks when none is asked for: GSM 7-bit when every
/// character is in the default alphabet or its extension table, else UCS-2.
pub fn detect(body: &str) -> Encoding {
    if body.chars().all(|c| gsm7::septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// Total units `body` costs in `encoding`.
pub fn units(body: &str, encoding: Encoding) -> Result<usize, TextError> {
    let total = body
        .chars()
        .enumerate()
        .try_fold(0, |sum, (i, c)| Ok(sum + unit_of(encoding, c, i)?))?;
    if encoding == Encoding::Binary && total % 2 != 0 {
        return Err(TextError::OddBinary { digits: total });
    }
    Ok(total)
}

/// The octets `text` goes as: GSM 7-bit unpacked (one septet an octet, as
/// SMPP carries data_coding 0), UTF-16 big-endian, Latin-1, or the octets
/// a binary body's hexadecimal digits spell.
pub fn octets(text: &str, encoding: Encoding) -> Result<Vec<u8>, TextError> {
    units(text, encoding)?;
    Ok(match encoding {
        Encoding::Gsm7 => gsm7::encode(text).unwrap_or_default(),
        Encoding::Ucs2 => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        // Every character is at most U+00FF: `units` checked.
        Encoding::Latin1 => text.chars().map(|c| u32::from(c) as u8).collect(),
        Encoding::Binary => text
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                digit(pair[0]) << 4 | digit(pair[1])
            })
            .collect(),
    })
}

fn unit_of(encoding: Encoding, c: char, index: usize) -> Result<usize, TextError> {
    encoding.units(c).ok_or(TextError::Unencodable {
        encoding,
        character: c,
        code: u32::from(c),
        position: index + 1,
    })
}

/// The byte ranges of `body` that go into each part. An empty body is one
/// (empty) part.
pub fn split(body: &str, encoding: Encoding) -> Result<Vec<Range<usize>>, TextError> {
    split_after_header(body, encoding, CONCAT_HEADER_OCTETS)
}

/// Octets of the 8-bit-reference concatenation header (UDHL + IEI + IEDL + 3).
pub const CONCAT_HEADER_OCTETS: usize = 6;
/// Octets of the 16-bit-reference concatenation header.
pub const CONCAT16_HEADER_OCTETS: usize = 7;

/// Like [`split`], for parts that each carry a user data header of
/// `header_octets` (the 16-bit reference header takes 7 octets, leaving
/// 152 septets, 66 UCS-2 units or 133 octets).
pub fn split_after_header(
    body: &str,
    encoding: Encoding,
    header_octets: usize,
) -> Result<Vec<Range<usize>>, TextError> {
    if units(body, encoding)? <= encoding.single_capacity() {
        return Ok(std::iter::once(0..body.len()).collect());
    }
    let octets = 140 - header_octets;
    let capacity = match encoding {
        Encoding::Gsm7 => octets * 8 / 7,
        Encoding::Ucs2 => octets / 2,
        Encoding::Latin1 => octets,
        Encoding::Binary => octets * 2,
    };
    let mut parts = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, (at, c)) in body.char_indices().enumerate() {
        let cost = unit_of(encoding, c, i)?;
        if used + cost > capacity {
            parts.push(start..at);
            start = at;
            used = 0;
        }
        used += cost;
    }
    parts.push(start..body.len());
    Ok(parts)
}

/// How many parts `body` needs in `encoding`.
pub fn segments(body: &str, encoding: Encoding) -> Result<usize, TextError> {
    let total = units(body, encoding)?;
    if total <= encoding.single_capacity() {
        return Ok(1);
    }
    // Only the escape and surrogate pairs can push a part over; count greedily.
    let capacity = encoding.part_capacity();
    let (mut parts, mut used) = (1, 0);
    for c in body.chars() {
        let cost = encoding.units(c).unwrap_or(1);
        if used + cost > capacity {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(body: &str) -> (Encoding, usize) {
        let e = detect(body);
        (e, segments(body, e).unwrap())
    }

    #[test]
    fn detects_gsm_including_extension_table() {
        assert_eq!(detect("Hello world"), Encoding::Gsm7);
        assert_eq!(detect("Price: 5€ [approx] {x} ~ | ^ \\"), Encoding::Gsm7);
        assert_eq!(detect("Ünïcode"), Encoding::Ucs2); // ï is not in GSM 03.38
        assert_eq!(detect("Grüße aus Köln"), Encoding::Gsm7);
        assert_eq!(detect("Привет"), Encoding::Ucs2);
        assert_eq!(detect("ok 👍"), Encoding::Ucs2);
        assert_eq!(detect("`backtick`"), Encoding::Ucs2);
        assert_eq!(detect(""), Encoding::Gsm7);
    }

    // The limits every provider documents (e.g. Twilio's and Vonage's
    // segment calculators, 3GPP TS 23.040 §9.2.3.24): 160/153 and 70/67.
    #[test]
    fn gsm_limits() {
        assert_eq!(seg(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(seg(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(seg(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(seg(&"a".repeat(307)), (Encoding::Gsm7, 3));
        assert_eq!(seg(&"a".repeat(459)), (Encoding::Gsm7, 3));
        assert_eq!(seg(&"a".repeat(460)), (Encoding::Gsm7, 4));
    }

    #[test]
    fn sixteen_bit_reference_parts_are_one_unit_smaller() {
        let parts = |body: &str, e| split_after_header(body, e, CONCAT16_HEADER_OCTETS).unwrap();
        let p = parts(&"a".repeat(305), Encoding::Gsm7);
        assert_eq!(p, vec![0..152, 152..304, 304..305]);
        let p = parts(&"ж".repeat(133), Encoding::Ucs2);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], 0..132); // 66 two-byte characters
        assert_eq!(split(&"a".repeat(306), Encoding::Gsm7).unwrap().len(), 2);
    }

    #[test]
    fn escaped_characters_take_two_septets() {
        assert_eq!(units("€", Encoding::Gsm7), Ok(2));
        assert_eq!(seg(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(seg(&"€".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(seg(&format!("{}€", "a".repeat(158))), (Encoding::Gsm7, 1));
        assert_eq!(seg(&format!("{}€", "a".repeat(159))), (Encoding::Gsm7, 2));
    }

    #[test]
    fn escape_pair_is_never_split() {
        // 152 + 2 + 152 = 306 septets would fill two parts exactly if the
        // pair could be split; kept whole it needs a third.
        let body = format!("{}€{}", "a".repeat(152), "b".repeat(152));
        assert_eq!(seg(&body), (Encoding::Gsm7, 3));
        let parts = split(&body, Encoding::Gsm7).unwrap();
        assert_eq!(&body[parts[0].clone()], "a".repeat(152));
        assert!(body[parts[1].clone()].starts_with('€'));
        assert_eq!(units(&body[parts[1].clone()], Encoding::Gsm7), Ok(153));
        assert_eq!(&body[parts[2].clone()], "b");
    }

    #[test]
    fn ucs2_limits() {
        assert_eq!(seg(&"ж".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(seg(&"ж".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(seg(&"ж".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(seg(&"ж".repeat(135)), (Encoding::Ucs2, 3));
    }

    #[test]
    fn surrogate_pair_takes_two_units_and_is_never_split() {
        assert_eq!(units("😀", Encoding::Ucs2), Ok(2));
        assert_eq!(seg(&"😀".repeat(35)), (Encoding::Ucs2, 1));
        assert_eq!(seg(&"😀".repeat(36)), (Encoding::Ucs2, 2));
        // 67 emoji = 134 units: two parts of 67 units if pairs could be cut,
        // but a part holds 33 whole pairs, so three parts.
        assert_eq!(seg(&"😀".repeat(67)), (Encoding::Ucs2, 3));
        let body = "😀".repeat(67);
        for part in split(&body, Encoding::Ucs2).unwrap() {
            assert!(body.is_char_boundary(part.start) && body.is_char_boundary(part.end));
            assert!(units(&body[part], Encoding::Ucs2).unwrap() <= 67);
        }
    }

    #[test]
    fn latin1_limits_and_refusal() {
        assert_eq!(segments(&"é".repeat(140), Encoding::Latin1), Ok(1));
        assert_eq!(segments(&"é".repeat(141), Encoding::Latin1), Ok(2));
        assert_eq!(
            segments("5 €", Encoding::Latin1),
            Err(TextError::Unencodable {
                encoding: Encoding::Latin1,
                character: '€',
                code: 0x20AC,
                position: 3
            })
        );
    }

    #[test]
    fn binary_counts_octets_and_refuses_what_is_not_whole_octets() {
        assert_eq!(segments(&"ab".repeat(140), Encoding::Binary), Ok(1));
        assert_eq!(segments(&"ab".repeat(141), Encoding::Binary), Ok(2));
        assert_eq!(segments(&"ab".repeat(268), Encoding::Binary), Ok(2));
        assert_eq!(segments(&"ab".repeat(269), Encoding::Binary), Ok(3));
        let parts = split(&"0F".repeat(200), Encoding::Binary).unwrap();
        assert_eq!(parts, vec![0..268, 268..400]);
        assert_eq!(
            units("abc", Encoding::Binary),
            Err(TextError::OddBinary { digits: 3 })
        );
        assert!(matches!(
            units("0g", Encoding::Binary),
            Err(TextError::Unencodable {
                character: 'g',
                position: 2,
                ..
            })
        ));
        assert_eq!(
            octets("0B05040B8423F0", Encoding::Binary),
            Ok(vec![0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0])
        );
        assert_eq!("binary".parse(), Ok(Encoding::Binary));
        assert_eq!(detect("deadbeef"), Encoding::Gsm7, "never picked by itself");
    }

    #[test]
    fn octets_of_each_text_encoding() {
        assert_eq!(octets("@€", Encoding::Gsm7), Ok(vec![0x00, 0x1B, 0x65]));
        assert_eq!(
            octets("é😀", Encoding::Ucs2),
            Ok(vec![0, 0xE9, 0xD8, 0x3D, 0xDE, 0x00])
        );
        assert_eq!(octets("é", Encoding::Latin1), Ok(vec![0xE9]));
        assert!(octets("€", Encoding::Latin1).is_err());
    }

    #[test]
    fn forced_gsm_refuses_what_it_cannot_carry() {
        let err = segments("hi Жанна", Encoding::Gsm7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "body cannot be encoded in gsm7: character 'Ж' (U+0416) at position 4"
        );
    }

    #[test]
    fn split_and_segments_agree() {
        let samples = [
            "a".repeat(1000),
            "€a".repeat(200),
            "😀ж".repeat(100),
            format!("{}{}", "x".repeat(152), "€".repeat(100)),
        ];
        for body in &samples {
            let e = detect(body);
            let parts = split(body, e).unwrap();
            assert_eq!(parts.len(), segments(body, e).unwrap());
            let joined: String = parts.iter().map(|r| &body[r.clone()]).collect();
            assert_eq!(&joined, body);
        }
    }

    #[test]
    fn encoding_names() {
        assert_eq!("ucs2".parse::<Encoding>(), Ok(Encoding::Ucs2));
        assert_eq!(
            "utf8".parse::<Encoding>().unwrap_err().to_string(),
            "unknown encoding \"utf8\" (expected gsm7, ucs2, latin1 or binary)"
        );
    }
}
