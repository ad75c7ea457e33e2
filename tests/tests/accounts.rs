//! Accounts (`smsbus.account`): the outside clients of smsbus. Their
//! passwords are kept as salted argon2id hashes that no smsbus role reads;
//! each role, logged in as itself, gets exactly its rights.

use smsbus_tests::db::{count, db_error, listen, scalar, TestDb};
use smsbus_tests::roles::LoginRoles;
use tokio_postgres::Client;

async fn denied(c: &Client, sql: &str) {
    let e = c.batch_execute(sql).await.expect_err(sql);
    assert_eq!(db_error(&e).0, "42501", "{sql}: {e}");
}

async fn verify(c: &Client, account: &str, password: &str) -> bool {
    scalar(
        c,
        "SELECT smsbus._verify_password($1, $2)",
        &[&account, &password],
    )
    .await
}

#[tokio::test]
async fn passwords_are_kept_as_hashes_no_role_reads() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut roles = LoginRoles::default();
    let (_, admin) = roles.login(&db, "admin", "smsbus_admin").await;
    let (_, sender) = roles.login(&db, "sender", "smsbus_sender").await;
    let (_, worker) = roles.login(&db, "worker", "smsbus_worker").await;

    admin
        .batch_execute(
            "INSERT INTO smsbus.account (name, max_binds, throughput) VALUES ('acme', 2, 100);
             SELECT smsbus.set_password('acme', 'hunter22');",
        )
        .await
        .unwrap();
    let hash: String = scalar(
        &c,
        "SELECT password_hash FROM smsbus.account WHERE name = 'acme'",
        &[],
    )
    .await;
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains("hunter22"));
    // A second account with the same password has a hash of its own.
    admin
        .batch_execute(
            "INSERT INTO smsbus.account (name) VALUES ('other');
             SELECT smsbus.set_password('other', 'hunter22');",
        )
        .await
        .unwrap();
    let other: String = scalar(
        &c,
        "SELECT password_hash FROM smsbus.account WHERE name = 'other'",
        &[],
    )
    .await;
    assert_ne!(other, hash);

    // Admins configure accounts but never see or write a hash.
    denied(&admin, "SELECT password_hash FROM smsbus.account").await;
    denied(&admin, "UPDATE smsbus.account SET password_hash = 'x'").await;
    denied(
        &admin,
        "INSERT INTO smsbus.account (name, password_hash) VALUES ('mine', '$argon2id$forged')",
    )
    .await;
    let binds: i32 = scalar(
        &admin,
        "SELECT max_binds FROM smsbus.account WHERE name = 'acme'",
        &[],
    )
    .await;
    assert_eq!(binds, 2);
    // Senders see no account; they cannot claim one for their messages.
    denied(&sender, "SELECT name FROM smsbus.account").await;
    denied(&sender, "SELECT smsbus.set_password('acme', 'mine')").await;
    denied(
        &sender,
        "SELECT smsbus._verify_password('acme', 'hunter22')",
    )
    .await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    denied(
        &sender,
        "INSERT INTO smsbus.message (to_address, body, account) VALUES ('+31612345678', 'hi', 'acme')",
    )
    .await;
    // The worker reads what it needs to serve a bind, asks whether a
    // password matches, and reads no hash either.
    denied(&worker, "SELECT password_hash FROM smsbus.account").await;
    let throughput: f32 = scalar(
        &worker,
        "SELECT throughput FROM smsbus.account WHERE name = 'acme'",
        &[],
    )
    .await;
    assert_eq!(throughput, 100.0);
    assert!(verify(&worker, "acme", "hunter22").await);
    assert!(!verify(&worker, "acme", "hunter23").await);
    assert!(!verify(&worker, "nobody", "hunter22").await);
    denied(&worker, "SELECT smsbus.set_password('acme', 'mine')").await;
    // Null removes the password: the account logs in no more.
    admin
        .batch_execute("SELECT smsbus.set_password('acme', NULL)")
        .await
        .unwrap();
    assert!(!verify(&worker, "acme", "hunter22").await);

    drop((admin, sender, worker, c));
    roles.remove(db).await;
}

#[tokio::test]
async fn a_hash_made_by_a_client_is_kept_as_given_and_bad_input_is_refused_quietly() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.account (name) VALUES ('acme')")
        .await
        .unwrap();
    // A hash made elsewhere (here: by smsbus itself, for another account),
    // so the password never reaches the server.
    c.batch_execute(
        "INSERT INTO smsbus.account (name) VALUES ('maker');
         SELECT smsbus.set_password('maker', 'elsewhere');",
    )
    .await
    .unwrap();
    let made: String = scalar(
        &c,
        "SELECT password_hash FROM smsbus.account WHERE name = 'maker'",
        &[],
    )
    .await;
    c.execute("SELECT smsbus.set_password('acme', $1)", &[&made])
        .await
        .unwrap();
    assert!(verify(&c, "acme", "elsewhere").await);

    for (password, code, message) in [
        ("", "22023", "a password must not be empty"),
        (
            "$argon2id$broken",
            "22023",
            "a password starting with $argon2 must be a whole argon2id hash in PHC form",
        ),
        (
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YmFzZTY0aGFzaA",
            "22023",
            "a password starting with $argon2 must be a whole argon2id hash in PHC form",
        ),
    ] {
        let e = c
            .execute("SELECT smsbus.set_password('acme', $1)", &[&password])
            .await
            .unwrap_err();
        assert_eq!(db_error(&e), (code.into(), message.into()), "{password:?}");
    }
    let long = "p".repeat(1025);
    let e = c
        .execute("SELECT smsbus.set_password('acme', $1)", &[&long])
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "22023".into(),
            "a password must have at most 1024 characters".into()
        )
    );
    // The refused attempts changed nothing; an error never quotes the password.
    assert!(verify(&c, "acme", "elsewhere").await);
    let e = c
        .execute("SELECT smsbus.set_password('nobody', 'topsecret')", &[])
        .await
        .unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("P0002", "account \"nobody\" does not exist")
    );
    assert!(!format!("{e:?}").contains("topsecret"));

    // Account rows are checked when written.
    let e = c
        .batch_execute("INSERT INTO smsbus.account (name, allowed_sources) VALUES ('bad', '(')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "2201B");
    for bad in [
        "INSERT INTO smsbus.account (name) VALUES ('a-name-too-long-for-smpp')",
        "INSERT INTO smsbus.account (name, bind_types) VALUES ('x', '{outbind}')",
        "INSERT INTO smsbus.account (name, bind_types) VALUES ('x', '{}')",
        "INSERT INTO smsbus.account (name, deliver_window) VALUES ('x', 0)",
        "INSERT INTO smsbus.account (name, message_id_format) VALUES ('x', 'base64')",
    ] {
        let e = c.batch_execute(bad).await.unwrap_err();
        assert_eq!(db_error(&e).0, "23514", "{bad}");
    }
    assert_eq!(count(&c, "SELECT count(*) FROM smsbus.account").await, 2);
}

/// Taking credit is no change an account's binds follow: it neither
/// notifies nor moves updated_at; any other column does both. The
/// triggers' column lists name every column but credit.
#[tokio::test]
async fn taking_credit_is_not_a_configuration_change() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_listener, mut notes) = listen(&db, "smsbus_config").await;
    c.batch_execute("INSERT INTO smsbus.account (name, credit) VALUES ('acme', 10)")
        .await
        .unwrap();
    let first = notes.recv().await.expect("the insert notifies");
    assert_eq!(first.1, "account");
    let before: String = scalar(&c, "SELECT updated_at::text FROM smsbus.account", &[]).await;
    c.batch_execute("UPDATE smsbus.account SET credit = credit - 1")
        .await
        .unwrap();
    c.batch_execute("UPDATE smsbus.account SET max_binds = 2")
        .await
        .unwrap();
    let next = notes.recv().await.expect("max_binds notifies");
    assert_eq!(next.1, "account");
    assert!(notes.try_recv().is_err(), "one notification, for max_binds");
    let after: String = scalar(&c, "SELECT updated_at::text FROM smsbus.account", &[]).await;
    assert_ne!(before, after, "max_binds moves updated_at");

    let unlisted: Vec<String> = c
        .query(
            "SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = 'smsbus.account'::regclass AND a.attnum > 0 AND NOT a.attisdropped
               AND EXISTS (SELECT FROM pg_trigger t
                           WHERE t.tgrelid = a.attrelid AND t.tgname IN ('account_check', 'account_changed')
                             AND NOT a.attnum = ANY (t.tgattr::int2[]))
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        unlisted,
        ["credit"],
        "columns the account triggers do not follow"
    );
}

/// Taking an account's credit holds the account against other quota
/// takers until the submissions commit, but not rows that only refer to
/// it: a receipt queued for the account (a report on another channel's
/// transaction) goes in without waiting.
#[tokio::test]
async fn a_quota_taken_does_not_hold_up_receipts_for_the_account() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("INSERT INTO smsbus.account (name, credit) VALUES ('acme', 10)")
        .await
        .unwrap();
    let taking = db.connect().await;
    taking.batch_execute("BEGIN").await.unwrap();
    let refused = taking
        .query(
            "SELECT * FROM smsbus._take_account_quota(ARRAY['acme'], ARRAY[1])",
            &[],
        )
        .await
        .unwrap();
    assert!(refused.is_empty());
    let receipts = db.connect().await;
    receipts
        .batch_execute(
            "SET lock_timeout = '2s';
             INSERT INTO smsbus.smpp_outbox (account, message_id, status, submitted_at, done_at, expires_at)
             VALUES ('acme', 1, 'delivered', now(), now(), now() + interval '1 day')",
        )
        .await
        .expect("a receipt for the account does not wait for its quota");
    taking.batch_execute("COMMIT").await.unwrap();
    let credit: i64 = scalar(&c, "SELECT credit FROM smsbus.account", &[]).await;
    assert_eq!(credit, 9);
}

/// The receipts outbox and the daily counts are the worker's: a sender can
/// neither read nor forge them, nor make its messages owe receipts to an
/// account; an admin reads and clears them but cannot take credit or
/// claim receipts by hand.
#[tokio::test]
async fn receipts_and_quotas_are_out_of_reach_of_senders_and_admins() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut roles = LoginRoles::default();
    let (_, admin) = roles.login(&db, "admin", "smsbus_admin").await;
    let (_, sender) = roles.login(&db, "sender", "smsbus_sender").await;
    c.batch_execute(
        "INSERT INTO smsbus.account (name, credit) VALUES ('acme', 5);
         INSERT INTO smsbus.message (to_address, body, account, receipts) VALUES ('+31612345678', 'x', 'acme', 1)",
    )
    .await
    .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        1
    );

    for sql in [
        "SELECT * FROM smsbus.smpp_outbox",
        "SELECT * FROM smsbus.account_usage",
        "DELETE FROM smsbus.smpp_outbox",
        "INSERT INTO smsbus.message (to_address, body, account) VALUES ('+31612345678', 'x', 'acme')",
        "INSERT INTO smsbus.message (to_address, body, receipts) VALUES ('+31612345678', 'x', 1)",
        // Headers of its own to send parts with are an SMPP client's, kept
        // only for accounts that may (keep_udh).
        r#"INSERT INTO smsbus.message (to_address, body, client_parts)
           VALUES ('+31612345678', 'x', '[{"udh": "0605040B8423F0", "chars": 1}]')"#,
        r#"UPDATE smsbus.message SET client_parts = '[]'"#,
        "UPDATE smsbus.account SET keep_udh = true, report_parts = 'each'",
        "SELECT * FROM smsbus._claim_outbox('acme', 'me', 10, interval '1 hour')",
        "SELECT smsbus._take_account_quota(ARRAY['acme'], ARRAY[1])",
        "SELECT smsbus._queue_receipts(ARRAY[1::bigint])",
    ] {
        denied(&sender, sql).await;
    }
    for sql in [
        "SELECT * FROM smsbus._claim_outbox('acme', 'me', 10, interval '1 hour')",
        "SELECT smsbus._outbox_acknowledged(ARRAY[1::bigint])",
        "SELECT smsbus._take_account_quota(ARRAY['acme'], ARRAY[1])",
        "SELECT smsbus._queue_receipts(ARRAY[1::bigint])",
        "UPDATE smsbus.smpp_outbox SET account = 'acme'",
        "INSERT INTO smsbus.smpp_outbox (account, message_id, status, submitted_at, done_at, expires_at)
         VALUES ('acme', 1, 'delivered', now(), now(), now())",
    ] {
        denied(&admin, sql).await;
    }
    // What admins may: see and clear the outbox, set a credit.
    assert_eq!(
        count(&admin, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        1
    );
    admin
        .batch_execute("DELETE FROM smsbus.smpp_outbox; UPDATE smsbus.account SET credit = 7")
        .await
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.smpp_outbox").await,
        0
    );
    roles.remove(db).await;
}
