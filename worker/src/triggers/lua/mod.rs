//! Lua triggers (README.md#lua-triggers): each trigger's script lives in
//! its own Lua state on its own thread ([`state`]), loaded once and kept
//! while the trigger's row is unchanged; `process(message)` gets the
//! message as a table and the fields it changes are saved, through the
//! state machine's rules, when it returns. The `smsbus` module
//! ([`module`]) works in the message's transaction: its database calls
//! travel to the chain's task ([`calls`]); `smsbus.http` is [`http`].
//! Messages and query results cross into Lua and back through
//! [`values`]; Lua's pattern functions are replaced by the bounded ones
//! of [`patterns`].
//!
//! Limits: a run gets a wall-clock time limit (an instruction-count hook
//! checks it, Lua's pattern functions are bounded by it too, and the
//! runner stops waiting soon after), a state a memory limit. A thread
//! stuck outside Lua (a program that never ends, a read that never
//! returns) cannot be stopped: it is given up and the trigger's next
//! message gets a fresh state. Given-up threads are counted while they
//! live: a trigger that has [`STUCK_PER_TRIGGER`] of them, or any trigger
//! once the worker has [`STUCK_IN_ALL`], gets no more threads and is
//! disabled (its row's `enabled` and `description`, a warning in the
//! log, the reason in the `last_error` of the messages it failed).

pub mod calls;
pub mod http;
pub mod module;
pub mod patterns;
pub mod state;
pub mod values;

use std::collections::HashMap;
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use deadpool_postgres::Transaction;
use serde_json::{Map, Value as Json};
use tokio::time::Instant;

use super::catalog::Trigger;
use crate::statements::{self, params};
use calls::{FromLua, Server};
use state::Job;
pub use state::Settings;

/// Time a run gets past its limit for the hook to stop it and the
/// answer to come back, before the runner gives its thread up.
const GRACE: Duration = Duration::from_secs(2);
/// Runs that may wait in one state's queue (the runner's parallel groups).
const QUEUED: u32 = super::PARALLEL as u32 + 1;
/// Given-up threads one trigger may have alive before it is disabled: one
/// may be a fluke (a slow program), a second is the script.
pub const STUCK_PER_TRIGGER: usize = 2;
/// Given-up threads the worker may have alive, all triggers together;
/// at this many, the trigger whose thread is given up is disabled.
pub const STUCK_IN_ALL: usize = 8;

/// Why a Lua trigger's run failed. Its text is the message's
/// last_error (and the chain's log).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Too many of the trigger's threads (or the worker's) are stuck
    /// outside Lua: it gets no new one, and is disabled.
    #[error("the trigger is disabled: {0}")]
    Disabled(String),
    #[error("cannot start a thread for the script: {0}")]
    CannotStart(#[source] std::io::Error),
    #[error("the script's thread stopped at once")]
    StoppedAtOnce,
    #[error("the script's thread stopped (see the worker's log)")]
    ThreadStopped,
    /// Stuck outside Lua past the time limit: the thread is given up,
    /// and the trigger disabled when that makes too many.
    #[error(
        "time limit exceeded ({seconds} s): the script is stuck outside Lua, its state is dropped{}",
        .disabled.as_ref().map_or(String::new(), |d| format!("; {d}"))
    )]
    TimeLimit {
        seconds: f64,
        disabled: Option<Box<RunError>>,
    },
    /// The script raised (or hit the time or memory limit in Lua).
    #[error("{0}")]
    Script(String),
    /// A database call outside any `pcall` failed: the run's database
    /// work is lost, whatever the script did next.
    #[error("{0}")]
    Database(String),
    /// The fields the script changed cannot be saved.
    #[error("saving message.{}: {error}", .columns.join(", message."))]
    Save { columns: Vec<String>, error: String },
}

/// The Lua states of the enabled Lua triggers.
pub struct LuaTriggers {
    settings: Settings,
    states: Mutex<HashMap<i64, State>>,
    generations: std::sync::atomic::AtomicU64,
    /// Threads given up, by trigger, while they live.
    stuck: Mutex<HashMap<i64, Vec<Weak<()>>>>,
    /// Triggers to disable in the database, with the reason.
    to_disable: Mutex<HashMap<i64, Disable>>,
}

struct State {
    /// The trigger row's `updated_at`: a change loads the script afresh.
    version: String,
    generation: u64,
    jobs: mpsc::Sender<Job>,
    alive: Weak<()>,
}

/// A trigger the runner stopped running, to be disabled in its row.
#[derive(Debug, Clone)]
pub struct Disable {
    pub trigger: i64,
    pub name: String,
    pub reason: String,
}

/// The maps stay consistent whatever panicked while one was locked (each
/// change is one insert or remove), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LuaTriggers {
    pub fn new(settings: Settings) -> LuaTriggers {
        LuaTriggers {
            settings,
            states: Mutex::new(HashMap::new()),
            generations: Default::default(),
            stuck: Mutex::new(HashMap::new()),
            to_disable: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// The triggers to disable since the last call.
    pub fn take_disables(&self) -> Vec<Disable> {
        lock(&self.to_disable).drain().map(|(_, d)| d).collect()
    }

    /// Given-up threads alive: of `trigger`, and of all triggers.
    fn stuck_threads(&self, trigger: i64) -> (usize, usize) {
        let mut stuck = lock(&self.stuck);
        stuck.retain(|_, threads| {
            threads.retain(|t| t.strong_count() > 0);
            !threads.is_empty()
        });
        let mine = stuck.get(&trigger).map_or(0, Vec::len);
        (mine, stuck.values().map(Vec::len).sum())
    }

    /// Whether `trigger` may have a new thread; else why not, and it is
    /// to be disabled.
    fn may_start(&self, trigger: &Trigger) -> Result<(), RunError> {
        let (mine, all) = self.stuck_threads(trigger.id);
        let reason = if mine >= STUCK_PER_TRIGGER {
            format!(
                "{mine} of its script's threads are stuck outside Lua past the time limit \
                 (a program or a read that does not end)"
            )
        } else if all >= STUCK_IN_ALL {
            format!(
                "the worker has {all} Lua threads stuck outside Lua past the time limit, \
                 this trigger's among them"
            )
        } else {
            return Ok(());
        };
        lock(&self.to_disable).insert(
            trigger.id,
            Disable {
                trigger: trigger.id,
                name: trigger.name.clone(),
                reason: reason.clone(),
            },
        );
        Err(RunError::Disabled(reason))
    }

    /// Ends the states of triggers that are gone, disabled or changed.
    pub fn retain(&self, triggers: &[Trigger]) {
        let mut states = lock(&self.states);
        states.retain(|id, state| {
            triggers
                .iter()
                .any(|t| t.id == *id && t.version == state.version)
        });
    }

    /// Runs `trigger` for message `id` (its row as JSON) in `tx` and
    /// saves what it changed; the error is the run's failure.
    pub async fn run(
        &self,
        tx: &Transaction<'_>,
        trigger: &Trigger,
        id: i64,
        message: Map<String, Json>,
    ) -> Result<(), RunError> {
        let (events, mut incoming) = tokio::sync::mpsc::channel(1);
        let generation = self.submit(
            trigger,
            Job {
                message_id: id,
                message,
                events,
            },
        )?;
        let limit = self.settings.time_limit;
        let mut deadline = Instant::now() + (limit + GRACE) * QUEUED;
        let mut server = Server::default();
        loop {
            let event = match tokio::time::timeout_at(deadline, incoming.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => {
                    self.give_up(trigger.id, generation);
                    return Err(RunError::ThreadStopped);
                }
                Err(_) => {
                    self.give_up(trigger.id, generation);
                    return Err(RunError::TimeLimit {
                        seconds: limit.as_secs_f64(),
                        disabled: self.may_start(trigger).err().map(Box::new),
                    });
                }
            };
            match event {
                FromLua::Started => deadline = Instant::now() + limit + GRACE,
                FromLua::Call(request) => server.serve(tx, request).await,
                FromLua::Done(result) => {
                    let changed = result?;
                    if let Some(e) = server.aborted {
                        return Err(RunError::Database(e));
                    }
                    return save(tx, id, &changed).await;
                }
            }
        }
    }

    /// Queues `job` on the trigger's thread, starting one if there is none
    /// (or the trigger changed, or its thread died); its generation.
    fn submit(&self, trigger: &Trigger, job: Job) -> Result<u64, RunError> {
        let mut states = lock(&self.states);
        let current = states
            .get(&trigger.id)
            .filter(|s| s.version == trigger.version);
        let job = match current {
            Some(state) => match state.jobs.send(job) {
                Ok(()) => return Ok(state.generation),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        self.may_start(trigger)?;
        let state::Spawned { jobs, alive } =
            state::spawn(&trigger.name, &trigger.script, self.settings)
                .map_err(RunError::CannotStart)?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        jobs.send(job).map_err(|_| RunError::StoppedAtOnce)?;
        states.insert(
            trigger.id,
            State {
                version: trigger.version.clone(),
                generation,
                jobs,
                alive,
            },
        );
        Ok(generation)
    }

    /// Drops a state whose thread does not answer, unless it was replaced
    /// already; its thread counts as stuck while it lives.
    fn give_up(&self, trigger: i64, generation: u64) {
        let mut states = lock(&self.states);
        if states
            .get(&trigger)
            .is_some_and(|s| s.generation == generation)
        {
            if let Some(state) = states.remove(&trigger) {
                lock(&self.stuck)
                    .entry(trigger)
                    .or_default()
                    .push(state.alive);
            }
            tracing::warn!(trigger, "a Lua trigger's thread does not answer: given up");
        }
    }
}

/// Writes the fields a script changed, in one UPDATE: the extension's
/// row trigger checks the status change and re-arms as for any UPDATE.
async fn save(tx: &Transaction<'_>, id: i64, changed: &Map<String, Json>) -> Result<(), RunError> {
    if changed.is_empty() {
        return Ok(());
    }
    // The names are the message row's own columns (checked by `changes`).
    let set: Vec<String> = changed
        .keys()
        .map(|c| {
            let quoted = format!("\"{}\"", c.replace('"', "\"\""));
            format!("{quoted} = r.{quoted}")
        })
        .collect();
    let sql = format!(
        "UPDATE smsbus.message AS m SET {}
         FROM jsonb_populate_record(NULL::smsbus.message, $2) AS r WHERE m.id = $1",
        set.join(", ")
    );
    let fields = Json::Object(changed.clone());
    let result = statements::execute(tx, &sql, &params![id, fields]).await;
    result.map(drop).map_err(|e| RunError::Save {
        columns: changed.keys().cloned().collect(),
        error: super::chain::error_text(&e),
    })
}
