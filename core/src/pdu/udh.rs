//! User data headers (TS 23.040 §9.2.3.24): a length octet, then
//! information elements (identifier, length, data). smsbus reads and writes
//! the concatenation elements; others are skipped on reading.

use super::PduError;

/// IEI of concatenation with an 8-bit reference (§9.2.3.24.1).
pub const CONCAT_8: u8 = 0x00;
/// IEI of concatenation with a 16-bit reference (§9.2.3.24.8).
pub const CONCAT_16: u8 = 0x08;

/// Where a part sits in a concatenated message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    pub reference: u16,
    pub total: u8,
    /// 1-based.
    pub sequence: u8,
}

/// The header of one part (8-bit reference): 6 octets, length included.
pub fn concat_header(reference: u8, total: u8, sequence: u8) -> [u8; 6] {
    [5, CONCAT_8, 3, reference, total, sequence]
}

/// Splits user data into its header's concatenation element (if any) and
/// the octets after the header. The header's length octet is counted.
pub fn parse(user_data: &[u8]) -> Result<(Option<Concat>, usize), PduError> {
    let truncated = PduError::Truncated("the user data header");
    let length = usize::from(*user_data.first().ok_or(truncated.clone())?);
    let header = user_data.get(1..=length).ok_or(truncated.clone())?;
    let mut concat = None;
    let mut rest = header;
    while let [iei, len, tail @ ..] = rest {
        let data = tail.get(..usize::from(*len)).ok_or(truncated.clone())?;
        match (*iei, data) {
            (CONCAT_8, &[reference, total, sequence]) => {
                concat = Some(Concat {
                    reference: u16::from(reference),
                    total,
                    sequence,
                })
            }
            (CONCAT_16, &[high, low, total, sequence]) => {
                concat = Some(Concat {
                    reference: u16::from_be_bytes([high, low]),
                    total,
                    sequence,
                })
            }
            (CONCAT_8 | CONCAT_16, _) => {
                return Err(PduError::Invalid(format!(
                    "a concatenation element of {} octets",
                    data.len()
                )))
            }
            _ => {}
        }
        rest = &tail[data.len()..];
    }
    if !rest.is_empty() {
        return Err(truncated);
    }
    // A part numbered 0 or past the total cannot be placed; read the
    // message as a single one rather than lose it.
    let concat = concat.filter(|c| c.total >= 1 && (1..=c.total).contains(&c.sequence));
    Ok((concat, length + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_and_sixteen_bit_references() {
        let (concat, used) = parse(&[5, 0, 3, 0xCC, 2, 1, b'x']).unwrap();
        assert_eq!(
            concat,
            Some(Concat {
                reference: 0xCC,
                total: 2,
                sequence: 1
            })
        );
        assert_eq!(used, 6);
        let (concat, used) = parse(&[6, 8, 4, 0x12, 0x34, 3, 3]).unwrap();
        assert_eq!(
            concat,
            Some(Concat {
                reference: 0x1234,
                total: 3,
                sequence: 3
            })
        );
        assert_eq!(used, 7);
        assert_eq!(concat_header(0xCC, 2, 1), [5, 0, 3, 0xCC, 2, 1]);
    }

    #[test]
    fn other_elements_are_skipped() {
        // A port-addressing element (IEI 05) before the concatenation.
        let (concat, used) = parse(&[11, 5, 4, 0x0B, 0x84, 0x23, 0xF0, 0, 3, 7, 2, 2]).unwrap();
        assert_eq!(
            concat,
            Some(Concat {
                reference: 7,
                total: 2,
                sequence: 2
            })
        );
        assert_eq!(used, 12);
        assert_eq!(parse(&[3, 0x24, 1, 1]).unwrap(), (None, 4));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[5, 0, 3, 1]).is_err());
        assert!(parse(&[4, 0, 2, 1, 2]).is_err());
        assert!(parse(&[3, 0x24, 5, 1]).is_err());
        // Part 0 of 2 and part 3 of 2 cannot be placed.
        assert_eq!(parse(&[5, 0, 3, 1, 2, 0]).unwrap().0, None);
        assert_eq!(parse(&[5, 0, 3, 1, 2, 3]).unwrap().0, None);
    }
}
