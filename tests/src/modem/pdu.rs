//! The simulated modem's own PDU coding: it reads the SMS-SUBMITs the
//! channel writes and writes the SMS-DELIVERs and SMS-STATUS-REPORTs the
//! channel reads (3GPP TS 23.040). Written apart from `smsbus_core::pdu`,
//! in another shape (a bit cursor rather than octet arithmetic), and tested
//! against the same published examples, so that a mistake made twice in
//! the same way cannot pass the end-to-end tests.

use smsbus_core::gsm7;

/// What the simulator read from one SMS-SUBMIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    pub smsc: Option<String>,
    pub to: String,
    pub to_type: u8,
    pub status_report: bool,
    /// TP-VP octet when the relative format is used.
    pub validity: Option<u8>,
    pub data_coding: u8,
    pub text: String,
    /// (reference, total, sequence)
    pub concat: Option<(u16, u8, u8)>,
}

fn hex_octets(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 == 1 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("not hexadecimal: {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

pub fn to_hex(octets: &[u8]) -> String {
    octets.iter().map(|o| format!("{o:02X}")).collect()
}

/// Reads bits least significant first, as GSM 7-bit packing lays them.
struct Bits<'a> {
    octets: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn septet(&mut self) -> Option<u8> {
        let mut value = 0u8;
        for i in 0..7 {
            let octet = *self.octets.get(self.bit / 8)?;
            let b = (octet >> (self.bit % 8)) & 1;
            value |= b << i;
            self.bit += 1;
        }
        Some(value)
    }
}

/// Writes bits least significant first.
#[derive(Default)]
struct BitWriter {
    octets: Vec<u8>,
    bit: usize,
}

impl BitWriter {
    fn push(&mut self, value: u8, bits: usize) {
        for i in 0..bits {
            if self.bit / 8 == self.octets.len() {
                self.octets.push(0);
            }
            let b = (value >> i) & 1;
            let at = self.bit / 8;
            self.octets[at] |= b << (self.bit % 8);
            self.bit += 1;
        }
    }
}

fn digits(octets: &[u8], count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let nibble = if i % 2 == 0 {
            octets[i / 2] & 0xF
        } else {
            octets[i / 2] >> 4
        };
        out.push(match nibble {
            0..=9 => char::from(b'0' + nibble),
            0xA => '*',
            0xB => '#',
            _ => '?',
        });
    }
    out
}

fn swapped_digits(number: &str) -> Vec<u8> {
    let nibbles: Vec<u8> = number.bytes().map(|b| b - b'0').collect();
    nibbles
        .chunks(2)
        .map(|c| c[0] | (c.get(1).copied().unwrap_or(0xF) << 4))
        .collect()
}

/// Decodes an SMS-SUBMIT as written after the `>` prompt (SMSC address
/// first); `length` is the `AT+CMGS=<length>` the channel announced.
pub fn decode_submit(hex: &str, length: usize) -> Result<Submit, String> {
    let o = hex_octets(hex)?;
    let smsc_len = *o.first().ok_or("empty PDU")? as usize;
    if o.len() != 1 + smsc_len + length {
        return Err(format!(
            "AT+CMGS announced {length} octets, the PDU has {} after a {smsc_len}-octet SMSC address",
            o.len() - 1 - smsc_len.min(o.len() - 1)
        ));
    }
    let smsc = (smsc_len > 0).then(|| {
        let count = (smsc_len - 1) * 2 - usize::from(o[smsc_len] >> 4 == 0xF);
        let number = digits(&o[2..=smsc_len], count);
        if o[1] == 0x91 {
            format!("+{number}")
        } else {
            number
        }
    });
    let t = &o[1 + smsc_len..];
    let get = |i: usize| t.get(i).copied().ok_or(format!("PDU ends at octet {i}"));
    let first = get(0)?;
    if first & 0x03 != 0x01 {
        return Err(format!("first octet {first:02X} is not an SMS-SUBMIT"));
    }
    let udhi = first & 0x40 != 0;
    let vpf = (first >> 3) & 0x03;
    let da_digits = get(2)? as usize;
    let to_type = get(3)?;
    let da_octets = da_digits.div_ceil(2);
    let to_raw = t.get(4..4 + da_octets).ok_or("PDU ends in TP-DA")?;
    let to = if to_type == 0x91 {
        format!("+{}", digits(to_raw, da_digits))
    } else {
        digits(to_raw, da_digits)
    };
    let mut at = 4 + da_octets;
    let _pid = get(at)?;
    let data_coding = get(at + 1)?;
    at += 2;
    let validity = match vpf {
        0 => None,
        2 => {
            at += 1;
            Some(get(at - 1)?)
        }
        _ => {
            at += 7;
            None
        }
    };
    let udl = get(at)? as usize;
    let ud = &t[at + 1..];
    let mut concat = None;
    let mut header_octets = 0;
    if udhi {
        let udhl = *ud.first().ok_or("no header")? as usize;
        header_octets = udhl + 1;
        let mut i = 1;
        while i + 1 < header_octets {
            let (iei, len) = (ud[i], ud[i + 1] as usize);
            let data = ud
                .get(i + 2..i + 2 + len)
                .ok_or("header element overruns")?;
            match (iei, data) {
                (0x00, [r, n, s]) => concat = Some((u16::from(*r), *n, *s)),
                (0x08, [h, l, n, s]) => concat = Some((u16::from(*h) << 8 | u16::from(*l), *n, *s)),
                _ => {}
            }
            i += 2 + len;
        }
    }
    let text = match data_coding {
        0x00 => {
            // The header takes whole septets; the text follows it.
            let skip = (header_octets * 8).div_ceil(7);
            let mut bits = Bits { octets: ud, bit: 0 };
            let mut septets = Vec::new();
            for i in 0..udl {
                let s = bits.septet().ok_or("user data shorter than TP-UDL")?;
                if i >= skip {
                    septets.push(s);
                }
            }
            gsm7::decode(&septets)
        }
        0x08 => {
            let body = ud
                .get(header_octets..udl)
                .ok_or("user data shorter than TP-UDL")?;
            if body.len() % 2 == 1 {
                return Err("odd UCS-2 length".into());
            }
            let units: Vec<u16> = body
                .chunks(2)
                .map(|c| u16::from(c[0]) << 8 | u16::from(c[1]))
                .collect();
            String::from_utf16(&units).map_err(|e| e.to_string())?
        }
        other => return Err(format!("data coding {other:02X} is not expected")),
    };
    Ok(Submit {
        smsc,
        to,
        to_type,
        status_report: first & 0x20 != 0,
        validity,
        data_coding,
        text,
        concat,
    })
}

/// An address field: international (`+…`), digits, or alphanumeric.
fn address_field(address: &str) -> Vec<u8> {
    if let Some(number) = address.strip_prefix('+') {
        let mut out = vec![number.len() as u8, 0x91];
        out.extend(swapped_digits(number));
        out
    } else if address.bytes().all(|b| b.is_ascii_digit()) {
        let mut out = vec![address.len() as u8, 0x81];
        out.extend(swapped_digits(address));
        out
    } else {
        let septets = gsm7::encode(address).expect("alphanumeric sender in the GSM alphabet");
        let mut w = BitWriter::default();
        for s in &septets {
            w.push(*s, 7);
        }
        let mut out = vec![(septets.len() * 7).div_ceil(4) as u8, 0xD0];
        out.extend(w.octets);
        out
    }
}

/// 2024-11-07 19:58:47 UTC+1, a fixed service-centre time.
pub const SCTS: [u8; 7] = [0x42, 0x11, 0x70, 0x91, 0x85, 0x74, 0x40];

/// How a delivered text is coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gsm7,
    Ucs2,
}

/// SMS-DELIVER PDUs (SMSC address first) for `text` from `from`, cut into
/// parts with 8-bit-reference concatenation headers when it is long; with
/// each part's TPDU length.
pub fn encode_deliver(
    from: &str,
    text: &str,
    coding: Coding,
    reference: u8,
) -> Vec<(String, usize)> {
    // Units per part: 160/153 septets, 70/67 UCS-2 units; escape pairs and
    // surrogate pairs are kept whole.
    let units: Vec<Vec<u16>> = text
        .chars()
        .map(|c| match coding {
            Coding::Gsm7 => gsm7::encode(&c.to_string())
                .expect("text in the GSM alphabet")
                .into_iter()
                .map(u16::from)
                .collect(),
            Coding::Ucs2 => {
                let mut b = [0u16; 2];
                c.encode_utf16(&mut b).to_vec()
            }
        })
        .collect();
    let total: usize = units.iter().map(Vec::len).sum();
    let (single, part) = match coding {
        Coding::Gsm7 => (160, 153),
        Coding::Ucs2 => (70, 67),
    };
    let mut parts: Vec<Vec<u16>> = vec![Vec::new()];
    for u in units {
        let limit = if total <= single { single } else { part };
        if parts.last().unwrap().len() + u.len() > limit {
            parts.push(Vec::new());
        }
        parts.last_mut().unwrap().extend(u);
    }
    let count = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let header = (count > 1).then(|| vec![5u8, 0, 3, reference, count as u8, i as u8 + 1]);
            deliver_pdu(from, coding, p, header.as_deref())
        })
        .collect()
}

fn deliver_pdu(
    from: &str,
    coding: Coding,
    units: &[u16],
    header: Option<&[u8]>,
) -> (String, usize) {
    let mut t = vec![if header.is_some() { 0x44 } else { 0x04 }];
    t.extend(address_field(from));
    t.push(0x00);
    t.push(match coding {
        Coding::Gsm7 => 0x00,
        Coding::Ucs2 => 0x08,
    });
    t.extend(SCTS);
    let header = header.unwrap_or(&[]);
    match coding {
        Coding::Gsm7 => {
            let mut w = BitWriter::default();
            for &o in header {
                w.push(o, 8);
            }
            // Fill bits up to the next septet boundary.
            let fill = (7 - (header.len() * 8) % 7) % 7;
            w.push(0, fill);
            for &u in units {
                w.push(u as u8, 7);
            }
            t.push(((header.len() * 8 + fill) / 7 + units.len()) as u8);
            t.extend(w.octets);
        }
        Coding::Ucs2 => {
            t.push((header.len() + units.len() * 2) as u8);
            t.extend(header);
            for u in units {
                t.extend(u.to_be_bytes());
            }
        }
    }
    let mut pdu = vec![0x07, 0x91, 0x13, 0x26, 0x04, 0x00, 0x00, 0xF0]; // SMSC +31624000000
    let length = t.len();
    pdu.extend(t);
    (to_hex(&pdu), length)
}

/// An SMS-STATUS-REPORT for the submission `reference` to `recipient`
/// with TP-ST `status`, SMSC address first, and its TPDU length.
pub fn encode_status_report(reference: u8, recipient: &str, status: u8) -> (String, usize) {
    let mut t = vec![0x06, reference];
    t.extend(address_field(recipient));
    t.extend(SCTS);
    t.extend(SCTS);
    t.push(status);
    let mut pdu = vec![0x00];
    let length = t.len();
    pdu.extend(t);
    (to_hex(&pdu), length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_submit_example() {
        let s = decode_submit("0011000B916407281553F80000AA0AE8329BFD4697D9EC37", 23).unwrap();
        assert_eq!(s.to, "+46708251358");
        assert_eq!(s.validity, Some(0xAA));
        assert_eq!(s.text, "hellohello");
        assert!(!s.status_report);
        assert_eq!(s.smsc, None);
    }

    #[test]
    fn the_classic_deliver_example_user_data() {
        // The user data of the classic SMS-DELIVER, from "hellohello".
        let (pdu, length) = deliver_pdu(
            "27838890001",
            Coding::Gsm7,
            &gsm7::encode("hellohello")
                .unwrap()
                .into_iter()
                .map(u16::from)
                .collect::<Vec<_>>(),
            None,
        );
        assert!(pdu.ends_with("0AE8329BFD4697D9EC37"), "{pdu}");
        assert!(pdu.contains("040B817238880900F10000"), "{pdu}");
        assert_eq!(pdu.len() / 2 - 8, length);
    }

    #[test]
    fn the_classic_status_report() {
        // 06 00 0B 91 0221815716F2 ... 00, with our time stamps.
        let (pdu, length) = encode_status_report(0, "+20121875612", 0);
        assert!(pdu.starts_with("0006000B910221815716F2"), "{pdu}");
        assert!(pdu.ends_with("00"));
        assert_eq!(length, 25);
    }

    #[test]
    fn alphanumeric_sender_and_long_text() {
        let parts = encode_deliver("Test", &"a".repeat(200), Coding::Gsm7, 9);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].0.contains("07D0D4F29C0E"));
        // First part: UDHI set, 160 septets (7 for the header).
        assert!(parts[0].0[16..].starts_with("44"), "{}", parts[0].0);
        assert!(parts[0]
            .0
            .contains(&format!("{}A0050003090201", to_hex(&SCTS))));
    }

    #[test]
    fn a_submit_with_a_wrong_length_is_refused() {
        assert!(decode_submit("0011000B916407281553F80000AA0AE8329BFD4697D9EC37", 22).is_err());
        assert!(decode_submit("zz", 1).is_err());
    }
}
