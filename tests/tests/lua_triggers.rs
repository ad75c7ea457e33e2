//! Lua triggers end to end: real database, the worker as a process. What
//! the scripts did is read back from the database (and from a local HTTP
//! server for `smsbus.http`).

use std::time::Duration;

use serde_json::{json, Value};
use smsbus_tests::db::{count, scalar, status_of, strings, TestDb};
use smsbus_tests::http::HttpServer;
use smsbus_tests::triggers::{log_of, outcome, receive, receive_many, setup};
use smsbus_tests::worker::{eventually, Worker};
use tokio_postgres::Client;

/// A worker with a fast maintenance timer and tight Lua limits.
fn lua_worker(db: &TestDb, extra: &[&str]) -> Worker {
    let mut args = vec![
        "--worker-id",
        "w1",
        "--maintenance-interval",
        "0.2",
        "--trigger-time-limit",
        "1",
        "--lua-memory-limit",
        "16",
    ];
    args.extend_from_slice(extra);
    Worker::start(&db.conninfo(), &args)
}

/// A Lua trigger for received messages.
async fn add_lua(c: &Client, name: &str, position: i32, condition: &str, script: &str) {
    c.execute(
        "INSERT INTO smsbus.trigger (name, position, on_status, condition, language, script)
         VALUES ($1, $2, '{received}', $3, 'lua', $4)",
        &[&name, &position, &condition, &script],
    )
    .await
    .unwrap();
}

async fn custom_of(c: &Client, id: i64) -> Value {
    scalar::<Option<Value>>(c, "SELECT custom FROM smsbus.message WHERE id = $1", &[&id])
        .await
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_smsbus_call_works_and_globals_last_between_messages() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    add_lua(
        &c,
        "everything",
        1,
        "true",
        r#"
seen = 0
function process(message)
    seen = seen + 1
    local rows = smsbus.query([[SELECT $1::int + 1 AS n, $2 AS s, NULL AS z, now() AS t,
                                       '{"k": [7]}'::jsonb AS j, 'sent'::smsbus.status AS e;]], 41, "text")
    local inserted = smsbus.execute("INSERT INTO public.log (trigger, message_id) VALUES ($1, $2)",
                                    "lua", message.id)
    local reply = smsbus.send{to = message.from_address, body = "re: " .. message.body,
                              channel = "kpn", custom = {of = message.id}}
    local copy = smsbus.message(reply)
    smsbus.log("replied with", reply)
    message.custom = {n = rows[1].n, s = rows[1].s, z = rows[1].z == nil, t = type(rows[1].t),
                      k = rows[1].j.k[1], e = rows[1].e, inserted = inserted, reply = reply,
                      reply_body = copy.body, seen = seen, none = smsbus.message(-1) == nil}
end
"#,
    )
    .await;
    let w = lua_worker(&db, &[]);
    let first = receive(&c, "hello").await;
    assert_eq!(outcome(&c, first, &w).await, ("processed".into(), None));
    let second = receive(&c, "again").await;
    assert_eq!(outcome(&c, second, &w).await, ("processed".into(), None));
    let custom = custom_of(&c, first).await;
    let reply = custom["reply"].as_i64().expect("a reply id");
    assert_eq!(
        custom,
        json!({"n": 42, "s": "text", "z": true, "t": "string", "k": 7, "e": "sent", "inserted": 1,
               "reply": reply, "reply_body": "re: hello", "seen": 1, "none": true})
    );
    assert_eq!(custom_of(&c, second).await["seen"], 2);
    assert_eq!(log_of(&c, first).await, ["lua"]);
    let (to, body, of): (String, String, Value) = {
        let row = c
            .query_one(
                "SELECT to_address, body, custom FROM smsbus.message WHERE id = $1",
                &[&reply],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((to.as_str(), body.as_str()), ("+31687654321", "re: hello"));
    assert_eq!(of, json!({"of": first}));
    assert!(w.log().contains("replied with\t"), "{}", w.log());
}

#[tokio::test]
async fn a_changed_script_is_loaded_afresh() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let script = |version: i32| {
        format!("n = 0\nfunction process(m) n = n + 1; m.custom = {{n = n, v = {version}}} end")
    };
    add_lua(&c, "counter", 1, "true", &script(1)).await;
    let w = lua_worker(&db, &[]);
    let mut ids = Vec::new();
    for body in ["one", "two"] {
        let id = receive(&c, body).await;
        assert_eq!(outcome(&c, id, &w).await.0, "processed");
        ids.push(id);
    }
    c.execute(
        "UPDATE smsbus.trigger SET script = $1 WHERE name = 'counter'",
        &[&script(2)],
    )
    .await
    .unwrap();
    let third = receive(&c, "three").await;
    assert_eq!(outcome(&c, third, &w).await.0, "processed");
    assert_eq!(custom_of(&c, ids[0]).await, json!({"n": 1, "v": 1}));
    assert_eq!(custom_of(&c, ids[1]).await, json!({"n": 2, "v": 1}));
    // New script, new globals.
    assert_eq!(custom_of(&c, third).await, json!({"n": 1, "v": 2}));
}

#[tokio::test]
async fn chains_mix_lua_and_sql_see_earlier_changes_and_stop_when_processed() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    add_lua(
        &c,
        "tag",
        1,
        "true",
        "function process(m) m.custom = {tagged = true} end",
    )
    .await;
    add_lua(
        &c,
        "see",
        2,
        "custom ? 'tagged'",
        r#"function process(m)
               smsbus.execute("INSERT INTO public.log (trigger, message_id) VALUES ('see', $1)", m.id)
               if m.body == "stop" then m.trigger_status = "processed" end
           end"#,
    )
    .await;
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, position, language, script) VALUES
            ('after', 3, 'sql', $$INSERT INTO public.log (trigger, message_id) VALUES ('after', $1)$$)",
    )
    .await
    .unwrap();
    let w = lua_worker(&db, &[]);
    let go = receive(&c, "go").await;
    let stop = receive(&c, "stop").await;
    assert_eq!(outcome(&c, go, &w).await.0, "processed");
    assert_eq!(log_of(&c, go).await, ["see", "after"]);
    assert_eq!(outcome(&c, stop, &w).await.0, "processed");
    assert_eq!(log_of(&c, stop).await, ["see"]);
}

#[tokio::test]
async fn bad_scripts_fail_their_message_alone_with_a_useful_error() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let cases = [
        ("raises", r#"function process(m) error("no such customer") end"#),
        ("loops", "function process(m) while true do end end"),
        (
            "allocates",
            "function process(m) local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end end",
        ),
        ("illegal", "function process(m) m.status = 'queued' end"),
        (
            "unreachable",
            "function process(m)\n  smsbus.http{url = 'http://127.0.0.1:9/'}\nend",
        ),
        ("returns", "function process(m) return 42 end"),
        ("garbage", "function process(m) m.custom = print end"),
        ("misspelt", "function process(m) m.stauts = 'failed' end"),
        (
            "badsql",
            "function process(m)\n  smsbus.query('SELEC 1')\nend",
        ),
        ("noprocess", "x = 1"),
        ("stuck", "function process(m) os.execute('sleep 10') end"),
        ("badsend", "function process(m) smsbus.send{to = '+31612345678', text = 'x'} end"),
    ];
    for (name, script) in cases {
        add_lua(&c, name, 1, &format!("body = '{name}'"), script).await;
    }
    add_lua(
        &c,
        "fine",
        2,
        "true",
        "function process(m) m.custom = {fine = true} end",
    )
    .await;
    let w = lua_worker(&db, &[]);
    let mut errors = Vec::new();
    for (name, _) in cases {
        let id = receive(&c, name).await;
        let (status, error) = outcome(&c, id, &w).await;
        assert_eq!(status, "failed", "{name}: {error:?}");
        // Nothing of the failed chain stays.
        assert_eq!(custom_of(&c, id).await, Value::Null, "{name}");
        errors.push((name, error.unwrap_or_default()));
    }
    let expected = [
        ("raises", "trigger raises: raises:1: no such customer"),
        ("loops", "trigger loops: "),
        ("allocates", "trigger allocates: out of memory (the limit is 16 MiB)"),
        ("illegal", "trigger illegal: saving message.status: illegal status transition from received to queued"),
        ("unreachable", "trigger unreachable: unreachable:2: smsbus.http: http://127.0.0.1:9/: "),
        ("returns", "trigger returns: process(message) returned the number 42"),
        ("garbage", "trigger garbage: the message table: "),
        ("misspelt", "trigger misspelt: the message has no field \"stauts\""),
        ("badsql", "trigger badsql: badsql:2: smsbus.query: syntax error at or near \"SELEC\""),
        ("noprocess", "trigger noprocess: loading the script: the script defines no function process(message)"),
        ("stuck", "trigger stuck: time limit exceeded (1 s): the script is stuck outside Lua, its state is dropped"),
        ("badsend", "trigger badsend: badsend:1: smsbus.send: unknown field \"text\""),
    ];
    for ((name, error), (_, start)) in errors.iter().zip(expected) {
        assert!(error.starts_with(start), "{name}: {error}");
    }
    assert!(
        errors[1].1.contains("time limit exceeded (1 s)"),
        "{}",
        errors[1].1
    );
    // The worker carries on.
    let id = receive(&c, "anything else").await;
    assert_eq!(outcome(&c, id, &w).await.0, "processed");
    assert_eq!(custom_of(&c, id).await, json!({"fine": true}));
}

#[tokio::test]
async fn pcall_takes_back_only_the_work_that_failed() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    add_lua(
        &c,
        "careful",
        1,
        "true",
        r#"
local function log(what, id)
    smsbus.execute("INSERT INTO public.log (trigger, message_id) VALUES ($1, $2)", what, id)
end
function process(m)
    log("before", m.id)
    local ok, err = pcall(function()
        log("inside", m.id)
        smsbus.query("SELECT 1 / 0")
    end)
    local fine = pcall(log, "kept", m.id)
    local no_db = pcall(error, "plain")
    log("after", m.id)
    m.custom = {ok = ok, err = err, fine = fine, no_db = no_db}
end
"#,
    )
    .await;
    let w = lua_worker(&db, &[]);
    let id = receive(&c, "hello").await;
    assert_eq!(outcome(&c, id, &w).await.0, "processed");
    assert_eq!(log_of(&c, id).await, ["before", "kept", "after"]);
    let custom = custom_of(&c, id).await;
    assert_eq!(custom["ok"], false);
    assert_eq!(custom["fine"], true);
    assert_eq!(custom["no_db"], false);
    assert!(
        custom["err"]
            .as_str()
            .unwrap()
            .ends_with("smsbus.query: division by zero"),
        "{custom}"
    );
}

#[tokio::test]
async fn the_sandbox_takes_files_and_programs_away() {
    let file = std::env::temp_dir().join(format!("smsbus-lua-{}.txt", rand::random::<u32>()));
    let script = format!(
        r#"function process(m)
               m.custom = {{io = io ~= nil, execute = os.execute ~= nil, getenv = os.getenv ~= nil,
                           require = require ~= nil, time = type(os.time()), date = os.date("!%Y", 0)}}
               if io then
                   local f = assert(io.open({path:?}, "w"))
                   f:write(m.body)
                   f:close()
               end
           end"#,
        path = file.to_str().unwrap()
    );
    for sandbox in [false, true] {
        let db = TestDb::new().await;
        let c = setup(&db).await;
        add_lua(&c, "files", 1, "true", &script).await;
        let flags: &[&str] = if sandbox { &["--sandbox"] } else { &[] };
        let w = lua_worker(&db, flags);
        let body = if sandbox { "sandboxed" } else { "free" };
        let id = receive(&c, body).await;
        assert_eq!(outcome(&c, id, &w).await, ("processed".into(), None));
        let open = !sandbox;
        assert_eq!(
            custom_of(&c, id).await,
            json!({"io": open, "execute": open, "getenv": open, "require": open,
                   "time": "number", "date": "1970"})
        );
    }
    // Only the worker without the sandbox wrote the file.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "free");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn smsbus_http_reaches_a_local_server() {
    let server = HttpServer::start();
    let url = &server.url;
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let script = format!(
        r#"function process(m)
               local r = smsbus.http{{method = "PUT", url = "{url}/hook?id=" .. m.id,
                                      headers = {{["X-Smsbus-Test"] = "yes"}}, body = m.body, timeout = 5}}
               m.custom = {{status = r.status, body = r.body, reply = r.headers["x-reply"]}}
           end"#
    );
    add_lua(&c, "hook", 1, "true", &script).await;
    let w = lua_worker(&db, &[]);
    let id = receive(&c, "ping").await;
    assert_eq!(outcome(&c, id, &w).await, ("processed".into(), None));
    assert_eq!(
        custom_of(&c, id).await,
        json!({"status": 201, "body": "{\"accepted\": true}", "reply": "yes"})
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].url.as_str(),
            seen[0].body.as_str()
        ),
        ("PUT", format!("/hook?id={id}").as_str(), "ping")
    );
    assert_eq!(seen[0].header("x-smsbus-test"), Some("yes"));
}

#[tokio::test]
async fn a_script_that_moves_the_message_back_and_forth_is_stopped() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    // nochannel -> scheduled -> queued: the router finds no channel again,
    // and the chain of nochannel runs again, and again.
    c.execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script) VALUES ('again', '{nochannel}', 'lua', $1)",
        &[&r#"function process(m)
                  smsbus.execute("UPDATE smsbus.message SET status = 'scheduled' WHERE id = $1", m.id)
                  smsbus.execute("UPDATE smsbus.message SET status = 'queued' WHERE id = $1", m.id)
              end"#],
    )
    .await
    .unwrap();
    let w = lua_worker(&db, &[]);
    let id: i64 = scalar(
        &c,
        "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345678', 'x') RETURNING id",
        &[],
    )
    .await;
    let (status, error) = outcome(&c, id, &w).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("8 trigger chains in a row"));
    assert_eq!(status_of(&c, id).await, "nochannel");
}

#[tokio::test]
async fn many_messages_at_once_each_chain_in_order() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    for (position, name) in ["a", "b"].iter().enumerate() {
        let script = format!(
            r#"function process(m)
                   smsbus.execute("INSERT INTO public.log (trigger, message_id) VALUES ('{name}', $1)", m.id)
               end"#
        );
        add_lua(&c, name, position as i32, "true", &script).await;
    }
    let w = lua_worker(&db, &[]);
    let ids = receive_many(&c, 200).await;
    let done = eventually(Duration::from_secs(30), || async {
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE trigger_status IN ('pending', 'processing')",
        )
        .await
            == 0
    })
    .await;
    assert!(done, "{}", w.log());
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM smsbus.message WHERE trigger_status = 'processed'"
        )
        .await,
        ids.len() as i64
    );
    let sequences = strings(
        &c,
        "SELECT DISTINCT string_agg(trigger, '' ORDER BY n) FROM public.log GROUP BY message_id",
        &[],
    )
    .await;
    assert_eq!(sequences, ["ab"]);
}
