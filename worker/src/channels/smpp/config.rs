//! An SMPP channel's settings, read from `smsbus.channel.config`
//! (README.md#smpp-channels lists them). Unknown keys are refused, so a
//! typo is an error in channel_state, not a setting silently ignored.

use std::time::Duration;

use serde::Deserialize;
use smsbus_core::text::Encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    Transceiver,
    Transmitter,
    Receiver,
    /// A transmitter and a receiver session side by side.
    #[serde(rename = "tx+rx")]
    TxRx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMessage {
    /// Concatenation user data header (8-bit reference).
    Udh,
    /// Concatenation user data header with a 16-bit reference.
    Udh16,
    /// sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs.
    Sar,
    /// The whole text in one message_payload TLV.
    Payload,
}

/// How message ids in submit_sm_resp and in receipts are written
/// (Kannel's msg-id-type): the provider's two ids often differ in base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DlrIdFormat {
    /// Exactly as given; a receipt whose id is not found is tried again
    /// with the id converted between decimal and hexadecimal.
    Auto,
    /// Exactly as given.
    String,
    /// Both decimal.
    Dec,
    /// Both hexadecimal.
    Hex,
    /// submit_sm_resp hexadecimal, receipt decimal.
    HexDec,
    /// submit_sm_resp decimal, receipt hexadecimal.
    DecHex,
}

/// Which parts' receipts decide a message sent in parts, for providers
/// that report only some of them (read by `smsbus._apply_reports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportParts {
    /// Delivered when every part is; not delivered when any part is not.
    All,
    /// The first part's receipt decides.
    First,
    /// The last part's receipt decides.
    Last,
    /// The first final receipt of any part decides.
    Any,
}

/// What to do with a message whose submit_sm got no answer: it may or may
/// not have been accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownOutcome {
    /// Queue it again (it may reach the handset twice).
    Retry,
    /// Fail it (it may not have been sent at all).
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// PEM file of the CA that signs the provider's certificate (default:
    /// the system's roots).
    pub tls_ca: Option<String>,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// "3.4" or "5.0".
    pub interface_version: String,
    pub address_range: String,
    pub bind: BindMode,
    pub sessions: u32,
    pub window: u32,
    /// Messages per second across the channel (0: unlimited).
    pub throughput: f64,
    pub enquire_link_s: f64,
    pub response_timeout_s: f64,
    pub connect_timeout_s: f64,
    pub reconnect_min_s: f64,
    pub reconnect_max_s: f64,
    /// "gsm7" (data_coding 0), or "latin1" to send GSM-alphabet text as
    /// Latin-1 (data_coding 3) for providers that ask for it.
    pub default_coding: String,
    pub long_message: LongMessage,
    pub dlr_id_format: DlrIdFormat,
    pub on_unknown_outcome: UnknownOutcome,
    /// Sender used when a message has none.
    pub source_addr: Option<String>,
    /// Seconds a sent message waits for its receipt (read by maintenance).
    pub report_timeout_s: Option<f64>,
    pub report_parts: ReportParts,
    pub service_type: String,
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            host: String::new(),
            port: 2775,
            tls: false,
            tls_ca: None,
            system_id: String::new(),
            password: String::new(),
            system_type: String::new(),
            interface_version: "3.4".into(),
            address_range: String::new(),
            bind: BindMode::Transceiver,
            sessions: 1,
            window: 10,
            throughput: 0.0,
            enquire_link_s: 30.0,
            response_timeout_s: 10.0,
            connect_timeout_s: 10.0,
            reconnect_min_s: 1.0,
            reconnect_max_s: 60.0,
            default_coding: "gsm7".into(),
            long_message: LongMessage::Udh,
            dlr_id_format: DlrIdFormat::Auto,
            on_unknown_outcome: UnknownOutcome::Retry,
            source_addr: None,
            report_timeout_s: None,
            report_parts: ReportParts::All,
            service_type: String::new(),
        }
    }
}

impl SmppConfig {
    /// Reads and checks a channel's config; the error says which setting is
    /// wrong.
    pub fn parse(config: &serde_json::Value) -> anyhow::Result<SmppConfig> {
        let c: SmppConfig = crate::channels::config_json::read(config)
            .map_err(|e| anyhow::anyhow!("invalid SMPP config: {e}"))?;
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("invalid SMPP config: {what}"))
            }
        };
        check(!c.host.is_empty(), "host is required")?;
        check(c.port != 0, "port must not be 0")?;
        check(
            !c.system_id.is_empty() && c.system_id.len() <= 15 && c.system_id.is_ascii(),
            "system_id must be 1 to 15 ASCII characters",
        )?;
        check(
            c.password.len() <= 8 && c.password.is_ascii(),
            "password must be at most 8 ASCII characters (SMPP 3.4)",
        )?;
        check(
            c.system_type.len() <= 12 && c.system_type.is_ascii(),
            "system_type must be at most 12 ASCII characters",
        )?;
        check(
            c.address_range.len() <= 40 && c.address_range.is_ascii(),
            "address_range must be at most 40 ASCII characters",
        )?;
        check(
            c.service_type.len() <= 5 && c.service_type.is_ascii(),
            "service_type must be at most 5 ASCII characters",
        )?;
        check(
            matches!(c.interface_version.as_str(), "3.3" | "3.4" | "5.0"),
            "interface_version must be \"3.3\", \"3.4\" or \"5.0\"",
        )?;
        check((1..=64).contains(&c.sessions), "sessions must be 1 to 64")?;
        check((1..=1000).contains(&c.window), "window must be 1 to 1000")?;
        check(
            c.throughput >= 0.0 && c.throughput.is_finite(),
            "throughput must be 0 (unlimited) or more",
        )?;
        for (name, value) in [
            ("enquire_link_s", c.enquire_link_s),
            ("response_timeout_s", c.response_timeout_s),
            ("connect_timeout_s", c.connect_timeout_s),
            ("reconnect_min_s", c.reconnect_min_s),
            ("reconnect_max_s", c.reconnect_max_s),
        ] {
            check(
                value.is_finite() && (0.01..=86_400.0).contains(&value),
                &format!("{name} must be between 0.01 and 86400 seconds"),
            )?;
        }
        check(
            c.reconnect_min_s <= c.reconnect_max_s,
            "reconnect_min_s must not exceed reconnect_max_s",
        )?;
        check(
            matches!(c.default_coding.as_str(), "gsm7" | "latin1"),
            "default_coding must be \"gsm7\" or \"latin1\"",
        )?;
        Ok(c)
    }

    pub fn interface_version_byte(&self) -> u8 {
        match self.interface_version.as_str() {
            "3.3" => 0x33,
            "5.0" => 0x50,
            _ => 0x34,
        }
    }

    /// The encoding a GSM-alphabet message goes out in.
    pub fn gsm_text_encoding(&self) -> Encoding {
        if self.default_coding == "latin1" {
            Encoding::Latin1
        } else {
            Encoding::Gsm7
        }
    }

    pub fn enquire_link(&self) -> Duration {
        Duration::from_secs_f64(self.enquire_link_s)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.response_timeout_s)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_s)
    }

    /// The sessions to open: (session number, bind mode of that session).
    pub fn session_binds(&self) -> Vec<BindMode> {
        let mut binds = Vec::new();
        for _ in 0..self.sessions {
            match self.bind {
                BindMode::TxRx => {
                    binds.push(BindMode::Transmitter);
                    binds.push(BindMode::Receiver);
                }
                mode => binds.push(mode),
            }
        }
        binds
    }

    /// Submit_sm PDUs that may be unanswered at once across the channel.
    pub fn channel_window(&self) -> usize {
        let transmitting = self
            .session_binds()
            .iter()
            .filter(|b| **b != BindMode::Receiver)
            .count();
        transmitting * self.window as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_required_settings() {
        let c = SmppConfig::parse(&json!({"host": "smsc", "system_id": "me"})).unwrap();
        assert_eq!(c.port, 2775);
        assert_eq!(c.bind, BindMode::Transceiver);
        assert_eq!(c.channel_window(), 10);
        let e = SmppConfig::parse(&json!({"system_id": "me"})).unwrap_err();
        assert!(e.to_string().contains("host is required"), "{e}");
    }

    #[test]
    fn refuses_typos_and_bad_values() {
        let e =
            SmppConfig::parse(&json!({"host": "h", "system_id": "me", "windwo": 5})).unwrap_err();
        assert!(e.to_string().contains("unknown key `windwo`"), "{e}");
        let e = SmppConfig::parse(&json!({"host": "h", "system_id": "me", "bind": "both"}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid SMPP config: `bind` must be one of \"transceiver\", \"transmitter\", \"receiver\", \"tx+rx\""
        );
        let e = SmppConfig::parse(&json!({"host": "h", "system_id": "me", "password": 4321}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid SMPP config: `password` must be a string, not a number"
        );
        let e =
            SmppConfig::parse(&json!({"host": "h", "system_id": "me", "password": "123456789"}))
                .unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn tx_rx_opens_pairs() {
        let c = SmppConfig::parse(
            &json!({"host": "h", "system_id": "me", "bind": "tx+rx", "sessions": 2, "window": 5}),
        )
        .unwrap();
        assert_eq!(c.session_binds().len(), 4);
        assert_eq!(c.channel_window(), 10);
    }
}
