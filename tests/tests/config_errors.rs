//! A channel's config errors reach `channel_state.last_error`, which
//! senders read, and `smsbus-worker check`'s output: they name the key and
//! the type it must have, never the value (a numeric password or PIN is
//! still a secret), cut long keys short, and the worker keeps running the
//! other channels.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use smsbus_tests::db::TestDb;
use smsbus_tests::scenario::{
    add_channel, add_channel_of_kind, gsm_config, link_state, send, smpp_config, smsc, wait_for,
    worker,
};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{binary, eventually};

/// Values no error may show.
const SECRETS: [&str; 5] = ["43218765", "98765432", "hunter2", "27759", "5678"];

#[tokio::test]
async fn config_errors_name_the_key_and_type_never_the_value() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    let long_key = "x".repeat(600);
    // (channel, kind, config, what its last_error must say)
    let broken = [
        (
            "password",
            "smpp",
            smpp_config(&sim, json!({"password": 43218765})),
            "invalid SMPP config: `password` must be a string, not a number".to_owned(),
        ),
        (
            "system_id",
            "smpp",
            smpp_config(&sim, json!({"system_id": 98765432})),
            "invalid SMPP config: `system_id` must be a string, not a number".to_owned(),
        ),
        (
            "port",
            "smpp",
            smpp_config(&sim, json!({"port": "27759"})),
            "invalid SMPP config: `port` must be an integer from 0 to 65535, not a string"
                .to_owned(),
        ),
        (
            "typo",
            "smpp",
            smpp_config(&sim, json!({"passwd": "hunter2"})),
            "invalid SMPP config: unknown key `passwd`; the keys are host, port,".to_owned(),
        ),
        (
            "pin",
            "gsm",
            gsm_config(std::path::Path::new("/dev/null"), json!({"pin": 5678})),
            "invalid GSM config: `pin` must be a string, not a number".to_owned(),
        ),
        (
            "http_password",
            "http",
            json!({"preset": "twilio", "account": "AC1", "username": "AC1",
                   "password": 43218765, "webhook_url": "https://x"}),
            "invalid HTTP config: `password` must be a string, not a number".to_owned(),
        ),
        (
            "http_typo",
            "http",
            json!({"preset": "infobip", "base_url": "https://x", "tokn": "hunter2"}),
            "invalid HTTP config: unknown key `tokn`".to_owned(),
        ),
        (
            "long",
            "gsm",
            gsm_config(
                std::path::Path::new("/dev/null"),
                json!({ long_key.clone(): 1 }),
            ),
            format!("invalid GSM config: unknown key `{}…`", "x".repeat(40)),
        ),
    ];
    for (name, kind, config, _) in &broken {
        add_channel_of_kind(&c, name, kind, config).await;
    }
    add_channel(&c, "good", &smpp_config(&sim, json!({}))).await;
    let w = worker(&db, "w1");

    for (name, _, _, says) in &broken {
        let reported = eventually(Duration::from_secs(15), || async {
            link_state(&c, name)
                .await
                .and_then(|s| s.1)
                .is_some_and(|e| e.starts_with(says.as_str()))
        })
        .await;
        let state = link_state(&c, name).await;
        assert!(
            reported,
            "channel {name}: {state:?}, expected {says:?}\n{}",
            w.log()
        );
        let error = state.and_then(|s| s.1).unwrap_or_default();
        for secret in SECRETS {
            assert!(
                !error.contains(secret),
                "channel {name} shows {secret}: {error}"
            );
        }
        assert!(
            !error.contains(&long_key),
            "channel {name} shows the whole key"
        );
        assert!(
            error.len() < 1000,
            "channel {name}: {} characters",
            error.len()
        );
    }

    // The other channel never noticed.
    let id = send(&c, "good", "+31612345678", "still here").await;
    wait_for(&c, &[id], &["delivered"], Duration::from_secs(20), &w).await;

    // `smsbus-worker check` says the same.
    let output = Command::new(binary())
        .arg("check")
        .env("DATABASE_URL", db.conninfo())
        .stdin(Stdio::null())
        .output()
        .expect("run smsbus-worker check");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    for (name, kind, _, says) in &broken {
        let item = format!("FAIL  channel {name} ({kind}): {says}");
        assert!(
            text.lines().any(|l| l.starts_with(&item)),
            "no {item:?} in:\n{text}"
        );
    }
    for secret in SECRETS {
        assert!(!text.contains(secret), "check shows {secret}:\n{text}");
    }
    assert!(!text.contains(&long_key), "check shows the whole key");
}
