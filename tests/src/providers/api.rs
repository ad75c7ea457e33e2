//! What the simulator answers to a send, as each provider does: the
//! request read by its field names, the credentials checked, and the
//! scripted answer (accepted with ids, refused, throttled, late or never).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};
use smsbus_worker::channels::http::reports::form_urlencoded_pairs;

use super::hooks::post_report;
use super::{new_id, Answer, Ctx, Preset, Signing, Taken, ACCOUNT, PASSWORD, USERNAME};

/// What a send request carried, by the preset's field names.
struct Sent {
    to: String,
    from: String,
    text: String,
    report_url: String,
    /// Infobip: the id we asked for.
    our_id: Option<String>,
}

fn read_send(preset: Preset, query: Option<&str>, body: &[u8]) -> Option<Sent> {
    let field = |pairs: &[(String, String)], name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match preset {
        Preset::Twilio => {
            let pairs: Vec<(String, String)> = form_urlencoded_pairs(body).collect();
            Some(Sent {
                to: field(&pairs, "To"),
                from: field(&pairs, "From"),
                text: field(&pairs, "Body"),
                report_url: field(&pairs, "StatusCallback"),
                our_id: None,
            })
        }
        Preset::Vonage => {
            let pairs: Vec<(String, String)> = form_urlencoded_pairs(body).collect();
            Some(Sent {
                to: field(&pairs, "to"),
                from: field(&pairs, "from"),
                text: field(&pairs, "text"),
                report_url: field(&pairs, "callback"),
                our_id: None,
            })
        }
        Preset::Infobip => {
            let json: Value = serde_json::from_slice(body).ok()?;
            let m = &json["messages"][0];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            Some(Sent {
                to: text(&m["destinations"][0]["to"]),
                from: text(&m["sender"]),
                text: text(&m["content"]["text"]),
                report_url: text(&m["webhooks"]["delivery"]["url"]),
                our_id: m["destinations"][0]["messageId"]
                    .as_str()
                    .map(str::to_owned),
            })
        }
        Preset::Generic => {
            let pairs: Vec<(String, String)> =
                form_urlencoded_pairs(query.unwrap_or("").as_bytes()).collect();
            Some(Sent {
                to: field(&pairs, "to"),
                from: field(&pairs, "from"),
                text: field(&pairs, "text"),
                report_url: field(&pairs, "dlr-url"),
                our_id: None,
            })
        }
    }
}

fn expected_path(preset: Preset, path: &str) -> bool {
    match preset {
        Preset::Twilio => path == format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json"),
        Preset::Vonage => path == "/sms/json",
        Preset::Infobip => path == "/sms/3/messages",
        Preset::Generic => path == "/send",
    }
}

fn authorized(preset: Preset, headers: &HeaderMap) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    match preset {
        Preset::Twilio => given == format!("Basic {}", b64(format!("{ACCOUNT}:{PASSWORD}"))),
        Preset::Vonage => given == format!("Basic {}", b64(format!("{USERNAME}:{PASSWORD}"))),
        Preset::Infobip => given == format!("App {PASSWORD}"),
        Preset::Generic => true,
    }
}

pub(super) async fn serve(State(ctx): State<Ctx>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let preset = ctx.preset;
    if !expected_path(preset, parts.uri.path()) {
        return (StatusCode::NOT_FOUND, "no such resource").into_response();
    }
    if !authorized(preset, &parts.headers) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code": 20003, "message": "Authenticate"}"#,
        )
            .into_response();
    }
    let answer = {
        let mut shared = ctx.shared.lock().unwrap();
        shared.requests += 1;
        shared.script.pop_front().unwrap_or(Answer::Accept)
    };
    let Some(sent) = read_send(preset, parts.uri.query(), &body) else {
        return (StatusCode::BAD_REQUEST, "unreadable").into_response();
    };
    match answer {
        Answer::Accept | Answer::AcceptReportFirst => {}
        Answer::Slow(pause) => tokio::time::sleep(pause).await,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Answer::Permanent => return refusal(preset, false),
        Answer::Temporary => return refusal(preset, true),
        Answer::TooMany(after) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            if let Some(after) = after {
                r.headers_mut()
                    .insert("Retry-After", after.to_string().parse().unwrap());
            }
            return r;
        }
    }
    // One id per part where the provider reports per part (Vonage).
    let parts_count = match preset {
        Preset::Vonage => {
            let encoding = smsbus_core::text::detect(&sent.text);
            smsbus_core::text::segments(&sent.text, encoding).unwrap_or(1)
        }
        _ => 1,
    };
    let ids: Vec<String> = match &sent.our_id {
        Some(ours) => vec![ours.clone()],
        None => (0..parts_count).map(|_| new_id(preset, &ctx.ids)).collect(),
    };
    let word = {
        let mut shared = ctx.shared.lock().unwrap();
        shared.taken.push(Taken {
            to: sent.to.clone(),
            from: sent.from.clone(),
            text: sent.text.clone(),
            ids: ids.clone(),
            report_url: sent.report_url.clone(),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: std::time::Instant::now(),
        });
        shared.auto_report.clone()
    };
    if let (Some(word), false) = (word, sent.report_url.is_empty()) {
        let reports = ids.clone();
        let (client, shared, url) = (ctx.client.clone(), ctx.shared.clone(), sent.report_url);
        let post = async move {
            for id in reports {
                let status = post_report(&client, preset, &url, &id, &word, Signing::Right).await;
                shared.lock().unwrap().hook_answers.push(status);
            }
        };
        if answer == Answer::AcceptReportFirst {
            post.await;
        } else {
            tokio::spawn(post);
        }
    }
    accepted(preset, &sent.to, &ids)
}

fn accepted(preset: Preset, to: &str, ids: &[String]) -> Response {
    match preset {
        Preset::Twilio => (
            StatusCode::CREATED,
            axum::Json(
                json!({"account_sid": ACCOUNT, "sid": ids[0], "status": "queued",
                              "to": to, "num_segments": "1", "error_code": null}),
            ),
        )
            .into_response(),
        Preset::Vonage => axum::Json(json!({
            "message-count": ids.len().to_string(),
            "messages": ids.iter().map(|id| json!({"to": to, "message-id": id, "status": "0",
                "remaining-balance": "38.07243628", "message-price": "0.04120000",
                "network": "23420"})).collect::<Vec<_>>()}))
        .into_response(),
        Preset::Infobip => axum::Json(json!({"bulkId": "bulk-1", "messages": [{
            "messageId": ids[0],
            "status": {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED",
                       "description": "Message sent to next instance"},
            "destination": to, "details": {"messageCount": 1}}]}))
        .into_response(),
        Preset::Generic => (StatusCode::ACCEPTED, format!("OK {}", ids[0])).into_response(),
    }
}

fn refusal(preset: Preset, temporary: bool) -> Response {
    match (preset, temporary) {
        (Preset::Twilio, false) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 21211,
                "message": "The 'To' number is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})),
        )
            .into_response(),
        (Preset::Vonage, false) => axum::Json(json!({"message-count": "1",
            "messages": [{"status": "7", "error-text": "Number barred."}]}))
        .into_response(),
        (Preset::Vonage, true) => axum::Json(json!({"message-count": "1",
            "messages": [{"status": "1",
                          "error-text": "You are sending SMS faster than the account limit."}]}))
        .into_response(),
        (Preset::Infobip, false) => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"requestError": {"serviceException": {"messageId": "BAD_REQUEST",
                "text": "Bad Request"}}}),
            ),
        )
            .into_response(),
        (Preset::Generic, false) => {
            (StatusCode::ACCEPTED, "failure: number barred").into_response()
        }
        (Preset::Generic, true) => (StatusCode::ACCEPTED, "retry later").into_response(),
        (_, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"message": "Service Unavailable"}"#,
        )
            .into_response(),
    }
}
