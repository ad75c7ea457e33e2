//! Tenants: with the row security of the README's recipe, each sender
//! sees and writes only its own messages, their trace and parts, in the
//! queue and in the archive, while the worker's functions run the whole
//! queue.

use smsbus_tests::db::{count, expect_error, scalar, TestDb};
use tokio_postgres::Client;

/// The README's recipe (Roles: tenants), with the tenant named in `custom`.
const RECIPE: &str = "
    ALTER TABLE smsbus.message ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON smsbus.message TO smsbus_sender
        USING (custom->>'tenant' = current_user) WITH CHECK (custom->>'tenant' = current_user);
    CREATE POLICY system ON smsbus.message TO smsbus_admin, smsbus_worker USING (true) WITH CHECK (true);
    ALTER TABLE smsbus.message_event ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON smsbus.message_event TO smsbus_sender
        USING (EXISTS (SELECT FROM smsbus.message m WHERE m.id = message_id)
               OR EXISTS (SELECT FROM smsbus.message_archive a WHERE a.id = message_id));
    CREATE POLICY system ON smsbus.message_event TO smsbus_admin, smsbus_worker USING (true) WITH CHECK (true);
    ALTER TABLE smsbus.message_part ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON smsbus.message_part TO smsbus_sender
        USING (EXISTS (SELECT FROM smsbus.message m WHERE m.id = message_id));
    CREATE POLICY system ON smsbus.message_part TO smsbus_admin, smsbus_worker USING (true) WITH CHECK (true);
    ALTER TABLE smsbus.message_archive ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON smsbus.message_archive TO smsbus_sender USING (custom->>'tenant' = current_user);
    CREATE POLICY system ON smsbus.message_archive TO smsbus_admin, smsbus_worker USING (true) WITH CHECK (true);
    ALTER TABLE smsbus.message_part_archive ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON smsbus.message_part_archive TO smsbus_sender
        USING (EXISTS (SELECT FROM smsbus.message_archive a WHERE a.id = message_id));
    CREATE POLICY system ON smsbus.message_part_archive TO smsbus_admin, smsbus_worker USING (true) WITH CHECK (true);
    ALTER TABLE smsbus.message_event_archive ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant ON smsbus.message_event_archive TO smsbus_sender
        USING (EXISTS (SELECT FROM smsbus.message_archive a WHERE a.id = message_id));
    CREATE POLICY system ON smsbus.message_event_archive TO smsbus_admin, smsbus_worker USING (true) WITH CHECK (true);";

/// Cluster-wide roles, named after the test's database and dropped with it.
struct Tenants {
    names: [String; 2],
    admin: Client,
}

impl Tenants {
    async fn create(db: &TestDb, admin: Client) -> Tenants {
        let names = [format!("{}_a", db.name), format!("{}_b", db.name)];
        for name in &names {
            admin
                .batch_execute(&format!(
                    "CREATE ROLE \"{name}\" NOLOGIN IN ROLE smsbus_sender"
                ))
                .await
                .unwrap();
        }
        Tenants { names, admin }
    }

    async fn remove(self) {
        for name in &self.names {
            self.admin
                .batch_execute(&format!("DROP ROLE \"{name}\""))
                .await
                .unwrap();
        }
    }
}

async fn as_tenant(db: &TestDb, name: &str) -> Client {
    db.connect_as(&format!("\"{name}\"")).await
}

#[tokio::test]
async fn tenants_see_only_their_own_messages() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    admin
        .batch_execute(&format!(
            "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp'); {RECIPE}"
        ))
        .await
        .unwrap();
    let tenants = Tenants::create(&db, db.connect().await).await;
    let [a_name, b_name] = tenants.names.clone();
    let a = as_tenant(&db, &a_name).await;
    let b = as_tenant(&db, &b_name).await;

    for (client, name, n) in [(&a, &a_name, 2), (&b, &b_name, 1)] {
        client
            .execute(
                "INSERT INTO smsbus.message (to_address, body, custom)
                 SELECT '+3161234567' || g, 'for ' || $1, jsonb_build_object('tenant', $1::text)
                 FROM generate_series(1, $2) g",
                &[name, &n],
            )
            .await
            .unwrap();
    }
    // smsbus.send works for them too.
    let _: i64 = scalar(
        &b,
        "SELECT smsbus.send('+31612345679', 'sent by b', custom => jsonb_build_object('tenant', current_user::text))",
        &[],
    )
    .await;

    // Writing a message in another tenant's name is refused.
    let (code, message) = expect_error(
        &a,
        &format!(
            "INSERT INTO smsbus.message (to_address, body, custom)
             VALUES ('+31612345678', 'forged', '{{\"tenant\": \"{b_name}\"}}')"
        ),
    )
    .await;
    assert_eq!(code, "42501");
    assert_eq!(
        message,
        "new row violates row-level security policy for table \"message\""
    );

    // The worker runs everyone's messages.
    let worker = db.connect_as("smsbus_worker").await;
    let claimed = count(
        &worker,
        "SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '1 minute')",
    )
    .await;
    assert_eq!(claimed, 4);
    worker
        .batch_execute(
            "SELECT smsbus._mark_sent('kpn', array_agg(id ORDER BY id), array_fill(1, ARRAY[count(*)::int]),
                                      array_agg('ref-' || id ORDER BY id))
             FROM smsbus.message;
             SELECT smsbus._apply_reports('kpn', array_agg('ref-' || id), array_fill('delivered'::text, ARRAY[count(*)::int]),
                                          array_fill('stat:DELIVRD'::text, ARRAY[count(*)::int]))
             FROM smsbus.message;",
        )
        .await
        .unwrap();
    assert_eq!(
        count(
            &worker,
            "SELECT count(*) FROM smsbus.message WHERE status = 'delivered'"
        )
        .await,
        4
    );

    // Each tenant sees its own messages, their whole trace and their parts.
    for (client, name, n) in [(&a, &a_name, 2), (&b, &b_name, 2)] {
        let bodies: Vec<String> = client
            .query("SELECT body FROM smsbus.message ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(bodies.len(), n, "{name}: {bodies:?}");
        assert_eq!(
            count(client, "SELECT count(*) FROM smsbus.message_event").await,
            n as i64 * 4,
            "{name}: queued, sending, sent, delivered for each"
        );
        assert_eq!(
            count(client, "SELECT count(*) FROM smsbus.message_part").await,
            n as i64
        );
        assert_eq!(
            count(
                client,
                "SELECT count(*) FROM smsbus.message WHERE custom->>'tenant' <> current_user"
            )
            .await,
            0
        );
    }

    // Archived, they stay each tenant's own, with their trace and parts;
    // the views count only what the tenant may see.
    let moved: i64 = scalar(&worker, "SELECT smsbus.archive(interval '0')", &[]).await;
    assert_eq!(moved, 4);
    for (client, name, n) in [(&a, &a_name, 2), (&b, &b_name, 2)] {
        assert_eq!(
            count(client, "SELECT count(*) FROM smsbus.message_archive").await,
            n,
            "{name}"
        );
        assert_eq!(
            count(
                client,
                "SELECT count(*) FROM smsbus.message_archive WHERE custom->>'tenant' <> current_user"
            )
            .await,
            0
        );
        assert_eq!(
            count(client, "SELECT count(*) FROM smsbus.message_part_archive").await,
            n
        );
        // The trace went along.
        assert_eq!(
            count(client, "SELECT count(*) FROM smsbus.message_event_archive").await,
            n * 4
        );
        assert_eq!(
            count(client, "SELECT count(*) FROM smsbus.message_event").await,
            0
        );
    }
    a.execute(
        "INSERT INTO smsbus.message (to_address, body, scheduled_at, custom)
         VALUES ('+31612345678', 'later', now() + interval '1 hour', jsonb_build_object('tenant', current_user::text))",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &a,
            "SELECT coalesce(sum(messages), 0)::bigint FROM smsbus.queue_depth"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &b,
            "SELECT coalesce(sum(messages), 0)::bigint FROM smsbus.queue_depth"
        )
        .await,
        0
    );
    drop(a);
    drop(b);
    tenants.remove().await;
}
