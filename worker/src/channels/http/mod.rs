//! Channels that send through REST providers (`kind = 'http'`), built in
//! steps; so far the pieces that read what providers send and write what they
//! are sent:
//!
//! - [`signatures`]: Twilio's `X-Twilio-Signature` and Vonage's `sig`,
//!   checked against the vectors the providers publish.
//! - [`extract`]: values found in providers' answers and webhooks by JSON
//!   path or regular expression, bounded on hostile input.
//! - [`template`]: the URL, headers and body of a request, with `${name}`
//!   values escaped for their place (URL, form, JSON, XML).
//! - [`response`]: what an answer to a send means (accepted with the
//!   parts' ids, refused for good or for now, or not known).
//! - [`reports`]: the delivery reports a provider posts, each with its
//!   part's id and what its status word means.

pub mod extract;
pub mod reports;
pub mod response;
pub mod signatures;
pub mod template;
