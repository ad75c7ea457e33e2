//! One Lua trigger's state, on a thread of its own: the script is loaded
//! once (at its first message) and its globals live on between messages;
//! jobs come one at a time, so one state never runs two messages at once.
//! The thread ends when its trigger is dropped or changed (the runner
//! closes its queue).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, Value, VmState};
use serde_json::{Map, Value as Json};
use tokio::sync::mpsc::Sender;

use super::calls::FromLua;
use super::module::{self, Deadline, Run, RunSlot};
use super::values::{changes, from_lua};

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

/// Starts the thread of trigger `name`; jobs sent to the returned queue
/// run in order.
pub fn spawn(name: &str, script: &str, settings: Settings) -> std::io::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel();
    let (name, script) = (name.to_owned(), script.to_owned());
    std::thread::Builder::new()
        .name(format!("lua {name}"))
        .spawn(move || serve(&name, &script, settings, queue))?;
    Ok(jobs)
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
        deadline.set(None);
        let result = result.map_err(|e| match e {
            Failure::Lua(e) => error_text(&e, settings),
            Failure::Other(e) => e,
        });
        if result.is_err() {
            if let Some(script) = &loaded {
                // What a failed run left behind (a memory error's garbage).
                let _ = script.lua.gc_collect();
            }
        }
        let _ = job.events.blocking_send(FromLua::Done(result));
    }
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
        let until = deadline.clone();
        let limit = settings.time_limit;
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| match until.get() {
                Some(d) if Instant::now() >= d => Err(mlua::Error::runtime(format!(
                    "time limit exceeded ({} s)",
                    limit.as_secs_f64()
                ))),
                _ => Ok(VmState::Continue),
            },
        )?;
        if settings.sandbox {
            lua.load(SANDBOX).set_name("=sandbox").exec()?;
        }
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

/// What the sandbox option takes away: files, programs, the environment
/// and loading code from files; the clock and dates stay. Chunks are text
/// only (bytecode can break out of any sandbox).
const SANDBOX: &str = r#"
local os_, load_ = os, load
io, package, require, dofile, loadfile = nil, nil, nil, nil, nil
os = { clock = os_.clock, date = os_.date, time = os_.time, difftime = os_.difftime }
function load(chunk, name, _, env) return load_(chunk, name, "t", env) end
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
