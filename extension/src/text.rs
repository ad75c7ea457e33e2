//! Encoding detection and segment counting as SQL functions.

use pgrx::prelude::*;
use smsbus_core::text::{self, Encoding};

use crate::{refuse, settings};

fn parse_encoding(name: Option<&str>, body: &str) -> Encoding {
    match name {
        None => text::detect(body),
        Some(n) => n
            .parse()
            .unwrap_or_else(|e: text::TextError| refuse(e.to_string())),
    }
}

/// The encoding smsbus picks for `body`: `gsm7` when every character is in
/// the GSM 03.38 alphabet or its extension table, else `ucs2`.
#[pg_extern(immutable, strict, parallel_safe)]
fn sms_encoding(body: &str) -> &'static str {
    text::detect(body).as_str()
}

/// How many SMS `body` needs in `encoding` (null: the one `sms_encoding`
/// picks). Refuses an unknown encoding or a body the encoding cannot carry.
#[pg_extern(immutable, parallel_safe)]
fn sms_segments(body: Option<&str>, encoding: default!(Option<&str>, "NULL")) -> Option<i32> {
    let body = body?;
    let encoding = parse_encoding(encoding, body);
    Some(count(body, encoding))
}

fn count(body: &str, encoding: Encoding) -> i32 {
    match text::segments(body, encoding) {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => refuse(e.to_string()),
    }
}

/// The encoding to store for an outbound message: the one asked for
/// (validated) or the detected one.
#[pg_extern(immutable, parallel_safe, name = "_encoding_for")]
fn encoding_for(body: &str, encoding: Option<&str>) -> &'static str {
    parse_encoding(encoding, body).as_str()
}

/// Segments of an outbound message, refused above `smsbus.max_segments`.
#[pg_extern(stable, parallel_safe, name = "_outbound_segments")]
fn outbound_segments(body: &str, encoding: &str) -> i32 {
    let encoding = parse_encoding(Some(encoding), body);
    let n = count(body, encoding);
    let max = settings::MAX_SEGMENTS.get();
    if n > max {
        refuse(format!(
            "body needs {n} {encoding} segments, more than smsbus.max_segments ({max})"
        ));
    }
    n
}

/// Segments of a received message: never refused, whatever the peer sent.
#[pg_extern(immutable, strict, parallel_safe, name = "_received_segments")]
fn received_segments(body: &str, encoding: &str) -> i32 {
    let encoding = encoding.parse().unwrap_or(Encoding::Ucs2);
    text::segments(body, encoding)
        .or_else(|_| text::segments(body, Encoding::Ucs2))
        .map_or(1, |n| i32::try_from(n).unwrap_or(i32::MAX))
}
