//! The role model against an attacker: login roles granted smsbus_sender or
//! smsbus_admin try each way into the extension's owner context or into
//! another role's rights. Each attack must fail and change nothing. The
//! catalogue audit at the end fails when a new object breaks the rules
//! (README: Security model).

use smsbus_tests::db::{count, db_error, scalar, TestDb};
use smsbus_tests::roles::LoginRoles;
use tokio_postgres::Client;

async fn is_superuser(c: &Client, role: &str) -> bool {
    scalar(
        c,
        "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
        &[&role],
    )
    .await
}

async fn denied(c: &Client, sql: &str) -> String {
    let e = c.batch_execute(sql).await.expect_err(sql);
    let (code, message) = db_error(&e);
    assert_eq!(code, "42501", "{sql}: {message}");
    message
}

#[tokio::test]
async fn an_admin_cannot_attach_code_to_the_tables_the_system_writes() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut logins = LoginRoles::default();
    let (name, admin) = logins.login(&db, "admin", "smsbus_admin").await;
    c.batch_execute(&format!("CREATE SCHEMA mine AUTHORIZATION \"{name}\""))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION mine.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN EXECUTE 'ALTER ROLE \"{name}\" SUPERUSER'; RETURN NEW; END $$;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for table in [
        "message_event",
        "message_part",
        "channel_usage",
        "channel_state",
        "message",
        "channel",
        "trigger",
    ] {
        denied(
            &admin,
            &format!(
                "CREATE TRIGGER escalate BEFORE INSERT ON smsbus.{table}
                 FOR EACH ROW EXECUTE FUNCTION mine.escalate()"
            ),
        )
        .await;
        denied(&admin, &format!("TRUNCATE smsbus.{table}")).await;
    }
    // The trace is the system's: admins read it, never write it.
    denied(
        &admin,
        "INSERT INTO smsbus.message_event (message_id, to_status, actor) VALUES (1, 'sent', 'me')",
    )
    .await;
    denied(&admin, "UPDATE smsbus.message_event SET actor = 'me'").await;
    // What admins are for still works, and writes the trace.
    admin
        .batch_execute(
            "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
             INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'hi');",
        )
        .await
        .unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.message_event").await,
        1
    );
    assert!(!is_superuser(&c, &name).await);
    drop((admin, c));
    logins.remove(db).await;
}

#[tokio::test]
async fn a_sender_cannot_put_its_functions_into_the_owner_context() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut logins = LoginRoles::default();
    let (name, sender) = logins.login(&db, "sender", "smsbus_sender").await;
    // A schema of the sender's own, with look-alikes of everything the
    // owner context calls; each raises if it ever runs.
    c.batch_execute(&format!(
        "CREATE SCHEMA evil AUTHORIZATION \"{name}\";
         INSERT INTO smsbus.channel (name, kind, daily_limit) VALUES ('kpn', 'smpp', NULL), ('capped', 'smpp', 5);
         INSERT INTO smsbus.channel_wakeup (channel) VALUES ('kpn');"
    ))
    .await
    .unwrap();
    sender
        .batch_execute(
            "CREATE FUNCTION evil.hijacked() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'hijacked: running as %', current_user; END $$;
             CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE sql AS $$ SELECT evil.hijacked(); $$;
             CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
             BEGIN PERFORM evil.hijacked(); RETURN NULL; END $$;
             CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT evil.hijacked() $$;
             CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
             CREATE FUNCTION evil.int8_lt(bigint, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT evil.hijacked() $$;
             CREATE OPERATOR evil.< (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.int8_lt);
             CREATE FUNCTION evil.int8_plus(bigint, integer) RETURNS bigint LANGUAGE plpgsql AS $$
             BEGIN PERFORM evil.hijacked(); RETURN 0; END $$;
             CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.int8_plus);
             SET search_path = evil, pg_catalog;",
        )
        .await
        .unwrap();
    // A message that wakes its channel (wake-up statement), one counted
    // against a daily limit (quota statement), and one scheduled for later
    // on that channel, which the worker's maintenance routes when due.
    sender
        .batch_execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'hi', 'kpn');
             INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'hi', 'capped');
             INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
                 VALUES ('+31612345678', 'later', 'capped', pg_catalog.now() OPERATOR(pg_catalog.+) interval '1 second');",
        )
        .await
        .unwrap_or_else(|e| panic!("{:?}", db_error(&e)));
    assert_eq!(
        count(&c, "SELECT count(*) FROM smsbus.channel_wakeup").await,
        0,
        "the wake-up was taken"
    );
    assert_eq!(
        count(
            &c,
            "SELECT routed FROM smsbus.channel_usage WHERE channel = 'capped'"
        )
        .await,
        1
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let maintained: serde_json::Value = scalar(&c, "SELECT smsbus._maintain()", &[]).await;
    assert_eq!(maintained["promoted"], 1, "{maintained}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE status = 'queued'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &c,
            "SELECT routed FROM smsbus.channel_usage WHERE channel = 'capped'"
        )
        .await,
        2
    );
    assert!(!is_superuser(&c, &name).await);
    drop((sender, c));
    logins.remove(db).await;
}

#[tokio::test]
async fn an_admin_cannot_replace_the_compiled_rules() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut logins = LoginRoles::default();
    let (name, admin) = logins.login(&db, "admin", "smsbus_admin").await;
    admin
        .batch_execute(
            "INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp');
             INSERT INTO smsbus.block (condition, reason) VALUES ('body = ''stop''', 'stop word');",
        )
        .await
        .unwrap();
    let replace = "CREATE OR REPLACE FUNCTION smsbus._router_blocks(smsbus.message) RETURNS smsbus._routing
                   LANGUAGE sql SECURITY INVOKER AS $$ SELECT ROW(NULL, NULL, NULL, NULL)::smsbus._routing $$";
    denied(&admin, replace).await;
    denied(
        &admin,
        "ALTER FUNCTION smsbus._router(smsbus.message) SECURITY INVOKER",
    )
    .await;
    denied(
        &admin,
        "CREATE FUNCTION smsbus.concat_ws(text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT '' $$",
    )
    .await;
    denied(&admin, "GRANT smsbus_rules TO CURRENT_USER").await;
    // The definer writes the two router functions and nothing else.
    let e = admin
        .batch_execute("SELECT smsbus._define_router('_explain_route', '', 'RETURN NULL;', '{}')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    // Still compiled from the rules, owned by smsbus_rules, and blocking.
    let owners: Vec<String> = c
        .query(
            "SELECT p.proowner::regrole::text || ' ' || p.prosecdef FROM pg_proc p
             WHERE p.pronamespace = 'smsbus'::regnamespace AND p.proname IN ('_router', '_router_blocks')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, ["smsbus_rules true", "smsbus_rules true"]);
    let status: String = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'stop', 'kpn')
         RETURNING status::text",
        &[],
    )
    .await;
    assert_eq!(status, "blocked");
    // Should one be given to an admin all the same (by a superuser), the
    // row triggers refuse to run it.
    c.batch_execute("ALTER FUNCTION smsbus._router_blocks(smsbus.message) OWNER TO smsbus_admin")
        .await
        .unwrap();
    let e = c
        .batch_execute(
            "INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'hi', 'kpn')",
        )
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "42501".into(),
            "the router function smsbus._router_blocks(smsbus.message) was not compiled by smsbus: \
             it must be SECURITY DEFINER and belong to smsbus_rules"
                .into()
        )
    );
    assert!(!is_superuser(&c, &name).await);
    drop((admin, c));
    logins.remove(db).await;
}

#[tokio::test]
async fn a_sender_in_a_writable_public_schema_cannot_run_code_as_the_rules() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut logins = LoginRoles::default();
    let (_, sender) = logins.login(&db, "sender", "smsbus_sender").await;
    // The rules are written under a search_path with public in it, and
    // public is writable, as it was before PostgreSQL 15.
    c.batch_execute(
        "GRANT CREATE ON SCHEMA public TO PUBLIC;
         INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('off', 'smpp', false), ('kpn', 'smpp', true);
         SET search_path = \"$user\", public;
         INSERT INTO smsbus.route (position, condition, channel) VALUES (1, 'true', 'off');
         INSERT INTO smsbus.route (position, condition, channel, weight) VALUES (2, 'true', 'off', 1), (2, 'true', 'off', 2);
         INSERT INTO smsbus.block (condition, reason) VALUES ('body = ''stop''', 'stop word');",
    )
    .await
    .unwrap();
    // Better matches than pg_catalog's for what the compiled code calls.
    sender
        .batch_execute(
            "CREATE TABLE public.stolen (who text, what text);
             CREATE FUNCTION public.concat_ws(text, text, text) RETURNS text LANGUAGE sql
                 AS $$ INSERT INTO public.stolen SELECT current_user, string_agg(config::text, ',') FROM smsbus.channel
                       RETURNING 'stolen' $$;
             CREATE FUNCTION public.cat(text, bigint) RETURNS text LANGUAGE sql
                 AS $$ INSERT INTO public.stolen VALUES (current_user, 'cat') RETURNING 'stolen' $$;
             CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = bigint, FUNCTION = public.cat);
             CREATE FUNCTION public.cardinality(bigint[]) RETURNS integer LANGUAGE sql
                 AS $$ INSERT INTO public.stolen VALUES (current_user, 'cardinality') RETURNING 1 $$;",
        )
        .await
        .unwrap();
    let row = sender
        .query_one(
            "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'hi')
             RETURNING status::text, last_error",
            &[],
        )
        .await
        .unwrap();
    let (status, error): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(status, "nochannel");
    let error = error.unwrap();
    assert!(
        error.contains("route 1: channel \"off\" is disabled"),
        "{error}"
    );
    assert!(!error.contains("stolen"), "{error}");
    assert_eq!(count(&c, "SELECT count(*) FROM public.stolen").await, 0);
    drop((sender, c));
    logins.remove(db).await;
}

/// The rules every object of the extension keeps; a new one that breaks
/// them fails here.
#[tokio::test]
async fn catalogue_audit() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let list =
        |rows: Vec<tokio_postgres::Row>| -> Vec<String> { rows.iter().map(|r| r.get(0)).collect() };

    // Every SECURITY DEFINER function has a search_path of its own,
    // pg_catalog first, without "$user" and without public.
    let definers = list(
        c.query(
            "SELECT p.oid::regprocedure::text || ' ' || coalesce(array_to_string(p.proconfig, ';'), '(none)')
             FROM pg_proc p
             WHERE p.pronamespace = 'smsbus'::regnamespace AND p.prosecdef
               AND NOT coalesce(EXISTS (SELECT FROM unnest(p.proconfig) c
                                        WHERE c LIKE 'search_path=pg_catalog,%'
                                          AND c NOT LIKE '%$user%' AND c !~ '\\mpublic\\M'), false)
               AND p.proname NOT IN ('_router', '_router_blocks')",
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(definers, Vec::<String>::new());
    // The compiled router may name the writer's schemas, public among
    // them, but only after pg_catalog and smsbus.
    for function in ["_router", "_router_blocks"] {
        let config: String = scalar(
            &c,
            &format!(
                "SELECT array_to_string(proconfig, ';') FROM pg_proc
                 WHERE oid = 'smsbus.{function}(smsbus.message)'::regprocedure"
            ),
            &[],
        )
        .await;
        assert!(
            config.starts_with("search_path=pg_catalog, smsbus"),
            "{config}"
        );
        assert!(!config.contains("$user"), "{config}");
    }

    // No function is executable by PUBLIC but these.
    let public = list(
        c.query(
            "SELECT p.proname::text FROM pg_proc p
             WHERE p.pronamespace = 'smsbus'::regnamespace
               AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a
                                                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        public,
        [
            "_actor",
            "_actor_login",
            "_in_extension_script",
            "_restoring",
            "sms_encoding",
            "sms_segments",
            "status_is_permanent"
        ]
    );

    // No smsbus role holds TRIGGER, TRUNCATE or REFERENCES on any table,
    // nor CREATE on the schema.
    let held = list(
        c.query(
            "SELECT r.rolname || ' ' || k.privilege || ' ' || t.relname
             FROM pg_class t
             CROSS JOIN (VALUES ('smsbus_sender'), ('smsbus_admin'), ('smsbus_worker'), ('smsbus_rules')) r(rolname)
             CROSS JOIN (VALUES ('TRIGGER'), ('TRUNCATE'), ('REFERENCES')) k(privilege)
             WHERE t.relnamespace = 'smsbus'::regnamespace AND t.relkind IN ('r', 'p', 'v')
               AND has_table_privilege(r.rolname, t.oid, k.privilege)
             UNION ALL
             SELECT r.rolname || ' CREATE on schema smsbus'
             FROM (VALUES ('smsbus_sender'), ('smsbus_admin'), ('smsbus_worker'), ('smsbus_rules')) r(rolname)
             WHERE has_schema_privilege(r.rolname, 'smsbus', 'CREATE')",
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(held, Vec::<String>::new());

    // smsbus_rules logs in as no one and has no members; it owns the
    // compiled functions, which run as their definer.
    let members: i64 = count(
        &c,
        "SELECT count(*) FROM pg_auth_members WHERE roleid = 'smsbus_rules'::regrole",
    )
    .await;
    assert_eq!(members, 0);
    let can_login: bool = scalar(
        &c,
        "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'smsbus_rules'",
        &[],
    )
    .await;
    assert!(!can_login);
    let compiled = list(
        c.query(
            "SELECT p.proname || ' ' || p.proowner::regrole::text || ' ' || p.prosecdef FROM pg_proc p
             WHERE p.pronamespace = 'smsbus'::regnamespace AND p.proname IN ('_router', '_router_blocks')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        compiled,
        [
            "_router smsbus_rules true",
            "_router_blocks smsbus_rules true"
        ]
    );

    // Views read with the rights of whoever queries them.
    let definer_views = list(
        c.query(
            "SELECT c.relname::text FROM pg_class c
             WHERE c.relnamespace = 'smsbus'::regnamespace AND c.relkind = 'v'
               AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)",
            &[],
        )
        .await
        .unwrap(),
    );
    assert_eq!(definer_views, Vec::<String>::new());
}

#[tokio::test]
async fn only_superusers_and_the_worker_set_what_the_trace_and_the_caps_say() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut logins = LoginRoles::default();
    let (_, sender) = logins.login(&db, "sender", "smsbus_sender").await;
    let (_, worker) = logins.login(&db, "worker", "smsbus_worker").await;
    // smsbus.* settings are defined once the library is loaded.
    sender
        .batch_execute("SELECT smsbus.sms_encoding('x')")
        .await
        .unwrap();
    denied(&sender, "SET smsbus.actor = 'worker:1'").await;
    denied(&sender, "SET smsbus.max_segments = 255").await;
    worker
        .batch_execute("SELECT smsbus.sms_encoding('x')")
        .await
        .unwrap();
    worker
        .batch_execute("SET smsbus.actor = 'worker:1'")
        .await
        .unwrap();
    denied(&worker, "SET smsbus.max_segments = 255").await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    sender
        .batch_execute(
            "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'hi')",
        )
        .await
        .unwrap();
    let (actor, session_role): (String, Option<String>) = {
        let row = c
            .query_one("SELECT actor, session_role FROM smsbus.message_event", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(actor.ends_with("_sender"), "{actor}");
    assert_eq!(session_role, None);
    // An actor the worker names is recorded with the login role behind it.
    worker
        .batch_execute(
            "SELECT smsbus._claim('kpn', 'w1', 10, interval '1 minute');
             INSERT INTO smsbus.message_event (message_id, to_status, actor) VALUES (0, 'sent', 'worker:1');",
        )
        .await
        .unwrap();
    let named: Vec<String> = c
        .query(
            "SELECT actor || ' ' || session_role FROM smsbus.message_event WHERE session_role IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(
        named
            .iter()
            .all(|n| n.starts_with("worker:1 ") && n.ends_with("_worker")),
        "{named:?}"
    );
    drop((sender, worker, c));
    logins.remove(db).await;
}

#[tokio::test]
async fn only_a_worker_is_named_by_its_application_name() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let mut logins = LoginRoles::default();
    let sender_role = logins.create(&db, "sender", "smsbus_sender").await;
    let worker_role = logins.create(&db, "worker", "smsbus_worker").await;
    // Both claim to be worker w9, as a worker's connections say they are.
    let claiming = |role: &str| {
        format!(
            "{} user={role} application_name='smsbus-worker pool w9'",
            db.conninfo()
        )
    };
    let sender = smsbus_tests::db::connect_to(&claiming(&sender_role)).await;
    let worker = smsbus_tests::db::connect_to(&claiming(&worker_role)).await;
    c.batch_execute("INSERT INTO smsbus.channel (name, kind) VALUES ('kpn', 'smpp')")
        .await
        .unwrap();
    sender
        .batch_execute(
            "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'hi')",
        )
        .await
        .unwrap();
    let trace = |status: &'static str| {
        let c = &c;
        async move {
            smsbus_tests::db::strings(
                c,
                "SELECT actor || ' ' || coalesce(session_role, '-') FROM smsbus.message_event
                 WHERE to_status::text = $1",
                &[&status],
            )
            .await
        }
    };
    assert_eq!(trace("queued").await, [format!("{sender_role} -")]);
    assert_eq!(
        scalar::<String>(&sender, "SELECT smsbus._actor()", &[]).await,
        sender_role
    );
    // The worker's claim is named after it, with the login role behind.
    worker
        .batch_execute("SELECT smsbus._claim('kpn', 'w9', 10, interval '1 minute')")
        .await
        .unwrap();
    assert_eq!(trace("sending").await, [format!("worker:w9 {worker_role}")]);
    drop((sender, worker, c));
    logins.remove(db).await;
}
