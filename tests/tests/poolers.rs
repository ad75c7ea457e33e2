//! The worker behind PgBouncer 1.18 (Debian's): in session mode as it is
//! directly; in transaction mode with --listen-url (a direct connection
//! for LISTEN and the ownership locks), and without one, poll-only; and
//! poll-only when asked, without a pooler. In each, a flood goes out
//! through the SMSC simulator and its receipts come back, a Lua and an SQL
//! trigger run on every delivered message (user SQL with parameters), and
//! the trace names the worker: nothing relies on session state that
//! transaction pooling loses (prepared statements, startup options,
//! LISTEN, session locks).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use smsbus_tests::db::{count, TestDb};
use smsbus_tests::pgbouncer::{PgBouncer, PoolMode};
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, wait_for};
use smsbus_tests::smsc::{Behaviour, Smsc};
use smsbus_tests::worker::{binary, Worker};

const MESSAGES: i64 = 400;

/// What the worker logs of its wake-ups at start.
const LISTENING: &str = "notifications: LISTEN on the listen connection";
const POLL_ONLY: &str = "poll-only: a notification sent through --database-url did not reach";

#[tokio::test]
async fn session_mode_works_as_direct() {
    let bouncer = PgBouncer::start(PoolMode::Session, 20).await;
    flood(Some(&bouncer), Listen::ThroughThePooler, LISTENING).await;
}

#[tokio::test]
async fn transaction_mode_with_a_direct_listen_url() {
    // Four server connections for a pool of eight: every worker
    // connection runs its statements on whichever is free.
    let bouncer = PgBouncer::start(PoolMode::Transaction, 4).await;
    flood(Some(&bouncer), Listen::Direct, LISTENING).await;
}

#[tokio::test]
async fn transaction_mode_without_one_polls_and_owns_channels_alone() {
    let bouncer = PgBouncer::start(PoolMode::Transaction, 4).await;
    flood(Some(&bouncer), Listen::ThroughThePooler, POLL_ONLY).await;
}

#[tokio::test]
async fn poll_only_when_asked_without_a_pooler() {
    flood(None, Listen::PollOnly, "poll-only (--poll-only)").await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Listen {
    ThroughThePooler,
    Direct,
    /// --poll-only.
    PollOnly,
}

async fn flood(bouncer: Option<&PgBouncer>, listen: Listen, mode: &str) {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let sim = smsc(Behaviour {
        report_delay: Duration::from_millis(10),
        ..Behaviour::default()
    })
    .await;
    add_channel(&c, "provider", &smpp_config(&sim, json!({"window": 20}))).await;
    c.batch_execute(
        r#"CREATE TABLE public.seen (message_id bigint, how text);
           GRANT INSERT ON public.seen TO smsbus_worker;
           INSERT INTO smsbus.trigger (name, position, on_status, language, script) VALUES
             ('lua', 1, '{delivered}', 'lua', $$
function process(m)
    local rows = smsbus.query("SELECT $1::bigint * 2 AS twice", m.id)
    smsbus.execute("INSERT INTO public.seen VALUES ($1, $2)", m.id, "lua")
    m.custom = {twice = rows[1].twice}
end
$$),
             ('sql', 2, '{delivered}', 'sql',
              $$INSERT INTO public.seen SELECT id, 'sql:' || status FROM smsbus.message WHERE id = $1$$);"#,
    )
    .await
    .unwrap();

    let direct = db.conninfo();
    let through = bouncer.map_or_else(|| direct.clone(), |b| b.conninfo(&db.name));
    let mut args = vec!["--maintenance-interval", "0.2"];
    match listen {
        Listen::Direct => args.extend(["--listen-url", &direct]),
        Listen::PollOnly => args.push("--poll-only"),
        Listen::ThroughThePooler => {}
    }
    let checked = check(&through, &args[2..]);
    assert!(checked.contains(mode), "{checked}");

    let w1 = worker(&through, "w1", &args);
    // A second worker shares the channel's ownership; whichever owns it,
    // the other never sends.
    let w2 = worker(&through, "w2", &args);
    let ids: Vec<i64> = smsbus_tests::db::scalar(
        &c,
        "WITH sent AS (
             INSERT INTO smsbus.message (to_address, body, channel)
             SELECT '+3161' || lpad(n::text, 7, '0'), 'pooled ' || n, 'provider'
             FROM generate_series(1, $1::bigint) n RETURNING id)
         SELECT array_agg(id ORDER BY id) FROM sent",
        &[&MESSAGES],
    )
    .await;
    wait_for(&c, &ids, &["delivered"], Duration::from_secs(90), &w1).await;
    let processed = smsbus_tests::worker::eventually(Duration::from_secs(60), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE trigger_status = 'processed'",
        )
        .await
            == MESSAGES
    })
    .await;
    assert!(
        processed,
        "triggers did not run on every message:\n{}\n{}",
        w1.log(),
        w2.log()
    );

    for (w, name) in [(&w1, "w1"), (&w2, "w2")] {
        assert!(
            w.log().contains(mode),
            "{name} did not say {mode:?}:\n{}",
            w.log()
        );
        assert!(
            !w.log().contains("prepared statement"),
            "{name}:\n{}",
            w.log()
        );
    }
    assert_each_sent_once(&sim);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM public.seen WHERE how IN ('lua', 'sql:delivered')"
        )
        .await,
        2 * MESSAGES,
        "both triggers once per message"
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE (custom->>'twice')::bigint = 2 * id"
        )
        .await,
        MESSAGES,
        "the Lua query's parameter and answer"
    );
    // Every change the workers made names one of them, with the role
    // behind it: the application name carried the actor through the
    // pooler.
    let actors = smsbus_tests::db::strings(
        &c,
        "SELECT DISTINCT actor || ' ' || coalesce(session_role, '-') FROM smsbus.message_event
         WHERE to_status <> 'queued' ORDER BY 1",
        &[],
    )
    .await;
    assert!(
        !actors.is_empty()
            && actors
                .iter()
                .all(|a| a == "worker:w1 postgres" || a == "worker:w2 postgres"),
        "{actors:?}"
    );
    let owners = count(
        &c,
        "SELECT count(DISTINCT owner) FROM smsbus.channel_state WHERE channel = 'provider'",
    )
    .await;
    assert_eq!(owners, 1);
    if let Some(bouncer) = bouncer {
        assert!(
            !bouncer.log().contains("ERROR"),
            "PgBouncer logged errors:\n{}",
            bouncer.log()
        );
    }
}

fn worker(conninfo: &str, id: &str, args: &[&str]) -> Worker {
    let mut all = vec!["--worker-id", id];
    all.extend_from_slice(args);
    Worker::start(conninfo, &all)
}

/// `smsbus-worker check` on `conninfo` with `args`: its output.
fn check(conninfo: &str, args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .arg("check")
        .env("DATABASE_URL", conninfo)
        .stdin(Stdio::null())
        .output()
        .expect("run smsbus-worker check");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn assert_each_sent_once(sim: &Smsc) {
    let mut bodies: Vec<String> = sim.parts().into_iter().map(|p| p.text).collect();
    let all = bodies.len();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len() as i64,
        MESSAGES,
        "each message reached the SMSC"
    );
    assert_eq!(all, bodies.len(), "none twice");
}
