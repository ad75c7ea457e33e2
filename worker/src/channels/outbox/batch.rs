//! Outcomes grouped by the SQL function that records them (`_mark_sent`,
//! `_mark_failed`, `_mark_retry`, `_release`), written all or nothing.

use super::{Finished, Outcome};
use crate::channels::ChannelContext;
use crate::statements::{self, params, Connection};

/// What a write committed, as the functions counted it.
#[derive(Default)]
pub(super) struct Committed {
    pub(super) sent: u64,
    pub(super) failed: u64,
    pub(super) unrecorded: u64,
}

/// Outcomes grouped by the function that records them, borrowed from the
/// batch.
#[derive(Default)]
pub(super) struct Batch<'a> {
    sent_ids: Vec<i64>,
    part_ids: Vec<i64>,
    part_numbers: Vec<i32>,
    part_references: Vec<&'a str>,
    failed_ids: Vec<i64>,
    failed_errors: Vec<&'a str>,
    retry_ids: Vec<i64>,
    retry_errors: Vec<&'a str>,
    retry_delays: Vec<f64>,
    released: Vec<i64>,
}

impl<'a> Batch<'a> {
    pub(super) fn of(finished: &'a [Finished]) -> Batch<'a> {
        let mut b = Batch::default();
        for f in finished {
            let id = f.id;
            match &f.outcome {
                Outcome::Sent { references } => {
                    b.sent_ids.push(id);
                    for (i, reference) in references.iter().enumerate() {
                        b.part_ids.push(id);
                        b.part_numbers.push(i as i32 + 1);
                        b.part_references.push(reference);
                    }
                }
                Outcome::Failed { error } => {
                    b.failed_ids.push(id);
                    b.failed_errors.push(error);
                }
                Outcome::Retry { error, delay } => {
                    b.retry_ids.push(id);
                    b.retry_errors.push(error);
                    b.retry_delays.push(delay.as_secs_f64());
                }
                Outcome::Release => b.released.push(id),
            }
        }
        b
    }

    /// Writes every group, all or nothing: a batch written again after a
    /// failure never writes a group twice.
    pub(super) async fn write(&self, ctx: &ChannelContext) -> anyhow::Result<Committed> {
        let groups = [
            !self.part_ids.is_empty(),
            !self.failed_ids.is_empty(),
            !self.retry_ids.is_empty(),
            !self.released.is_empty(),
        ];
        let mut client = ctx.pool.get().await?;
        // One statement is all or nothing by itself; more need a
        // transaction (its BEGIN and COMMIT cost two round trips).
        if groups.iter().filter(|g| **g).count() > 1 {
            let tx = client.transaction().await?;
            let committed = self.statements(&tx, ctx).await?;
            tx.commit().await?;
            Ok(committed)
        } else {
            self.statements(&client, ctx).await
        }
    }

    async fn statements(
        &self,
        client: &impl Connection,
        ctx: &ChannelContext,
    ) -> anyhow::Result<Committed> {
        tracing::debug!(channel = %ctx.row.name, sent = ?self.sent_ids, references = ?self.part_references, "writing outcomes");
        let mut committed = Committed::default();
        if !self.part_ids.is_empty() {
            let done: i32 = statements::query_one(
                client,
                "SELECT smsbus._mark_sent($1, $2, $3, $4)",
                &params![
                    ctx.row.name,
                    self.part_ids,
                    self.part_numbers,
                    self.part_references
                ],
            )
            .await?
            .get(0);
            committed.sent = done.max(0) as u64;
        }
        if !self.failed_ids.is_empty() {
            let done: i32 = statements::query_one(
                client,
                "SELECT smsbus._mark_failed($1, $2)",
                &params![self.failed_ids, self.failed_errors],
            )
            .await?
            .get(0);
            committed.failed = done.max(0) as u64;
        }
        if !self.retry_ids.is_empty() {
            statements::execute(
                client,
                "SELECT smsbus._mark_retry($1, $2, $3)",
                &params![self.retry_ids, self.retry_errors, self.retry_delays],
            )
            .await?;
        }
        if !self.released.is_empty() {
            statements::execute(
                client,
                "SELECT smsbus._release($1, $2)",
                &params![&*ctx.worker_id, self.released],
            )
            .await?;
        }
        Ok(committed)
    }
}
