//! Messages and scripts that used to take the trigger runner down: each
//! fails its own chain with the reason, its neighbours in the batch
//! finish, the worker keeps running and gets its threads back. Real
//! database, the worker as a process; its threads read from /proc.

use std::time::Duration;

use smsbus_tests::db::{count, scalar, TestDb};
use smsbus_tests::roles::{conninfo_as, LoginRoles};
use smsbus_tests::triggers::{log_of, outcome, receive, receive_many, setup};
use smsbus_tests::worker::{eventually, Worker};
use smsbus_worker::triggers::chain;
use tokio_postgres::Client;

/// A worker with a fast maintenance timer and tight Lua limits.
fn lua_worker(db: &TestDb) -> Worker {
    lua_worker_on(&db.conninfo())
}

fn lua_worker_on(conninfo: &str) -> Worker {
    Worker::start(
        conninfo,
        &[
            "--worker-id",
            "w1",
            "--maintenance-interval",
            "0.2",
            "--trigger-time-limit",
            "1",
            "--lua-memory-limit",
            "16",
        ],
    )
}

/// A Lua trigger for received messages, for every one of them.
async fn add_lua(c: &Client, name: &str, position: i32, script: &str) {
    c.execute(
        "INSERT INTO smsbus.trigger (name, position, on_status, language, script)
         VALUES ($1, $2, '{received}', 'lua', $3)",
        &[&name, &position, &script],
    )
    .await
    .unwrap();
}

/// The worker's threads: all of them (`Threads:` of /proc/<pid>/status),
/// and those that run Lua states (named `lua <trigger>`).
fn threads(w: &Worker) -> (usize, usize) {
    let pid = w.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let all = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/<pid>/status");
    let lua = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("lua "))
        .count();
    (all, lua)
}

/// Waits until the worker has at most `baseline` threads again.
async fn threads_return_to(w: &Worker, baseline: (usize, usize)) {
    let back = eventually(Duration::from_secs(15), || async {
        let now = threads(w);
        now.0 <= baseline.0 && now.1 <= baseline.1
    })
    .await;
    eprintln!(
        "worker threads (all, lua): {:?}, at most {baseline:?} expected",
        threads(w)
    );
    assert!(
        back,
        "the worker has {:?} threads (all, lua), {baseline:?} before\n{}",
        threads(w),
        w.log()
    );
}

/// Messages from +31687654321 with these bodies, committed at once (one
/// batch for the runner), `custom` set by `custom_sql` (a jsonb
/// expression of `body`) where it is not null; their ids in order.
async fn receive_batch(c: &mut Client, bodies: &[&str], custom_sql: &str) -> Vec<i64> {
    let bodies: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
    let tx = c.transaction().await.unwrap();
    let ids: Vec<i64> = tx
        .query_one(
            "SELECT smsbus._record_inbound('kpn', array_fill('+31687654321'::text, ARRAY[cardinality($1::text[])]),
                    array_fill('1234'::text, ARRAY[cardinality($1::text[])]), $1::text[],
                    array_fill(NULL::text, ARRAY[cardinality($1::text[])]))",
            &[&bodies],
        )
        .await
        .unwrap()
        .get(0);
    tx.execute(
        &format!(
            "UPDATE smsbus.message SET custom = c FROM (SELECT id, {custom_sql} AS c FROM smsbus.message) s
             WHERE message.id = s.id AND message.id = ANY($1) AND s.c IS NOT NULL"
        ),
        &[&ids],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    ids
}

const POISON: &str = r#"
function process(m)
    if m.body == "exit" then os.exit(3) end
    if m.body == "find" then string.find(("a"):rep(40), ("a-"):rep(40) .. "b") end
    if m.body == "pcall" then while true do pcall(function() while true do end end) end end
    if m.body == "errors" then while true do pcall(error, "again") end end
    if m.body == "queries" then while true do pcall(smsbus.query, "SELECT 1 / 0") end end
end
"#;

const FINE: &str = r#"
function process(m)
    smsbus.execute("INSERT INTO public.log (trigger, message_id) VALUES ('fine', $1)", m.id)
end
"#;

#[tokio::test]
async fn poisoned_messages_fail_alone_and_the_worker_keeps_its_threads() {
    let db = TestDb::new().await;
    let mut c = setup(&db).await;
    add_lua(&c, "poison", 1, POISON).await;
    add_lua(&c, "fine", 2, FINE).await;
    let mut w = lua_worker(&db);
    // Both states started: what the worker has from now on is its baseline.
    let warm = receive(&c, "warm up").await;
    assert_eq!(outcome(&c, warm, &w).await, ("processed".into(), None));
    let baseline = threads(&w);
    assert_eq!(baseline.1, 2, "one thread per Lua trigger");

    let bodies = [
        "one", "deep", "two", "huge", "three", "exit", "four", "find", "five", "pcall", "six",
        "errors", "seven", "queries", "eight",
    ];
    // 200 levels of arrays, past what the JSON decoder takes; 20 MB, past
    // what the Lua state's 16 MiB hold.
    let ids = receive_batch(
        &mut c,
        &bodies,
        "CASE body WHEN 'deep' THEN (repeat('[', 200) || repeat(']', 200))::jsonb
                   WHEN 'huge' THEN jsonb_build_object('text', repeat('x', 20000000)) END",
    )
    .await;
    let mut failed = Vec::new();
    for (&id, body) in ids.iter().zip(bodies) {
        let (status, error) = outcome(&c, id, &w).await;
        if [
            "one", "two", "three", "four", "five", "six", "seven", "eight",
        ]
        .contains(&body)
        {
            assert_eq!((status.as_str(), error), ("processed", None), "{body}");
            assert_eq!(log_of(&c, id).await, ["fine"], "{body}");
        } else {
            assert_eq!(status, "failed", "{body}: {error:?}");
            // Nothing of the failed chain stays, the next trigger never ran.
            assert!(log_of(&c, id).await.is_empty(), "{body}");
            failed.push((body, error.unwrap_or_default()));
        }
    }
    let expected = [
        ("deep", "trigger poison: the message cannot be given to the script: error deserializing column 1: recursion limit exceeded"),
        ("huge", "trigger poison: out of memory (the limit is 16 MiB)"),
        ("exit", "trigger poison: poison:3: os.exit is not for trigger scripts: it would stop the worker"),
        ("find", "trigger poison: poison:4: time limit exceeded (1 s) in string.find"),
        ("pcall", "trigger poison: time limit exceeded (1 s)"),
        ("errors", "trigger poison: time limit exceeded (1 s)"),
        ("queries", "trigger poison: time limit exceeded (1 s)"),
    ];
    for ((body, error), (_, start)) in failed.iter().zip(expected) {
        assert!(error.starts_with(start), "{body}: {error}");
    }
    // The failures are in the trace too.
    let traced = count(
        &c,
        &format!(
            "SELECT count(*) FROM smsbus.message_event
             WHERE detail LIKE 'triggers failed: trigger poison: %' AND message_id IN ({})",
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await;
    assert_eq!(traced, 7);

    // The worker runs on, with the threads it had.
    assert!(
        w.wait_exit(Duration::ZERO).is_none(),
        "the worker exited\n{}",
        w.log()
    );
    let after = receive(&c, "after").await;
    assert_eq!(outcome(&c, after, &w).await, ("processed".into(), None));
    assert_eq!(log_of(&c, after).await, ["fine"]);
    threads_return_to(&w, baseline).await;
    // Nothing was given up: every script ended at the limit.
    assert!(!w.log().contains("given up"), "{}", w.log());
}

#[tokio::test]
async fn a_value_a_script_reads_that_cannot_be_decoded_is_its_error() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    add_lua(
        &c,
        "reader",
        1,
        r#"
function process(m)
    local ok, err = pcall(smsbus.query, "SELECT (repeat('[', 200) || repeat(']', 200))::jsonb AS deep")
    -- The transaction is fine: the script carries on.
    local n = smsbus.query("SELECT 41 + 1 AS n")[1].n
    m.custom = {ok = ok, err = err, n = n}
    smsbus.message(m.id)
    smsbus.execute("UPDATE smsbus.message SET custom = (repeat('[', 200) || repeat(']', 200))::jsonb WHERE id = $1", m.id)
    smsbus.message(m.id)
end
"#,
    )
    .await;
    let mut w = lua_worker(&db);
    let id = receive(&c, "hello").await;
    let (status, error) = outcome(&c, id, &w).await;
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.starts_with(
            "trigger reader: reader:9: smsbus.message: a value the database returned cannot be given to the script: "
        ) && error.contains("recursion limit exceeded"),
        "{error}"
    );
    let custom: Option<serde_json::Value> = scalar(
        &c,
        "SELECT custom FROM smsbus.message WHERE id = $1",
        &[&id],
    )
    .await;
    // The failed chain's changes are gone.
    assert_eq!(custom, None);
    assert!(w.wait_exit(Duration::ZERO).is_none(), "{}", w.log());
}

#[tokio::test]
async fn a_trigger_whose_threads_stay_stuck_is_disabled_and_says_why() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    add_lua(
        &c,
        "sleepy",
        1,
        r#"function process(m) if m.body ~= "warm up" then os.execute("sleep 12") end end"#,
    )
    .await;
    c.execute(
        "UPDATE smsbus.trigger SET description = 'Waits for the modem.' WHERE name = 'sleepy'",
        &[],
    )
    .await
    .unwrap();
    add_lua(&c, "fine", 2, FINE).await;
    // The worker logs in with a role of its own, not as a superuser: it may
    // disable a trigger (smsbus._disable_trigger) but write no trigger row.
    let mut roles = LoginRoles::default();
    let role = roles.create(&db, "worker", "smsbus_worker").await;
    c.batch_execute(
        "GRANT INSERT ON public.log TO smsbus_worker;
         GRANT USAGE ON SEQUENCE public.log_n_seq TO smsbus_worker;",
    )
    .await
    .unwrap();
    let w = lua_worker_on(&conninfo_as(&db, &role));
    let warm = receive(&c, "warm up").await;
    assert_eq!(outcome(&c, warm, &w).await.0, "processed");
    let baseline = threads(&w);

    // The first stuck thread is given up; the second, while the first
    // still sleeps, disables the trigger.
    let first = receive(&c, "first").await;
    let (status, error) = outcome(&c, first, &w).await;
    assert_eq!(status, "failed");
    assert_eq!(
        error.as_deref(),
        Some("trigger sleepy: time limit exceeded (1 s): the script is stuck outside Lua, its state is dropped")
    );
    let second = receive(&c, "second").await;
    let (status, error) = outcome(&c, second, &w).await;
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.ends_with(
            "its state is dropped; the trigger is disabled: 2 of its script's threads are stuck outside Lua \
             past the time limit (a program or a read that does not end)"
        ),
        "{error}"
    );
    let disabled = eventually(Duration::from_secs(10), || async {
        !scalar::<bool>(
            &c,
            "SELECT enabled FROM smsbus.trigger WHERE name = 'sleepy'",
            &[],
        )
        .await
    })
    .await;
    assert!(disabled, "{}", w.log());
    let description: String = scalar(
        &c,
        "SELECT description FROM smsbus.trigger WHERE name = 'sleepy'",
        &[],
    )
    .await;
    assert!(
        description.starts_with("Disabled by smsbus-worker at ")
            && description.contains(": 2 of its script's threads are stuck outside Lua")
            && description.ends_with(
                "Fix the script, then enable the trigger again.\n\nWaits for the modem."
            ),
        "{description}"
    );
    assert!(
        w.log()
            .contains("disabling the trigger: 2 of its script's threads are stuck"),
        "{}",
        w.log()
    );

    // The next message runs without it; the stuck threads end with their
    // programs and the worker has its threads back.
    let third = receive(&c, "third").await;
    assert_eq!(outcome(&c, third, &w).await, ("processed".into(), None));
    assert_eq!(log_of(&c, third).await, ["fine"]);
    threads_return_to(&w, (baseline.0, baseline.1 - 1)).await;
    drop((w, c));
    roles.remove(db).await;
}

#[tokio::test]
async fn messages_the_runner_could_not_run_are_failed_with_the_reason() {
    use clap::Parser;

    let db = TestDb::new().await;
    let c = setup(&db).await;
    add_lua(&c, "fine", 1, FINE).await;
    // No worker: the messages stay armed until the test claims them, as
    // the runner does before its tasks run.
    let ids = receive_many(&c, 3).await;
    let claimed = count(&c, "SELECT count(*) FROM smsbus._claim_triggers(10)").await;
    assert_eq!(claimed, 3);
    let args = smsbus_worker::config::Args::try_parse_from([
        "smsbus-worker",
        "--database-url",
        &db.conninfo(),
    ])
    .unwrap();
    let pool = smsbus_worker::db::pool(
        &smsbus_worker::Config::from_args(args).unwrap(),
        std::sync::Arc::default(),
    )
    .unwrap();
    let mut client = pool.get().await.unwrap();
    let reason = "the trigger runner panicked: boom";
    let mut failed = chain::fail(&mut client, &ids[..2], reason).await.unwrap();
    failed.sort();
    assert_eq!(failed, ids[..2]);
    for &id in &ids[..2] {
        let row = c
            .query_one(
                "SELECT trigger_status::text, last_error FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
            ("failed".to_owned(), Some(reason.to_owned()))
        );
        let detail: String = scalar(
            &c,
            "SELECT detail FROM smsbus.message_event WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
            &[&id],
        )
        .await;
        assert_eq!(detail, format!("triggers failed: {reason}"));
    }
    let untouched: String = scalar(
        &c,
        "SELECT trigger_status::text FROM smsbus.message WHERE id = $1",
        &[&ids[2]],
    )
    .await;
    assert_eq!(untouched, "processing");
    // A chain that ended meanwhile is left as it ended.
    assert!(chain::fail(&mut client, &ids[..1], "again")
        .await
        .unwrap()
        .is_empty());
}
