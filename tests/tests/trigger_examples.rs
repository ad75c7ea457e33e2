//! The trigger examples in sql/examples/, loaded as they are and run end
//! to end: the worker as a process, SMPP channels on the SMSC simulator.

use std::time::Duration;

use serde_json::json;
use smsbus_tests::db::{count, scalar, strings, TestDb};
use smsbus_tests::http::HttpServer;
use smsbus_tests::scenario::{add_channel, send, smpp_config, smsc, wait_for, wait_link, worker};
use smsbus_tests::smsc::{Behaviour, InboundText};
use smsbus_tests::worker::eventually;

const FINAL: Duration = Duration::from_secs(20);

#[tokio::test]
async fn keyword_optout_example() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    c.batch_execute(include_str!("../../sql/examples/trigger_optout.sql"))
        .await
        .unwrap();
    let w = worker(&db, "w1");
    wait_link(&c, "kpn", "connected", &w).await;
    // STOP from a customer: confirmed over SMPP, then listed.
    sim.deliver(&InboundText::new("+31687654321", "1234", " stop "), FINAL)
        .await
        .expect("deliver_sm answered");
    let confirmed = eventually(FINAL, || async {
        sim.received()
            .iter()
            .any(|r| r.destination == "31687654321" && r.text.starts_with("You will get no more"))
    })
    .await;
    assert!(
        confirmed,
        "no confirmation: {:#?}\n{}",
        sim.received(),
        w.log()
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM opt_out WHERE number = '+31687654321'"
        )
        .await,
        1
    );
    // Now blocked.
    let id = send(&c, "kpn", "+31687654321", "an offer").await;
    wait_for(&c, &[id], &["blocked"], FINAL, &w).await;
    // START undoes it and says so.
    sim.deliver(&InboundText::new("+31687654321", "1234", "START"), FINAL)
        .await
        .expect("deliver_sm answered");
    let welcomed = eventually(FINAL, || async {
        sim.received()
            .iter()
            .any(|r| r.destination == "31687654321" && r.text == "Welcome back.")
    })
    .await;
    assert!(welcomed, "{}", w.log());
    assert_eq!(count(&c, "SELECT count(*) FROM opt_out").await, 0);
    // Both keyword messages ran their trigger; the replies had none.
    let processed = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE direction = 'in' AND trigger_status = 'processed'",
    )
    .await;
    assert_eq!(processed, 2);
}

#[tokio::test]
async fn delivery_log_example() {
    let sim = smsc(Behaviour {
        undeliverable_every: 2,
        ..Behaviour::default()
    })
    .await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    c.batch_execute(include_str!("../../sql/examples/trigger_delivery_log.sql"))
        .await
        .unwrap();
    let w = worker(&db, "w1");
    let ids = [
        send(&c, "kpn", "+31612345678", "one").await,
        send(&c, "kpn", "+31612345679", "two").await,
    ];
    wait_for(&c, &ids, &["delivered", "notdelivered"], FINAL, &w).await;
    let logged = eventually(FINAL, || async {
        count(&c, "SELECT count(*) FROM delivery_log").await == 2
    })
    .await;
    assert!(logged, "{}", w.log());
    let mismatched = count(
        &c,
        "SELECT count(*) FROM delivery_log l JOIN smsbus.message m ON m.id = l.message_id
         WHERE l.status <> m.status::text OR l.reference IS DISTINCT FROM m.reference",
    )
    .await;
    assert_eq!(mismatched, 0);
    let statuses = strings(&c, "SELECT status FROM delivery_log ORDER BY status", &[]).await;
    assert_eq!(statuses, ["delivered", "notdelivered"]);
}

#[tokio::test]
async fn retry_on_backup_example() {
    let refusing = smsc(Behaviour {
        reject_destination: Some("31612345678".into()),
        ..Behaviour::default()
    })
    .await;
    let backup = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "primary", &smpp_config(&refusing, json!({}))).await;
    add_channel(&c, "backup", &smpp_config(&backup, json!({}))).await;
    c.batch_execute(include_str!("../../sql/examples/trigger_retry.sql"))
        .await
        .unwrap();
    // Thirty seconds is the example's pause; the test does not wait it out.
    c.batch_execute(
        "UPDATE smsbus.trigger SET script = replace(script, '30 seconds', '0 seconds') WHERE name = 'retry-on-backup'",
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    let id = send(&c, "primary", "+31612345678", "please arrive").await;
    wait_for(&c, &[id], &["delivered"], FINAL, &w).await;
    let channel: String = scalar(
        &c,
        "SELECT channel FROM smsbus.message WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(channel, "backup");
    assert!(backup.received().iter().any(|r| r.text == "please arrive"));
    let trace = strings(
        &c,
        "SELECT to_status::text FROM smsbus.message_event WHERE message_id = $1 ORDER BY id",
        &[&id],
    )
    .await;
    assert_eq!(
        trace,
        [
            "queued",
            "sending",
            "failed",
            "scheduled",
            "queued",
            "sending",
            "sent",
            "delivered"
        ]
    );
}

#[tokio::test]
async fn http_forward_example() {
    let service = HttpServer::start();
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    c.batch_execute(include_str!("../../sql/examples/trigger_http_forward.sql"))
        .await
        .unwrap();
    c.execute(
        "INSERT INTO http_forward (endpoint, token) VALUES ($1, 'secret')",
        &[&format!("{}/sms/inbound", service.url)],
    )
    .await
    .unwrap();
    let w = worker(&db, "w1");
    wait_link(&c, "kpn", "connected", &w).await;
    sim.deliver(
        &InboundText::new("+31687654321", "1234", "hello there"),
        FINAL,
    )
    .await
    .expect("deliver_sm answered");
    let forwarded = eventually(FINAL, || async { !service.seen().is_empty() }).await;
    assert!(forwarded, "{}", w.log());
    let request = &service.seen()[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", "/sms/inbound")
    );
    assert_eq!(request.header("authorization"), Some("Bearer secret"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(
        (&sent["from"], &sent["to"], &sent["body"], &sent["channel"]),
        (
            &json!("+31687654321"),
            &json!("1234"),
            &json!("hello there"),
            &json!("kpn")
        )
    );
    let id = sent["id"].as_i64().unwrap();
    let done = eventually(FINAL, || async {
        scalar::<String>(
            &c,
            "SELECT trigger_status::text FROM smsbus.message WHERE id = $1",
            &[&id],
        )
        .await
            == "processed"
    })
    .await;
    assert!(done, "{}", w.log());
    let custom: serde_json::Value = scalar(
        &c,
        "SELECT custom FROM smsbus.message WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(custom["forwarded"], 201);

    // The service fails: the message's triggers fail, saying why; sent
    // again once it is back, as the example says.
    service.answer_with(503);
    sim.deliver(&InboundText::new("+31687654321", "1234", "second"), FINAL)
        .await
        .expect("deliver_sm answered");
    let failed = eventually(FINAL, || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE trigger_status = 'failed'",
        )
        .await
            == 1
    })
    .await;
    assert!(failed, "{}", w.log());
    let error: String = scalar(
        &c,
        "SELECT last_error FROM smsbus.message WHERE trigger_status = 'failed'",
        &[],
    )
    .await;
    assert!(error.contains("answered 503"), "{error}");
    service.answer_with(200);
    c.batch_execute(
        "UPDATE smsbus.message SET trigger_status = 'pending' WHERE direction = 'in' AND trigger_status = 'failed'",
    )
    .await
    .unwrap();
    let resent = eventually(FINAL, || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE trigger_status = 'processed'",
        )
        .await
            == 2
    })
    .await;
    assert!(resent, "{}", w.log());
    let bodies: Vec<String> = service.seen().iter().map(|s| s.body.clone()).collect();
    assert_eq!(bodies.len(), 3);
    assert!(bodies[1].contains("second") && bodies[2].contains("second"));
}
