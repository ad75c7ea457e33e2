//! A GSM modem channel's settings, read from `smsbus.channel.config`
//! (README.md#gsm-modem-channels lists them). Unknown keys are refused,
//! so a typo is an error in channel_state, not a setting silently ignored.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    None,
    /// RTS/CTS.
    Hardware,
    /// XON/XOFF.
    Software,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GsmConfig {
    /// The serial device, e.g. `/dev/ttyUSB0` or a stable
    /// `/dev/serial/by-id/...` path.
    pub device: String,
    pub baud: u32,
    pub flow_control: FlowControl,
    /// The SIM's PIN, entered when the SIM asks for it.
    pub pin: Option<String>,
    /// An SMSC number to use instead of the one stored on the SIM.
    pub smsc: Option<String>,
    /// Ask for status reports when a message wants one.
    pub status_reports: bool,
    /// How often stored messages are listed even without an indication,
    /// and registration and signal are refreshed.
    pub poll_interval_s: u64,
    /// Commands sent after the standard start-up, each expected to answer
    /// OK (e.g. `AT^CURC=0` to quiet a Huawei stick).
    pub init: Vec<String>,
    /// Where received messages and reports are stored: "SM" (SIM), "ME"
    /// (modem) or "MT" (both).
    pub storage: String,
    /// Longest wait for an answer to a command.
    pub command_timeout_s: u64,
    /// Longest wait for `+CMGS` once a PDU is written: the network's
    /// answer can take tens of seconds.
    pub send_timeout_s: u64,
    /// The channel's own number, as the destination of received messages.
    pub number: Option<String>,
    /// How long a message refused for a temporary reason (network
    /// congestion, no service) waits before it is tried again.
    pub retry_delay_s: u64,
}

impl Default for GsmConfig {
    fn default() -> Self {
        GsmConfig {
            device: String::new(),
            baud: 115_200,
            flow_control: FlowControl::None,
            pin: None,
            smsc: None,
            status_reports: true,
            poll_interval_s: 30,
            init: Vec::new(),
            storage: "SM".into(),
            command_timeout_s: 10,
            send_timeout_s: 60,
            number: None,
            retry_delay_s: 30,
        }
    }
}

impl GsmConfig {
    pub fn parse(config: &serde_json::Value) -> anyhow::Result<GsmConfig> {
        let c: GsmConfig = crate::channels::config_json::read(config)
            .map_err(|e| anyhow::anyhow!("invalid GSM config: {e}"))?;
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("invalid GSM config: {what}"))
            }
        };
        check(!c.device.is_empty(), "device is required")?;
        check(c.baud > 0, "baud must be positive")?;
        check(
            c.pin.as_deref().is_none_or(|p| {
                (4..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
            }),
            "pin must be 4 to 8 digits",
        )?;
        check(
            c.smsc.as_deref().is_none_or(|s| {
                let digits = s.strip_prefix('+').unwrap_or(s);
                (3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            }),
            "smsc must be a number, + and 3 to 20 digits",
        )?;
        check(
            matches!(c.storage.as_str(), "SM" | "ME" | "MT"),
            "storage must be SM, ME or MT",
        )?;
        check(c.poll_interval_s > 0, "poll_interval_s must be positive")?;
        check(
            c.command_timeout_s > 0,
            "command_timeout_s must be positive",
        )?;
        check(c.send_timeout_s > 0, "send_timeout_s must be positive")?;
        check(
            c.init.iter().all(|cmd| {
                cmd.to_ascii_uppercase().starts_with("AT") && !cmd.contains(['\r', '\n', '\u{1A}'])
            }),
            "init commands must start with AT and be one line each",
        )?;
        Ok(c)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_s)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_s)
    }

    pub fn retry_delay(&self) -> Duration {
        Duration::from_secs(self.retry_delay_s)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_a_full_config() {
        let c = GsmConfig::parse(&json!({"device": "/dev/ttyUSB0"})).unwrap();
        assert_eq!(c.baud, 115_200);
        assert!(c.status_reports);
        assert_eq!(c.storage, "SM");
        let c = GsmConfig::parse(&json!({
            "device": "/dev/ttyUSB2", "baud": 9600, "flow_control": "hardware",
            "pin": "1234", "smsc": "+31624000000", "status_reports": false,
            "poll_interval_s": 5, "init": ["AT^CURC=0"], "storage": "ME",
            "command_timeout_s": 3, "send_timeout_s": 30, "number": "+31612345678"
        }))
        .unwrap();
        assert_eq!(c.flow_control, FlowControl::Hardware);
        assert_eq!(c.pin.as_deref(), Some("1234"));
    }

    #[test]
    fn mistakes_are_refused_by_name() {
        let err = |v| GsmConfig::parse(&v).unwrap_err().to_string();
        assert!(err(json!({})).contains("device is required"));
        assert!(err(json!({"device": "/dev/x", "bod": 9600})).contains("unknown key `bod`"));
        assert_eq!(
            err(json!({"device": "/dev/x", "pin": 4321})),
            "invalid GSM config: `pin` must be a string, not a number"
        );
        assert!(err(json!({"device": "/dev/x", "pin": "12a4"})).contains("pin"));
        assert!(err(json!({"device": "/dev/x", "smsc": "0800-SMSC"})).contains("smsc"));
        assert!(err(json!({"device": "/dev/x", "storage": "SR"})).contains("storage"));
        assert!(err(json!({"device": "/dev/x", "init": ["ATZ\rAT+CFUN=0"]})).contains("init"));
        let e = err(json!({"device": "/dev/x", "flow_control": "rts"}));
        assert!(e.contains("`flow_control` must be one of \"none\""), "{e}");
    }
}
