//! The GSM 03.38 (3GPP TS 23.038 §6.2.1) default alphabet and its extension
//! table, as Unicode.
//!
//! A character of the basic table costs one septet; a character of the
//! extension table costs two (the escape 0x1B, then its code).

/// The escape septet that introduces an extension-table character.
pub const ESCAPE: u8 = 0x1B;

/// The basic table, indexed by septet. 0x1B is the escape and maps to no
/// character of its own; it is written as U+00A0 here and never matched.
pub const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{A0}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (code after the escape, character).
pub const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septet of a basic-table character.
pub fn basic_septet(c: char) -> Option<u8> {
    if c == '\u{A0}' {
        return None;
    }
    // The ASCII letters and digits sit at their ASCII codes; look those up
    // directly and fall back to a scan for the rest.
    if c.is_ascii_alphanumeric() || matches!(c, ' '..='#' | '%'..='?') {
        return Some(c as u8);
    }
    BASIC.iter().position(|&b| b == c).map(|p| p as u8)
}

/// The code (after the escape) of an extension-table character.
pub fn extension_code(c: char) -> Option<u8> {
    EXTENSION
        .iter()
        .find(|&&(_, e)| e == c)
        .map(|&(code, _)| code)
}

/// How many septets `c` costs in GSM 7-bit: 1, 2 (escaped), or None when the
/// alphabet cannot carry it.
pub fn septets(c: char) -> Option<usize> {
    if basic_septet(c).is_some() {
        Some(1)
    } else if extension_code(c).is_some() {
        Some(2)
    } else {
        None
    }
}

/// The septets of `text` (escape pairs included), or the first character the
/// alphabet cannot carry.
pub fn encode(text: &str) -> Result<Vec<u8>, char> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if let Some(s) = basic_septet(c) {
            out.push(s);
        } else if let Some(code) = extension_code(c) {
            out.push(ESCAPE);
            out.push(code);
        } else {
            return Err(c);
        }
    }
    Ok(out)
}

/// The text of a septet sequence. An escape followed by a code that the
/// extension table does not define is read as the basic character of that
/// code, as TS 23.038 asks of receivers; a trailing escape is read as a space.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = iter.next() {
        if s == ESCAPE {
            match iter.next() {
                Some(code) => match EXTENSION.iter().find(|&&(c, _)| c == code) {
                    Some(&(_, ch)) => out.push(ch),
                    None => out.push(BASIC[code as usize]),
                },
                None => out.push(' '),
            }
        } else {
            out.push(BASIC[s as usize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_letters_and_digits_sit_at_their_codes() {
        for c in ('A'..='Z').chain('a'..='z').chain('0'..='9') {
            assert_eq!(BASIC[c as usize], c);
        }
    }

    #[test]
    fn table_positions_from_ts_23_038() {
        // Spot checks against the printed table.
        assert_eq!(basic_septet('@'), Some(0x00));
        assert_eq!(basic_septet('$'), Some(0x02));
        assert_eq!(basic_septet('¤'), Some(0x24));
        assert_eq!(basic_septet('¡'), Some(0x40));
        assert_eq!(basic_septet('§'), Some(0x5F));
        assert_eq!(basic_septet('¿'), Some(0x60));
        assert_eq!(basic_septet('à'), Some(0x7F));
        assert_eq!(basic_septet('Δ'), Some(0x10));
        assert_eq!(basic_septet('_'), Some(0x11));
        assert_eq!(basic_septet('É'), Some(0x1F));
        assert_eq!(extension_code('€'), Some(0x65));
        assert_eq!(extension_code('['), Some(0x3C));
        assert_eq!(basic_septet('`'), None);
        assert_eq!(extension_code('`'), None);
    }

    #[test]
    fn every_basic_character_round_trips() {
        for (i, &c) in BASIC.iter().enumerate() {
            if i as u8 == ESCAPE {
                continue;
            }
            assert_eq!(basic_septet(c), Some(i as u8), "{c:?}");
            assert_eq!(decode(&[i as u8]), c.to_string());
        }
    }

    #[test]
    fn extension_characters_are_escaped() {
        assert_eq!(
            encode("€[]").unwrap(),
            vec![0x1B, 0x65, 0x1B, 0x3C, 0x1B, 0x3E]
        );
        assert_eq!(decode(&[0x1B, 0x65, 0x41]), "€A");
        assert_eq!(encode("a€").unwrap().len(), 3);
        assert_eq!(encode("Привет"), Err('П'));
    }

    #[test]
    fn unknown_escape_reads_as_basic_character() {
        assert_eq!(decode(&[0x1B, 0x41]), "A");
        assert_eq!(decode(&[0x41, 0x1B]), "A ");
    }
}
