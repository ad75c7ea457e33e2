//! `smsbus-worker check`: run as a process against a database with good
//! and broken channels, rules and triggers; what it prints and its exit
//! status.

use std::process::{Command, Stdio};

use serde_json::json;
use smsbus_tests::db::TestDb;
use smsbus_tests::scenario::{add_channel, add_channel_of_kind, gsm_config, smpp_config, smsc};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::binary;

/// Runs the check on `db`: (success, output).
fn check(db: &TestDb) -> (bool, String) {
    let output = Command::new(binary())
        .arg("check")
        .env("DATABASE_URL", db.conninfo())
        .stdin(Stdio::null())
        .output()
        .expect("run smsbus-worker check");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn line<'a>(output: &'a str, item: &str) -> &'a str {
    output
        .lines()
        .find(|l| l[6.min(l.len())..].starts_with(item))
        .unwrap_or_else(|| panic!("no line for {item}:\n{output}"))
}

#[tokio::test]
async fn check_says_what_is_wrong_and_what_is_fine() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "good", &smpp_config(&sim, json!({}))).await;
    // Nothing listens on port 9 (discard) here.
    add_channel(
        &c,
        "unreachable",
        &json!({"host": "127.0.0.1", "port": 9, "system_id": "x", "password": "p"}),
    )
    .await;
    add_channel(&c, "misspelt", &json!({"host": "127.0.0.1", "prot": 2775})).await;
    add_channel_of_kind(
        &c,
        "modem",
        "gsm",
        &gsm_config(std::path::Path::new("/dev/no-such-modem"), json!({})),
    )
    .await;
    c.batch_execute(
        "CREATE TABLE public.vip (number text);
         INSERT INTO smsbus.route (position, condition, channel)
             VALUES (1, 'to_address IN (SELECT number FROM public.vip)', 'good');
         INSERT INTO smsbus.block (condition, reason) VALUES ('to_address = ''+31600000000''', 'test');
         INSERT INTO smsbus.trigger (name, on_status, language, script)
             VALUES ('logger', '{received}', 'sql', 'INSERT INTO public.vip (number) SELECT from_address FROM smsbus.message WHERE id = $1'),
                    ('lua-ok', '{received}', 'lua', 'function process(m) end');
         DROP TABLE public.vip;",
    )
    .await
    .unwrap();

    let (ok, output) = check(&db);
    assert!(!ok, "{output}");
    assert!(
        line(&output, "database").starts_with("ok    database: PostgreSQL 15"),
        "{output}"
    );
    assert!(
        line(&output, "channel good (smpp)").starts_with("ok"),
        "{output}"
    );
    assert!(
        line(&output, "channel unreachable (smpp)").contains("cannot connect to 127.0.0.1:9"),
        "{output}"
    );
    assert!(
        line(&output, "channel misspelt (smpp)").contains("prot"),
        "{output}"
    );
    assert!(
        line(&output, "channel modem (gsm)").contains("/dev/no-such-modem"),
        "{output}"
    );
    assert!(
        line(&output, "route 1").contains("\"public.vip\" does not exist"),
        "{output}"
    );
    assert!(line(&output, "block 1").starts_with("ok"), "{output}");
    assert!(
        line(&output, "trigger logger").contains("does not exist"),
        "{output}"
    );
    assert!(
        line(&output, "trigger lua-ok").starts_with("ok"),
        "{output}"
    );
    assert_eq!(
        line(&output, "wake-ups"),
        "ok    wake-ups: notifications: LISTEN on the listen connection",
        "{output}"
    );
    assert!(output.contains("5 of 10 checks failed"), "{output}");
    // Passwords are not printed.
    assert!(!output.contains("secret"), "{output}");

    // Mended, it passes.
    c.batch_execute(
        "CREATE TABLE public.vip (number text);
         DELETE FROM smsbus.channel WHERE name IN ('unreachable', 'misspelt', 'modem');",
    )
    .await
    .unwrap();
    let (ok, output) = check(&db);
    assert!(ok, "{output}");
    assert!(output.contains("all 7 checks passed"), "{output}");
}

#[tokio::test]
async fn check_without_the_extension_says_so() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("DROP EXTENSION smsbus CASCADE")
        .await
        .unwrap();
    let (ok, output) = check(&db);
    assert!(!ok);
    assert!(
        output.contains("FAIL  database: extension smsbus is not installed"),
        "{output}"
    );
}

#[tokio::test]
async fn check_names_a_restore_setting_left_on() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(&format!(
        "ALTER DATABASE \"{}\" SET smsbus.restoring = on",
        db.name
    ))
    .await
    .unwrap();
    let (ok, output) = check(&db);
    assert!(!ok);
    assert!(
        output.contains("FAIL  database: smsbus.restoring is on: new messages are stored as given"),
        "{output}"
    );
}

#[tokio::test]
async fn check_names_a_listener_whose_tls_files_cannot_be_loaded() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.smpp_server (name, listen, tls_cert_file, tls_key_file)
             VALUES ('secure', '127.0.0.1:2776', '/nonexistent/smsbus-cert.pem', '/nonexistent/smsbus-key.pem');
         INSERT INTO smsbus.smpp_server (name, listen) VALUES ('plain', '127.0.0.1:2775');",
    )
    .await
    .unwrap();
    let (ok, output) = check(&db);
    assert!(!ok, "{output}");
    assert!(
        line(&output, "smpp server secure").starts_with(
            "FAIL  smpp server secure: tls_cert_file: cannot read /nonexistent/smsbus-cert.pem"
        ),
        "{output}"
    );
    // Plain TCP has no files to check.
    assert!(!output.contains("smpp server plain"), "{output}");
    assert!(output.contains("1 of 3 checks failed"), "{output}");
}
