//! # smsbus-core
//!
//! The parts of smsbus that are plain Rust and shared by the PostgreSQL
//! extension and the worker:
//!
//! - [`actor`]: how a worker names itself in its connections'
//!   `application_name`, so the trace says which worker made a change.
//! - [`gsm7`]: the GSM 03.38 default alphabet and its extension table.
//! - [`text`]: choosing an encoding for a body and counting the segments it
//!   needs (160/153 septets, 70/67 UCS-2 units, 140/134 octets), never
//!   splitting an escape pair or a surrogate pair.
//! - [`address`]: normalising destination and sender addresses and deriving
//!   their SMPP/TP type of number and numbering plan.
//! - [`status`]: the message state machine (statuses and legal transitions)
//!   and its diagram ([`status::mermaid`], drawn in docs/ARCHITECTURE.md).
//! - [`pdu`]: the GSM modem channel's SMS PDUs (SMS-SUBMIT out,
//!   SMS-DELIVER and SMS-STATUS-REPORT in), never trusting a device.
//! - [`excerpt`]: outside input quoted in errors, cut short.
//! - [`owner_sql`]: the statements the extension runs with its owner's
//!   rights, every name in them qualified (and the check that says so).
#![forbid(unsafe_code)]

pub mod actor;
pub mod address;
pub mod excerpt;
pub mod gsm7;
pub mod owner_sql;
pub mod pdu;
pub mod status;
pub mod text;
