//! The calls of the compatibility endpoints' `dlr-url`s, made as the
//! gateways they copy make them, so an integration moved to smsbus keeps
//! its receiver:
//!
//! - Kannel: a GET of the URL with its escape codes filled in (Kannel's
//!   user guide, "Parameters (Escape Codes)", as `gw/urltrans.c` expands
//!   them for a delivery report): `%d` the report type (1 delivered, 2
//!   not delivered, 8 taken by the SMSC, 16 refused), `%T` and `%t` its
//!   time, `%p` the handset (the message's `to`), `%P` the sender, `%q`
//!   and `%Q` the same in international form, `%A` the SMSC's reply (the
//!   receipt, `ACK/`, `NACK/<error>`), `%i` the channel, `%I` and `%F`
//!   smsbus's and the SMSC's message ids, `%o` and `%B` the account and
//!   billing info given with the message, `%n` the account, `%c` the
//!   coding, `%%` a percent sign. Other codes are left as they are.
//!   Values are URL-encoded; a 2xx takes the call.
//! - Jasmin: `id`, `message_status` and `level` (1: the SMSC took or
//!   refused it, `ESME_*`), and for level 2 (the handset's receipt,
//!   `DELIVRD`, `UNDELIV`, `EXPIRED`) also `id_smsc`, `sub`, `dlvrd`,
//!   `subdate`, `donedate`, `err` and `text`; as a form, by GET or POST.
//!   Only a 2xx whose body is `ACK/Jasmin` takes the call.
//!
//! The facts come from the event's payload (`_webhook_payload`), written
//! when the status changed.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// What Kannel's `octstr_url_encode` leaves as it is.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

fn encoded(value: &str) -> String {
    utf8_percent_encode(value, URL_VALUE).to_string()
}

fn text<'a>(payload: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(payload, |v, key| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn number(payload: &Value, path: &[&str]) -> i64 {
    path.iter()
        .try_fold(payload, |v, key| v.get(key))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The report type of the event: 1, 2, 8 or 16 (Kannel's dlr-mask bits).
fn report_type(payload: &Value) -> i64 {
    number(payload, &["callback", "dlr"])
}

/// What the SMSC said, as Kannel's `%A` shows it: the receipt for a
/// report, `ACK/` for a submission taken, `NACK/<why>` for one refused.
fn smsc_reply(payload: &Value) -> String {
    match report_type(payload) {
        8 => "ACK/".to_owned(),
        16 => format!("NACK/{}", text(payload, &["message", "last_error"])),
        _ => {
            let report = text(payload, &["callback", "report"]);
            if report.is_empty() {
                receipt_text(payload)
            } else {
                report.to_owned()
            }
        }
    }
}

/// A receipt in the SMPP appendix B form, for a report whose SMSC gave
/// no text.
fn receipt_text(payload: &Value) -> String {
    let delivered = report_type(payload) == 1;
    format!(
        "id:{} sub:{:03} dlvrd:{:03} submit date:{} done date:{} stat:{} err:{} text:{}",
        text(payload, &["callback", "reference"]),
        number(payload, &["callback", "parts"]),
        number(payload, &["callback", "delivered_parts"]),
        text(payload, &["callback", "subdate"]),
        text(payload, &["callback", "donedate"]),
        final_state(payload),
        if delivered { "000" } else { "ND" },
        text(payload, &["callback", "text"]),
    )
}

/// The receipt state of a report: DELIVRD, EXPIRED or UNDELIV.
fn final_state(payload: &Value) -> &'static str {
    match (report_type(payload), text(payload, &["message", "status"])) {
        (1, _) => "DELIVRD",
        (_, "expired") => "EXPIRED",
        _ => "UNDELIV",
    }
}

/// International form: a leading `00` becomes `+` (smsbus's numbers are
/// mostly so already).
fn international(number: &str) -> String {
    match number.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => number.to_owned(),
    }
}

/// The GSM data coding as Kannel numbers it: 0 7-bit, 1 8-bit, 2 UCS-2.
fn coding(payload: &Value) -> &'static str {
    match text(payload, &["message", "encoding"]) {
        "binary" => "1",
        "ucs2" => "2",
        _ => "0",
    }
}

/// Kannel's dlr-url with its escape codes filled in.
pub fn kannel_url(template: &str, payload: &Value) -> String {
    let mut url = String::with_capacity(template.len() + 64);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            url.push(c);
            continue;
        }
        let Some(code) = chars.next() else {
            url.push('%');
            break;
        };
        let value = match code {
            'd' => report_type(payload).to_string(),
            'T' => number(payload, &["callback", "at"]).to_string(),
            // Kannel writes the space as `+`, unencoded.
            't' => text(payload, &["callback", "at_text"]).replace(' ', "+"),
            'p' => encoded(text(payload, &["message", "to"])),
            'P' => encoded(text(payload, &["message", "from"])),
            'q' => encoded(&international(text(payload, &["message", "to"]))),
            'Q' => encoded(&international(text(payload, &["message", "from"]))),
            'A' | 'b' => encoded(&smsc_reply(payload)),
            'i' => encoded(text(payload, &["message", "channel"])),
            'I' => number(payload, &["message", "id"]).to_string(),
            'F' => encoded(text(payload, &["callback", "reference"])),
            'o' => encoded(text(payload, &["callback", "kannel", "account"])),
            'B' => encoded(text(payload, &["callback", "kannel", "binfo"])),
            'n' => encoded(text(payload, &["message", "account"])),
            'c' => coding(payload).to_owned(),
            '%' => "%".to_owned(),
            other => format!("%{other}"),
        };
        url.push_str(&value);
    }
    url
}

/// Jasmin's DLR fields for the event: level 1 for what the SMSC did with
/// the submission, level 2 for the handset's receipt.
pub fn jasmin_fields(payload: &Value) -> Vec<(&'static str, String)> {
    let id = number(payload, &["message", "id"]).to_string();
    match report_type(payload) {
        8 => vec![
            ("id", id),
            ("message_status", "ESME_ROK".to_owned()),
            ("level", "1".to_owned()),
        ],
        16 => vec![
            ("id", id),
            ("message_status", esme_status(payload)),
            ("level", "1".to_owned()),
        ],
        _ => {
            let delivered = report_type(payload) == 1;
            vec![
                ("id", id),
                ("message_status", final_state(payload).to_owned()),
                ("level", "2".to_owned()),
                (
                    "id_smsc",
                    text(payload, &["callback", "reference"]).to_owned(),
                ),
                (
                    "sub",
                    format!("{:03}", number(payload, &["callback", "parts"])),
                ),
                (
                    "dlvrd",
                    format!("{:03}", number(payload, &["callback", "delivered_parts"])),
                ),
                (
                    "subdate",
                    text(payload, &["callback", "subdate"]).to_owned(),
                ),
                (
                    "donedate",
                    text(payload, &["callback", "donedate"]).to_owned(),
                ),
                ("err", if delivered { "000" } else { "ND" }.to_owned()),
                ("text", text(payload, &["callback", "text"]).to_owned()),
            ]
        }
    }
}

/// The SMPP command status of a refused submission, where its error
/// names one; else ESME_RSYSERR.
fn esme_status(payload: &Value) -> String {
    let error = text(payload, &["message", "last_error"]);
    error
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|word| word.starts_with("ESME_R") && word.len() > 6)
        .unwrap_or("ESME_RSYSERR")
        .to_owned()
}

/// A form body (or query) of `fields`.
pub fn form(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{name}={}", encoded(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether Jasmin's receiver took the call: its body is `ACK/Jasmin`.
pub fn jasmin_acknowledged(body: &str) -> bool {
    body.trim() == "ACK/Jasmin"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delivered() -> Value {
        json!({
            "event": "message.report",
            "message": {"id": 42, "status": "delivered", "to": "+31612345678", "from": "ACME",
                        "channel": "kpn", "account": "acme", "encoding": "gsm7", "last_error": null},
            "callback": {"dlr": 1, "at": 1764777600, "at_text": "2025-12-03 16:00:00",
                         "subdate": "2512031559", "donedate": "2512031600", "text": "Hello there",
                         "reference": "abc123", "report": null, "parts": 1, "delivered_parts": 1,
                         "kannel": {"account": "billing 7", "binfo": "b&i"}}
        })
    }

    /// The user guide's example, `dlr-url=http://host/dlr.php?type=%d&ts=%T&to=%p...`.
    #[test]
    fn kannel_escapes_are_filled_in_and_encoded() {
        let url = kannel_url(
            "http://127.0.0.1/dlr?type=%d&ts=%T&t=%t&to=%p&from=%P&q=%q&smsc=%i&id=%I&fid=%F&acct=%o&b=%B&user=%n&c=%c&a=%A&pct=100%%&x=%Z",
            &delivered(),
        );
        assert_eq!(
            url,
            "http://127.0.0.1/dlr?type=1&ts=1764777600&t=2025-12-03+16:00:00&to=%2B31612345678&from=ACME\
             &q=%2B31612345678&smsc=kpn&id=42&fid=abc123&acct=billing%207&b=b%26i&user=acme&c=0\
             &a=id%3Aabc123%20sub%3A001%20dlvrd%3A001%20submit%20date%3A2512031559%20done%20date%3A2512031600\
             %20stat%3ADELIVRD%20err%3A000%20text%3AHello%20there&pct=100%&x=%Z"
        );
    }

    #[test]
    fn kannel_smsc_replies_for_a_submission_taken_and_refused() {
        let mut taken = delivered();
        taken["callback"]["dlr"] = json!(8);
        assert_eq!(kannel_url("%A", &taken), "ACK%2F");
        let mut refused = delivered();
        refused["callback"]["dlr"] = json!(16);
        refused["message"]["last_error"] = json!("submit_sm refused: ESME_RINVDSTADR (0x0000000b)");
        assert_eq!(
            kannel_url("%d %A", &refused),
            "16 NACK%2Fsubmit_sm%20refused%3A%20ESME_RINVDSTADR%20(0x0000000b)"
        );
        assert_eq!(kannel_url("trailing %", &refused), "trailing %");
    }

    #[test]
    fn jasmin_levels_carry_their_fields() {
        let fields = jasmin_fields(&delivered());
        assert_eq!(
            form(&fields),
            "id=42&message_status=DELIVRD&level=2&id_smsc=abc123&sub=001&dlvrd=001&subdate=2512031559\
             &donedate=2512031600&err=000&text=Hello%20there"
        );
        let mut taken = delivered();
        taken["callback"]["dlr"] = json!(8);
        assert_eq!(
            form(&jasmin_fields(&taken)),
            "id=42&message_status=ESME_ROK&level=1"
        );
        let mut refused = delivered();
        refused["callback"]["dlr"] = json!(16);
        refused["message"]["last_error"] = json!("submit_sm refused: ESME_RTHROTTLED");
        assert_eq!(
            form(&jasmin_fields(&refused)),
            "id=42&message_status=ESME_RTHROTTLED&level=1"
        );
        refused["message"]["last_error"] = json!("blocked by rule 3");
        assert_eq!(
            jasmin_fields(&refused)[1],
            ("message_status", "ESME_RSYSERR".to_owned())
        );
        let mut expired = delivered();
        expired["callback"]["dlr"] = json!(2);
        expired["message"]["status"] = json!("expired");
        assert_eq!(jasmin_fields(&expired)[1].1, "EXPIRED");
        assert!(jasmin_acknowledged("ACK/Jasmin\n"));
        assert!(!jasmin_acknowledged("OK"));
    }
}
