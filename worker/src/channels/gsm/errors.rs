//! What a modem's `+CMS ERROR: <n>` means for a message (3GPP TS 27.005
//! §3.2.5; 0–127 are the network's RP cause values of TS 24.011 Annex E,
//! 128–255 the TP-FCS values of TS 23.040 §9.2.3.22): try again later, or
//! fail for good.

/// Whether a submission refused with `code` may succeed later.
pub fn is_temporary(code: u16) -> bool {
    matches!(
        code,
        // Network side: destination out of service, network out of
        // order, temporary failure, congestion, resources unavailable,
        // invalid transfer reference, protocol error, interworking.
        27 | 38 | 41 | 42 | 47 | 81 | 111 | 127
        // Memory capacity exceeded at the recipient.
        | 22 | 0xD0..=0xD3
        // The modem itself: ME failure, SMS service reserved, the SIM
        // (absent, locked, failing, busy), memory, SMSC address unknown,
        // no network service, network timeout, unknown.
        | 300 | 301 | 310..=318 | 320 | 322 | 330..=332 | 500
    ) || code >= 512
}

/// The meaning of `code`, for `last_error`.
pub fn meaning(code: u16) -> &'static str {
    match code {
        1 => "unassigned number",
        8 => "operator determined barring",
        10 => "call barred",
        21 => "short message transfer rejected",
        22 => "memory capacity exceeded",
        27 => "destination out of service",
        28 => "unidentified subscriber",
        29 => "facility rejected",
        30 => "unknown subscriber",
        38 => "network out of order",
        41 => "temporary failure",
        42 => "congestion",
        47 => "resources unavailable",
        50 => "requested facility not subscribed",
        69 => "requested facility not implemented",
        81 => "invalid short message transfer reference",
        95 => "invalid message",
        96 => "invalid mandatory information",
        97 => "message type non-existent",
        98 => "message not compatible with the protocol state",
        99 => "information element non-existent",
        111 => "protocol error",
        127 => "interworking, unspecified",
        300 => "ME failure",
        301 => "SMS service of ME reserved",
        302 => "operation not allowed",
        303 => "operation not supported",
        304 => "invalid PDU mode parameter",
        305 => "invalid text mode parameter",
        310 => "SIM not inserted",
        311 => "SIM PIN required",
        312 => "PH-SIM PIN required",
        313 => "SIM failure",
        314 => "SIM busy",
        315 => "SIM wrong",
        316 => "SIM PUK required",
        320 => "memory failure",
        321 => "invalid memory index",
        322 => "memory full",
        330 => "SMSC address unknown",
        331 => "no network service",
        332 => "network timeout",
        500 => "unknown error",
        128..=255 => "refused by the service centre (TP-FCS)",
        512.. => "manufacturer specific",
        _ => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_trouble_is_retried_and_bad_numbers_fail() {
        assert!(is_temporary(38));
        assert!(is_temporary(42));
        assert!(is_temporary(331));
        assert!(is_temporary(515));
        assert!(!is_temporary(1));
        assert!(!is_temporary(21));
        assert!(!is_temporary(304));
        assert_eq!(meaning(38), "network out of order");
        assert_eq!(meaning(0xC1), "refused by the service centre (TP-FCS)");
    }
}
