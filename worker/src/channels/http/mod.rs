//! Channels that send through REST providers (`kind = 'http'`), built in
//! steps; so far what their webhooks need before anything is stored:
//!
//! - [`signatures`]: Twilio's `X-Twilio-Signature` and Vonage's `sig`,
//!   checked against the vectors the providers publish.

pub mod signatures;
