//! The worker and the SMPP channel end to end, against the SMSC simulator
//! (in this process) over loopback TCP, with the release worker as a
//! separate process:
//!
//! - **throughput**: N messages inserted in bulk, timed until every one is
//!   `delivered` (submit_sm, submit_sm_resp, receipt, all recorded);
//! - **latency**: single-row inserts paced at 1,000/s for a while; from the
//!   insert's commit to the submit_sm reaching the simulator;
//! - **throttle**: a channel set to 200 msg/s, its measured rate;
//! - **memory**: the worker's peak resident set (VmHWM) over the runs;
//! - **simulator**: submit_sm/s the simulator answers, so it is known not
//!   to be the bottleneck.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use smsbus_tests::smsc::{Behaviour, Smsc};
use tokio_postgres::Client;

pub const MIN_RATE: f64 = 5_000.0;
pub const MAX_P99_MS: f64 = 50.0;
pub const THROTTLE_RATE: f64 = 200.0;
pub const THROTTLE_TOLERANCE: f64 = 0.03;
pub const MIN_SIMULATOR_RATE: f64 = 50_000.0;
/// Connections sharing the paced inserts of the latency run.
const LATENCY_CLIENTS: usize = 4;

const SYSTEM_ID: &str = "bench";
const PASSWORD: &str = "bench";

#[derive(Clone)]
pub struct Settings {
    pub messages: usize,
    pub latency_seconds: f64,
    pub throttle_seconds: f64,
    pub sessions: u32,
    pub window: u32,
}

pub struct Figures {
    pub rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub paced_rate: f64,
    pub throttle_rate: f64,
    pub peak_rss_kib: u64,
    pub simulator_rate: f64,
}

impl Figures {
    pub fn rate_pass(&self) -> bool {
        self.rate >= MIN_RATE
    }
    pub fn latency_pass(&self) -> bool {
        self.p99_ms <= MAX_P99_MS
    }
    pub fn throttle_pass(&self) -> bool {
        (self.throttle_rate / THROTTLE_RATE - 1.0).abs() <= THROTTLE_TOLERANCE
    }
    pub fn simulator_pass(&self) -> bool {
        self.simulator_rate >= MIN_SIMULATOR_RATE
    }

    pub fn to_json(&self, settings: &Settings) -> Value {
        json!({
            "messages": settings.messages,
            "sessions": settings.sessions,
            "window": settings.window,
            "delivered_msg_per_s": self.rate,
            "latency_ms": { "p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms,
                            "paced_per_s": 1000, "achieved_per_s": self.paced_rate,
                            "seconds": settings.latency_seconds },
            "throttle": { "configured_per_s": THROTTLE_RATE, "measured_per_s": self.throttle_rate },
            "worker_peak_rss_kib": self.peak_rss_kib,
            "simulator_submit_sm_per_s": self.simulator_rate,
            "targets": { "min_msg_per_s": MIN_RATE, "max_p99_ms": MAX_P99_MS,
                         "throttle_tolerance": THROTTLE_TOLERANCE, "min_simulator_per_s": MIN_SIMULATOR_RATE },
        })
    }
}

/// The release worker sits next to this binary.
fn worker_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating smsbus-bench")?;
    let path = exe.with_file_name("smsbus-worker");
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p smsbus-worker`",
            path.display()
        );
    }
    Ok(path)
}

pub struct WorkerProcess(Child);

impl WorkerProcess {
    pub fn start(conninfo: &str) -> Result<WorkerProcess> {
        WorkerProcess::start_with(conninfo, &[])
    }

    /// With `extra` arguments (e.g. `--http-addr`).
    pub fn start_with(conninfo: &str, extra: &[&str]) -> Result<WorkerProcess> {
        let log = std::fs::File::create(std::env::temp_dir().join("smsbus-bench-worker.log"))?;
        let mut command = Command::new(worker_binary()?);
        smsbus_tests::worker::die_with_parent(&mut command);
        let child = command
            .env("DATABASE_URL", conninfo)
            .env("RUST_LOG", "warn")
            .args([
                "--worker-id",
                "bench-worker",
                "--maintenance-interval",
                "0.5",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting smsbus-worker")?;
        Ok(WorkerProcess(child))
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn add_channel(client: &Client, name: &str, smsc: &Smsc, extra: Value) -> Result<()> {
    let mut config = json!({
        "host": "127.0.0.1", "port": smsc.port(), "system_id": SYSTEM_ID, "password": PASSWORD,
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    client
        .execute(
            "INSERT INTO smsbus.channel (name, kind, config) VALUES ($1, 'smpp', $2)",
            &[&name, &config],
        )
        .await
        .with_context(|| format!("creating channel {name}"))?;
    Ok(())
}

pub async fn wait_connected(client: &Client, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connected: i64 = client
            .query_one(
                "SELECT count(*) FROM smsbus.channel_state WHERE channel = $1 AND status = 'connected'",
                &[&name],
            )
            .await?
            .get(0);
        if connected == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("channel {name} did not connect");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(control: &Client, conninfo: &str, settings: &Settings) -> Result<Figures> {
    run_with(control, conninfo, &[], settings).await
}

/// The same with the worker given `worker_args` too (e.g. `--listen-url`).
pub async fn run_with(
    control: &Client,
    conninfo: &str,
    worker_args: &[&str],
    settings: &Settings,
) -> Result<Figures> {
    let simulator_rate = simulator_rate().await?;
    eprintln!("  simulator: {simulator_rate:.0} submit_sm/s");

    let smsc = Smsc::start(
        SYSTEM_ID,
        PASSWORD,
        Behaviour {
            report_delay: Duration::from_millis(5),
            ..Behaviour::default()
        },
    )
    .await;
    let worker = WorkerProcess::start_with(conninfo, worker_args)?;
    let window = json!({"sessions": settings.sessions, "window": settings.window});
    add_channel(control, "e2e", &smsc, window.clone()).await?;
    wait_connected(control, "e2e").await?;

    // Throughput: bulk insert, then wait for every message to be delivered.
    eprintln!("  throughput: {} messages ...", settings.messages);
    let insert = control
        .prepare(
            "INSERT INTO smsbus.message (to_address, body, channel)
             SELECT '+3161' || lpad(((($1::int + g) % 10000000))::text, 7, '0'), 'end to end ' || ($1::int + g), 'e2e'
             FROM generate_series(1, $2::int) g",
        )
        .await?;
    // A run on a channel that earlier runs used counts only its own.
    let count_delivered = control
        .prepare(
            "SELECT count(*) FROM smsbus.message WHERE status = 'delivered' AND channel = 'e2e'",
        )
        .await?;
    let delivered_before: i64 = control.query_one(&count_delivered, &[]).await?.get(0);
    let started = Instant::now();
    for start in (0..settings.messages).step_by(1000) {
        let n = 1000.min(settings.messages - start) as i32;
        control.execute(&insert, &[&(start as i32), &n]).await?;
    }
    control
        .batch_execute("SET max_parallel_workers_per_gather = 0; SET enable_seqscan = off")
        .await?;
    let poll = control
        .prepare(
            "SELECT EXISTS (SELECT 1 FROM smsbus.message WHERE status = 'queued' AND channel = 'e2e')
                 OR EXISTS (SELECT 1 FROM smsbus.message WHERE status = 'sending' AND channel = 'e2e')
                 OR EXISTS (SELECT 1 FROM smsbus.message WHERE status = 'sent' AND channel = 'e2e')",
        )
        .await?;
    let deadline = started + Duration::from_secs(600);
    loop {
        // One row of each active status through its partial index, without
        // parallel workers, every 100 ms (0.5 % of the run): cheap, so the
        // polling does not compete with what it measures. Counting the
        // active rows every 50 ms took 40 ms a time, a sixth of the
        // database's work in the run.
        let active: bool = control.query_one(&poll, &[]).await?.get(0);
        if !active {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "messages of {} not delivered in 10 minutes",
                settings.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = settings.messages as f64 / started.elapsed().as_secs_f64();
    control
        .batch_execute("RESET max_parallel_workers_per_gather; RESET enable_seqscan")
        .await?;
    let delivered_now: i64 = control.query_one(&count_delivered, &[]).await?.get(0);
    let delivered = delivered_now - delivered_before;
    if delivered as usize != settings.messages {
        bail!(
            "{delivered} of {} messages delivered; the rest failed",
            settings.messages
        );
    }
    eprintln!("  throughput: {rate:.0} msg/s");

    // Latency: paced single-row inserts, commit -> submit_sm at the SMSC.
    // One connection cannot commit 1,000 times a second with fsync on, so
    // LATENCY_CLIENTS connections share the pace.
    eprintln!("  latency: 1000/s for {} s ...", settings.latency_seconds);
    let count = (settings.latency_seconds * 1000.0) as usize;
    let paced_started = Instant::now();
    let mut clients = Vec::new();
    for client_no in 0..LATENCY_CLIENTS {
        let config: tokio_postgres::Config = conninfo.parse()?;
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        clients.push(tokio::spawn(async move {
            let single = client
                .prepare("INSERT INTO smsbus.message (to_address, body, channel) VALUES ('+31612345678', $1, 'e2e')")
                .await?;
            let period = Duration::from_secs_f64(LATENCY_CLIENTS as f64 / 1000.0);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut committed = Vec::new();
            for i in (client_no..count).step_by(LATENCY_CLIENTS) {
                tick.tick().await;
                let body = format!("latency {i}");
                client.execute(&single, &[&body]).await?;
                committed.push((body, Instant::now()));
            }
            anyhow::Ok(committed)
        }));
    }
    let mut committed: HashMap<String, Instant> = HashMap::with_capacity(count);
    for c in clients {
        committed.extend(c.await??);
    }
    let paced_rate = count as f64 / paced_started.elapsed().as_secs_f64();
    let wait_until = Instant::now() + Duration::from_secs(30);
    let mut latencies = loop {
        let parts = smsc.parts();
        let seen: Vec<f64> = parts
            .iter()
            .filter_map(|p| {
                committed
                    .get(&p.text)
                    .map(|c| p.at.saturating_duration_since(*c).as_secs_f64() * 1000.0)
            })
            .collect();
        if seen.len() >= count || Instant::now() > wait_until {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if latencies.len() < count {
        bail!(
            "only {} of {count} paced messages reached the SMSC",
            latencies.len()
        );
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50_ms, p95_ms, p99_ms) = (pct(0.50), pct(0.95), pct(0.99));
    eprintln!("  latency: p50 {p50_ms:.1} ms, p95 {p95_ms:.1} ms, p99 {p99_ms:.1} ms (inserts paced at {paced_rate:.0}/s)");

    // Throttle: a channel limited to THROTTLE_RATE with a backlog.
    eprintln!(
        "  throttle: {THROTTLE_RATE}/s for {} s ...",
        settings.throttle_seconds
    );
    let throttled_smsc = Smsc::start(SYSTEM_ID, PASSWORD, Behaviour::default()).await;
    add_channel(
        control,
        "throttled",
        &throttled_smsc,
        json!({"throughput": THROTTLE_RATE, "window": 50}),
    )
    .await?;
    wait_connected(control, "throttled").await?;
    let backlog = (THROTTLE_RATE * (settings.throttle_seconds + 4.0)) as i32;
    control
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel)
             SELECT '+31612345678', 'throttle ' || g, 'throttled' FROM generate_series(1, $1::int) g",
            &[&backlog],
        )
        .await?;
    // Skip the first second (start-up and the burst allowance), then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n0, t0) = (throttled_smsc.submit_count(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(settings.throttle_seconds)).await;
    let throttle_rate = (throttled_smsc.submit_count() - n0) as f64 / t0.elapsed().as_secs_f64();
    eprintln!("  throttle: {throttle_rate:.1} msg/s");

    let peak_rss_kib = worker.peak_rss_kib();
    drop(worker);
    Ok(Figures {
        rate,
        p50_ms,
        p95_ms,
        p99_ms,
        paced_rate,
        throttle_rate,
        peak_rss_kib,
        simulator_rate,
    })
}

/// submit_sm/s the simulator answers: a client with a window of 1,000 on
/// one connection, for two seconds.
async fn simulator_rate() -> Result<f64> {
    use futures_util::{SinkExt, StreamExt};
    use rusmpp::pdus::{BindTransmitter, SubmitSm};
    use rusmpp::tokio_codec::CommandCodec;
    use rusmpp::types::{COctetString, OctetString};
    use rusmpp::{Command, CommandStatus};
    use std::str::FromStr;

    let smsc = Smsc::start(
        SYSTEM_ID,
        PASSWORD,
        Behaviour {
            // Receipts not asked for; only submissions are measured.
            ..Behaviour::default()
        },
    )
    .await;
    let stream = tokio::net::TcpStream::connect(smsc.addr()).await?;
    stream.set_nodelay(true)?;
    let framed = tokio_util::codec::Framed::new(stream, CommandCodec::new());
    let (mut sink, mut source) = framed.split();
    let bind = BindTransmitter::builder()
        .system_id(COctetString::from_str(SYSTEM_ID)?)
        .password(COctetString::from_str(PASSWORD)?)
        .build();
    sink.send(Command::new(CommandStatus::EsmeRok, 1, bind))
        .await?;
    source.next().await.context("bind answer")??;
    let submit = SubmitSm::builder()
        .source_addr(COctetString::from_str("bench")?)
        .destination_addr(COctetString::from_str("31612345678")?)
        .short_message(OctetString::from_str("simulator speed")?)
        .build();
    let duration = Duration::from_secs(2);
    let started = Instant::now();
    let (mut sent, mut answered) = (0u32, 0u64);
    while started.elapsed() < duration {
        while sent as u64 - answered < 1000 {
            sent += 1;
            sink.feed(Command::new(
                CommandStatus::EsmeRok,
                sent + 1,
                submit.clone(),
            ))
            .await?;
        }
        sink.flush().await?;
        while sent as u64 - answered >= 500 {
            source.next().await.context("submit_sm_resp")??;
            answered += 1;
        }
    }
    Ok(answered as f64 / started.elapsed().as_secs_f64())
}
