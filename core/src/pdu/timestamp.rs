//! Service-centre time stamps (TP-SCTS, TP-DT; TS 23.040 §9.2.3.11): seven
//! semi-octet pairs — year, month, day, hour, minute, second, time zone in
//! quarter hours, the zone's sign in bit 3 of its first (low) nibble.

use std::fmt;

use super::PduError;

/// A time stamp as the service centre wrote it, in its local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// Offset from UTC in minutes.
    pub offset_minutes: i16,
}

/// Two semi-octet digits, low nibble first.
fn swapped(octet: u8) -> Result<u8, PduError> {
    let (low, high) = (octet & 0x0F, octet >> 4);
    if low > 9 || high > 9 {
        return Err(PduError::Invalid(format!(
            "a time stamp digit pair {octet:02X}"
        )));
    }
    Ok(low * 10 + high)
}

impl Timestamp {
    pub(crate) fn decode(octets: &[u8]) -> Result<Timestamp, PduError> {
        let [y, mo, d, h, mi, s, tz] = octets else {
            return Err(PduError::Truncated("a time stamp"));
        };
        let two_digit_year = swapped(*y)?;
        // Two digits only: '99 is 1999 as in the examples of the era; the
        // rest is this century.
        let year = if two_digit_year >= 80 { 1900 } else { 2000 } + u16::from(two_digit_year);
        let negative = tz & 0x08 != 0;
        let quarters = swapped(tz & !0x08)?;
        let stamp = Timestamp {
            year,
            month: swapped(*mo)?,
            day: swapped(*d)?,
            hour: swapped(*h)?,
            minute: swapped(*mi)?,
            second: swapped(*s)?,
            offset_minutes: i16::from(quarters) * 15 * if negative { -1 } else { 1 },
        };
        let valid = (1..=12).contains(&stamp.month)
            && (1..=31).contains(&stamp.day)
            && stamp.hour < 24
            && stamp.minute < 60
            && stamp.second < 60
            && quarters <= 4 * 14;
        if !valid {
            return Err(PduError::Invalid(format!(
                "an impossible time stamp {stamp}"
            )));
        }
        Ok(stamp)
    }

    /// The seven octets of this time stamp.
    pub fn encode(&self) -> [u8; 7] {
        let pair = |v: u8| (v % 10) << 4 | (v / 10);
        let quarters = (self.offset_minutes.unsigned_abs() / 15) as u8;
        let sign = if self.offset_minutes < 0 { 0x08 } else { 0 };
        [
            pair((self.year % 100) as u8),
            pair(self.month),
            pair(self.day),
            pair(self.hour),
            pair(self.minute),
            pair(self.second),
            pair(quarters) | sign,
        ]
    }
}

/// RFC 3339, which PostgreSQL's timestamptz input reads.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let offset = self.offset_minutes.unsigned_abs();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            offset / 60,
            offset % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::hex;

    #[test]
    fn the_classic_deliver_time_stamp() {
        // 99 30 92 51 61 95 80: 1999-03-29 15:16:59, 8 quarters east.
        let stamp = Timestamp::decode(&hex::decode("99309251619580").unwrap()).unwrap();
        assert_eq!(stamp.to_string(), "1999-03-29T15:16:59+02:00");
        assert_eq!(hex::encode(&stamp.encode()), "99309251619580");
    }

    #[test]
    fn a_negative_zone_sets_bit_three() {
        // UTC-05:00 is 20 quarters: digits "20" swapped is 0x02, sign 0x08.
        let stamp = Timestamp::decode(&hex::decode("42117091857402").unwrap()).unwrap();
        assert_eq!(stamp.to_string(), "2024-11-07T19:58:47+05:00");
        let stamp = Timestamp::decode(&hex::decode("4211709185740A").unwrap()).unwrap();
        assert_eq!(stamp.to_string(), "2024-11-07T19:58:47-05:00");
        assert_eq!(hex::encode(&stamp.encode()), "4211709185740A");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Timestamp::decode(&hex::decode("9930925161").unwrap()).is_err());
        assert!(Timestamp::decode(&hex::decode("993092516195FF").unwrap()).is_err());
        // Month 13.
        assert!(Timestamp::decode(&hex::decode("99319251619580").unwrap()).is_err());
    }
}
