//! Reads as an account's database role (`account.db_role`): the API shows
//! what the role's own SQL would, its row security policies included;
//! `smsbus.current_account()` names the account in such policies; and an
//! admin cannot point an account at a role that sees more than a sender.

use serde_json::json;
use smsbus_tests::db::{db_error, scalar};

use super::{key, serve, Served};

/// Sender roles `<database>_tenant` and `<database>_stranger`, dropped
/// (with the policy naming them) when the test is done.
async fn tenants(s: &Served) -> (String, String) {
    let database: String = scalar(&s.c, "SELECT current_database()::text", &[]).await;
    let (tenant, stranger) = (format!("{database}_tenant"), format!("{database}_stranger"));
    for role in [&tenant, &stranger] {
        s.c.batch_execute(&format!(
            "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN IN ROLE smsbus_sender"
        ))
        .await
        .unwrap();
    }
    (tenant, stranger)
}

async fn drop_tenants(s: &Served, roles: &[&str]) {
    s.c.batch_execute(
        "DROP POLICY IF EXISTS account ON smsbus.message;
         UPDATE smsbus.account SET db_role = NULL;",
    )
    .await
    .unwrap();
    for role in roles {
        s.c.batch_execute(&format!("DROP ROLE \"{role}\""))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_accounts_reads_run_as_its_db_role_under_row_security() {
    let s = serve().await;
    let (tenant, stranger) = tenants(&s).await;
    // The operator's policy: a sender sees its account's messages, and of
    // those only the ones marked visible.
    s.c.batch_execute(&format!(
        "UPDATE smsbus.account SET db_role = '{tenant}' WHERE name = 'acme';
         ALTER TABLE smsbus.message ENABLE ROW LEVEL SECURITY;
         CREATE POLICY account ON smsbus.message TO smsbus_sender
             USING (account = smsbus.current_account() AND custom->>'visible' = 'yes');"
    ))
    .await
    .unwrap();
    let k = key(&s.c, "acme", &["send", "read"]).await;
    let mut ids = Vec::new();
    for visible in ["yes", "no"] {
        let answer = s
            .call(
                "POST",
                "/v1/messages",
                Some(&k),
                Some(json!({"to": "+31612345678", "body": "hi", "scheduled_at": "2099-01-01T00:00:00Z",
                            "custom": {"visible": visible}})),
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        ids.push(answer.json()["id"].as_i64().unwrap());
    }
    let (shown, hidden) = (ids[0], ids[1]);

    let list = s.call("GET", "/v1/messages", Some(&k), None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed: Vec<i64> = list.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [shown], "the policy hides the other");
    assert_eq!(
        s.call("GET", &format!("/v1/messages/{shown}"), Some(&k), None)
            .await
            .status,
        200
    );
    assert_eq!(
        s.call("GET", &format!("/v1/messages/{hidden}"), Some(&k), None)
            .await
            .status,
        404,
        "a message the role may not see does not exist for its key"
    );
    // The queue counts what the role sees.
    let queue = s.call("GET", "/v1/queue", Some(&k), None).await.json();
    let queued: i64 = queue["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["messages"].as_i64().unwrap())
        .sum();
    assert_eq!(queued, 1, "{queue}");
    // Both exist: the policy governs what is seen, not what is sent.
    let stored: i64 = scalar(
        &s.c,
        "SELECT count(*) FROM smsbus.message WHERE account = 'acme'",
        &[],
    )
    .await;
    assert_eq!(stored, 2);

    // current_account() in SQL: the tenant's own account; nothing for a
    // role that is no account's, nor for asking after a role one cannot
    // become.
    let database: String = scalar(&s.c, "SELECT current_database()::text", &[]).await;
    let as_tenant = smsbus_tests::db::connect_to(&format!(
        "{} dbname={database} user={tenant}",
        smsbus_tests::db::base_conninfo()
    ))
    .await;
    let mine: Option<String> = scalar(&as_tenant, "SELECT smsbus.current_account()", &[]).await;
    assert_eq!(mine.as_deref(), Some("acme"));
    let as_stranger = smsbus_tests::db::connect_to(&format!(
        "{} dbname={database} user={stranger}",
        smsbus_tests::db::base_conninfo()
    ))
    .await;
    let none: Option<String> = scalar(&as_stranger, "SELECT smsbus.current_account()", &[]).await;
    assert_eq!(none, None);
    let probed: Option<String> = scalar(
        &as_stranger,
        "SELECT smsbus._account_of_role($1)",
        &[&tenant],
    )
    .await;
    assert_eq!(
        probed, None,
        "a stranger learns nothing of the tenant's account"
    );
    let seen: i64 = scalar(&as_stranger, "SELECT count(*) FROM smsbus.message", &[]).await;
    assert_eq!(seen, 0);
    drop((as_tenant, as_stranger));
    drop_tenants(&s, &[&tenant, &stranger]).await;
}

#[tokio::test]
async fn an_account_cannot_run_as_a_role_that_sees_more_than_a_sender() {
    let s = serve().await;
    let database: String = scalar(&s.c, "SELECT current_database()::text", &[]).await;
    let plain = format!("{database}_plain");
    s.c.batch_execute(&format!(
        "DROP ROLE IF EXISTS \"{plain}\"; CREATE ROLE \"{plain}\" NOLOGIN"
    ))
    .await
    .unwrap();
    for (role, refusal) in [
        ("nobody_at_all", "does not exist"),
        (plain.as_str(), "is not a member of smsbus_sender"),
        ("smsbus_admin", "is not a member of smsbus_sender"),
        ("smsbus_worker", "is not a member of smsbus_sender"),
        ("postgres", "may see more than its own messages"),
    ] {
        let e =
            s.c.execute(
                "UPDATE smsbus.account SET db_role = $1 WHERE name = 'acme'",
                &[&role],
            )
            .await
            .expect_err(role);
        let (code, message) = db_error(&e);
        assert_eq!(code, "22023", "{role}: {message}");
        assert!(message.contains(refusal), "{role}: {message}");
    }
    // A sender that is also an admin, or a superuser sender, is refused too.
    s.c.batch_execute(&format!("GRANT smsbus_sender, smsbus_admin TO \"{plain}\""))
        .await
        .unwrap();
    let e =
        s.c.execute(
            "UPDATE smsbus.account SET db_role = $1 WHERE name = 'acme'",
            &[&plain],
        )
        .await
        .unwrap_err();
    assert!(db_error(&e).1.contains("may see more"), "{e}");
    s.c.batch_execute(&format!(
        "REVOKE smsbus_admin FROM \"{plain}\"; ALTER ROLE \"{plain}\" BYPASSRLS"
    ))
    .await
    .unwrap();
    let e =
        s.c.execute(
            "UPDATE smsbus.account SET db_role = $1 WHERE name = 'acme'",
            &[&plain],
        )
        .await
        .unwrap_err();
    assert!(db_error(&e).1.contains("may see more"), "{e}");
    // Two accounts cannot share a role.
    s.c.batch_execute(&format!(
        "ALTER ROLE \"{plain}\" NOBYPASSRLS;
         UPDATE smsbus.account SET db_role = '{plain}' WHERE name = 'acme';"
    ))
    .await
    .unwrap();
    let e =
        s.c.execute(
            "UPDATE smsbus.account SET db_role = $1 WHERE name = 'other'",
            &[&plain],
        )
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "23505");
    drop_tenants(&s, &[&plain]).await;
}
