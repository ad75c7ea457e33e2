//! Group commit: the submissions of every bind on this worker become
//! message rows in shared transactions, and each session learns its
//! message's id only once the transaction that holds it has committed —
//! only then does it send `submit_sm_resp` (docs/ARCHITECTURE.md, "Never
//! losing a message").
//!
//! A writer takes whatever has queued up while the previous transaction
//! was committing (at most [`MAX_BATCH`]), so the batch grows with the
//! load and an idle server answers within one round trip. [`WRITERS`]
//! writers run at once, so one commit's WAL flush does not stall the
//! next batch.
//!
//! A batch the database refuses as a whole (one bad row) is written again
//! one row at a time under savepoints, so only the bad row is refused.
//! A commit whose answer never came (the connection broke) may or may not
//! have happened: its submissions are refused with ESME_RSYSERR, and the
//! client that resubmits may send a message twice. That is SMPP's
//! at-least-once boundary: the protocol has no idempotency key.

use std::sync::Arc;

use deadpool_postgres::Pool;
use rusmpp::CommandStatus;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::Transaction;

use super::account::Account;
use super::submission::{Refusal, Submission};
use crate::channels::client_parts;
use crate::statements::{self, params};

/// Most rows in one transaction.
const MAX_BATCH: usize = 500;
/// Transactions in flight at once.
const WRITERS: usize = 2;
/// Submissions waiting for a writer; beyond it a session waits to hand
/// over more (its window is the client's back pressure).
const QUEUE: usize = 10_000;

/// A committed submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub id: i64,
    pub segments: i32,
}

pub type Answer = Result<Accepted, Refusal>;

struct Pending {
    account: Arc<Account>,
    submission: Submission,
    reply: oneshot::Sender<Answer>,
}

/// Hands submissions to the writers. Cheap to clone.
#[derive(Clone)]
pub struct Accepter {
    queue: mpsc::Sender<Pending>,
}

impl Accepter {
    /// Starts the writers; they stop when every `Accepter` is dropped and
    /// the queue is empty, so nothing handed over is left unanswered.
    pub fn start(pool: Pool) -> Accepter {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_loop(pool.clone(), receiver.clone()));
        }
        Accepter { queue }
    }

    /// Queues a submission; the receiver yields its answer after commit.
    pub async fn submit(
        &self,
        account: Arc<Account>,
        submission: Submission,
    ) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            account,
            submission,
            reply,
        };
        if let Err(mpsc::error::SendError(pending)) = self.queue.send(pending).await {
            // The writers are gone (the worker is stopping): refuse, so the
            // client resubmits elsewhere. The receiver is still held here.
            let _receiver_is_waiting = pending
                .reply
                .send(Err(unavailable("the worker is stopping")));
        }
        answer
    }
}

fn unavailable(reason: &str) -> Refusal {
    Refusal {
        status: CommandStatus::EsmeRsyserr,
        reason: reason.to_owned(),
    }
}

async fn write_loop(pool: Pool, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let answers = write(&pool, &batch).await;
        metrics::histogram!(crate::metrics::SMPP_SERVER_BATCH).record(batch.len() as f64);
        for (pending, answer) in batch.into_iter().zip(answers) {
            // A session that closed meanwhile no longer waits: its client
            // never learns the id, which SMPP allows (at least once).
            let _session_may_be_gone = pending.reply.send(answer);
        }
    }
}

/// Writes a batch; one answer per submission, in order.
async fn write(pool: &Pool, batch: &[Pending]) -> Vec<Answer> {
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "smpp server: cannot reach the database to accept {} submissions: {e}",
                batch.len()
            );
            return batch
                .iter()
                .map(|_| Err(unavailable("the database is unavailable")))
                .collect();
        }
    };
    let whole = async {
        let tx = client.transaction().await?;
        let answers = insert_batch(&tx, batch).await?;
        tx.commit().await?;
        Ok::<_, tokio_postgres::Error>(answers)
    }
    .await;
    match whole {
        Ok(answers) => answers,
        Err(e) if e.as_db_error().is_some() => {
            tracing::debug!(
                "smpp server: a batch of {} was refused ({e}); writing it row by row",
                batch.len()
            );
            match one_by_one(&mut client, batch).await {
                Ok(answers) => answers,
                Err(e) => failed(batch, &e),
            }
        }
        Err(e) => failed(batch, &e),
    }
}

fn failed(batch: &[Pending], e: &tokio_postgres::Error) -> Vec<Answer> {
    tracing::warn!("smpp server: {} submissions not accepted: {e}", batch.len());
    batch
        .iter()
        .map(|_| Err(unavailable("the database did not commit")))
        .collect()
}

async fn one_by_one(
    client: &mut deadpool_postgres::Object,
    batch: &[Pending],
) -> Result<Vec<Answer>, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    let mut answers = Vec::with_capacity(batch.len());
    for pending in batch {
        let savepoint = tx.savepoint("submission").await?;
        match insert_batch(&savepoint, std::slice::from_ref(pending)).await {
            Ok(mut one) => {
                savepoint.commit().await?;
                answers.push(one.remove(0));
            }
            Err(e) => {
                let Some(db) = e.as_db_error() else {
                    return Err(e);
                };
                savepoint.rollback().await?;
                answers.push(Err(refusal_of(db)));
            }
        }
    }
    tx.commit().await?;
    Ok(answers)
}

/// The status for a row the database refused, by what its error names.
fn refusal_of(db: &tokio_postgres::error::DbError) -> Refusal {
    let message = db.message();
    let status = if message.contains("segments") {
        CommandStatus::EsmeRinvmsglen
    } else if message.contains("from_address") || message.contains("sender") {
        CommandStatus::EsmeRinvsrcadr
    } else if message.contains("to_address") || message.contains("recipient") {
        CommandStatus::EsmeRinvdstadr
    } else if matches!(&db.code().code()[..2], "22" | "23") {
        CommandStatus::EsmeRsubmitfail
    } else {
        CommandStatus::EsmeRsyserr
    };
    Refusal {
        status,
        reason: message.to_owned(),
    }
}

/// SMPP time text (`smpp_time`): a timestamptz, or `+` and an interval.
const INSERT: &str = "
    INSERT INTO smsbus.message (account, to_address, from_address, body, encoding, channel, priority,
                                scheduled_at, valid_until, receipts, client_parts)
    SELECT u.account, u.to_address, u.from_address, u.body, u.encoding, u.channel, u.priority,
           CASE WHEN u.scheduled IS NULL THEN now()
                WHEN left(u.scheduled, 1) = '+' THEN now() + substr(u.scheduled, 2)::interval
                ELSE u.scheduled::timestamptz END,
           CASE WHEN u.validity IS NULL THEN NULL
                WHEN left(u.validity, 1) = '+' THEN now() + substr(u.validity, 2)::interval
                ELSE u.validity::timestamptz END,
           u.receipts, u.client_parts::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int2[],
                $8::text[], $9::text[], $10::int2[], $11::text[])
         AS u(account, to_address, from_address, body, encoding, channel, priority, scheduled, validity,
              receipts, client_parts)
    RETURNING id, segments";

/// Source addresses an account's pattern refuses (their ordinals, from 1).
const SOURCES_REFUSED: &str = "
    SELECT u.n::integer FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(source, pattern, n)
    WHERE u.pattern IS NOT NULL AND NOT coalesce(u.source, '') ~ u.pattern";

/// What the account's credit and daily limit refuse: `$1` accounts and
/// `$2` parts of the submissions, in order.
const QUOTA_REFUSED: &str =
    "SELECT n, reason FROM smsbus._take_account_quota($1::text[], $2::integer[])";

/// Inserts the submissions of `batch` whose source their account allows
/// (the rest are refused with ESME_RINVSRCADR) and for which the account
/// has credit and daily allowance left (else ESME_RSUBMITFAIL), taking
/// them in the same transaction.
async fn insert_batch(
    tx: &Transaction<'_>,
    batch: &[Pending],
) -> Result<Vec<Answer>, tokio_postgres::Error> {
    let source = |p: &Pending| {
        p.submission
            .from
            .clone()
            .or_else(|| p.account.default_source.clone())
    };
    let mut refused: Vec<Option<Refusal>> = vec![None; batch.len()];
    if batch.iter().any(|p| p.account.allowed_sources.is_some()) {
        let sources: Vec<Option<String>> = batch.iter().map(source).collect();
        let patterns: Vec<Option<&str>> = batch
            .iter()
            .map(|p| p.account.allowed_sources.as_deref())
            .collect();
        for row in statements::query(tx, SOURCES_REFUSED, &params![sources, patterns]).await? {
            let p = &batch[row.get::<_, i32>(0) as usize - 1];
            refused[row.get::<_, i32>(0) as usize - 1] = Some(Refusal {
                status: CommandStatus::EsmeRinvsrcadr,
                reason: format!(
                    "source address {:?} is not one account {} may use",
                    source(p).unwrap_or_default(),
                    p.account.name
                ),
            });
        }
    }
    // Credit and daily limits, for what the source check let through.
    let open: Vec<usize> = (0..batch.len()).filter(|&i| refused[i].is_none()).collect();
    let accounts: Vec<&str> = open
        .iter()
        .map(|&i| batch[i].account.name.as_str())
        .collect();
    let parts: Vec<i32> = open.iter().map(|&i| batch[i].submission.parts()).collect();
    for row in statements::query(tx, QUOTA_REFUSED, &params![accounts, parts]).await? {
        refused[open[row.get::<_, i32>(0) as usize - 1]] = Some(Refusal {
            status: CommandStatus::EsmeRsubmitfail,
            reason: row.get(1),
        });
    }
    let taken: Vec<&Pending> = batch
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .map(|(p, _)| p)
        .collect();
    let mut ids = Vec::new();
    if !taken.is_empty() {
        let column =
            |f: &dyn Fn(&Pending) -> Option<String>| taken.iter().map(|p| f(p)).collect::<Vec<_>>();
        let accounts = column(&|p| Some(p.account.name.clone()));
        let to = column(&|p| Some(p.submission.to.clone()));
        let from = column(&source);
        let body = column(&|p| Some(p.submission.body.clone()));
        let encoding = column(&|p| Some(p.submission.encoding.as_str().to_owned()));
        let channel = column(&|p| p.account.channel.clone());
        let priority: Vec<i16> = taken.iter().map(|p| p.submission.priority).collect();
        let scheduled = column(&|p| p.submission.scheduled.clone());
        let validity = column(&|p| p.submission.validity.clone());
        let receipts: Vec<Option<i16>> = taken.iter().map(|p| p.submission.receipts()).collect();
        let client_parts = column(&|p| {
            let parts = &p.submission.client_parts;
            (p.account.keep_udh && !parts.is_empty())
                .then(|| client_parts::to_json(parts).to_string())
        });
        // RETURNING yields the rows in the order the SELECT produced
        // them, which is the order of the arrays.
        let rows = statements::query(
            tx,
            INSERT,
            &params![
                accounts,
                to,
                from,
                body,
                encoding,
                channel,
                priority,
                scheduled,
                validity,
                receipts,
                client_parts
            ],
        )
        .await?;
        ids = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i32>(1)))
            .collect();
        assert_eq!(
            ids.len(),
            taken.len(),
            "INSERT ... RETURNING gave one row per submission"
        );
    }
    let mut ids = ids.into_iter();
    Ok(refused
        .into_iter()
        .map(|refused| match refused {
            Some(refusal) => Err(refusal),
            None => {
                let (id, segments) = ids.next().expect("one id per inserted row");
                Ok(Accepted { id, segments })
            }
        })
        .collect())
}
