//! Messages a second over the last hour, from `message_event`: submitted
//! (a new outbound message), sent, delivered and failed (failed,
//! notdelivered, expired, noreport). Counted in ten-second buckets. The
//! buckets are kept between refreshes and only the newest are counted
//! again (a BRIN index on `message_event.at` finds them), so a page open
//! all day reads a few seconds of events each time. The last
//! [`RECOUNTED`] are counted again on every refresh: a transaction that
//! commits a few seconds after it wrote its events still shows.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio_postgres::Client;

use crate::statements::{self, params};

/// Seconds in a bucket.
pub const BUCKET: i64 = 10;
/// Seconds shown.
pub const WINDOW: i64 = 3600;
/// Buckets counted again at each refresh.
const RECOUNTED: i64 = 3;

/// Events of one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub submitted: i64,
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// A bucket: its start (Unix seconds) and what happened in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub counts: Counts,
}

#[derive(Default)]
pub struct Series {
    buckets: Mutex<BTreeMap<i64, Counts>>,
}

const COUNT: &str = "
    SELECT (floor(extract(epoch FROM e.at)::float8 / $2::float8) * $2::float8)::bigint AS bucket,
           count(*) FILTER (WHERE e.from_status IS NULL AND e.to_status <> 'received'),
           count(*) FILTER (WHERE e.to_status = 'sent'),
           count(*) FILTER (WHERE e.to_status = 'delivered'),
           count(*) FILTER (WHERE e.to_status IN ('failed', 'notdelivered', 'expired', 'noreport'))
    FROM smsbus.message_event e
    WHERE e.at >= to_timestamp($1::float8)
    GROUP BY 1";

impl Series {
    /// Counts what is new and answers the whole window, oldest first, a
    /// bucket for every ten seconds (empty ones too), ending with the
    /// bucket of now.
    pub async fn refresh(&self, client: &Client) -> Result<Vec<Bucket>, tokio_postgres::Error> {
        let now: f64 =
            statements::query_one(client, "SELECT extract(epoch FROM now())::float8", &[])
                .await?
                .get(0);
        let current = bucket_of(now as i64);
        let first = current - WINDOW + BUCKET;
        let from = {
            let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            match buckets.keys().next_back() {
                Some(&newest) if newest >= first => (newest - (RECOUNTED - 1) * BUCKET).max(first),
                _ => first,
            }
        };
        let rows = statements::query(client, COUNT, &params![from as f64, BUCKET as f64]).await?;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|&start, _| start >= first && start < from);
        for row in rows {
            let start: i64 = row.get(0);
            buckets.insert(
                start,
                Counts {
                    submitted: row.get(1),
                    sent: row.get(2),
                    delivered: row.get(3),
                    failed: row.get(4),
                },
            );
        }
        Ok((0..WINDOW / BUCKET)
            .map(|i| {
                let start = first + i * BUCKET;
                Bucket {
                    start,
                    counts: buckets.get(&start).copied().unwrap_or_default(),
                }
            })
            .collect())
    }
}

fn bucket_of(unix: i64) -> i64 {
    unix.div_euclid(BUCKET) * BUCKET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_ten_seconds() {
        assert_eq!(bucket_of(1_700_000_009), 1_700_000_000);
        assert_eq!(bucket_of(1_700_000_010), 1_700_000_010);
        assert_eq!(bucket_of(-1), -10);
    }
}
