//! Why an SMPP session ended, as the worker tells it: a refused bind (an
//! account an operator must mend) is logged as an error, a lost link as a
//! warning, and a bind after a lost link counts as a reconnect.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;
use smsbus_tests::db::TestDb;
use smsbus_tests::net::free_port;
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, wait_link};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};

/// GET /metrics; the body, or None while nothing answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of the sample named exactly `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The first line of the worker's log that contains `text`.
fn log_line(w: &Worker, text: &str) -> Option<String> {
    w.log()
        .lines()
        .find(|l| l.contains(text))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_refused_bind_is_an_error_a_lost_link_a_warning_and_a_rebind_a_reconnect() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({"password": "wrong"}))).await;
    let port = free_port();
    let port_text = format!("127.0.0.1:{port}");
    let w = Worker::start(
        &db.conninfo(),
        &["--worker-id", "w1", "--metrics-addr", &port_text],
    );

    let refused = "bind refused: ESME_RINVPASWD (0x0000000E)";
    let logged = eventually(Duration::from_secs(10), || async {
        log_line(&w, refused).is_some()
    })
    .await;
    assert!(logged, "{}", w.log());
    let line = log_line(&w, refused).unwrap();
    assert!(line.contains("ERROR"), "{line}");

    c.execute(
        "UPDATE smsbus.channel SET config = config || '{\"password\": \"secret\"}' WHERE name = 'kpn'",
        &[],
    )
    .await
    .unwrap();
    wait_link(&c, "kpn", "connected", &w).await;

    sim.drop_connections();
    let lost = "the provider closed the connection";
    let logged = eventually(Duration::from_secs(10), || async {
        log_line(&w, lost).is_some()
    })
    .await;
    assert!(logged, "{}", w.log());
    let line = log_line(&w, lost).unwrap();
    assert!(line.contains("WARN"), "{line}");

    // Bound again: one reconnect (the binds refused before the first bind
    // are not).
    let series = r#"smsbus_channel_reconnects_total{channel="kpn"}"#;
    let mut body = String::new();
    let counted = eventually(Duration::from_secs(15), || {
        body = scrape(port).unwrap_or_default();
        let ok = sample(&body, series) == Some(1.0) && sim.bound_sessions() == 1;
        async move { ok }
    })
    .await;
    assert!(counted, "metrics:\n{body}\n{}", w.log());
}
