//! Entry points for fuzzing: everything that reads what the outside world
//! sends, taken the way the channels and the SMPP server take it: what
//! providers and modems send (`smpp_stream`, `smpp_receipt_text`,
//! `gsm_pdu`, `modem_lines`), what clients bound to the SMPP server send
//! (`smpp_server_pdus`), what scripts hold (`lua_values`), and what REST
//! providers answer and post, read by a channel's mapping (`http_extract`),
//! and the request templates operators write (`http_template`), and
//! whole webhooks and answers read by every preset's mappings
//! (`http_webhook`).
//! Each must
//! return, whatever the bytes; an error is fine, a panic or a hang is a
//! bug. The cargo-fuzz targets in `fuzz/` call these, and the inputs that
//! once broke them are kept in `fuzz/regressions/<target>/` and replayed
//! by this module's tests in `make test`.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use rusmpp::values::{DestAddress, InterfaceVersion};
use rusmpp::Pdu;
use tokio_util::codec::Decoder;

use crate::channels::gsm::at::AtPort;
use crate::channels::smpp::carried::Carried;
use crate::channels::smpp::codec::{Frame, SmppCodec};
use crate::channels::smpp::config::DlrIdFormat;
use crate::channels::smpp::{inbound, receipt};
use crate::smpp_server::account::Account;
use crate::smpp_server::concat::{Added, Assembler, PART_TIMEOUT};
use crate::smpp_server::submission::{self, Submission};

/// A fuzz target: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// The targets, by the name of their folder in `fuzz/regressions/`.
pub const TARGETS: [(&str, Target); 9] = [
    ("smpp_stream", smpp_stream),
    ("smpp_server_pdus", smpp_server_pdus),
    ("smpp_receipt_text", smpp_receipt_text),
    ("gsm_pdu", gsm_pdu),
    ("modem_lines", modem_lines),
    ("lua_values", lua_values),
    ("http_extract", http_extract),
    ("http_template", http_template),
    ("http_webhook", http_webhook),
];

/// Bytes from an SMSC: framed into PDUs, each deliver_sm and data_sm read
/// as an inbound message and as a receipt, as a session does.
pub fn smpp_stream(data: &[u8]) {
    let mut codec = SmppCodec::new();
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        let Frame::Command(command) = frame else {
            continue;
        };
        let carried = match command.pdu() {
            Some(Pdu::DeliverSm(pdu)) => Carried::from(pdu),
            Some(Pdu::DataSm(pdu)) => Carried::from(pdu),
            _ => continue,
        };
        read_carried(&carried);
    }
}

/// Bytes from an SMPP client bound to our server: framed into PDUs, each
/// read as a session reads it (binds' credentials, submit_sm and data_sm
/// as submissions, query_sm's message id in both id formats), and the
/// parts of long messages put together, timed out and drained.
pub fn smpp_server_pdus(data: &[u8]) {
    let accounts = [false, true].map(|hex_ids| Account {
        name: "fuzz".into(),
        default_source: None,
        allowed_sources: None,
        throughput: None,
        channel: None,
        hex_ids,
        deliver_window: 10,
        long_message: crate::smpp_server::mo::LongMessage::Payload,
        keep_udh: true,
    });
    let now = Instant::now();
    let mut parts: Assembler<u32> = Assembler::new(PART_TIMEOUT);
    let mut codec = SmppCodec::new();
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        let Frame::Command(command) = frame else {
            continue;
        };
        let sequence = command.sequence_number();
        let read = match command.pdu() {
            Some(Pdu::BindTransmitter(b)) => {
                read_bind(
                    b.system_id.as_str(),
                    b.password.as_str(),
                    b.interface_version,
                );
                continue;
            }
            Some(Pdu::BindReceiver(b)) => {
                read_bind(
                    b.system_id.as_str(),
                    b.password.as_str(),
                    b.interface_version,
                );
                continue;
            }
            Some(Pdu::BindTransceiver(b)) => {
                read_bind(
                    b.system_id.as_str(),
                    b.password.as_str(),
                    b.interface_version,
                );
                continue;
            }
            Some(Pdu::QuerySm(query)) => {
                for account in &accounts {
                    let _ = account.parse_message_id(query.message_id.as_str());
                }
                continue;
            }
            // Not served (generic_nack), but its addresses are read.
            Some(Pdu::SubmitMulti(multi)) => {
                for dest in multi.dest_address() {
                    let raw = match dest {
                        DestAddress::SmeAddress(a) => a.destination_addr.as_str(),
                        DestAddress::DistributionListName(d) => d.dl_name.as_str(),
                    };
                    let _ = smsbus_core::address::destination(raw);
                }
                continue;
            }
            Some(Pdu::SubmitSm(pdu)) => submission::from_submit_sm(pdu),
            Some(Pdu::DataSm(pdu)) => submission::from_data_sm(pdu),
            _ => continue,
        };
        let Ok(accepted) = read else {
            continue;
        };
        read_submission(&accepted);
        let Some(part) = accepted.part else {
            continue;
        };
        match parts.add(sequence, accepted, part, now) {
            Added::Complete { whole, .. } => read_submission(&whole),
            Added::Held | Added::Duplicate(_) => {}
        }
        let _ = parts.held();
        let _ = parts.next_expiry();
    }
    let _ = parts.expire(now + PART_TIMEOUT);
    let _ = parts.drain();
}

/// What a session takes from a bind before it asks the database (the
/// strings are read by `as_str`, which panics on bytes that are not ASCII).
fn read_bind(system_id: &str, password: &str, version: InterfaceVersion) {
    std::hint::black_box((system_id, password, u8::from(version)));
}

fn read_submission(submission: &Submission) {
    let _ = submission.parts();
    let _ = submission.receipts();
}

/// A receipt's text (`id:... sub:... stat:... err:...`) in a deliver_sm
/// flagged as a receipt, in each data coding a provider may use.
pub fn smpp_receipt_text(data: &[u8]) {
    for data_coding in [0x00, 0x03, 0x08] {
        let carried = Carried {
            esm_class: 0x04,
            data_coding,
            source: "31612345678",
            source_ton: 1,
            destination: "1234",
            dest_ton: 0,
            short_message: data,
            tlvs: &[],
        };
        read_carried(&carried);
    }
}

fn read_carried(carried: &Carried<'_>) {
    let _ = inbound::decode(carried);
    for format in [
        DlrIdFormat::Auto,
        DlrIdFormat::String,
        DlrIdFormat::Dec,
        DlrIdFormat::Hex,
    ] {
        if let Ok(r) = receipt::parse(carried, format) {
            let _ = receipt::reference(&r.reference, format);
        }
    }
}

/// A PDU a modem hands over (`+CMGR`, `+CMT`, `+CDS`): as hexadecimal
/// text, with and without the length the modem announces.
pub fn gsm_pdu(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = smsbus_core::pdu::incoming::decode(&text, None);
    let hex: String = data.iter().map(|b| format!("{b:02X}")).collect();
    let _ = smsbus_core::pdu::incoming::decode(&hex, None);
    if let Some((&first, rest)) = data.split_first() {
        let hex: String = rest.iter().map(|b| format!("{b:02X}")).collect();
        let _ = smsbus_core::pdu::incoming::decode(&hex, Some(usize::from(first)));
    }
}

/// What a modem answers to a command, unsolicited results mixed in, read
/// by the AT port the driver uses.
pub fn modem_lines(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (ours, mut modem) = tokio::io::duplex(64 * 1024);
        let mut port = AtPort::new(ours);
        let answer = data.to_vec();
        let feed = async move {
            use tokio::io::AsyncWriteExt;
            let _ = modem.write_all(&answer).await;
            // Closed after the answer: the port must notice, not wait.
            drop(modem);
        };
        let command = port.command("AT+CMGL=4", Duration::from_millis(50));
        let (_, _) = tokio::join!(feed, command);
        while port.take_unsolicited().is_some() {}
        while port.take_stray().is_some() {}
    });
}

/// JSON a script's message may hold (the `custom` column), through Lua and
/// back, and the diff the runner saves.
pub fn lua_values(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let lua = mlua::Lua::new();
    let Ok(value) = crate::triggers::lua::values::to_lua(&lua, &json) else {
        return;
    };
    if let Ok(back) = crate::triggers::lua::values::from_lua(&lua, value) {
        let mut before = serde_json::Map::new();
        before.insert("id".into(), serde_json::Value::from(1));
        before.insert("custom".into(), json);
        let after = serde_json::json!({"id": 1, "custom": back});
        let _ = crate::triggers::lua::values::changes(&before, &after);
    }
}

/// A mapping's path or pattern (the first line) applied to a provider's
/// body (the rest), as an HTTP channel reads answers and webhooks.
pub fn http_extract(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (extractor, body) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(extractor) = crate::channels::http::extract::Extractor::parse(extractor) {
        let found = extractor.values(body);
        assert!(found.len() <= crate::channels::http::extract::VALUES_MAX);
        let _ = extractor.matches(body);
    }
}

/// A request template (the first line) rendered with a value (the rest)
/// in every escaping: whatever the value, a JSON string stays one string.
pub fn http_template(data: &[u8]) {
    use crate::channels::http::template::{Escape, Template};
    let text = String::from_utf8_lossy(data);
    let (template, value) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(template) = Template::parse(template, &["to", "body"]) {
        for escape in [
            Escape::None,
            Escape::Url,
            Escape::Form,
            Escape::Json,
            Escape::Xml,
        ] {
            let _ = template.render(escape, |_| Some(value.into()));
        }
    }
    let json = Template::parse(r#"{"text": "${body}"}"#, &["body"])
        .expect("a fixed template")
        .render(Escape::Json, |_| Some(value.into()));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
    assert_eq!(parsed["text"], value);
}

/// A webhook (the first byte picks its content type, the rest is its body)
/// and an answer to a send (the same bytes, with a status from the second
/// byte) read by every preset's mappings, as the HTTP API and the driver
/// read them.
pub fn http_webhook(data: &[u8]) {
    use crate::channels::http::config::{HttpConfig, PRESETS};
    use crate::channels::http::reports::as_json;
    use std::sync::OnceLock;
    static CONFIGS: OnceLock<Vec<HttpConfig>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        PRESETS
            .iter()
            .map(|(name, _)| {
                let config = serde_json::json!({"preset": name, "base_url": "http://p",
                    "account": "a", "username": "u", "password": "p", "token": "t",
                    "webhook_url": "http://s", "signature": "none"});
                HttpConfig::parse(&config).expect("every preset reads")
            })
            .collect()
    });
    let (kind, body) = data.split_first().map_or((0, data), |(k, b)| (*k, b));
    let content_type = match kind % 3 {
        0 => "application/json",
        1 => "application/x-www-form-urlencoded",
        _ => "text/plain",
    };
    let status = 100 + u16::from(data.get(1).copied().unwrap_or(0)) * 2;
    let text = String::from_utf8_lossy(body);
    for config in configs {
        if let Some(json) = as_json(Some(content_type), body, Some(&text)) {
            let _ = config.reports.reports(&json);
            let _ = config.inbound.messages(&json);
        }
        let _ = config
            .response
            .outcome(status, Some(&text), &text, std::time::SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::path::PathBuf;

    fn regressions() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
    }

    /// Every input that once broke a target (and every seed) still runs.
    #[test]
    fn kept_inputs_still_run() {
        let mut ran = 0;
        for (name, target) in TARGETS {
            for dir in ["regressions", "seeds"] {
                let path = regressions().join("..").join(dir).join(name);
                let Ok(entries) = std::fs::read_dir(&path) else {
                    continue;
                };
                for entry in entries {
                    let input = std::fs::read(entry.unwrap().path()).unwrap();
                    target(&input);
                    ran += 1;
                }
            }
        }
        assert!(ran > 0, "no inputs found under {}", regressions().display());
    }

    /// A quick random pass over every target, the same each run: no
    /// coverage guidance (that is `make fuzz`), but it keeps the targets
    /// themselves honest.
    #[test]
    fn random_inputs_do_not_break_the_targets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5345_4E44);
        for (name, target) in TARGETS {
            let rounds = if name == "modem_lines" { 200 } else { 2_000 };
            for _ in 0..rounds {
                let len = rng.random_range(0..300);
                let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                target(&input);
            }
        }
    }
}
