//! What trigger tests share: a database with one (disabled) channel and a
//! log table for scripts to write to, inbound messages recorded through
//! the worker's own function, and waiting for a chain to end.

use std::time::Duration;

use tokio_postgres::Client;

use crate::db::{strings, TestDb};
use crate::worker::{eventually, Worker};

/// A connection to `db`, which gets channel `kpn` (disabled: no driver
/// runs) and `public.log (n, trigger, message_id)`.
pub async fn setup(db: &TestDb) -> Client {
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind, enabled) VALUES ('kpn', 'smpp', false);
         CREATE TABLE public.log (n serial, trigger text, message_id bigint);",
    )
    .await
    .unwrap();
    c
}

/// An inbound message from +31687654321 to 1234 on `kpn`; its id.
pub async fn receive(c: &Client, body: &str) -> i64 {
    let ids: Vec<i64> = c
        .query_one(
            "SELECT smsbus._record_inbound('kpn', ARRAY['+31687654321'], ARRAY['1234'], ARRAY[$1], ARRAY[NULL])",
            &[&body],
        )
        .await
        .unwrap()
        .get(0);
    ids[0]
}

/// `n` inbound messages at once ("message 1" ...), as one statement; their ids.
pub async fn receive_many(c: &Client, n: i32) -> Vec<i64> {
    c.query_one(
        "SELECT smsbus._record_inbound('kpn', array_fill('+31687654321'::text, ARRAY[$1::int]),
                array_fill('1234'::text, ARRAY[$1::int]),
                (SELECT array_agg('message ' || g) FROM generate_series(1, $1::int) g),
                array_fill(NULL::text, ARRAY[$1::int]))",
        &[&n],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits for the chain of message `id` to end; (trigger_status, last_error).
pub async fn outcome(c: &Client, id: i64, w: &Worker) -> (String, Option<String>) {
    let query = "SELECT trigger_status::text, last_error FROM smsbus.message WHERE id = $1";
    let done = eventually(Duration::from_secs(20), || async {
        let s: String = c.query_one(query, &[&id]).await.unwrap().get(0);
        s != "pending" && s != "processing"
    })
    .await;
    assert!(done, "message {id} never ran its triggers\n{}", w.log());
    let row = c.query_one(query, &[&id]).await.unwrap();
    (row.get(0), row.get(1))
}

/// What scripts wrote to `public.log` for message `id`, in order.
pub async fn log_of(c: &Client, id: i64) -> Vec<String> {
    strings(
        c,
        "SELECT trigger FROM public.log WHERE message_id = $1 ORDER BY n",
        &[&id],
    )
    .await
}
