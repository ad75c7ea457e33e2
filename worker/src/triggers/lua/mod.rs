//! Lua triggers (DESIGN.md §6): each trigger's script lives in its own
//! Lua state on its own thread ([`state`]), loaded once and kept while
//! the trigger's row is unchanged; `process(message)` gets the message as
//! a table and the fields it changes are saved, through the state
//! machine's rules, when it returns. The `smsbus` module ([`module`])
//! works in the message's transaction: its database calls travel to the
//! chain's task ([`calls`]).
//!
//! Limits: a run gets a wall-clock time limit (an instruction-count hook
//! checks it, and the runner stops waiting soon after), a state a memory
//! limit; a thread stuck outside Lua (a program that never ends) is given
//! up and the trigger's next message gets a fresh state.

pub mod calls;
pub mod http;
pub mod module;
pub mod state;
pub mod values;

use std::collections::HashMap;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use deadpool_postgres::Transaction;
use serde_json::{Map, Value as Json};
use tokio::time::Instant;

use super::catalog::Trigger;
use calls::{FromLua, Server};
use state::Job;
pub use state::Settings;

/// Time a run gets past its limit for the hook to stop it and the
/// answer to come back, before the runner gives its thread up.
const GRACE: Duration = Duration::from_secs(2);
/// Runs that may wait in one state's queue (the runner's parallel groups).
const QUEUED: u32 = super::PARALLEL as u32 + 1;

/// The Lua states of the enabled Lua triggers.
pub struct LuaTriggers {
    settings: Settings,
    states: Mutex<HashMap<i64, State>>,
    generations: std::sync::atomic::AtomicU64,
}

struct State {
    /// The trigger row's `updated_at`: a change loads the script afresh.
    version: String,
    generation: u64,
    jobs: mpsc::Sender<Job>,
}

impl LuaTriggers {
    pub fn new(settings: Settings) -> LuaTriggers {
        LuaTriggers {
            settings,
            states: Mutex::new(HashMap::new()),
            generations: Default::default(),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Ends the states of triggers that are gone, disabled or changed.
    pub fn retain(&self, triggers: &[Trigger]) {
        let mut states = self.states.lock().expect("lua states");
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
    ) -> Result<(), String> {
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
                    return Err("the script's thread stopped (see the worker's log)".to_owned());
                }
                Err(_) => {
                    self.give_up(trigger.id, generation);
                    return Err(format!(
                        "time limit exceeded ({} s): the script is stuck outside Lua, its state is dropped",
                        limit.as_secs_f64()
                    ));
                }
            };
            match event {
                FromLua::Started => deadline = Instant::now() + limit + GRACE,
                FromLua::Call(request) => server.serve(tx, request).await,
                FromLua::Done(result) => {
                    let changed = result?;
                    if let Some(e) = server.aborted {
                        return Err(e);
                    }
                    return save(tx, id, &changed).await;
                }
            }
        }
    }

    /// Queues `job` on the trigger's thread, starting one if there is none
    /// (or the trigger changed, or its thread died); its generation.
    fn submit(&self, trigger: &Trigger, job: Job) -> Result<u64, String> {
        let mut states = self.states.lock().expect("lua states");
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
        let jobs = state::spawn(&trigger.name, &trigger.script, self.settings)
            .map_err(|e| format!("cannot start a thread for the script: {e}"))?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        jobs.send(job)
            .map_err(|_| "the script's thread stopped at once".to_owned())?;
        states.insert(
            trigger.id,
            State {
                version: trigger.version.clone(),
                generation,
                jobs,
            },
        );
        Ok(generation)
    }

    /// Drops a state whose thread does not answer, unless it was replaced
    /// already.
    fn give_up(&self, trigger: i64, generation: u64) {
        let mut states = self.states.lock().expect("lua states");
        if states
            .get(&trigger)
            .is_some_and(|s| s.generation == generation)
        {
            states.remove(&trigger);
            tracing::warn!(trigger, "a Lua trigger's thread does not answer: given up");
        }
    }
}

/// Writes the fields a script changed, in one UPDATE: the extension's
/// row trigger checks the status change and re-arms as for any UPDATE.
async fn save(tx: &Transaction<'_>, id: i64, changed: &Map<String, Json>) -> Result<(), String> {
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
    let result = async {
        let statement = tx.prepare_cached(&sql).await?;
        tx.execute(&statement, &[&id, &fields]).await
    }
    .await;
    result.map(drop).map_err(|e| {
        let names: Vec<&str> = changed.keys().map(String::as_str).collect();
        format!(
            "saving message.{}: {}",
            names.join(", message."),
            super::chain::error_text(&e)
        )
    })
}
