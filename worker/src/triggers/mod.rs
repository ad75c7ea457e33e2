//! The trigger runner (docs/ARCHITECTURE.md#the-trigger-runner): takes messages the extension armed
//! (`trigger_status = 'pending'`, woken by NOTIFY `smsbus_triggers` and a
//! timer) and runs each one's chain.
//!
//! - [`catalog`]: the enabled triggers, read afresh for every batch, so a
//!   changed row counts from the next batch on.
//! - [`chain`]: one message's chain, in one transaction.
//! - [`lua`]: Lua scripts, each in a state of its own.
//!
//! Different messages run concurrently, a few at a time. Every statement
//! of a group's transaction is bounded by the trigger time limit.

pub mod catalog;
pub mod chain;
pub mod lua;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::listener::Wakeups;
use crate::statements::{self, params};

/// Messages taken at once.
const BATCH: i32 = 100;
/// Groups run at once, each on its own connection; one message's triggers
/// never run concurrently.
pub(crate) const PARALLEL: usize = 4;
/// Messages whose chains share a transaction (each in a savepoint): one
/// commit, and its flush to disk, for several.
const GROUP: usize = 25;
/// How often the runner looks for armed messages without a wake-up.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(
    pool: Pool,
    settings: lua::Settings,
    wakeups: Wakeups,
    shutdown: CancellationToken,
) {
    let lua = Arc::new(lua::LuaTriggers::new(settings));
    crate::polling::run_passes("trigger runner", POLL, &wakeups.triggers, &shutdown, || {
        batch(&pool, &lua, &shutdown)
    })
    .await
}

/// Takes a batch and runs its chains in groups of [`GROUP`], [`PARALLEL`]
/// groups at a time; returns whether it was full.
///
/// A group whose task panicked (a bug: every message's failure is meant
/// to be an error in its `last_error`) has its transaction rolled back;
/// its messages run again one per task, so the one that panics again is
/// failed alone, with the panic's message, and its neighbours finish.
async fn batch(
    pool: &Pool,
    lua: &Arc<lua::LuaTriggers>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let ids: Vec<i64> = statements::query(
        &client,
        "SELECT smsbus._claim_triggers($1)",
        &params![BATCH],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(false);
    }
    let triggers = Arc::new(catalog::load(&client).await?);
    lua.retain(&triggers);
    drop(client);
    let statement_timeout = format!(
        "SET LOCAL statement_timeout = {}",
        lua.settings().time_limit.as_millis()
    );
    let ran = run_groups(
        &ids,
        || shutdown.is_cancelled(),
        |group| {
            run_group(
                pool.clone(),
                triggers.clone(),
                lua.clone(),
                statement_timeout.clone(),
                group,
            )
        },
    )
    .await;
    for (id, reason) in &ran.panicked {
        release(pool, &[*id], reason).await;
    }
    let Ran {
        not_started: rest,
        failure,
        ..
    } = ran;
    if !rest.is_empty() {
        // The runner is stopping, or a group could not be recorded: the
        // rest go back to pending at once rather than after the resume
        // timeout.
        statements::execute(
            &pool.get().await?,
            "UPDATE smsbus.message SET trigger_status = 'pending'
             WHERE id = ANY($1) AND trigger_status = 'processing'",
            &params![rest],
        )
        .await?;
    }
    disable_triggers(pool, lua).await;
    match failure {
        // A message whose chain could not be recorded stays processing
        // until maintenance arms it again.
        Some(e) => Err(e),
        None => Ok(ids.len() == BATCH as usize && !shutdown.is_cancelled()),
    }
}

/// What running a batch's groups came to.
struct Ran {
    /// Messages whose task panicked when they ran alone, with the panic.
    panicked: Vec<(i64, String)>,
    /// Messages not run: the runner is stopping, or a group failed.
    not_started: Vec<i64>,
    /// The first group that could not be recorded.
    failure: Option<anyhow::Error>,
}

/// Runs `ids` in groups of [`GROUP`] with `run`, [`PARALLEL`] at a time,
/// until `stop` says so or a group fails. A group that panics is run
/// again one message per task; a message that panics alone is in
/// [`Ran::panicked`].
async fn run_groups<F, Fut>(ids: &[i64], stop: impl Fn() -> bool, run: F) -> Ran
where
    F: Fn(Vec<i64>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut waiting: VecDeque<Vec<i64>> = ids.chunks(GROUP).map(<[i64]>::to_vec).collect();
    let mut running = JoinSet::new();
    let mut groups: HashMap<tokio::task::Id, Vec<i64>> = HashMap::new();
    let mut ran = Ran {
        panicked: Vec::new(),
        not_started: Vec::new(),
        failure: None,
    };
    loop {
        while running.len() < PARALLEL && !stop() && ran.failure.is_none() {
            let Some(group) = waiting.pop_front() else {
                break;
            };
            groups.insert(running.spawn(run(group.clone())).id(), group);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        match joined {
            Ok((task, result)) => {
                groups.remove(&task);
                if let Err(e) = result {
                    ran.failure.get_or_insert(e);
                }
            }
            Err(e) => {
                let group = groups.remove(&e.id()).unwrap_or_default();
                let reason = match e.try_into_panic() {
                    Ok(panic) => format!("the trigger runner panicked: {}", panic_text(&*panic)),
                    Err(e) => format!("the trigger runner's task ended: {e}"),
                };
                match group[..] {
                    [id] => ran.panicked.push((id, reason)),
                    _ => {
                        tracing::error!(
                            messages = ?group,
                            "{reason}; running these messages one at a time to find the one it was"
                        );
                        for id in group.into_iter().rev() {
                            waiting.push_front(vec![id]);
                        }
                    }
                }
            }
        }
    }
    ran.not_started = waiting.into_iter().flatten().collect();
    ran
}

/// The chains of `group`, one transaction for all.
async fn run_group(
    pool: Pool,
    triggers: Arc<Vec<catalog::Trigger>>,
    lua: Arc<lua::LuaTriggers>,
    statement_timeout: String,
    group: Vec<i64>,
) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    tx.batch_execute(&statement_timeout).await?;
    // The group's messages stay locked until it commits: maintenance arms
    // again the chains left processing for minutes (a worker that died),
    // skipping locked rows, so a slow group's later messages are not run
    // a second time elsewhere. One armed again and taken by another worker
    // before this point is run by whichever locks it first; the other
    // finds it no longer processing.
    let mine: Vec<i64> = statements::query(
        &tx,
        "SELECT id FROM smsbus.message WHERE id = ANY($1) AND trigger_status = 'processing'
         ORDER BY id FOR NO KEY UPDATE",
        &params![group],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    for id in mine {
        chain::run(&mut tx, &triggers, &lua, id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Fails the chains of messages whose task panicked on its own: running
/// them again would only panic again.
async fn release(pool: &Pool, ids: &[i64], reason: &str) {
    tracing::error!(messages = ?ids, "{reason}: their triggers failed");
    let failed = async {
        chain::fail(&mut pool.get().await?, ids, reason)
            .await
            .map_err(anyhow::Error::from)
    };
    if let Err(e) = failed.await {
        tracing::error!(
            messages = ?ids,
            "cannot record the failure ({e:#}): they stay processing until maintenance arms them again"
        );
    }
}

/// A panic's message, as `std` prints it.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Disables, in their rows, the triggers the Lua runner stopped running
/// (see [`lua`]): `enabled` false and the reason at the head of the
/// description, which is where an operator looks at a trigger.
async fn disable_triggers(pool: &Pool, lua: &lua::LuaTriggers) {
    for disable in lua.take_disables() {
        tracing::warn!(trigger = %disable.name, "disabling the trigger: {}", disable.reason);
        let updated = async {
            let client = pool.get().await?;
            // The worker's role writes no trigger rows but this.
            statements::execute(
                &client,
                "SELECT smsbus._disable_trigger($1, $2)",
                &params![disable.trigger, disable.reason],
            )
            .await
            .map_err(anyhow::Error::from)
        };
        if let Err(e) = updated.await {
            tracing::error!(
                trigger = %disable.name,
                "cannot disable the trigger in the database ({e:#}): the worker runs it no more \
                 while its stuck threads live"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn a_panicking_message_is_found_and_its_neighbours_run() {
        let finished = Arc::new(Mutex::new(Vec::new()));
        let ids: Vec<i64> = (1..=60).collect();
        let ran = run_groups(
            &ids,
            || false,
            |group| {
                let finished = finished.clone();
                async move {
                    if group.contains(&27) {
                        panic!("message 27 breaks the runner");
                    }
                    finished.lock().unwrap().extend(group);
                    Ok(())
                }
            },
        )
        .await;
        let mut finished = finished.lock().unwrap().clone();
        finished.sort();
        assert_eq!(
            finished,
            (1..=60).filter(|&id| id != 27).collect::<Vec<_>>()
        );
        assert_eq!(
            ran.panicked,
            [(
                27,
                "the trigger runner panicked: message 27 breaks the runner".to_owned()
            )]
        );
        assert!(ran.not_started.is_empty() && ran.failure.is_none());
    }

    #[tokio::test]
    async fn a_failed_group_leaves_the_rest_unstarted() {
        let ids: Vec<i64> = (1..=(GROUP * (PARALLEL + 2)) as i64).collect();
        let ran = run_groups(
            &ids,
            || false,
            |group| async move {
                if group.contains(&1) {
                    anyhow::bail!("the database went away");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            },
        )
        .await;
        assert_eq!(ran.failure.unwrap().to_string(), "the database went away");
        // The first PARALLEL groups started; the others did not.
        assert_eq!(ran.not_started.len(), GROUP * 2);
        assert!(ran.panicked.is_empty());
    }
}
