//! What the simulator does: the ids it hands out, the receipts it sends and
//! the faults it injects. Counters ("every Nth") run over all submit_sm
//! PDUs the simulator received, across sessions.

use std::time::Duration;

/// How message ids are written in submit_sm_resp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdFormat {
    /// Lower-case hexadecimal, as many SMSCs do.
    #[default]
    Hex,
    Decimal,
}

/// The final state a receipt reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    Delivered,
    Undeliverable,
    Expired,
    Rejected,
}

impl ReportOutcome {
    /// The `stat:` word of the receipt text (SMPP 3.4 Appendix B).
    pub fn stat(self) -> &'static str {
        match self {
            ReportOutcome::Delivered => "DELIVRD",
            ReportOutcome::Undeliverable => "UNDELIV",
            ReportOutcome::Expired => "EXPIRED",
            ReportOutcome::Rejected => "REJECTD",
        }
    }

    /// The message_state TLV value (SMPP 3.4 §5.2.28).
    pub fn message_state(self) -> u8 {
        match self {
            ReportOutcome::Delivered => 2,
            ReportOutcome::Expired => 3,
            ReportOutcome::Undeliverable => 5,
            ReportOutcome::Rejected => 8,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Behaviour {
    pub id_format: IdFormat,
    /// Write the receipt text's `id:` in decimal whatever `id_format` is
    /// (the classic hex-in-response, decimal-in-receipt mismatch).
    pub report_text_id_decimal: bool,
    /// Add receipted_message_id and message_state TLVs to receipts.
    pub report_tlvs: bool,
    /// Delay between accepting a submit_sm and sending its receipt.
    pub report_delay: Duration,
    /// Send the receipt before the submit_sm_resp.
    pub report_before_response: bool,
    /// Every Nth part's receipt says UNDELIV (0: never).
    pub undeliverable_every: u64,
    /// Send an ENROUTE intermediate receipt before the final one.
    pub intermediate_reports: bool,
    /// Every Nth submit_sm is answered ESME_RTHROTTLED (0x58).
    pub throttle_every: u64,
    /// Every Nth submit_sm is answered ESME_RMSGQFUL (0x14).
    pub queue_full_every: u64,
    /// Every Nth submit_sm is refused with ESME_RINVDSTADR (0x0B), a
    /// permanent error.
    pub reject_every: u64,
    /// Submit_sm to this destination is refused with ESME_RINVDSTADR.
    pub reject_destination: Option<String>,
    /// Every Nth submit_sm is never answered.
    pub drop_response_every: u64,
    /// Delay before each submit_sm_resp.
    pub response_delay: Duration,
    /// After every Nth submit_sm the connection is closed, unanswered.
    pub drop_connection_every: u64,
    /// Answer enquire_link (false: a dead link).
    pub answer_enquire_link: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            id_format: IdFormat::Hex,
            report_text_id_decimal: false,
            report_tlvs: true,
            report_delay: Duration::from_millis(10),
            report_before_response: false,
            undeliverable_every: 0,
            intermediate_reports: false,
            throttle_every: 0,
            queue_full_every: 0,
            reject_every: 0,
            reject_destination: None,
            drop_response_every: 0,
            response_delay: Duration::ZERO,
            drop_connection_every: 0,
            answer_enquire_link: true,
        }
    }
}

/// Whether the `n`th event (1-based) is one of every `every`.
pub(crate) fn every(n: u64, every: u64) -> bool {
    every > 0 && n.is_multiple_of(every)
}
