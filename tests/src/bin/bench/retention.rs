//! Retention: a month of archived messages removed by dropping its
//! partition (what `archiving.keep` does) against deleting the same number
//! of rows from another month: time, WAL written, and the table's size
//! after (right after, and after a VACUUM for the deleted one).

use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::report::Row;

pub struct Removal {
    seconds: f64,
    wal_mib: f64,
    mib_before: f64,
    mib_after: f64,
    mib_after_vacuum: Option<f64>,
}

impl Removal {
    fn to_json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "wal_mib": self.wal_mib,
            "table_mib_before": self.mib_before,
            "table_mib_after": self.mib_after,
            "table_mib_after_vacuum": self.mib_after_vacuum,
        })
    }
}

pub struct Figures {
    rows: usize,
    dropped: Removal,
    deleted: Removal,
}

impl Figures {
    pub fn rows(&self) -> Vec<Row> {
        let line = |name: &str, removal: &Removal| Row {
            scenario: format!("retention {name} {} rows", self.rows),
            smsbus: self.rows as f64 / removal.seconds,
            bare: f64::NAN,
            target: format!(
                "{:.1} s, {:.0} MiB WAL, {:.0} MiB left",
                removal.seconds,
                removal.wal_mib,
                removal.mib_after_vacuum.unwrap_or(removal.mib_after)
            ),
            pass: None,
        };
        vec![
            line("drop month", &self.dropped),
            line("DELETE", &self.deleted),
        ]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "rows_per_month": self.rows,
            "drop_partition": self.dropped.to_json(),
            "delete_rows": self.deleted.to_json(),
            "time_ratio_delete_to_drop": self.deleted.seconds / self.dropped.seconds,
            "wal_ratio_delete_to_drop": self.deleted.wal_mib / self.dropped.wal_mib.max(1e-6),
        })
    }
}

/// Fills two past months of the archive with `rows` messages each, as the
/// archive holds them, then drops one month and deletes the other.
pub async fn run(control: &Client, rows: usize) -> Result<Figures> {
    control
        .batch_execute(
            "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('old', 'smpp', false)
                 ON CONFLICT DO NOTHING;
             INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', 'template', 'old');
             CREATE TEMP TABLE template AS SELECT * FROM smsbus.message;
             DELETE FROM smsbus.message;
             UPDATE template SET status = 'delivered', trigger_status = 'notriggers', attempts = 1;
             SELECT smsbus._archive_partitions(now() - interval '3 months', now());",
        )
        .await?;
    // Months 3 and 2 back: one to drop, one to delete from.
    let months = ["3 months", "2 months"];
    for (m, ago) in months.iter().enumerate() {
        eprintln!("  filling the month {ago} ago with {rows} archived messages ...");
        for start in (0..rows).step_by(1_000_000) {
            let n = 1_000_000.min(rows - start) as i64;
            let base = 3_000_000_000_i64 + (m as i64) * 1_000_000_000 + start as i64;
            control
                .execute(
                    &format!(
                        "INSERT INTO smsbus.message_archive
                         SELECT r.*
                         FROM template t, generate_series(1::bigint, $2::bigint) g,
                              LATERAL jsonb_populate_record(t, jsonb_build_object(
                                  'id', $1::bigint + g,
                                  'to_address', '+3162' || lpad((g % 10000000)::text, 7, '0'),
                                  'body', 'archived ' || g,
                                  'created_at', date_trunc('month', now() - interval '{ago}') + interval '10 days',
                                  'updated_at', date_trunc('month', now() - interval '{ago}') + interval '11 days')) r"
                    ),
                    &[&base, &n],
                )
                .await?;
        }
    }
    // One statement each: VACUUM runs outside a transaction block.
    for sql in [
        "DROP TABLE template",
        "CHECKPOINT",
        "VACUUM ANALYZE smsbus.message_archive",
    ] {
        control.batch_execute(sql).await?;
    }
    let partition = |ago: &str| {
        format!(
            "SELECT b.partition::text FROM smsbus._archive_bounds('smsbus.message_archive') b
             WHERE b.lower_bound = date_trunc('month', (now() - interval '{ago}') AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        )
    };
    let dropped_month: String = control.query_one(&partition(months[0]), &[]).await?.get(0);
    let deleted_month: String = control.query_one(&partition(months[1]), &[]).await?.get(0);

    eprintln!("  dropping {dropped_month} ...");
    let dropped = measure(control, &dropped_month, None, |c| {
        let sql = format!("DROP TABLE {dropped_month}");
        async move { c.batch_execute(&sql).await }
    })
    .await?;
    eprintln!("  deleting the rows of {deleted_month} ...");
    let deleted = measure(control, &deleted_month, Some(&deleted_month), |c| {
        let sql = format!("DELETE FROM {deleted_month}");
        async move { c.batch_execute(&sql).await }
    })
    .await?;
    Ok(Figures {
        rows,
        dropped,
        deleted,
    })
}

async fn measure<'a, F, Fut>(
    control: &'a Client,
    table: &str,
    vacuum: Option<&str>,
    remove: F,
) -> Result<Removal>
where
    F: FnOnce(&'a Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    let size = format!(
        "SELECT coalesce(pg_total_relation_size(to_regclass('{table}')), 0)::float8 / 1048576"
    );
    let mib_before: f64 = control.query_one(&size, &[]).await?.get(0);
    let lsn: String = control
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let started = Instant::now();
    remove(control).await?;
    let seconds = started.elapsed().as_secs_f64();
    let wal_mib: f64 = control
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::float8 / 1048576",
            &[&lsn],
        )
        .await?
        .get(0);
    let mib_after: f64 = control.query_one(&size, &[]).await?.get(0);
    let mib_after_vacuum = match vacuum {
        Some(table) => {
            control.batch_execute(&format!("VACUUM {table}")).await?;
            Some(control.query_one(&size, &[]).await?.get(0))
        }
        None => None,
    };
    Ok(Removal {
        seconds,
        wal_mib,
        mib_before,
        mib_after,
        mib_after_vacuum,
    })
}
