//! Channels that send through REST providers (`kind = 'http'`), built in
//! steps; so far the pieces that read what providers send:
//!
//! - [`signatures`]: Twilio's `X-Twilio-Signature` and Vonage's `sig`,
//!   checked against the vectors the providers publish.
//! - [`extract`]: values found in providers' answers and webhooks by JSON
//!   path or regular expression, bounded on hostile input.

pub mod extract;
pub mod signatures;
