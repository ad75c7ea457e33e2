//! The API over HTTPS (`--http-tls-cert`, `--http-tls-key`): a client
//! that trusts the certificate is served; plain HTTP on the port is not;
//! a certificate that cannot be read stops the worker at start, naming
//! the flag.

use std::sync::Arc;
use std::time::Duration;

use smsbus_tests::db::TestDb;
use smsbus_tests::worker::Worker;

use super::{free_port, key};

fn https_agent(ca: &[u8]) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let ca = Certificate::from_der(ca).to_owned();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
                .build(),
        )
        .build()
        .into()
}

#[tokio::test]
async fn the_api_is_served_over_tls() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', false);
         INSERT INTO smsbus.account (name, channel) VALUES ('acme', 'kpn');",
    )
    .await
    .unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("smsbus-http-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = Worker::start(
        &db.conninfo(),
        &[
            "--worker-id",
            "w1",
            "--http-addr",
            &addr,
            "--http-tls-cert",
            cert.to_str().unwrap(),
            "--http-tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let api_key = key(&c, "acme", &["send", "read"]).await;
    let agent = https_agent(certified.cert.der());
    let base = format!("https://localhost:{port}");
    let answered = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Ok(answer) = agent.get(format!("{base}/healthz")).call() {
                assert_eq!(answer.status(), 200);
                let mut sent = agent
                    .post(format!("{base}/v1/messages"))
                    .header("authorization", format!("Bearer {api_key}"))
                    .header("content-type", "application/json")
                    .send(r#"{"to": "+31612345678", "body": "over TLS"}"#)
                    .unwrap();
                assert_eq!(sent.status(), 201);
                return Some(sent.body_mut().read_to_string().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();
    let body = answered.unwrap_or_else(|| panic!("no HTTPS answer:\n{}", worker.log()));
    assert!(body.contains("\"status\""), "{body}");
    let stored: i64 = smsbus_tests::db::scalar(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE body = 'over TLS' AND account = 'acme'",
        &[],
    )
    .await;
    assert_eq!(stored, 1);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = smsbus_tests::api_client::request(
        "GET",
        &format!("http://127.0.0.1:{port}/healthz"),
        &[],
        None,
    )
    .await;
    assert!(plain.is_none(), "{plain:?}");
    // A client that never finishes its handshake holds up no other.
    let _silent = std::net::TcpStream::connect(&addr).unwrap();
    let agent = https_agent(certified.cert.der());
    let base = format!("https://localhost:{port}");
    let status = tokio::task::spawn_blocking(move || {
        agent
            .get(format!("{base}/healthz"))
            .call()
            .map(|a| a.status().as_u16())
    })
    .await
    .unwrap();
    assert_eq!(status.ok(), Some(200));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_certificate_that_cannot_be_read_stops_the_worker() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut worker = Worker::start(
        &db.conninfo(),
        &[
            "--worker-id",
            "w1",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--http-tls-cert",
            "/nonexistent/smsbus-cert.pem",
            "--http-tls-key",
            "/nonexistent/smsbus-key.pem",
        ],
    );
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker exits");
    assert!(!status.success());
    let log = worker.log();
    assert!(
        log.contains("--http-tls-cert: cannot read /nonexistent/smsbus-cert.pem"),
        "{log}"
    );
    // A key without a certificate is refused before anything starts.
    let mut worker = Worker::start(
        &db.conninfo(),
        &[
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--http-tls-key",
            "/nonexistent/smsbus-key.pem",
        ],
    );
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker exits");
    assert!(!status.success());
    assert!(worker.log().contains("--http-tls-cert"), "{}", worker.log());
}
