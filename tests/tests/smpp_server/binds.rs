//! Binding: credentials, addresses, state, max_binds across workers, and
//! a first submission over the bind.

use super::*;

#[tokio::test]
async fn a_client_binds_submits_and_gets_committed_ids() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    c.batch_execute(&format!(
        "INSERT INTO smsbus.account (name) VALUES ('acme');
         SELECT smsbus.set_password('acme', 'secret1');
         INSERT INTO smsbus.smpp_server (name, listen) VALUES ('main', '127.0.0.1:{port}');"
    ))
    .await
    .unwrap();
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);

    let mut client = connect(port).await;
    let refused = call(&mut client, 1, bind("wrong")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRinvpaswd);
    let bound = call(&mut client, 2, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    assert_eq!(bound.id(), CommandId::BindTransceiverResp);
    let again = call(&mut client, 3, bind("secret1")).await;
    assert_eq!(again.status(), CommandStatus::EsmeRalybnd);

    let answer = call(&mut client, 4, submit("31612345678", "Hello €")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    let Some(Pdu::SubmitSmResp(resp)) = answer.pdu() else {
        panic!("not a submit_sm_resp: {answer:?}");
    };
    let id: i64 = resp.message_id().as_str().parse().unwrap();
    let (to, body, account): (String, String, String) = {
        let row = c
            .query_one(
                "SELECT to_address, body, account FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        (to.as_str(), body.as_str(), account.as_str()),
        ("+31612345678", "Hello €", "acme")
    );

    // A bad destination is refused by name; an unknown command gets a
    // generic_nack and the session goes on.
    let bad = call(&mut client, 5, submit("12ab", "x")).await;
    assert_eq!(bad.status(), CommandStatus::EsmeRinvdstadr);
    client
        .get_mut()
        .write_all(&[0, 0, 0, 16, 0, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 6])
        .await
        .unwrap();
    let nack = next(&mut client).await;
    assert_eq!(nack.id(), CommandId::GenericNack);
    assert_eq!(nack.sequence_number(), 6);
    let alive = call(&mut client, 7, Pdu::EnquireLink).await;
    assert_eq!(alive.id(), CommandId::EnquireLinkResp);

    let binds: i64 = scalar(
        &c,
        "SELECT count(*) FROM smsbus.smpp_bind WHERE account = 'acme' AND worker = 'w1'",
        &[],
    )
    .await;
    assert_eq!(binds, 1);
    let unbound = call(&mut client, 8, Pdu::Unbind).await;
    assert_eq!(unbound.id(), CommandId::UnbindResp);
}

#[tokio::test]
async fn binds_are_refused_by_address_state_and_max_binds_across_workers() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", allowed_ips = '{10.0.0.0/8}', max_binds = 2").await;
    let _w1 = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let _w2 = Worker::start(&db.conninfo(), &["--worker-id", "w2"]);

    let mut client = connect(port).await;
    let refused = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(
        refused.status(),
        CommandStatus::EsmeRbindfail,
        "not from 10/8"
    );
    c.batch_execute("UPDATE smsbus.account SET allowed_ips = '{127.0.0.0/8}', enabled = false")
        .await
        .unwrap();
    let refused = call(&mut client, 2, bind("secret1")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRbindfail, "disabled");
    c.batch_execute("UPDATE smsbus.account SET enabled = true")
        .await
        .unwrap();

    // Two binds, on whichever workers took the connections; the third is
    // refused, counted in smsbus.smpp_bind across workers.
    let mut open = Vec::new();
    for i in 0..2 {
        let mut client = connect(port).await;
        let bound = call(&mut client, 1, bind("secret1")).await;
        assert_eq!(bound.status(), CommandStatus::EsmeRok, "bind {i}");
        open.push(client);
    }
    let mut third = connect(port).await;
    let refused = call(&mut third, 1, bind("secret1")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRbindfail, "max_binds");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.smpp_bind WHERE account = 'acme'"
        )
        .await,
        2
    );

    // Disabling the account ends its binds: the server unbinds them.
    c.batch_execute("UPDATE smsbus.account SET enabled = false")
        .await
        .unwrap();
    for client in &mut open {
        let unbind = tokio::time::timeout(Duration::from_secs(15), client.next())
            .await
            .expect("an unbind in time")
            .expect("the connection open")
            .expect("a PDU");
        assert_eq!(unbind.id(), CommandId::Unbind);
    }
}

#[tokio::test]
async fn a_tls_listener_serves_binds_over_tls_only() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::ServerName;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("smsbus-server-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    c.batch_execute(&format!(
        "INSERT INTO smsbus.account (name) VALUES ('acme');
         SELECT smsbus.set_password('acme', 'secret1');
         INSERT INTO smsbus.smpp_server (name, listen, tls_cert_file, tls_key_file)
         VALUES ('tls', '127.0.0.1:{port}', '{}', '{}');",
        cert_file.display(),
        key_file.display()
    ))
    .await
    .unwrap();
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);

    // Plain TCP to the TLS port is no SMPP session.
    let mut plain = connect(port).await;
    plain
        .send(Command::new(CommandStatus::EsmeRok, 1, bind("secret1")))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), plain.next())
        .await
        .expect("the server reacts");
    assert!(
        !matches!(answer, Some(Ok(ref c)) if c.status() == CommandStatus::EsmeRok),
        "a plain bind on the TLS port: {answer:?}"
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the listener's certificate");
    let mut client = Framed::new(tls, CommandCodec::new());
    client
        .send(Command::new(CommandStatus::EsmeRok, 1, bind("secret1")))
        .await
        .unwrap();
    let bound = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    client
        .send(Command::new(
            CommandStatus::EsmeRok,
            2,
            submit("31612345678", "over TLS"),
        ))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let id = submitted_id(&answer);
    let body: String = scalar(&c, "SELECT body FROM smsbus.message WHERE id = $1", &[&id]).await;
    assert_eq!(body, "over TLS");
    // Best effort: a leftover temporary folder harms nothing.
    let _ = std::fs::remove_dir_all(&dir);
}
