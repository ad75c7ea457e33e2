//! One Lua trigger's state, on a thread of its own: the script is loaded
//! once (at its first message) and its globals live on between messages;
//! jobs come one at a time, so one state never runs two messages at once.
//! The thread ends when its trigger is dropped or changed (the runner
//! closes its queue).
//!
//! What keeps a script from taking the worker down with it: the time
//! limit, checked by an instruction-count hook and, once passed, raised
//! again at every instruction (so no `pcall` loop can swallow it); Lua's
//! pattern functions replaced by bounded ones ([`super::patterns`]), the
//! only C functions left to a script that could run for ever; `os.exit`
//! replaced by an error; `load` for text only (crafted bytecode can crash
//! the VM), with its `env` argument passed on as given.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Weak};
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, Value, VmState};
use serde_json::{Map, Value as Json};
use tokio::sync::mpsc::Sender;

use super::calls::FromLua;
use super::module::{self, Deadline, Run, RunSlot};
use super::patterns;
use super::values::{changes, from_lua};
use super::RunError;

/// How Lua scripts are run (worker flags).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Without `io`, most of `os`, `require` and file loading.
    pub sandbox: bool,
    /// Wall-clock time one run may take, database work included.
    pub time_limit: Duration,
    /// Bytes one trigger's state may hold.
    pub memory_limit: usize,
}

/// One message for the script.
pub struct Job {
    pub message_id: i64,
    /// The message row, every column (nulls included).
    pub message: Map<String, Json>,
    pub events: Sender<FromLua>,
}

/// A trigger's thread, as the runner holds it.
pub struct Spawned {
    /// Jobs sent here run in order.
    pub jobs: mpsc::Sender<Job>,
    /// Alive while the thread is: a thread the runner gave up is counted
    /// until it ends.
    pub alive: Weak<()>,
}

/// Starts the thread of trigger `name`.
pub fn spawn(name: &str, script: &str, settings: Settings) -> std::io::Result<Spawned> {
    let (jobs, queue) = mpsc::channel();
    let (name, script) = (name.to_owned(), script.to_owned());
    let token = Arc::new(());
    let alive = Arc::downgrade(&token);
    std::thread::Builder::new()
        .name(format!("lua {name}"))
        .spawn(move || {
            // Dropped when the thread ends, after its Lua state.
            let _token = token;
            serve(&name, &script, settings, queue)
        })?;
    Ok(Spawned { jobs, alive })
}

fn serve(name: &str, script: &str, settings: Settings, queue: mpsc::Receiver<Job>) {
    let slot: RunSlot = Rc::new(RefCell::new(None));
    let deadline: Deadline = Rc::new(Cell::new(None));
    let mut loaded: Option<Script> = None;
    while let Ok(job) = queue.recv() {
        if job.events.blocking_send(FromLua::Started).is_err() {
            continue; // given up while it waited
        }
        deadline.set(Some(Instant::now() + settings.time_limit));
        *slot.borrow_mut() = Some(Run {
            events: job.events.clone(),
            message_id: job.message_id,
            frames: Vec::new(),
        });
        let result = match &loaded {
            Some(script) => script.process(&job.message),
            None => match Script::load(name, script, settings, &slot, &deadline) {
                Ok(script) => loaded.insert(script).process(&job.message),
                Err(e) => Err(Failure::Other(format!(
                    "loading the script: {}",
                    error_text(&e, settings)
                ))),
            },
        };
        slot.borrow_mut().take();
        let result = result.map_err(|e| {
            RunError::Script(match e {
                Failure::Lua(e) => error_text(&e, settings),
                Failure::Other(e) => e,
            })
        });
        if let Some(script) = &loaded {
            // Finalizers (`__gc`) are Lua code too: they get a time limit
            // of their own, and the hook is set back to its usual pace.
            deadline.set(Some(Instant::now() + settings.time_limit));
            if result.is_err() {
                // What a failed run left behind (a memory error's garbage).
                if let Err(e) = script.lua.gc_collect() {
                    tracing::debug!(trigger = name, "collecting after a failed run: {e}");
                }
            }
            if let Err(e) = limit_time(&script.lua, &deadline, settings.time_limit) {
                // Without its hook the state cannot be trusted with another
                // message: end the thread, the runner starts a fresh one.
                tracing::error!(trigger = name, "cannot set the time limit again: {e}");
                // Fails only when the runner gave the run up: nobody is
                // waiting, and the thread ends either way.
                let _ = job.events.blocking_send(FromLua::Done(result));
                break;
            }
        }
        deadline.set(None);
        // Fails only when the runner gave the run up: nobody is waiting.
        let _ = job.events.blocking_send(FromLua::Done(result));
    }
    // Closing the state runs the finalizers left: bounded as well.
    deadline.set(Some(Instant::now() + settings.time_limit));
    drop(loaded);
}

struct Script {
    lua: Lua,
    process: Function,
}

enum Failure {
    Lua(mlua::Error),
    Other(String),
}

impl From<mlua::Error> for Failure {
    fn from(e: mlua::Error) -> Failure {
        Failure::Lua(e)
    }
}

/// Every this many VM instructions the time limit is checked.
const HOOK_EVERY: u32 = 1_000;

impl Script {
    fn load(
        name: &str,
        source: &str,
        settings: Settings,
        slot: &RunSlot,
        deadline: &Deadline,
    ) -> mlua::Result<Script> {
        let lua = Lua::new();
        lua.set_memory_limit(settings.memory_limit)?;
        limit_time(&lua, deadline, settings.time_limit)?;
        if settings.sandbox {
            lua.load(SANDBOX).set_name("=sandbox").exec()?;
        }
        lua.load(GUARDS).set_name("=guards").exec()?;
        patterns::install(
            &lua,
            patterns::Bounds {
                deadline: deadline.clone(),
                time_limit: settings.time_limit,
                memory_limit: settings.memory_limit,
            },
        )?;
        module::install(&lua, name, slot, deadline)?;
        lua.load(source).set_name(format!("={name}")).exec()?;
        let process = match lua.globals().get::<Value>("process")? {
            Value::Function(f) => f,
            other => {
                return Err(mlua::Error::runtime(format!(
                    "the script defines no function process(message) ({} found)",
                    other.type_name()
                )))
            }
        };
        Ok(Script { lua, process })
    }

    /// Runs `process(message)`; the fields it changed.
    fn process(&self, message: &Map<String, Json>) -> Result<Map<String, Json>, Failure> {
        let table = module::message_table(&self.lua, message)?;
        let returned: Value = self.process.call(table.clone())?;
        match &returned {
            Value::Nil => {}
            Value::Table(t) if *t == table => {}
            other => {
                return Err(Failure::Other(format!(
                    "process(message) returned {}: it returns nothing, and changes the message's fields",
                    describe(other)
                )))
            }
        }
        let after = from_lua(&self.lua, Value::Table(table))
            .map_err(|e| Failure::Other(format!("the message table: {}", error_text(&e, None))))?;
        changes(message, &after).map_err(Failure::Other)
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {:?}", s.to_string_lossy()),
        Value::Integer(n) => format!("the number {n}"),
        Value::Number(n) => format!("the number {n}"),
        Value::Boolean(b) => format!("{b}"),
        other => format!("a {}", other.type_name()),
    }
}

/// Sets the hook that ends a run at its deadline. Every [`HOOK_EVERY`]
/// instructions it looks at the clock; once the deadline has passed it
/// raises the error and from then on raises it at every instruction: a
/// `pcall` (or `coroutine.resume`, or `load` calling a reader) that caught
/// it returns into code that raises it again at once, so a script that
/// catches errors in a loop still ends at the limit. The next run sets
/// the usual pace back (this function again).
fn limit_time(lua: &Lua, deadline: &Deadline, limit: Duration) -> mlua::Result<()> {
    let until = deadline.clone();
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |lua, _| match until.get() {
            Some(d) if Instant::now() >= d => {
                lua.set_global_hook(HookTriggers::new().every_nth_instruction(1), move |_, _| {
                    Err(time_up(limit))
                })?;
                Err(time_up(limit))
            }
            _ => Ok(VmState::Continue),
        },
    )
}

fn time_up(limit: Duration) -> mlua::Error {
    mlua::Error::runtime(format!("time limit exceeded ({} s)", limit.as_secs_f64()))
}

/// What the sandbox option takes away: files, programs, the environment
/// and loading code from files; the clock and dates stay.
const SANDBOX: &str = r#"
local os_ = os
io, package, require, dofile, loadfile = nil, nil, nil, nil, nil
os = { clock = os_.clock, date = os_.date, time = os_.time, difftime = os_.difftime }
"#;

/// In every mode. `os.exit` would end the worker, with a batch of
/// messages half done; it raises an error instead. Chunks are text only:
/// crafted bytecode can crash the VM, and the worker with it. `load`'s
/// `env` is passed on only when given (an explicit nil is Lua's own
/// meaning: a chunk without globals), so `load(code)` gets the script's
/// globals, sandboxed or not.
const GUARDS: &str = r#"
local load_, loadfile_, error, assert = load, loadfile, error, assert
function load(chunk, name, _, ...) return load_(chunk, name, "t", ...) end
if loadfile_ then
    function loadfile(file, _, ...) return loadfile_(file, "t", ...) end
    function dofile(file) return assert(loadfile_(file, "t"))() end
end
if os then
    function os.exit()
        error("os.exit is not for trigger scripts: it would stop the worker "
              .. "(return from process(message), or raise an error)", 2)
    end
end
"#;

/// An error as one line for `last_error`: Lua's own message with its
/// position, without the stack traceback (logged at debug level).
fn error_text(e: &mlua::Error, settings: impl Into<Option<Settings>>) -> String {
    match e {
        mlua::Error::CallbackError { cause, traceback } => {
            tracing::debug!("{traceback}");
            error_text(cause, settings)
        }
        mlua::Error::RuntimeError(message) => first_part(message),
        mlua::Error::SyntaxError { message, .. } => first_part(message),
        mlua::Error::MemoryError(_) => match settings.into() {
            Some(s) => format!(
                "out of memory (the limit is {} MiB)",
                s.memory_limit / (1024 * 1024)
            ),
            None => "out of memory".to_owned(),
        },
        mlua::Error::WithContext { context, cause } => {
            format!("{context}: {}", error_text(cause, settings))
        }
        other => first_part(&other.to_string()),
    }
}

fn first_part(message: &str) -> String {
    message
        .split("\nstack traceback:")
        .next()
        .unwrap_or(message)
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` for one message on a thread of its own, as the runner
    /// would; what `process` changed, or its error, and the time it took.
    fn run(script: &str, sandbox: bool) -> (Result<Map<String, Json>, String>, Duration) {
        let settings = Settings {
            sandbox,
            time_limit: Duration::from_millis(300),
            memory_limit: 16 << 20,
        };
        let spawned = spawn("test", script, settings).unwrap();
        let (events, mut incoming) = tokio::sync::mpsc::channel(1);
        let message = serde_json::json!({"id": 1, "custom": null});
        let Json::Object(message) = message else {
            unreachable!()
        };
        let started = Instant::now();
        spawned
            .jobs
            .send(Job {
                message_id: 1,
                message,
                events,
            })
            .unwrap();
        loop {
            // Polled, so that a run that never ends fails the test.
            assert!(started.elapsed() < Duration::from_secs(10), "no answer");
            match incoming.try_recv() {
                Ok(FromLua::Done(result)) => {
                    return (result.map_err(|e| e.to_string()), started.elapsed())
                }
                Ok(FromLua::Call(_)) => panic!("no database here"),
                Ok(FromLua::Started) => {}
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("the thread stopped: {e}"),
            }
        }
    }

    #[test]
    fn errors_caught_in_a_loop_still_end_the_run_at_the_limit() {
        for (what, body) in [
            ("pcall", "while true do pcall(function() while true do end end) end"),
            ("xpcall", "while true do xpcall(function() while true do end end, print) end"),
            (
                "coroutine",
                "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
            ),
            ("load", "while true do load(function() while true do end end) end"),
            (
                "pattern",
                r#"while true do pcall(string.find, ("a"):rep(40), ("a-"):rep(40) .. "b") end"#,
            ),
        ] {
            let (result, took) = run(&format!("function process(m) {body} end"), false);
            let error = result.expect_err(what);
            assert!(error.contains("time limit exceeded"), "{what}: {error}");
            assert!(took < Duration::from_secs(2), "{what}: {took:?}");
        }
    }

    #[test]
    fn the_state_keeps_working_after_a_run_that_hit_the_limit() {
        let settings = Settings {
            sandbox: false,
            time_limit: Duration::from_millis(200),
            memory_limit: 16 << 20,
        };
        let script = "n = 0 function process(m) n = n + 1 if n == 1 then while true do pcall(error) end end m.custom = {n = n} end";
        let spawned = spawn("again", script, settings).unwrap();
        let mut results = Vec::new();
        for _ in 0..2 {
            let (events, mut incoming) = tokio::sync::mpsc::channel(1);
            let Json::Object(message) = serde_json::json!({"id": 1, "custom": null}) else {
                unreachable!()
            };
            spawned
                .jobs
                .send(Job {
                    message_id: 1,
                    message,
                    events,
                })
                .unwrap();
            while let Some(event) = incoming.blocking_recv() {
                if let FromLua::Done(result) = event {
                    results.push(result.map_err(|e| e.to_string()));
                    break;
                }
            }
        }
        assert!(results[0]
            .as_ref()
            .unwrap_err()
            .contains("time limit exceeded"));
        assert_eq!(
            Json::Object(results[1].clone().unwrap()),
            serde_json::json!({"custom": {"n": 2}})
        );
    }

    #[test]
    fn os_exit_raises_and_load_is_text_with_its_env_as_given() {
        let script = r#"
x = 5
function process(m)
    local exit_ok, exit_error = pcall(os.exit, 0)
    local binary, binary_error = load(string.dump(function() return 1 end))
    m.custom = {
        exit_ok = exit_ok,
        exit_error = exit_error,
        globals = load("return x")(),
        named = load("return x", "chunk")(),
        own_env = load("return x", "chunk", "t", {x = 7})(),
        nil_env = select(2, pcall(load("return x", "chunk", "t", nil))),
        binary = binary == nil,
        binary_error = binary_error,
    }
end
"#;
        for sandbox in [false, true] {
            let (result, _) = run(script, sandbox);
            let custom = &Json::Object(result.unwrap())["custom"];
            assert_eq!(custom["exit_ok"], false, "{custom}");
            assert!(
                custom["exit_error"]
                    .as_str()
                    .unwrap()
                    .contains("os.exit is not for trigger scripts"),
                "{custom}"
            );
            assert_eq!(custom["globals"], 5, "{custom}");
            assert_eq!(custom["named"], 5, "{custom}");
            assert_eq!(custom["own_env"], 7, "{custom}");
            assert!(
                custom["nil_env"]
                    .as_str()
                    .unwrap()
                    .contains("upvalue '_ENV'"),
                "{custom}"
            );
            assert_eq!(custom["binary"], true, "{custom}");
            assert!(
                custom["binary_error"]
                    .as_str()
                    .unwrap()
                    .contains("binary chunk"),
                "{custom}"
            );
        }
    }
}
