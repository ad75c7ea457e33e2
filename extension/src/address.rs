//! Address normalisation and TON/NPI as SQL functions.

use pgrx::prelude::*;
use smsbus_core::address;

use crate::refuse;

/// `to_address` as stored: validated and normalised (`+` international,
/// national digits or a short code).
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_destination")]
fn normalize_destination(raw: &str) -> String {
    address::destination(raw)
        .unwrap_or_else(|e| refuse(e.to_string()))
        .text
}

/// `from_address` as stored: a normalised number or an alphanumeric sender.
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_sender")]
fn normalize_sender(raw: &str) -> String {
    address::sender(raw)
        .unwrap_or_else(|e| refuse(e.to_string()))
        .text
}

/// SMPP type of number of a stored address.
#[pg_extern(immutable, strict, parallel_safe, name = "_address_ton")]
fn address_ton(addr: &str) -> i16 {
    address::classify_received(addr).ton().into()
}

/// SMPP numbering plan indicator of a stored address.
#[pg_extern(immutable, strict, parallel_safe, name = "_address_npi")]
fn address_npi(addr: &str) -> i16 {
    address::classify_received(addr).npi().into()
}
