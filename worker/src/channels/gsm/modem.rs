//! One modem behind its AT port: start-up, sending a message, and reading
//! (then deleting) what it stored.

use std::time::{Duration, SystemTime};

use serde_json::json;
use smsbus_core::address;
use smsbus_core::pdu::incoming::{self, Content, Incoming, ReportOutcome};
use smsbus_core::pdu::submit::{self, SubmitOptions};
use tokio_serial::SerialStream;

use super::at::{AtError, AtPort, Unsolicited};
use super::config::GsmConfig;
use super::errors;
use crate::channels::inbox::{Inbound, Inbox, InboxError, Part, Report};
use crate::channels::outbox::Outcome;
use crate::channels::state::Count;
use crate::channels::{ChannelContext, OutMessage};

/// Status reports are matched on TP-MR and the recipient's last digits
/// (an SMSC may give the number back in another format).
const RECIPIENT_DIGITS: usize = 9;

/// How start-up ended short of a fault worth retrying.
pub enum StartUp {
    Ready,
    /// The SIM wants something only the operator can give (a PIN that
    /// was refused or not configured, a PUK).
    Refused(String),
}

pub struct Modem {
    port: AtPort<SerialStream>,
    config: GsmConfig,
    ctx: ChannelContext,
}

/// The reference of a part: its TP-MR and the recipient's last digits.
pub fn part_reference(message_reference: u8, recipient: &str) -> String {
    let digits: String = recipient.chars().filter(char::is_ascii_digit).collect();
    let tail = if digits.is_empty() {
        recipient.to_owned()
    } else {
        digits[digits.len().saturating_sub(RECIPIENT_DIGITS)..].to_owned()
    };
    format!("{message_reference}:{tail}")
}

impl Modem {
    pub fn new(port: SerialStream, config: GsmConfig, ctx: ChannelContext) -> Modem {
        Modem {
            port: AtPort::new(port),
            config,
            ctx,
        }
    }

    pub fn config(&self) -> &GsmConfig {
        &self.config
    }

    async fn command(&mut self, command: &str) -> Result<Vec<String>, AtError> {
        let timeout = self.config.command_timeout();
        self.port.command(command, timeout).await
    }

    /// Brings the modem to PDU mode with indications on.
    pub async fn start_up(&mut self) -> anyhow::Result<StartUp> {
        // Leave a PDU prompt a previous run may have left open, then wait
        // for the modem to answer at all.
        let mut alive = false;
        for _ in 0..3 {
            self.port.write_raw(b"\x1B\r").await?;
            self.port.drain(Duration::from_millis(300)).await?;
            if self
                .port
                .command("AT", Duration::from_secs(2))
                .await
                .is_ok()
            {
                alive = true;
                break;
            }
        }
        anyhow::ensure!(
            alive,
            "the modem does not answer AT on {}",
            self.config.device
        );
        // Back to the stored profile; some modems take a moment after it.
        if self.command("ATZ").await.is_err() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.command("ATE0").await?;
        self.command("AT+CMEE=1").await?;
        if let Some(refused) = self.unlock().await? {
            return Ok(StartUp::Refused(refused));
        }
        self.command("AT+CMGF=0").await?;
        let storage = self.config.storage.clone();
        self.command(&format!(
            "AT+CPMS=\"{storage}\",\"{storage}\",\"{storage}\""
        ))
        .await?;
        let reports = if self.config.status_reports { 2 } else { 0 };
        if let Err(e) = self.command(&format!("AT+CNMI=2,1,0,{reports},0")).await {
            // Some modems route reports only directly (+CDS).
            tracing::info!(channel = %self.ctx.row.name, "{e}; asking for reports as +CDS");
            self.command("AT+CNMI=2,1,0,1,0").await?;
        }
        for command in self.config.init.clone() {
            self.command(&command).await?;
        }
        self.refresh_network().await?;
        Ok(StartUp::Ready)
    }

    /// Enters the PIN if the SIM asks for it; Some(reason) when only the
    /// operator can go on.
    async fn unlock(&mut self) -> anyhow::Result<Option<String>> {
        let lines = self.command("AT+CPIN?").await?;
        let state = lines
            .iter()
            .find_map(|l| l.strip_prefix("+CPIN:"))
            .map(str::trim)
            .unwrap_or("READY")
            .to_owned();
        match state.as_str() {
            "READY" => Ok(None),
            "SIM PIN" => {
                let Some(pin) = self.config.pin.clone() else {
                    return Ok(Some(
                        "the SIM asks for its PIN and the channel config has no pin".into(),
                    ));
                };
                match self.command(&format!("AT+CPIN=\"{pin}\"")).await {
                    Ok(_) => {
                        // The SIM needs a moment after its PIN.
                        for _ in 0..10 {
                            match self.command("AT+CPIN?").await {
                                Ok(lines) if lines.iter().any(|l| l.contains("READY")) => return Ok(None),
                                _ => tokio::time::sleep(Duration::from_millis(500)).await,
                            }
                        }
                        Ok(None)
                    }
                    Err(AtError::Cme { code: 16, .. }) => Ok(Some(
                        "the SIM refused the configured PIN (not tried again, to keep the SIM's remaining attempts)".into(),
                    )),
                    Err(e) => Err(e.into()),
                }
            }
            other => Ok(Some(format!(
                "the SIM asks for {other}; only an operator can unlock it"
            ))),
        }
    }

    /// Registration and signal, into channel_state's detail.
    pub async fn refresh_network(&mut self) -> anyhow::Result<()> {
        let registration = self.command("AT+CREG?").await?;
        let stat = registration
            .iter()
            .find_map(|l| l.strip_prefix("+CREG:"))
            .and_then(|v| v.split(',').nth(1))
            .and_then(|s| s.trim().parse::<u8>().ok());
        let signal = self.command("AT+CSQ").await.unwrap_or_default();
        let rssi = signal
            .iter()
            .find_map(|l| l.strip_prefix("+CSQ:"))
            .and_then(|v| v.split(',').next())
            .and_then(|s| s.trim().parse::<u8>().ok())
            .filter(|&r| r != 99);
        let registration = match stat {
            Some(1) => "home",
            Some(5) => "roaming",
            Some(2) => "searching",
            Some(3) => "denied",
            Some(0) => "not registered",
            _ => "unknown",
        };
        self.ctx
            .state
            .set_detail(json!({
                "registration": registration,
                // +CSQ 0..31 is -113..-51 dBm in steps of 2.
                "signal_dbm": rssi.map(|r| -113 + 2 * i32::from(r)),
                "at_round_trips": self.port.round_trips,
            }))
            .await;
        Ok(())
    }

    /// Sends one message, part by part. The error, if any, means the modem
    /// or its port is not fit to go on: the channel restarts.
    pub async fn send(&mut self, m: &OutMessage) -> (Outcome, Option<anyhow::Error>) {
        let to = match address::destination(&m.to_address) {
            Ok(to) => to,
            Err(e) => {
                return (
                    Outcome::Failed {
                        error: e.to_string(),
                    },
                    None,
                )
            }
        };
        let validity_minutes = m.valid_until.map(|until| {
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            (left.as_secs() / 60) as u32
        });
        let options = SubmitOptions {
            smsc: self.config.smsc.as_deref(),
            status_report: self.config.status_reports && m.request_report,
            validity_minutes,
            concat_reference: (m.id % 256) as u8,
        };
        let pdus = match submit::build(&to, &m.body, m.encoding, &options) {
            Ok(pdus) => pdus,
            Err(e) => {
                return (
                    Outcome::Failed {
                        error: e.to_string(),
                    },
                    None,
                )
            }
        };
        self.ctx.state.count(Count::Submitted, 1);
        self.ctx.state.first_submit(m.due_at);
        let retry_delay = self.config.retry_delay();
        let mut references = Vec::with_capacity(pdus.len());
        for (i, pdu) in pdus.iter().enumerate() {
            let sent = self
                .port
                .send_pdu(
                    &pdu.hex(),
                    pdu.tpdu_length,
                    self.config.command_timeout(),
                    self.config.send_timeout(),
                )
                .await;
            self.ctx.heartbeat.beat();
            let done = if i == 0 {
                String::new()
            } else {
                format!(" (parts 1 to {i} of {} were sent)", pdus.len())
            };
            match sent {
                Ok(mr) => references.push(part_reference(mr, &to.text)),
                Err(AtError::Cms { code, .. }) => {
                    let error = format!("+CMS ERROR {code}: {}{done}", errors::meaning(code));
                    let outcome = if errors::is_temporary(code) {
                        Outcome::Retry {
                            error,
                            delay: retry_delay,
                        }
                    } else {
                        Outcome::Failed { error }
                    };
                    return (outcome, None);
                }
                Err(e @ AtError::Timeout { .. }) => {
                    let error = format!("outcome unknown: {e}; the modem may have sent it{done}");
                    return (
                        Outcome::Retry {
                            error,
                            delay: retry_delay,
                        },
                        Some(anyhow::anyhow!("the modem stopped answering: {e}")),
                    );
                }
                Err(e) => {
                    let error = format!("{e}{done}");
                    let fatal = matches!(e, AtError::Port(_)).then(|| anyhow::anyhow!("{e}"));
                    return (
                        Outcome::Retry {
                            error,
                            delay: retry_delay,
                        },
                        fatal,
                    );
                }
            }
        }
        (Outcome::Sent { references }, None)
    }

    /// Waits for the modem to say something on its own.
    pub async fn listen(&mut self) -> anyhow::Result<()> {
        Ok(self.port.listen().await?)
    }

    /// Acts on the unsolicited results set aside so far.
    pub async fn handle_unsolicited(&mut self, inbox: &Inbox) -> anyhow::Result<()> {
        while let Some(stray) = self.port.take_stray() {
            tracing::debug!(channel = %self.ctx.row.name, line = %stray, "unexpected line from the modem");
        }
        while let Some(Unsolicited { line, pdu }) = self.port.take_unsolicited() {
            if let Some((memory, index)) = stored_index(&line) {
                self.read_from(&memory, index, inbox).await?;
            } else if let Some(pdu) = pdu {
                // +CDS / +CMT: routed directly, nothing to delete.
                // `+CDS: <length>`, `+CMT: [<alpha>],<length>`.
                let length = line
                    .split_once(':')
                    .and_then(|(_, v)| v.rsplit(',').next())
                    .and_then(|l| l.trim().parse().ok());
                if let Err(e) = self.record(&pdu, length, inbox).await {
                    tracing::warn!(channel = %self.ctx.row.name, "cannot record {line}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Lists everything stored and records and deletes each received
    /// message and report.
    pub async fn read_stored(&mut self, inbox: &Inbox) -> anyhow::Result<()> {
        let lines = self.command("AT+CMGL=4").await?;
        let mut entries = Vec::new();
        let mut lines = lines.into_iter();
        while let Some(header) = lines.next() {
            let Some(fields) = header.strip_prefix("+CMGL:") else {
                continue;
            };
            let Some(pdu) = lines.next() else { break };
            let fields: Vec<&str> = fields.split(',').map(str::trim).collect();
            let index = fields.first().and_then(|i| i.parse::<u32>().ok());
            let stat = fields.get(1).and_then(|s| s.parse::<u8>().ok());
            let length = fields.last().and_then(|l| l.parse::<usize>().ok());
            // 2 and 3 are messages stored to send, not received ones.
            if let (Some(index), Some(0 | 1)) = (index, stat) {
                entries.push((index, pdu, length));
            }
        }
        for (index, pdu, length) in entries {
            if self.record(&pdu, length, inbox).await.is_ok() {
                self.command(&format!("AT+CMGD={index}")).await?;
            }
        }
        self.handle_unsolicited(inbox).await
    }

    /// Reads an entry announced in `memory`: a modem may store status
    /// reports apart ("SR"), where reads and deletes must go while it is
    /// selected.
    async fn read_from(&mut self, memory: &str, index: u32, inbox: &Inbox) -> anyhow::Result<()> {
        let storage = self.config.storage.clone();
        let elsewhere = !memory.is_empty() && memory != storage && storage != "MT";
        if elsewhere
            && self
                .command(&format!("AT+CPMS=\"{memory}\""))
                .await
                .is_err()
        {
            // Not selectable: read where we are, as most modems mean.
            return self.read_one(index, inbox).await;
        }
        let result = self.read_one(index, inbox).await;
        if elsewhere {
            self.command(&format!(
                "AT+CPMS=\"{storage}\",\"{storage}\",\"{storage}\""
            ))
            .await?;
        }
        result
    }

    /// Reads the stored entry at `index`, records it, deletes it.
    async fn read_one(&mut self, index: u32, inbox: &Inbox) -> anyhow::Result<()> {
        let lines = match self.command(&format!("AT+CMGR={index}")).await {
            Ok(lines) => lines,
            // Gone already (read by a poll): nothing to do.
            Err(AtError::Cms { code: 321, .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(at) = lines.iter().position(|l| l.starts_with("+CMGR:")) else {
            return Ok(()); // an empty slot
        };
        let length = lines[at]
            .rsplit(',')
            .next()
            .and_then(|l| l.trim().parse().ok());
        let Some(pdu) = lines.get(at + 1) else {
            return Ok(());
        };
        if self.record(&pdu.clone(), length, inbox).await.is_ok() {
            self.command(&format!("AT+CMGD={index}")).await?;
        }
        Ok(())
    }

    /// Records a received message or report; Ok once committed, when the
    /// modem may forget it.
    async fn record(
        &mut self,
        pdu: &str,
        length: Option<usize>,
        inbox: &Inbox,
    ) -> Result<(), InboxError> {
        let to = self.config.number.clone().unwrap_or_default();
        let result = match incoming::decode(pdu, length) {
            Ok(Incoming::Deliver(d)) => {
                let (body, mut custom) = match d.content {
                    Content::Text(text) => (text, json!({})),
                    Content::Binary(octets) => (
                        smsbus_core::pdu::hex::encode(&octets),
                        json!({"binary": true}),
                    ),
                };
                custom["data_coding"] = json!(d.data_coding);
                if let Some(stamp) = d.timestamp {
                    custom["smsc_timestamp"] = json!(stamp.to_string());
                }
                if let Some(smsc) = d.smsc {
                    custom["smsc"] = json!(smsc);
                }
                let part = d.concat.map(|c| Part {
                    reference: i32::from(c.reference),
                    total: i32::from(c.total),
                    seq: i32::from(c.sequence),
                });
                inbox
                    .inbound(Inbound {
                        from: d.originator.text,
                        to,
                        body,
                        reference: None,
                        custom: Some(custom),
                        part,
                    })
                    .await
                    .map(|_| ())
            }
            Ok(Incoming::StatusReport(r)) => {
                let status = match r.outcome() {
                    ReportOutcome::Delivered => "delivered",
                    ReportOutcome::Pending => "enroute",
                    ReportOutcome::Failed => "notdelivered",
                };
                inbox
                    .report(Report {
                        reference: part_reference(r.reference, &r.recipient.text),
                        alternate: None,
                        status,
                        detail: r.describe(),
                    })
                    .await
            }
            Err(e) => {
                // Kept as a received row with the raw PDU, so the modem's
                // storage does not fill with what nobody can read.
                tracing::warn!(channel = %self.ctx.row.name, %pdu, "undecodable PDU from the modem: {e}");
                inbox
                    .inbound(Inbound {
                        from: String::new(),
                        to,
                        body: String::new(),
                        reference: None,
                        custom: Some(json!({"undecodable_pdu": pdu, "error": e.to_string()})),
                        part: None,
                    })
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = &result {
            tracing::warn!(channel = %self.ctx.row.name, "cannot record what the modem received: {e}");
        }
        result
    }
}

/// The memory and index in `+CMTI: "SM",3` / `+CDSI: "SR",3`.
fn stored_index(line: &str) -> Option<(String, u32)> {
    let fields = line
        .strip_prefix("+CMTI:")
        .or_else(|| line.strip_prefix("+CDSI:"))?;
    let (memory, index) = fields.rsplit_once(',')?;
    let memory = memory.trim().trim_matches('"').to_owned();
    Some((memory, index.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_pair_the_tp_mr_with_the_recipient() {
        assert_eq!(part_reference(7, "+31612345678"), "7:612345678");
        // The same number written nationally matches.
        assert_eq!(part_reference(7, "0612345678"), "7:612345678");
        assert_eq!(part_reference(255, "1234"), "255:1234");
    }

    #[test]
    fn indications_name_their_index() {
        assert_eq!(stored_index("+CMTI: \"SM\",12"), Some(("SM".into(), 12)));
        assert_eq!(stored_index("+CDSI: \"SR\",3"), Some(("SR".into(), 3)));
        assert_eq!(stored_index("+CMT: ,23"), None);
        assert_eq!(stored_index("+CMTI: \"SM\",x"), None);
        assert_eq!(stored_index("+CMTI: 4"), None);
    }
}
