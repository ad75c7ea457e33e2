//! Who may call: a key of an enabled account, within its scopes and
//! address ranges. Attacks: no key, a made-up or disabled key, a key of a
//! disabled account, a key beyond its scope or from elsewhere; and what
//! senders and admins can do with keys in SQL.

use smsbus_tests::db::db_error;
use smsbus_tests::roles::LoginRoles;

use super::*;

#[tokio::test]
async fn keys_are_checked_for_account_scope_and_address() {
    let s = serve().await;
    let good = key(&s.c, "acme", &["send", "read"]).await;
    assert!(good.starts_with("sbk_") && good.len() == 68, "{good}");
    let read_only = key(&s.c, "acme", &["read"]).await;
    let body = Some(message("+31612345678", "hi"));
    let refused = |answer: &Answer, status: u16, what: &str| {
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert!(
            !answer.body.contains(&good),
            "{what}: the key is never echoed"
        );
    };

    refused(
        &s.call("POST", "/v1/messages", None, body.clone()).await,
        401,
        "no key",
    );
    refused(
        &s.call("POST", "/v1/messages", Some("sbk_0000"), body.clone())
            .await,
        401,
        "made up",
    );
    let long = "x".repeat(5000);
    refused(
        &s.call("POST", "/v1/messages", Some(&long), body.clone())
            .await,
        401,
        "huge",
    );
    let basic = s
        .call_with(
            "POST",
            "/v1/messages",
            None,
            &[("authorization", &format!("Basic {good}"))],
            Some(&message("+31612345678", "hi").to_string()),
        )
        .await;
    refused(&basic, 401, "not a bearer");
    refused(
        &s.call("POST", "/v1/messages", Some(&read_only), body.clone())
            .await,
        403,
        "read only",
    );
    assert_eq!(
        s.call("GET", "/v1/messages/1", Some(&read_only), None)
            .await
            .status,
        404
    );

    // A key check is reused for a second: changes show within one.
    let settle = || tokio::time::sleep(Duration::from_millis(1100));
    // Address ranges: this test's client is 127.0.0.1.
    s.c.execute(
        "UPDATE smsbus.api_key SET allowed_ips = '{10.0.0.0/8}' WHERE prefix = left($1, 12)",
        &[&good],
    )
    .await
    .unwrap();
    settle().await;
    refused(
        &s.call("POST", "/v1/messages", Some(&good), body.clone())
            .await,
        403,
        "outside its range",
    );
    s.c.execute(
        "UPDATE smsbus.api_key SET allowed_ips = '{127.0.0.0/8}' WHERE prefix = left($1, 12)",
        &[&good],
    )
    .await
    .unwrap();
    settle().await;
    assert_eq!(
        s.call("POST", "/v1/messages", Some(&good), body.clone())
            .await
            .status,
        201
    );

    // Disabled key, disabled account: as if unknown.
    s.c.execute(
        "UPDATE smsbus.api_key SET enabled = false WHERE prefix = left($1, 12)",
        &[&good],
    )
    .await
    .unwrap();
    settle().await;
    refused(
        &s.call("POST", "/v1/messages", Some(&good), body.clone())
            .await,
        401,
        "disabled key",
    );
    s.c.batch_execute(
        "UPDATE smsbus.api_key SET enabled = true; UPDATE smsbus.account SET enabled = false",
    )
    .await
    .unwrap();
    settle().await;
    refused(
        &s.call("POST", "/v1/messages", Some(&good), body.clone())
            .await,
        401,
        "disabled account",
    );
    let stored: i64 = scalar(&s.c, "SELECT count(*) FROM smsbus.message", &[]).await;
    assert_eq!(stored, 1, "only the one allowed request stored a message");
    // Unknown paths are JSON 404s.
    let nowhere = s.call("GET", "/v1/nowhere", Some(&good), None).await;
    assert_eq!(
        (nowhere.status, nowhere.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn keys_are_kept_as_hashes_no_role_reads_and_only_admins_make() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.account (name) VALUES ('acme')")
        .await
        .unwrap();
    let mut roles = LoginRoles::default();
    let (_, admin) = roles.login(&db, "admin", "smsbus_admin").await;
    let (_, sender) = roles.login(&db, "sender", "smsbus_sender").await;
    let (_, worker) = roles.login(&db, "worker", "smsbus_worker").await;
    let made: String = scalar(
        &admin,
        "SELECT smsbus.create_api_key('acme', '{send}')",
        &[],
    )
    .await;
    // Only the SHA-256 is kept; the key itself is nowhere in the table.
    let (hash_matches, kept): (bool, String) = {
        let r = c
            .query_one(
                "SELECT key_hash = sha256(convert_to($1, 'UTF8')), k::text FROM smsbus.api_key k",
                &[&made],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(hash_matches);
    assert!(!kept.contains(&made[4..]), "{kept}");
    let listed: String = scalar(&admin, "SELECT prefix FROM smsbus.api_key", &[]).await;
    assert_eq!(listed, made[..12]);

    for (who, client, sql) in [
        ("admin", &admin, "SELECT key_hash FROM smsbus.api_key"),
        (
            "admin",
            &admin,
            "INSERT INTO smsbus.api_key (account, key_hash, prefix) VALUES ('acme', '\\x00', 'x')",
        ),
        (
            "admin",
            &admin,
            "UPDATE smsbus.api_key SET key_hash = '\\x00'",
        ),
        (
            "admin",
            &admin,
            "SELECT * FROM smsbus._verify_api_key('sbk_x')",
        ),
        ("sender", &sender, "SELECT * FROM smsbus.api_key"),
        ("sender", &sender, "SELECT smsbus.create_api_key('acme')"),
        (
            "sender",
            &sender,
            "SELECT * FROM smsbus._verify_api_key('sbk_x')",
        ),
        ("worker", &worker, "SELECT key_hash FROM smsbus.api_key"),
        ("worker", &worker, "SELECT smsbus.create_api_key('acme')"),
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(db_error(&e).0, "42501", "{who}: {sql}: {e}");
    }
    // The worker learns whose a key is, and nothing for a wrong one.
    let account: String = scalar(
        &worker,
        "SELECT account FROM smsbus._verify_api_key($1)",
        &[&made],
    )
    .await;
    assert_eq!(account, "acme");
    let none: i64 = scalar(
        &worker,
        "SELECT count(*) FROM smsbus._verify_api_key($1)",
        &[&format!("{made}x")],
    )
    .await;
    assert_eq!(none, 0);
    // Bad input to create_api_key is refused clearly.
    let e = admin
        .batch_execute("SELECT smsbus.create_api_key('nobody')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "P0002", "{e}");
    let e = admin
        .batch_execute("SELECT smsbus.create_api_key('acme', '{everything}')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "23514", "{e}");
    roles.remove(db).await;
}

#[tokio::test]
async fn a_key_beyond_its_rate_waits_and_the_log_names_keys_by_id_only() {
    let s = serve().await;
    let key = key(&s.c, "acme", &["read"]).await;
    s.c.execute(
        "UPDATE smsbus.api_key SET rate_limit = 2 WHERE prefix = left($1, 12)",
        &[&key],
    )
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = s.call("GET", "/v1/queue", Some(&key), None).await;
        if answer.status == 429 {
            assert_eq!(answer.header("retry-after"), Some("1"));
            assert_eq!(answer.json()["error"]["code"], "rate_limited");
        }
        statuses.push(answer.status);
    }
    assert_eq!(
        &statuses[..2],
        [200, 200],
        "a second's worth at once: {statuses:?}"
    );
    assert!(statuses[2..].iter().all(|&s| s == 429), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.call("GET", "/v1/queue", Some(&key), None).await.status,
        200
    );

    let id: i64 = scalar(
        &s.c,
        "SELECT id FROM smsbus.api_key WHERE prefix = left($1, 12)",
        &[&key],
    )
    .await;
    let log = s.worker.log();
    assert!(log.contains("http api: request"), "{log}");
    assert!(log.contains(&format!("key={id}")), "{log}");
    assert!(!log.contains(&key[4..]), "the key itself is never logged");
}
