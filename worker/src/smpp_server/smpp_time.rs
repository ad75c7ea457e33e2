//! SMPP's time format (SMPP 3.4 §7.1.1, 5.0 §4.7.23.4) for
//! `schedule_delivery_time` and `validity_period`: `YYMMDDhhmmsstnnp`,
//! absolute (`p` is `+` or `-`: `nn` quarter hours from UTC, `t` tenths of
//! a second) or relative to now (`p` is `R`: the fields are an amount of
//! time). The database does the calendar arithmetic: a time becomes the
//! text of a PostgreSQL `timestamptz` or, relative, of an `interval`
//! after a `+` (what [`crate::smpp_server::accept`] hands to SQL).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmppTime {
    Absolute {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        tenths: u8,
        /// Quarter hours east of UTC (negative: west).
        offset_quarters: i8,
    },
    Relative {
        years: u8,
        months: u8,
        days: u8,
        hours: u8,
        minutes: u8,
        seconds: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

/// Reads a time field (with or without its terminating NUL); empty is none.
pub fn parse(field: &[u8]) -> Result<Option<SmppTime>, TimeError> {
    let field = field.strip_suffix(&[0]).unwrap_or(field);
    if field.is_empty() {
        return Ok(None);
    }
    if field.len() != 16 {
        return Err(TimeError(format!(
            "{} characters where SMPP's time format has 16",
            field.len()
        )));
    }
    let digits = &field[..13];
    if !digits.iter().all(u8::is_ascii_digit) || !field[13..15].iter().all(u8::is_ascii_digit) {
        return Err(TimeError(
            "not digits where SMPP's time format has them".into(),
        ));
    }
    let two = |i: usize| (field[i] - b'0') * 10 + (field[i + 1] - b'0');
    let (yy, mm, dd, hh, mi, ss) = (two(0), two(2), two(4), two(6), two(8), two(10));
    let tenths = field[12] - b'0';
    let nn = two(13);
    match field[15] {
        b'R' => Ok(Some(SmppTime::Relative {
            years: yy,
            months: mm,
            days: dd,
            hours: hh,
            minutes: mi,
            seconds: ss,
        })),
        sign @ (b'+' | b'-') => {
            let year = 2000 + u16::from(yy);
            if !(1..=12).contains(&mm) || dd == 0 || dd > days_in_month(year, mm) {
                return Err(TimeError(format!(
                    "no such date: 20{yy:02}-{mm:02}-{dd:02}"
                )));
            }
            if hh > 23 || mi > 59 || ss > 59 {
                return Err(TimeError(format!(
                    "no such time of day: {hh:02}:{mi:02}:{ss:02}"
                )));
            }
            if nn > 48 {
                return Err(TimeError(format!(
                    "{nn} quarter hours from UTC is more than 12 hours"
                )));
            }
            let offset = nn as i8;
            Ok(Some(SmppTime::Absolute {
                year,
                month: mm,
                day: dd,
                hour: hh,
                minute: mi,
                second: ss,
                tenths,
                offset_quarters: if sign == b'-' { -offset } else { offset },
            }))
        }
        other => Err(TimeError(format!(
            "the last character is {:?}, not +, - or R",
            char::from(other)
        ))),
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The SQL text: a `timestamptz` literal, or `+` and an `interval`.
impl fmt::Display for SmppTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SmppTime::Absolute {
                year,
                month,
                day,
                hour,
                minute,
                second,
                tenths,
                offset_quarters,
            } => {
                let sign = if offset_quarters < 0 { '-' } else { '+' };
                let minutes = i32::from(offset_quarters).abs() * 15;
                write!(
                    f,
                    "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{tenths}{sign}{:02}:{:02}",
                    minutes / 60,
                    minutes % 60
                )
            }
            SmppTime::Relative {
                years,
                months,
                days,
                hours,
                minutes,
                seconds,
            } => write!(
                f,
                "+{years} years {months} mons {days} days {hours} hours {minutes} mins {seconds} secs"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(field: &str) -> String {
        parse(field.as_bytes()).unwrap().unwrap().to_string()
    }

    #[test]
    fn absolute_times_keep_their_offset_from_utc() {
        // SMPP 3.4 §7.1.1.1: nn is in quarter hours; "04" is one hour.
        assert_eq!(sql("261202193000104+"), "2026-12-02 19:30:00.1+01:00");
        assert_eq!(sql("260101000000022-"), "2026-01-01 00:00:00.0-05:30");
        assert_eq!(sql("240229235959900+"), "2024-02-29 23:59:59.9+00:00");
    }

    #[test]
    fn relative_times_are_intervals_after_now() {
        // SMPP 3.4 §7.1.1.2's example: 2 days, 10 hours, 5 minutes, 23 s.
        assert_eq!(
            sql("000002100523000R"),
            "+0 years 0 mons 2 days 10 hours 5 mins 23 secs"
        );
    }

    #[test]
    fn empty_is_none_and_nonsense_is_refused() {
        assert_eq!(parse(b"").unwrap(), None);
        for bad in [
            "26120219300010+",
            "2612021930001040+",
            "261302193000104+",
            "250229193000104+",
            "261202243000104+",
            "2612021930001049",
            "26120219300010X+",
            "261202193000152+",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad} was accepted");
        }
    }
}
