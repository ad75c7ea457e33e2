//! Following the primary: a worker given both hosts of a primary and its
//! streaming standby (`target_session_attrs=read-write`) carries on by
//! itself when, mid-flood, the primary is stopped at once or left up
//! read-only, and the standby promoted. Every message ends sent or delivered on the new primary, none
//! lost; what the old primary had sent but not yet replicated is sent
//! again, and the test reports how many (asynchronous replication).
//! SMSBUS_FAILOVER_MESSAGES sets the flood (`make test-faults` runs it
//! larger).

use std::time::{Duration, Instant};

use serde_json::json;
use smsbus_tests::cluster::OwnCluster;
use smsbus_tests::db::{connect_to, count, scalar};
use smsbus_tests::scenario::{add_channel, smpp_config, smsc};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};

/// How the old primary goes away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Stopped at once, every connection cut.
    Stopped,
    /// Stopped at once, with a synchronous standby (`remote_apply`):
    /// every outcome the old primary committed is on the new one, so only
    /// what was in the SMSC window, unrecorded, can go twice.
    StoppedSynchronous,
    /// Left up but taking no writes, as a switchover that makes it a
    /// standby leaves it: its connections stay open and fail each write.
    ReadOnly,
}

#[tokio::test]
async fn the_worker_follows_the_primary_when_it_stops() {
    fail_over(Failure::Stopped).await;
}

#[tokio::test]
async fn with_a_synchronous_standby_at_most_the_window_goes_twice() {
    fail_over(Failure::StoppedSynchronous).await;
}

#[tokio::test]
async fn the_worker_follows_the_primary_when_it_turns_read_only() {
    fail_over(Failure::ReadOnly).await;
}

async fn fail_over(failure: Failure) {
    let messages: i64 = std::env::var("SMSBUS_FAILOVER_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let primary = OwnCluster::start().await;
    let standby = primary.standby();
    let c = connect_to(&primary.conninfo()).await;
    if failure == Failure::StoppedSynchronous {
        for sql in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
            "SELECT pg_reload_conf()",
        ] {
            c.batch_execute(sql).await.unwrap();
        }
        let s = connect_to(&standby.conninfo()).await;
        assert!(
            eventually(Duration::from_secs(20), || async {
                count(
                    &c,
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                )
                .await
                    == 1
            })
            .await,
            "the standby never became synchronous"
        );
        drop(s);
    }
    let sim = smsc(Behaviour {
        report_delay: Duration::from_millis(20),
        ..Behaviour::default()
    })
    .await;
    add_channel(&c, "provider", &smpp_config(&sim, json!({"window": 50}))).await;
    let ((h1, p1), (h2, p2)) = (primary.address(), standby.address());
    let both = format!(
        "host={h1},{h2} port={p1},{p2} user=postgres dbname=smsbus target_session_attrs=read-write \
         connect_timeout=2"
    );
    let worker = Worker::start(
        &both,
        &[
            "--worker-id",
            "w1",
            "--maintenance-interval",
            "0.2",
            "--min-lease",
            "2",
        ],
    );
    c.execute(
        "INSERT INTO smsbus.message (to_address, body, channel)
         SELECT '+3161' || lpad(n::text, 7, '0'), 'flood ' || n, 'provider' FROM generate_series(1, $1::bigint) n",
        &[&messages],
    )
    .await
    .unwrap();
    // The flood is on the standby before the primary goes, so what can
    // be lost is only the progress of its messages.
    let s = connect_to(&standby.conninfo()).await;
    let target: String = scalar(&c, "SELECT pg_current_wal_lsn()::text", &[]).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            scalar::<bool>(
                &s,
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&target],
            )
            .await
        })
        .await,
        "the standby never replayed the flood"
    );
    let quarter = messages / 4;
    let flood = Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || async {
            count(
                &c,
                "SELECT count(*) FROM smsbus.message WHERE status IN ('sent', 'delivered')",
            )
            .await
                >= quarter
        })
        .await,
        "the flood never got going:\n{}",
        worker.log()
    );
    let done_before = count(
        &c,
        "SELECT count(*) FROM smsbus.message WHERE status IN ('sent', 'delivered')",
    )
    .await;
    let rate_before = done_before as f64 / flood.elapsed().as_secs_f64();
    drop(c);
    let stopped_at: f64 = scalar(
        &s,
        "SELECT extract(epoch FROM clock_timestamp())::float8",
        &[],
    )
    .await;
    let stopped = Instant::now();
    match failure {
        Failure::Stopped | Failure::StoppedSynchronous => primary.stop_immediately(),
        Failure::ReadOnly => {
            let old = connect_to(&primary.conninfo()).await;
            for sql in [
                "ALTER SYSTEM SET default_transaction_read_only = on",
                "SELECT pg_reload_conf()",
            ] {
                old.batch_execute(sql).await.unwrap();
            }
        }
    }
    standby.promote();

    // The worker finds the new primary by itself: the first message it
    // records as sent there.
    let sent_there =
        format!("SELECT count(*) FROM smsbus.message WHERE sent_at > to_timestamp({stopped_at})");
    let first_sent = eventually(Duration::from_secs(60), || async {
        count(&s, &sent_there).await > 0
    })
    .await;
    let failover = stopped.elapsed();
    assert!(
        first_sent,
        "nothing was sent after the failover:\n{}",
        worker.log()
    );
    let finished = eventually(Duration::from_secs(120), || async {
        count(
            &s,
            "SELECT count(*) FROM smsbus.message WHERE status NOT IN ('sent', 'delivered')",
        )
        .await
            == 0
    })
    .await;
    let stragglers: Vec<String> = smsbus_tests::db::strings(
        &s,
        "SELECT status::text || ' ' || count(*) FROM smsbus.message GROUP BY status",
        &[],
    )
    .await;
    assert!(finished, "left over: {stragglers:?}\n{}", worker.log());
    assert_eq!(
        count(&s, "SELECT count(*) FROM smsbus.message").await,
        messages,
        "no message lost"
    );
    let all_done = stopped.elapsed();
    let again = sim.submit_count() as i64 - messages;
    // The rate on the new primary, apart from the messages that waited for
    // the old primary's leases: those claimed there once and never before.
    let rate_after: f64 = scalar(
        &s,
        &format!(
            "SELECT coalesce(count(*) / nullif(extract(epoch FROM max(sent_at) - min(sent_at)), 0), 0)::float8
             FROM smsbus.message WHERE sent_at > to_timestamp({stopped_at}) AND attempts = 1"
        ),
        &[],
    )
    .await;
    eprintln!(
        "failover ({}): {messages} messages; the first sent through the new primary {:.2} s after the old \
         one stopped, all done {:.1} s after (the old primary's leases ran out first); {rate_before:.0} \
         msg/s before, {rate_after:.0} msg/s after (those not waiting for a lease); {again} sent twice \
         (their progress was not replicated yet)",
        match failure {
            Failure::Stopped => "stopped",
            Failure::StoppedSynchronous => "stopped, synchronous standby",
            Failure::ReadOnly => "read-only",
        },
        failover.as_secs_f64(),
        all_done.as_secs_f64()
    );
    assert!(again >= 0, "fewer submissions than messages");
    assert!(
        again <= messages / 2,
        "{again} of {messages} sent twice: more than the replication lag explains"
    );
    if failure == Failure::StoppedSynchronous {
        // Every recorded outcome is on the new primary: what goes twice is
        // at most what was in the SMSC window, answered but not yet
        // recorded, when the primary went.
        assert!(again <= 50, "{again} sent twice with a synchronous standby");
    }
    if failure == Failure::ReadOnly {
        assert!(
            worker.log().contains("no longer takes writes"),
            "{}",
            worker.log()
        );
    }
    drop(worker);
    drop(sim);
}
