//! The worker's Prometheus endpoint (`--metrics-addr`), scraped over HTTP
//! after messages went out, came back delivered and came in, and a
//! trigger ran.

use std::time::Duration;

use serde_json::json;
use smsbus_tests::db::TestDb;
use smsbus_tests::metrics::{sample, scrape};
use smsbus_tests::net::free_port;
use smsbus_tests::scenario::{add_channel, send, smpp_config, smsc, wait_for, wait_link};
use smsbus_tests::smsc::{Behaviour, InboundText};
use smsbus_tests::worker::{eventually, Worker};

#[tokio::test]
async fn the_worker_serves_prometheus_metrics() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script)
         VALUES ('noop', '{received}', 'sql', 'SELECT $1')",
    )
    .await
    .unwrap();
    let port = free_port();
    let port_text = format!("127.0.0.1:{port}");
    let w = Worker::start(
        &db.conninfo(),
        &["--worker-id", "w1", "--metrics-addr", &port_text],
    );
    wait_link(&c, "kpn", "connected", &w).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(send(&c, "kpn", &format!("+3161234567{n}"), "counted").await);
    }
    wait_for(&c, &ids, &["delivered"], Duration::from_secs(20), &w).await;
    sim.deliver(
        &InboundText::new("+31687654321", "1234", "hello"),
        Duration::from_secs(10),
    )
    .await
    .expect("deliver_sm answered");

    let expected = [
        (r#"smsbus_channel_submitted_total{channel="kpn"}"#, 5.0),
        (r#"smsbus_channel_sent_total{channel="kpn"}"#, 5.0),
        (r#"smsbus_channel_reports_total{channel="kpn"}"#, 5.0),
        (r#"smsbus_channel_delivered_total{channel="kpn"}"#, 5.0),
        (r#"smsbus_channel_inbound_total{channel="kpn"}"#, 1.0),
        (r#"smsbus_due_to_submit_seconds_count{channel="kpn"}"#, 5.0),
        (
            r#"smsbus_submit_to_report_seconds_count{channel="kpn"}"#,
            5.0,
        ),
        (r#"smsbus_channel_window_in_use{channel="kpn"}"#, 0.0),
        (r#"smsbus_trigger_runs_total{trigger="noop"}"#, 1.0),
    ];
    let mut body = String::new();
    let all_there = eventually(Duration::from_secs(10), || {
        body = scrape(port).unwrap_or_default();
        let ok = expected
            .iter()
            .all(|(series, value)| sample(&body, series) == Some(*value));
        async move { ok }
    })
    .await;
    assert!(all_there, "metrics:\n{body}\n{}", w.log());
    assert!(body.contains("# TYPE smsbus_due_to_submit_seconds histogram"));
    // Credentials never show.
    assert!(!body.contains("secret") && !w.log().contains("secret"));
}
