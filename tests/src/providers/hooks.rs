//! What the simulator posts to smsbus: delivery reports and inbound
//! messages, in each provider's format, signed as it signs (or wrongly,
//! or not at all, for the tests that must see them refused).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use smsbus_worker::channels::http::signatures::{self, VonageMethod};

use super::{Preset, Signing, ACCOUNT, PASSWORD, SIGNATURE_SECRET};

pub(super) fn basic(sign: Signing) -> Option<String> {
    let secret = match sign {
        Signing::Right => SIGNATURE_SECRET,
        Signing::Wrong => "hook:wrong",
        Signing::Unsigned => return None,
    };
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    ))
}

pub(super) async fn send_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    authorization: Option<String>,
) -> u16 {
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        request = request.header("Authorization", a);
    }
    match request.send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

fn form(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(n, v)| format!("{}={}", enc(n), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A webhook of fields, as the preset posts it: Twilio a signed form,
/// Vonage signed JSON, Kannel a GET with Basic credentials.
pub(super) async fn send_fields(
    client: &reqwest::Client,
    preset: Preset,
    url: &str,
    mut fields: Vec<(&str, String)>,
    json_body: bool,
    sign: Signing,
) -> u16 {
    let request = match preset {
        Preset::Twilio => {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let token = if sign == Signing::Wrong {
                "wrong"
            } else {
                PASSWORD
            };
            let signature = signatures::twilio_signature(token, url, &pairs);
            let mut r = client
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form(&fields));
            if sign != Signing::Unsigned {
                r = r.header("X-Twilio-Signature", signature);
            }
            r
        }
        Preset::Vonage => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            fields.push(("timestamp", now.to_string()));
            fields.push(("nonce", format!("n-{now}-{}", fields.len())));
            if sign != Signing::Unsigned {
                let pairs: Vec<(&str, &str)> =
                    fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let secret = if sign == Signing::Wrong {
                    "wrong"
                } else {
                    SIGNATURE_SECRET
                };
                let sig = signatures::vonage_signature(secret, VonageMethod::Md5Hash, &pairs);
                fields.push(("sig", sig));
            }
            if json_body {
                let object: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), Value::String(v.clone())))
                    .collect();
                client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(Value::Object(object).to_string())
            } else {
                client.get(format!("{url}?{}", form(&fields)))
            }
        }
        Preset::Infobip | Preset::Generic => {
            let mut r = client.get(format!("{url}?{}", form(&fields)));
            if let Some(a) = basic(sign) {
                r = r.header("Authorization", a);
            }
            r
        }
    };
    match request.send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

pub(super) async fn post_report(
    client: &reqwest::Client,
    preset: Preset,
    url: &str,
    id: &str,
    word: &str,
    sign: Signing,
) -> u16 {
    match preset {
        Preset::Twilio => {
            let fields = vec![
                ("AccountSid", ACCOUNT.to_owned()),
                ("MessageSid", id.to_owned()),
                ("SmsSid", id.to_owned()),
                ("MessageStatus", word.to_owned()),
                ("SmsStatus", word.to_owned()),
            ];
            send_fields(client, preset, url, fields, false, sign).await
        }
        Preset::Vonage => {
            let fields = vec![
                (
                    "err-code",
                    if word == "delivered" { "0" } else { "1" }.to_owned(),
                ),
                ("messageId", id.to_owned()),
                ("msisdn", "447700900000".to_owned()),
                ("network-code", "23410".to_owned()),
                ("price", "0.03330000".to_owned()),
                ("scts", "2612041200".to_owned()),
                ("status", word.to_owned()),
                ("to", "smsbus".to_owned()),
            ];
            send_fields(client, preset, url, fields, true, sign).await
        }
        Preset::Infobip => {
            let body = json!({"results": [{
                "bulkId": "bulk-1", "messageId": id, "to": "41793026727",
                "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": word,
                           "description": "simulated"},
                "error": {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
                          "description": "No Error", "permanent": false},
                "messageCount": 1}]});
            send_json(client, url, &body, basic(sign)).await
        }
        Preset::Generic => {
            let fields = vec![
                ("dlr-mid", id.to_owned()),
                ("dlr-mask", word.to_owned()),
                ("dlr-err", "000".to_owned()),
            ];
            send_fields(client, preset, url, fields, false, sign).await
        }
    }
}
