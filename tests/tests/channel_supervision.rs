//! Channels live and fail independently: rows inserted, changed, disabled
//! and deleted take effect without a restart; a broken channel does not
//! disturb a healthy one; garbage from the peer costs a reconnect, not the
//! worker; with two workers each channel has one owner, and a killed
//! owner's channels are taken over.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use smsbus_tests::db::{count, scalar, TestDb};
use smsbus_tests::scenario::{
    add_channel, link_state, one_channel, send, smpp_config, smsc, wait_for, wait_link, worker,
};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::eventually;

const FINAL: Duration = Duration::from_secs(20);

#[tokio::test]
async fn channel_rows_take_effect_live() {
    let first = smsc(Behaviour::default()).await;
    let second = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    let w = worker(&db, "w1");
    // Inserted while the worker runs.
    add_channel(&c, "live", &smpp_config(&first, json!({}))).await;
    wait_link(&c, "live", "connected", &w).await;
    let a = send(&c, "live", "+31612345678", "to the first").await;
    wait_for(&c, &[a], &["delivered"], FINAL, &w).await;

    // Pointed elsewhere: only this channel restarts, on the new address.
    let config = smpp_config(&second, json!({}));
    c.execute(
        "UPDATE smsbus.channel SET config = $1 WHERE name = 'live'",
        &[&config],
    )
    .await
    .unwrap();
    let moved = eventually(Duration::from_secs(10), || async {
        second.bound_sessions() == 1
    })
    .await;
    assert!(moved, "{}", w.log());
    let b = send(&c, "live", "+31612345678", "to the second").await;
    wait_for(&c, &[b], &["delivered"], FINAL, &w).await;
    assert_eq!(second.received()[0].text, "to the second");
    assert_eq!(first.bound_sessions(), 0);

    // Disabled: unbound; the router gives it nothing.
    c.execute(
        "UPDATE smsbus.channel SET enabled = false WHERE name = 'live'",
        &[],
    )
    .await
    .unwrap();
    wait_link(&c, "live", "disconnected", &w).await;
    assert_eq!(second.bound_sessions(), 0);
    let refused = send(&c, "live", "+31612345678", "refused").await;
    let status: String = scalar(
        &c,
        "SELECT status::text FROM smsbus.message WHERE id = $1",
        &[&refused],
    )
    .await;
    assert_eq!(status, "nochannel");

    // Enabled again: it sends again.
    c.execute(
        "UPDATE smsbus.channel SET enabled = true WHERE name = 'live'",
        &[],
    )
    .await
    .unwrap();
    let again = send(&c, "live", "+31612345678", "again").await;
    wait_for(&c, &[again], &["delivered"], FINAL, &w).await;

    // Deleted: its session ends and its state row goes with it.
    c.execute("DELETE FROM smsbus.message WHERE channel = 'live'", &[])
        .await
        .unwrap();
    c.execute("DELETE FROM smsbus.channel WHERE name = 'live'", &[])
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(10), || async {
        second.bound_sessions() == 0
    })
    .await;
    assert!(gone, "{}", w.log());
    assert!(link_state(&c, "live").await.is_none());
}

#[tokio::test]
async fn a_broken_channel_does_not_disturb_a_healthy_one() {
    let healthy = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "good", &smpp_config(&healthy, json!({}))).await;
    // Nothing listens on port 1; and a config with a typo.
    add_channel(
        &c,
        "unreachable",
        &json!({"host": "127.0.0.1", "port": 1, "system_id": "x"}),
    )
    .await;
    add_channel(
        &c,
        "typo",
        &json!({"host": "127.0.0.1", "system_id": "x", "windwo": 3}),
    )
    .await;
    let w = worker(&db, "w1");
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(send(&c, "good", "+31612345678", &format!("healthy {i}")).await);
        }
        ids
    };
    wait_for(&c, &ids, &["delivered"], FINAL, &w).await;
    let reported = eventually(Duration::from_secs(10), || async {
        let typo = link_state(&c, "typo").await;
        let unreachable = link_state(&c, "unreachable").await;
        typo.as_ref().is_some_and(|s| {
            s.0 == "error"
                && s.1
                    .as_deref()
                    .is_some_and(|e| e.contains("unknown key `windwo`"))
        }) && unreachable.as_ref().is_some_and(|s| {
            s.1.as_deref()
                .is_some_and(|e| e.contains("cannot connect to 127.0.0.1:1"))
        })
    })
    .await;
    assert!(
        reported,
        "typo: {:?}, unreachable: {:?}\n{}",
        link_state(&c, "typo").await,
        link_state(&c, "unreachable").await,
        w.log()
    );
    assert_eq!(link_state(&c, "good").await.unwrap().0, "connected");
}

#[tokio::test]
async fn garbage_from_the_peer_costs_a_reconnect_not_the_worker() {
    let t = one_channel(Behaviour::default(), json!({})).await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    wait_link(c, "kpn", "connected", w).await;

    // A deliver_sm whose body ends inside its first field: refused with a
    // generic_nack, the link stays up.
    let malformed = [
        0u8, 0, 0, 19, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, b'a', b'b', b'c',
    ];
    assert_eq!(sim.send_raw(&malformed), 1);
    let a = send(c, "kpn", "+31612345678", "after a bad PDU").await;
    wait_for(c, &[a], &["delivered"], FINAL, w).await;
    assert_eq!(sim.connection_count(), 1, "no reconnect for one bad PDU");

    // Bytes that cannot be framed at all: the link is dropped and rebuilt.
    sim.send_raw(&[0xFF; 32]);
    let rebound = eventually(Duration::from_secs(10), || async {
        sim.connection_count() >= 2 && sim.bound_sessions() == 1
    })
    .await;
    assert!(rebound, "{}", w.log());
    let b = send(c, "kpn", "+31612345678", "after garbage").await;
    wait_for(c, &[b], &["delivered"], FINAL, w).await;
}

#[tokio::test]
async fn dropped_connections_lose_nothing() {
    let t = one_channel(
        Behaviour {
            drop_connection_every: 15,
            ..Behaviour::default()
        },
        json!({}),
    )
    .await;
    let (sim, c, w) = (&t.sim, &t.client, &t.worker);
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(send(c, "kpn", "+31612345678", &format!("drop test {i}")).await);
    }
    wait_for(c, &ids, &["delivered"], Duration::from_secs(60), w).await;
    assert!(sim.connection_count() >= 3, "connections were dropped");
    // Every message reached the SMSC; none failed.
    let mut texts: Vec<String> = sim.received().into_iter().map(|r| r.text).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 60);
}

#[tokio::test]
async fn one_owner_per_channel_and_takeover_after_kill() {
    let sim = smsc(Behaviour::default()).await;
    let db = TestDb::new().await;
    let c = db.connect().await;
    add_channel(&c, "kpn", &smpp_config(&sim, json!({}))).await;
    let mut first = worker(&db, "first");
    wait_link(&c, "kpn", "connected", &first).await;
    let second = worker(&db, "second");
    // The second worker runs but does not bind: one owner.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.bound_sessions(), 1);
    let owner: String = scalar(
        &c,
        "SELECT owner FROM smsbus.channel_state WHERE channel = 'kpn'",
        &[],
    )
    .await;
    assert_eq!(owner, "first");

    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).expect("killed");
    let taken = eventually(Duration::from_secs(15), || async {
        count(&c, "SELECT count(*) FROM smsbus.channel_state WHERE channel = 'kpn' AND owner = 'second' AND status = 'connected'").await == 1
    })
    .await;
    assert!(taken, "{:?}\n{}", link_state(&c, "kpn").await, second.log());
    let id = send(&c, "kpn", "+31612345678", "after the takeover").await;
    wait_for(&c, &[id], &["delivered"], FINAL, &second).await;
}

/// The supervision of one channel with drivers that misbehave on purpose:
/// a panic and a hang each end in `error` with the reason, and the driver
/// is started again.
#[tokio::test]
async fn a_panicking_or_hanging_driver_is_restarted() {
    use clap::Parser;
    use smsbus_worker::channels::supervisor::supervise_driver;
    use smsbus_worker::channels::ChannelRow;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO smsbus.channel (name, kind) VALUES ('panicky', 'smpp'), ('stuck', 'smpp')",
    )
    .await
    .unwrap();
    let args = smsbus_worker::config::Args::try_parse_from([
        "smsbus-worker",
        "--database-url",
        &db.conninfo(),
        "--worker-id",
        "supervisor-test",
        "--channel-hang-timeout",
        "0.5",
    ])
    .unwrap();
    let config = smsbus_worker::Config::from_args(args).unwrap();
    let pool = smsbus_worker::db::pool(&config, std::sync::Arc::default()).unwrap();
    let row = |name: &str| ChannelRow {
        name: name.into(),
        kind: "smpp".into(),
        enabled: true,
        can_send: true,
        can_receive: true,
        config: json!({}),
        updated_at: std::time::SystemTime::now(),
    };
    let stop = CancellationToken::new();

    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let panicky = tokio::spawn(supervise_driver(
        config.clone(),
        pool.clone(),
        Default::default(),
        row("panicky"),
        stop.clone(),
        move |ctx| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("boom");
                }
                // A healthy run: alive until stopped.
                loop {
                    ctx.heartbeat.beat();
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        },
    ));
    let hangs = Arc::new(AtomicUsize::new(0));
    let counted = hangs.clone();
    let stuck = tokio::spawn(supervise_driver(
        config.clone(),
        pool.clone(),
        Default::default(),
        row("stuck"),
        stop.clone(),
        move |_ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            // Never beats, never returns.
            std::future::pending()
        },
    ));
    let restarted = eventually(Duration::from_secs(15), || async {
        panics.load(Ordering::SeqCst) >= 2 && hangs.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(restarted, "panics {panics:?}, hangs {hangs:?}");
    let panicky_error: String = scalar(
        &c,
        "SELECT last_error FROM smsbus.channel_state WHERE channel = 'panicky'",
        &[],
    )
    .await;
    assert_eq!(panicky_error, "driver panicked: boom");
    let stuck_error: String = scalar(
        &c,
        "SELECT last_error FROM smsbus.channel_state WHERE channel = 'stuck'",
        &[],
    )
    .await;
    assert_eq!(stuck_error, "driver hung: no progress for 0.5s");
    stop.cancel();
    panicky.await.unwrap();
    stuck.await.unwrap();
    let (state, _) = link_state(&c, "panicky").await.unwrap();
    assert_eq!(state, "disconnected");
}
