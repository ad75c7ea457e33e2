//! One message's chain of triggers, in one transaction: for each enabled
//! trigger in position order that is for the message's status and
//! direction, its condition is evaluated against the message as it is now
//! (so earlier triggers' changes count), then its script runs with the
//! message id as `$1`, inside a savepoint: a failing script takes back
//! only its own changes.
//!
//! The chain stops after a `final` trigger, when a script sets
//! `trigger_status = 'processed'`, or when a script moves the message to
//! another status (the extension then arms it again for that status, and
//! a later batch runs that chain). It ends `processed` if any trigger ran,
//! `nomatch` if none did, `failed` (with the trigger's name and the error
//! in `last_error`) when a condition or script failed.

use deadpool_postgres::Object;

use super::catalog::Trigger;

/// How a chain ended.
enum End {
    Ran,
    NoMatch,
    Failed(String),
    /// A script decided (processed) or moved the message on.
    LeftAlone,
}

pub async fn run(client: &mut Object, triggers: &[Trigger], id: i64) -> anyhow::Result<()> {
    let mut tx = client.transaction().await?;
    let mut end = End::NoMatch;
    for trigger in triggers {
        let Some(row) = tx
            .query_opt(
                "SELECT status::text, direction, trigger_status::text FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await?
        else {
            end = End::LeftAlone; // deleted by a script
            break;
        };
        let (status, direction, trigger_status): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        if trigger_status != "processing" {
            end = End::LeftAlone;
            break;
        }
        if !trigger.applies(&status, &direction) {
            continue;
        }
        match step(&mut tx, trigger, id).await? {
            Step::NoMatch => {}
            Step::Ran => {
                end = End::Ran;
                if trigger.final_ {
                    break;
                }
            }
            Step::Failed(error) => {
                end = End::Failed(format!("trigger {}: {error}", trigger.name));
                break;
            }
        }
    }
    let (outcome, error) = match &end {
        End::Ran => ("processed", None),
        End::NoMatch => ("nomatch", None),
        End::Failed(e) => ("failed", Some(e.as_str())),
        End::LeftAlone => ("", None),
    };
    if !outcome.is_empty() {
        tx.execute(
            "UPDATE smsbus.message SET trigger_status = $2::text::smsbus.trigger_status,
                    last_error = coalesce($3, last_error)
             WHERE id = $1 AND trigger_status = 'processing'",
            &[&id, &outcome, &error],
        )
        .await?;
    }
    if let Some(e) = error {
        tracing::warn!(message = id, "{e}");
    }
    tx.commit().await?;
    Ok(())
}

enum Step {
    NoMatch,
    Ran,
    Failed(String),
}

/// The condition, then the script, of one trigger, each in a savepoint.
async fn step(
    tx: &mut deadpool_postgres::Transaction<'_>,
    trigger: &Trigger,
    id: i64,
) -> anyhow::Result<Step> {
    let sp = tx.savepoint("smsbus_trigger").await?;
    // Checked when the row was written: one boolean expression.
    let condition = format!(
        "SELECT ({}) FROM smsbus.message AS message WHERE id = $1",
        trigger.condition
    );
    let matched: Option<bool> = match sp.query_opt(&condition, &[&id]).await {
        Ok(row) => row.and_then(|r| r.get(0)),
        Err(e) => {
            sp.rollback().await?;
            return Ok(Step::Failed(format!("condition: {}", error_text(&e))));
        }
    };
    if matched != Some(true) {
        sp.commit().await?;
        return Ok(Step::NoMatch);
    }
    if trigger.language != "sql" {
        sp.rollback().await?;
        return Ok(Step::Failed(format!(
            "{} scripts are not run by this worker yet",
            trigger.language
        )));
    }
    for statement in &trigger.statements {
        let result = async {
            let prepared = sp.prepare(statement).await?;
            if prepared.params().is_empty() {
                sp.execute(&prepared, &[]).await
            } else {
                sp.execute(&prepared, &[&id]).await
            }
        }
        .await;
        if let Err(e) = result {
            sp.rollback().await?;
            return Ok(Step::Failed(error_text(&e)));
        }
    }
    sp.commit().await?;
    Ok(Step::Ran)
}

/// The database's message of an error, without the protocol wrapping.
fn error_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}
