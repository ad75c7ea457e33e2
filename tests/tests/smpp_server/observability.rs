//! What an operator sees of the SMPP server: the worker's metrics per
//! account, and the outbox's depth while a client is away.

use smsbus_tests::metrics::{sample, scrape};

use super::*;

#[tokio::test]
async fn metrics_count_per_account_and_the_outbox_depth_follows_what_waits() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let port = free_port();
    account_and_listener(&c, port, ", channel = 'kpn'").await;
    let metrics_port = free_port().to_string();
    let worker = Worker::start(
        &db.conninfo(),
        &[
            "--worker-id",
            "w1",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let metrics_port: u16 = metrics_port.parse().unwrap();
    let value = |series: &'static str| async move {
        scrape(metrics_port).and_then(|body| sample(&body, series))
    };

    // A transmitter bind: the receipts have nowhere to go yet.
    let mut client = connect(port).await;
    assert_eq!(
        call(&mut client, 1, bind_transmitter()).await.status(),
        CommandStatus::EsmeRok
    );
    let mut ids = Vec::new();
    for (seq, to) in [(2, "31612345678"), (3, "31612345679"), (4, "31612345670")] {
        ids.push(submitted_id(
            &call(&mut client, seq, with_receipt(submit(to, "Hi"))).await,
        ));
    }
    let refused = call(&mut client, 5, submit("12ab", "bad destination")).await;
    assert_eq!(refused.status(), CommandStatus::EsmeRinvdstadr);
    wait_for(&c, &ids, &["delivered"], FINAL, &worker).await;
    let counted = eventually(Duration::from_secs(15), || async {
        value(r#"smsbus_smpp_server_submitted_total{account="acme"}"#).await == Some(3.0)
            && value(r#"smsbus_smpp_server_refused_total{account="acme"}"#).await == Some(1.0)
            && value(r#"smsbus_smpp_server_outbox_depth{account="acme"}"#).await == Some(3.0)
    })
    .await;
    assert!(
        counted,
        "submitted 3, refused 1, 3 receipts waiting: {:?}",
        scrape(metrics_port)
    );

    // A receiver bind takes them; acknowledged, they leave the outbox.
    let mut receiver = connect(port).await;
    assert_eq!(
        call(&mut receiver, 1, bind_receiver()).await.status(),
        CommandStatus::EsmeRok
    );
    let mut acknowledged = 0;
    while acknowledged < 3 {
        let command = next(&mut receiver).await;
        if let Some(Pdu::DeliverSm(_)) = command.pdu() {
            receiver
                .send(Command::new(
                    CommandStatus::EsmeRok,
                    command.sequence_number(),
                    DeliverSmResp::builder().build(),
                ))
                .await
                .unwrap();
            acknowledged += 1;
        }
    }
    let emptied = eventually(Duration::from_secs(15), || async {
        value(r#"smsbus_smpp_server_receipts_delivered_total{account="acme"}"#).await == Some(3.0)
            && value(r#"smsbus_smpp_server_outbox_depth{account="acme"}"#).await == Some(0.0)
    })
    .await;
    assert!(
        emptied,
        "3 receipts acknowledged, none waiting: {:?}",
        scrape(metrics_port)
    );
}
