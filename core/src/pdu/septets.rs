//! GSM 7-bit packing (3GPP TS 23.038 §6.1.2.1.1): septets laid end to end,
//! least significant bit first, across octets.
//!
//! After a user data header the text starts on a septet boundary counted
//! from the start of the user data (TS 23.040 §9.2.3.24), so the header is
//! followed by `fill_bits` zero bits; `pack` and `unpack` take that count.

/// Packs `septets` after `fill_bits` (0–6) zero bits.
pub fn pack(septets: &[u8], fill_bits: usize) -> Vec<u8> {
    let total_bits = fill_bits + 7 * septets.len();
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    for (i, &s) in septets.iter().enumerate() {
        let bit = fill_bits + 7 * i;
        let (at, shift) = (bit / 8, bit % 8);
        let s = u16::from(s & 0x7F) << shift;
        out[at] |= s as u8;
        if shift > 1 {
            out[at + 1] |= (s >> 8) as u8;
        }
    }
    out
}

/// The first `count` septets packed in `octets` after `fill_bits` bits, or
/// None when the octets are too few to hold them.
pub fn unpack(octets: &[u8], fill_bits: usize, count: usize) -> Option<Vec<u8>> {
    if (fill_bits + 7 * count).div_ceil(8) > octets.len() {
        return None;
    }
    let septets = (0..count)
        .map(|i| {
            let bit = fill_bits + 7 * i;
            let (at, shift) = (bit / 8, bit % 8);
            let low = u16::from(octets[at]);
            let high = octets.get(at + 1).map_or(0, |&o| u16::from(o));
            (((high << 8 | low) >> shift) & 0x7F) as u8
        })
        .collect();
    Some(septets)
}

/// Septets a user data header of `header_octets` occupies, fill included.
pub fn header_septets(header_octets: usize) -> usize {
    (header_octets * 8).div_ceil(7)
}

/// Zero bits between a header of `header_octets` and the first septet.
pub fn fill_bits(header_octets: usize) -> usize {
    header_septets(header_octets) * 7 - header_octets * 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gsm7;
    use crate::pdu::hex;

    #[test]
    fn hellohello_packs_as_in_the_classic_example() {
        // The "hellohello" user data of the well-known SMS-SUBMIT and
        // SMS-DELIVER examples (TS 23.038 packing, 10 septets in 9 octets).
        let septets = gsm7::encode("hellohello").unwrap();
        assert_eq!(hex::encode(&pack(&septets, 0)), "E8329BFD4697D9EC37");
        let back = unpack(&hex::decode("E8329BFD4697D9EC37").unwrap(), 0, 10).unwrap();
        assert_eq!(gsm7::decode(&back), "hellohello");
    }

    #[test]
    fn eight_septets_fill_seven_octets_exactly() {
        let septets = gsm7::encode("12345678").unwrap();
        let packed = pack(&septets, 0);
        assert_eq!(packed.len(), 7);
        assert_eq!(hex::encode(&packed), "31D98C56B3DD70");
        assert_eq!(unpack(&packed, 0, 8).unwrap(), septets);
    }

    #[test]
    fn text_after_a_concatenation_header_starts_after_one_fill_bit() {
        // A 6-octet header is 48 bits; the text starts at bit 49.
        assert_eq!(header_septets(6), 7);
        assert_eq!(fill_bits(6), 1);
        assert_eq!(header_septets(7), 8);
        assert_eq!(fill_bits(7), 0);
        let septets = gsm7::encode("Hi").unwrap();
        let packed = pack(&septets, 1);
        // 'H' = 0x48 shifted left by one, then 'i' = 0x69 from bit 8.
        assert_eq!(packed, vec![0x90, 0x69]);
        assert_eq!(unpack(&packed, 1, 2).unwrap(), septets);
    }

    #[test]
    fn too_few_octets_are_refused() {
        assert_eq!(unpack(&[0xE8, 0x32], 0, 3), None);
        assert_eq!(unpack(&[], 0, 0), Some(vec![]));
    }
}
