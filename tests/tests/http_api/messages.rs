//! Sending and reading messages: 201 after commit with the row, its
//! status whatever the router decided (here a disabled channel); 422 naming the field; the same
//! Idempotency-Key twice is one message; an account sees only its own.

use super::*;

#[tokio::test]
async fn a_message_is_created_for_the_keys_account_and_read_back() {
    let s = serve().await;
    let key = key(&s.c, "acme", &["send", "read"]).await;
    let created = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(
                json!({"to": "+31612345678", "body": "Hello over HTTP", "from": "ACME",
                        "priority": 2, "custom": {"order": 7}, "batch_id": "b1"}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let row = created.json();
    let id = row["id"].as_i64().unwrap();
    // The account's channel, which is disabled: the message exists, with
    // the status the router gave it and why.
    assert_eq!(row["channel"], "kpn", "the account's channel");
    assert_eq!(row["status"], "nochannel");
    assert_eq!(row["last_error"], "channel \"kpn\" is disabled");
    assert_eq!(
        (row["segments"].as_i64(), row["encoding"].as_str()),
        (Some(1), Some("gsm7"))
    );
    // Committed before the answer: the row is there, with its account.
    let (account, body): (String, String) = {
        let r =
            s.c.query_one(
                "SELECT account, body FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (account.as_str(), body.as_str()),
        ("acme", "Hello over HTTP")
    );

    let shown = s
        .call("GET", &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let shown = shown.json();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["custom"], json!({"order": 7}));
    assert_eq!(shown["parts"], json!([]));
    let trace = shown["trace"].as_array().unwrap();
    assert_eq!(trace.last().unwrap()["to"], "nochannel", "{trace:?}");

    // Archived, with its trace: read back the same.
    s.c.batch_execute("SELECT smsbus.archive(interval '0')")
        .await
        .unwrap();
    let archived = s
        .call("GET", &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(archived.status, 200, "{}", archived.body);
    assert_eq!(archived.json(), shown);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_stores_nothing() {
    let s = serve().await;
    let key = key(&s.c, "acme", &["send"]).await;
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("no destination", json!({"body": "x"}), Some("to")),
        (
            "an unknown field",
            json!({"to": "+31612345678", "body": "x", "colour": "red"}),
            Some("colour"),
        ),
        (
            "a bad number",
            json!({"to": "+31 6 12ab", "body": "x"}),
            Some("to"),
        ),
        (
            "an unknown encoding",
            json!({"to": "+31612345678", "body": "x", "encoding": "utf8"}),
            Some("encoding"),
        ),
        (
            "too long",
            json!({"to": "+31612345678", "body": "ж".repeat(671)}),
            Some("body"),
        ),
        (
            "an unknown channel",
            json!({"to": "+31612345678", "body": "x", "channel": "nope"}),
            Some("channel"),
        ),
        (
            "a bad time",
            json!({"to": "+31612345678", "body": "x", "scheduled_at": "tomorrow-ish"}),
            Some("scheduled_at or valid_until"),
        ),
        (
            "a wrong type",
            json!({"to": "+31612345678", "body": "x", "priority": "high"}),
            None,
        ),
    ];
    for (what, body, field) in cases {
        let answer = s.call("POST", "/v1/messages", Some(&key), Some(body)).await;
        assert_eq!(answer.status, 422, "{what}: {}", answer.body);
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "invalid", "{what}");
        assert_eq!(error["field"].as_str(), field, "{what}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{what}");
    }
    let not_json = s
        .call_with("POST", "/v1/messages", Some(&key), &[], Some("{not json"))
        .await;
    assert_eq!(not_json.status, 422, "{}", not_json.body);
    let huge = format!(
        r#"{{"to": "+31612345678", "body": "{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let too_big = s
        .call_with("POST", "/v1/messages", Some(&key), &[], Some(&huge))
        .await;
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    let count: i64 = scalar(&s.c, "SELECT count(*) FROM smsbus.message", &[]).await;
    assert_eq!(count, 0, "nothing stored");
    // The worker is still serving.
    let ok = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(message("+31612345678", "still here")),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
}

#[tokio::test]
async fn an_idempotent_retry_is_the_same_message_and_keys_are_per_account() {
    let s = serve().await;
    let acme = key(&s.c, "acme", &["send", "read"]).await;
    let other = key(&s.c, "other", &["send", "read"]).await;
    let retry = [("idempotency-key", "order-42")];
    let first = s
        .call_with(
            "POST",
            "/v1/messages",
            Some(&acme),
            &retry,
            Some(&message("+31612345678", "once").to_string()),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = s
        .call_with(
            "POST",
            "/v1/messages",
            Some(&acme),
            &retry,
            Some(&message("+31612345678", "once").to_string()),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], first.json()["id"]);
    // The same key from another account is its own message.
    let theirs = s
        .call_with(
            "POST",
            "/v1/messages",
            Some(&other),
            &retry,
            Some(&message("+31612345678", "once").to_string()),
        )
        .await;
    assert_eq!(theirs.status, 201, "{}", theirs.body);
    assert_ne!(theirs.json()["id"], first.json()["id"]);
    let stored: i64 = scalar(&s.c, "SELECT count(*) FROM smsbus.message", &[]).await;
    assert_eq!(stored, 2);

    // Another account's message is not there for this key.
    let id = first.json()["id"].as_i64().unwrap();
    for path in [
        format!("/v1/messages/{id}"),
        "/v1/messages/999999".into(),
        "/v1/messages/abc".into(),
    ] {
        let hidden = s.call("GET", &path, Some(&other), None).await;
        assert_eq!(hidden.status, 404, "{path}: {}", hidden.body);
        assert_eq!(hidden.json()["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn pages_filters_cancels_and_the_queue_are_the_accounts_own() {
    let s = serve().await;
    let acme = key(&s.c, "acme", &["send", "read"]).await;
    let other = key(&s.c, "other", &["send", "read"]).await;
    let admin = key(&s.c, "acme", &["read", "admin"]).await;
    let later = |body: &str| {
        json!({"to": "+31612345678", "body": body, "batch_id": "b",
                                    "scheduled_at": "2099-01-01T00:00:00Z"})
    };
    let mut ids = Vec::new();
    for body in [
        later("one"),
        later("two"),
        later("three"),
        message("+31612345678", "four"),
        message("+31612345678", "five"),
    ] {
        let created = s
            .call("POST", "/v1/messages", Some(&acme), Some(body))
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.json()["id"].as_i64().unwrap());
    }
    let theirs = s
        .call("POST", "/v1/messages", Some(&other), Some(later("theirs")))
        .await;
    let theirs = theirs.json()["id"].as_i64().unwrap();

    // Newest first, two a page; a message sent while paging does not
    // shift the pages after the first.
    let page = |cursor: Option<i64>| {
        let path = match cursor {
            Some(c) => format!("/v1/messages?limit=2&cursor={c}"),
            None => "/v1/messages?limit=2".into(),
        };
        let key = acme.clone();
        let s = &s;
        async move {
            let answer = s.call("GET", &path, Some(&key), None).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let page = answer.json();
            let ids: Vec<i64> = page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap())
                .collect();
            (ids, page["next_cursor"].as_i64())
        }
    };
    let (first, cursor) = page(None).await;
    assert_eq!(first, [ids[4], ids[3]]);
    s.call(
        "POST",
        "/v1/messages",
        Some(&acme),
        Some(message("+31612345678", "six")),
    )
    .await;
    let (second, cursor) = page(cursor).await;
    assert_eq!(second, [ids[2], ids[1]]);
    let (third, cursor) = page(cursor).await;
    assert_eq!((third, cursor), (vec![ids[0]], None));

    for (query, expected) in [
        ("batch_id=b", 3),
        ("status=scheduled", 3),
        ("status=nochannel", 3),
    ] {
        let answer = s
            .call("GET", &format!("/v1/messages?{query}"), Some(&acme), None)
            .await;
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        assert_eq!(
            answer.json()["messages"].as_array().unwrap().len(),
            expected,
            "{query}"
        );
    }
    for (query, field) in [
        ("status=bogus", Some("status")),
        ("limit=0", Some("limit")),
        ("since=soon", Some("since")),
        ("colour=red", None),
    ] {
        let answer = s
            .call("GET", &format!("/v1/messages?{query}"), Some(&acme), None)
            .await;
        assert_eq!(answer.status, 422, "{query}: {}", answer.body);
        assert_eq!(answer.json()["error"]["field"].as_str(), field, "{query}");
    }

    // Cancel: only what no channel took yet, only the account's own.
    let cancelled = s
        .call(
            "DELETE",
            &format!("/v1/messages/{}", ids[0]),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");
    let again = s
        .call(
            "DELETE",
            &format!("/v1/messages/{}", ids[0]),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(
        (again.status, again.json()["error"]["code"].as_str()),
        (409, Some("not_cancellable"))
    );
    let placed = s
        .call(
            "DELETE",
            &format!("/v1/messages/{}", ids[3]),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(placed.status, 409, "a nochannel message is past cancelling");
    let foreign = s
        .call(
            "DELETE",
            &format!("/v1/messages/{theirs}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(foreign.status, 404);
    let status: String = scalar(
        &s.c,
        "SELECT status::text FROM smsbus.message WHERE id = $1",
        &[&theirs],
    )
    .await;
    assert_eq!(
        status, "scheduled",
        "another account's message is untouched"
    );

    // The channels, without their configuration, and the queue: the
    // account's own, or everyone's for an admin key.
    let channels = s
        .call("GET", "/v1/channels", Some(&acme), None)
        .await
        .json();
    assert_eq!(channels["channels"][0]["name"], "kpn");
    assert_eq!(channels["channels"][0]["link"], "disconnected");
    assert!(channels["channels"][0].get("config").is_none());
    let waiting = |answer: Answer| -> i64 {
        answer.json()["queue"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["status"] == "scheduled")
            .map(|q| q["messages"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        waiting(s.call("GET", "/v1/queue", Some(&acme), None).await),
        2
    );
    assert_eq!(
        waiting(s.call("GET", "/v1/queue", Some(&admin), None).await),
        3
    );
}

#[tokio::test]
async fn a_batch_is_one_transaction_with_a_result_per_item() {
    let s = serve().await;
    let key = key(&s.c, "acme", &["send"]).await;
    let items = json!({"messages": [
        message("+31612345678", "one"),
        {"to": "+31612345678", "body": "x", "colour": "red"},
        message("+31612345679", "two"),
        {"to": "+31 6 12ab", "body": "x"},
        message("+31612345670", "three"),
    ]});
    let answer = s
        .call("POST", "/v1/messages/batch", Some(&key), Some(items))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(
        (answer["created"].as_i64(), answer["refused"].as_i64()),
        (Some(3), Some(2))
    );
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<(i64, i64)> = results
        .iter()
        .map(|r| (r["index"].as_i64().unwrap(), r["status"].as_i64().unwrap()))
        .collect();
    assert_eq!(statuses, [(0, 201), (1, 422), (2, 201), (3, 422), (4, 201)]);
    assert_eq!(results[1]["error"]["field"], "colour");
    assert_eq!(results[3]["error"]["field"], "to");
    let bodies: Vec<String> =
        s.c.query(
            "SELECT body FROM smsbus.message WHERE account = 'acme' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    assert_eq!(results[2]["message"]["body"], "two");

    // Thousands at once, in order; beyond 10,000 the batch is refused whole.
    let many: Vec<Value> = (0..2000)
        .map(|i| message("+31612345678", &format!("m{i}")))
        .collect();
    let answer = s
        .call(
            "POST",
            "/v1/messages/batch",
            Some(&key),
            Some(json!({ "messages": many })),
        )
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        &answer.body[..answer.body.len().min(300)]
    );
    let answer = answer.json();
    assert_eq!(answer["created"], 2000);
    assert_eq!(answer["results"][1999]["message"]["body"], "m1999");
    let too_many: Vec<Value> = (0..10_001).map(|_| message("+31612345678", "x")).collect();
    let refused = s
        .call(
            "POST",
            "/v1/messages/batch",
            Some(&key),
            Some(json!({ "messages": too_many })),
        )
        .await;
    assert_eq!(
        refused.status,
        422,
        "{}",
        &refused.body[..refused.body.len().min(300)]
    );
    assert_eq!(refused.json()["error"]["field"], "messages");
    let stored: i64 = scalar(&s.c, "SELECT count(*) FROM smsbus.message", &[]).await;
    assert_eq!(stored, 2003);
}
