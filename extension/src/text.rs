//! Encoding detection and segment counting as SQL functions.

use pgrx::prelude::*;
use smsbus_core::text::{self, Encoding};

use crate::refuse;

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
    let encoding = match encoding {
        None => text::detect(body),
        Some(name) => name
            .parse::<Encoding>()
            .unwrap_or_else(|e| refuse(e.to_string())),
    };
    let n = text::segments(body, encoding).unwrap_or_else(|e| refuse(e.to_string()));
    Some(i32::try_from(n).unwrap_or(i32::MAX))
}
