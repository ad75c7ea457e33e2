//! query_sm, cancel_sm and replace_sm on the account's own messages.

use super::*;

fn query_sm(id: &str) -> QuerySm {
    QuerySm::builder()
        .message_id(COctetString::from_str(id).unwrap())
        .build()
}

#[tokio::test]
async fn query_sm_answers_for_the_accounts_own_messages_only() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, "").await;
    c.batch_execute("INSERT INTO smsbus.account (name) VALUES ('other')")
        .await
        .unwrap();
    let insert = |account: &'static str, scheduled: &'static str| {
        let c = &c;
        async move {
            scalar::<i64>(
                c,
                &format!(
                    "INSERT INTO smsbus.message (to_address, body, account, scheduled_at)
                     VALUES ('+31612345678', 'x', '{account}', {scheduled}) RETURNING id"
                ),
                &[],
            )
            .await
        }
    };
    // No channel: nochannel at once, a final state.
    let rejected = insert("acme", "now()").await;
    let later = insert("acme", "now() + interval '1 day'").await;
    let others = insert("other", "now()").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);

    let answer = call(&mut client, 2, query_sm(&rejected.to_string())).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    let Some(Pdu::QuerySmResp(resp)) = answer.pdu() else {
        panic!("not a query_sm_resp: {answer:?}");
    };
    assert_eq!(resp.message_id.as_str(), rejected.to_string());
    assert_eq!(resp.message_state, MessageState::Rejected);
    assert_eq!(resp.final_date.as_ref().len(), 17, "a final date: {resp:?}");

    let answer = call(&mut client, 3, query_sm(&later.to_string())).await;
    let Some(Pdu::QuerySmResp(resp)) = answer.pdu() else {
        panic!("not a query_sm_resp: {answer:?}");
    };
    assert_eq!(resp.message_state, MessageState::Enroute);
    assert_eq!(resp.final_date.as_ref(), b"\0", "no final date yet");

    // Nor may it cancel or replace another account's message.
    let cancel = call(&mut client, 40, cancel_sm(&others.to_string(), "")).await;
    assert_eq!(cancel.status(), CommandStatus::EsmeRinvmsgid);
    let replace = ReplaceSm::builder()
        .message_id(COctetString::from_str(&others.to_string()).unwrap())
        .short_message(OctetString::from_vec(b"hijacked".to_vec()).unwrap())
        .build();
    let replaced = call(&mut client, 41, replace).await;
    assert_eq!(replaced.status(), CommandStatus::EsmeRinvmsgid);
    let body: String = scalar(
        &c,
        "SELECT body FROM smsbus.message WHERE id = $1",
        &[&others],
    )
    .await;
    assert_eq!(body, "x");

    for (sequence, id) in [
        (4, others.to_string()),
        (5, "999999".into()),
        (6, "x1".into()),
    ] {
        let answer = call(&mut client, sequence, query_sm(&id)).await;
        assert_eq!(answer.status(), CommandStatus::EsmeRinvmsgid, "{id}");
        assert_eq!(answer.id(), CommandId::QuerySmResp);
    }
    // The archive answers too.
    c.batch_execute(&format!(
        "SELECT smsbus.archive(interval '0', 100); SELECT 1 FROM smsbus.message_archive WHERE id = {rejected}"
    ))
    .await
    .unwrap();
    let answer = call(&mut client, 7, query_sm(&rejected.to_string())).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok, "{answer:?}");
}

fn scheduled_in_an_hour(to: &str, text: &str) -> SubmitSm {
    let mut pdu = submit(to, text);
    pdu.schedule_delivery_time = EmptyOrFullCOctetString::from_str("000000010000000R").unwrap();
    pdu
}

fn cancel_sm(id: &str, destination: &str) -> CancelSm {
    CancelSm::builder()
        .message_id(COctetString::from_str(id).unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str(destination).unwrap())
        .build()
}

#[tokio::test]
async fn cancel_sm_and_replace_sm_change_only_what_no_channel_took() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let port = free_port();
    account_and_listener(&c, port, ", credit = 10").await;
    let _worker = Worker::start(&db.conninfo(), &["--worker-id", "w1"]);
    let mut client = connect(port).await;
    let bound = call(&mut client, 1, bind("secret1")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
    let credit = || async {
        scalar::<Option<i64>>(
            &c,
            "SELECT credit FROM smsbus.account WHERE name = 'acme'",
            &[],
        )
        .await
    };
    let row = |id: i64| {
        let c = &c;
        async move {
            let r = c
                .query_one(
                    "SELECT status::text, body, receipts FROM smsbus.message WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<i16>>(2),
            )
        }
    };

    let id =
        submitted_id(&call(&mut client, 2, scheduled_in_an_hour("31612345678", "first")).await);
    assert_eq!(row(id).await.0, "scheduled");
    assert_eq!(credit().await, Some(9));

    let replace = ReplaceSm::builder()
        .message_id(COctetString::from_str(&id.to_string()).unwrap())
        .registered_delivery(RegisteredDelivery::from(1))
        .short_message(
            OctetString::from_vec(smsbus_core::gsm7::encode("replaced").unwrap()).unwrap(),
        )
        .build();
    let answer = call(&mut client, 3, replace.clone()).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::ReplaceSmResp, CommandStatus::EsmeRok)
    );
    assert_eq!(
        row(id).await,
        ("scheduled".into(), "replaced".into(), Some(1))
    );

    let answer = call(&mut client, 4, cancel_sm(&id.to_string(), "")).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::CancelSmResp, CommandStatus::EsmeRok)
    );
    assert_eq!(row(id).await.0, "cancelled");
    assert_eq!(credit().await, Some(10), "the cancelled part is given back");
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        0,
        "a cancelled message owes no receipt"
    );
    let again = call(&mut client, 5, cancel_sm(&id.to_string(), "")).await;
    assert_eq!(again.status(), CommandStatus::EsmeRcancelfail);
    let late = call(&mut client, 6, replace).await;
    assert_eq!(late.status(), CommandStatus::EsmeRreplacefail);
    let unknown = call(&mut client, 7, cancel_sm("987654", "")).await;
    assert_eq!(unknown.status(), CommandStatus::EsmeRinvmsgid);

    // Without an id: every message not yet claimed to that destination.
    let a = submitted_id(&call(&mut client, 8, scheduled_in_an_hour("31612345678", "a")).await);
    let b = submitted_id(&call(&mut client, 9, scheduled_in_an_hour("31612345678", "b")).await);
    let other =
        submitted_id(&call(&mut client, 10, scheduled_in_an_hour("31600000000", "c")).await);
    let answer = call(&mut client, 11, cancel_sm("", "31612345678")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRok);
    assert_eq!(row(a).await.0, "cancelled");
    assert_eq!(row(b).await.0, "cancelled");
    assert_eq!(row(other).await.0, "scheduled");
    assert_eq!(credit().await, Some(9));

    // A message already final cannot be taken back.
    let done = submitted_id(&call(&mut client, 12, submit("31612345678", "now")).await);
    assert_eq!(row(done).await.0, "nochannel");
    let answer = call(&mut client, 13, cancel_sm(&done.to_string(), "")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRcancelfail);
}
