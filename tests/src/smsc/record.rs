//! What the simulator received: every accepted submit_sm part, and the
//! messages they make once reassembled.

use std::collections::HashMap;
use std::time::Instant;

use super::text::ConcatInfo;

/// One accepted submit_sm.
#[derive(Clone, Debug)]
pub struct SubmittedPart {
    /// When the submit_sm was read.
    pub at: Instant,
    pub session: u64,
    pub message_id: String,
    pub source: String,
    pub source_ton: u8,
    pub source_npi: u8,
    pub destination: String,
    pub dest_ton: u8,
    pub dest_npi: u8,
    pub esm_class: u8,
    pub priority: u8,
    pub registered_delivery: u8,
    pub validity_period: String,
    pub data_coding: u8,
    pub text: String,
    pub concat: Option<ConcatInfo>,
    /// "single", "udh8", "udh16", "sar" or "payload".
    pub how: &'static str,
    /// The user data header as it came (UDHL first); empty without UDHI.
    pub udh: Vec<u8>,
}

/// A complete message: one part, or every part of a concatenated one.
#[derive(Clone, Debug)]
pub struct Received {
    pub source: String,
    pub destination: String,
    pub text: String,
    pub parts: usize,
    pub data_coding: u8,
    pub message_ids: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Record {
    pub parts: Vec<SubmittedPart>,
    pub messages: Vec<Received>,
    /// Parts of concatenated messages still waiting for their siblings,
    /// by (source, destination, reference).
    incomplete: HashMap<(String, String, u16), Vec<SubmittedPart>>,
}

impl Record {
    pub fn add(&mut self, part: SubmittedPart) {
        self.parts.push(part.clone());
        let Some(info) = part.concat else {
            self.messages.push(Received {
                source: part.source,
                destination: part.destination,
                text: part.text,
                parts: 1,
                data_coding: part.data_coding,
                message_ids: vec![part.message_id],
            });
            return;
        };
        let key = (
            part.source.clone(),
            part.destination.clone(),
            info.reference,
        );
        let siblings = self.incomplete.entry(key.clone()).or_default();
        // A part sent twice (a retry after a lost response) counts once.
        siblings.retain(|p| p.concat.map(|c| c.seq) != Some(info.seq));
        siblings.push(part);
        if siblings.len() == usize::from(info.total) {
            let mut parts = self.incomplete.remove(&key).unwrap_or_default();
            parts.sort_by_key(|p| p.concat.map(|c| c.seq));
            self.messages.push(Received {
                source: key.0,
                destination: key.1,
                text: parts.iter().map(|p| p.text.as_str()).collect(),
                parts: parts.len(),
                data_coding: parts[0].data_coding,
                message_ids: parts.into_iter().map(|p| p.message_id).collect(),
            });
        }
    }
}
