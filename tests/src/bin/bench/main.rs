//! `smsbus-bench`: the throughput of the smsbus queue against the same row
//! operations on a bare table, measured in one run (README.md#benchmarks).
//!
//! Scenarios, each run on both sides in one database made for the run:
//!
//! - **lifecycle**: batched multi-row INSERTs, then per batch the worker's
//!   steps `_claim` -> `_mark_sent` -> `_apply_reports` (queued -> sending ->
//!   sent -> delivered). One statement, one round trip and one transaction
//!   per step and batch on both sides; the time is the sum of the statements'.
//! - **concurrent insert**: clients doing single-row autocommit INSERTs; on
//!   the smsbus side every commit also NOTIFYs the channel, which a listener
//!   connection consumes as the worker would.
//!
//! - **end to end** (`end_to_end.rs`): the worker and the SMPP channel
//!   against the SMSC simulator.
//! - **GSM** (`gsm.rs`): the modem channel against the modem simulator.
//! - **triggers** (`triggers.rs`): the worker's trigger runner.
//!
//! The bare side has the columns of `smsbus.message` and `smsbus.message_part`
//! (defaults standing in for what the triggers compute), only the indexes its
//! own statements need, and no triggers: the database's ceiling on this machine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use smsbus_tests::db::TEMPLATE;

/// The database the run creates and drops.
const DATABASE: &str = "smsbus_bench";
const CHANNEL: &str = "bench";
const WORKER: &str = "bench";
/// The notification channel the extension's insert trigger uses.
const QUEUE_NOTIFY: &str = "smsbus_queue";

/// Throughput targets of the issue.
const LIFECYCLE_MIN_RATE: f64 = 10_000.0;
const LIFECYCLE_MIN_RATIO: f64 = 0.5;
const INSERT_MIN_RATIO: f64 = 0.7;

#[derive(Parser, Debug)]
#[command(
    name = "smsbus-bench",
    about = "Throughput of smsbus against the same row operations on a bare table"
)]
struct Args {
    /// PostgreSQL connection settings without a database name (key=value or
    /// URL); the user must be allowed to create databases and CHECKPOINT.
    #[arg(long, env = "SMSBUS_BENCH_PG")]
    pg: String,
    /// Messages taken through the lifecycle, per side.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Rows per INSERT and per claim in the lifecycle.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent clients of the insert scenario.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds each side of the insert scenario runs.
    #[arg(long, default_value_t = 10.0)]
    insert_seconds: f64,
    /// Insert this many rows per client instead of running for a duration.
    #[arg(long)]
    inserts_per_client: Option<u64>,
    /// Where to write the figures as JSON [default: bench-results.json in the
    /// repository root].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Rounds of each scenario. The sides alternate which goes first and
    /// the median of each side is reported: on a shared machine the speed
    /// drifts between runs, and a single pair would measure the drift.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// Run only the end-to-end benchmark (worker + SMPP + simulator).
    #[arg(long)]
    only_end_to_end: bool,
    /// Messages of the end-to-end throughput run.
    #[arg(long, default_value_t = 100_000)]
    e2e_messages: usize,
    /// SMPP sessions and window of the end-to-end channel.
    #[arg(long, default_value_t = 2)]
    e2e_sessions: u32,
    #[arg(long, default_value_t = 200)]
    e2e_window: u32,
    /// Seconds of paced inserts for the latency figure.
    #[arg(long, default_value_t = 30.0)]
    e2e_latency_seconds: f64,
    /// Seconds the throttled channel is measured.
    #[arg(long, default_value_t = 10.0)]
    e2e_throttle_seconds: f64,
    /// Messages through the GSM modem channel.
    #[arg(long, default_value_t = 2_000)]
    gsm_messages: usize,
    /// Run only the GSM modem channel benchmark.
    #[arg(long)]
    only_gsm: bool,
    /// Inbound messages through each trigger scenario (trivial SQL,
    /// trivial Lua, Lua sending a reply).
    #[arg(long, default_value_t = 50_000)]
    trigger_messages: usize,
    /// Run only the scale benchmark: end-to-end throughput on empty tables
    /// and with --scale-finished / --scale-archived rows, then a long run
    /// and the queue table's bloat.
    #[arg(long)]
    only_scale: bool,
    #[arg(long, default_value_t = 1_000_000)]
    scale_finished: usize,
    #[arg(long, default_value_t = 10_000_000)]
    scale_archived: usize,
    #[arg(long, default_value_t = 1_000_000)]
    scale_long_run: usize,
    /// Run only the trigger runner benchmark.
    #[arg(long)]
    only_triggers: bool,
    /// Run only the queue's scenarios: lifecycle, concurrent insert and
    /// routing (no worker, no simulator).
    #[arg(long)]
    only_queue: bool,
}

impl Args {
    fn validate(&self) -> Result<()> {
        ensure!(self.messages >= 1, "--messages must be at least 1");
        // Three parameters per row, and a statement takes at most 65535.
        ensure!(
            (1..=20_000).contains(&self.batch),
            "--batch must be between 1 and 20000, not {}",
            self.batch
        );
        ensure!(self.clients >= 1, "--clients must be at least 1");
        ensure!(self.rounds >= 1, "--rounds must be at least 1");
        ensure!(
            self.insert_seconds > 0.0 && self.insert_seconds.is_finite(),
            "--insert-seconds must be a positive number of seconds"
        );
        if let Some(n) = self.inserts_per_client {
            ensure!(n >= 1, "--inserts-per-client must be at least 1");
        }
        Ok(())
    }

    fn output(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            // The binary is built from tests/; the repository root is its parent.
            let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(&tests).join("bench-results.json")
        })
    }
}

/// Which tables a run writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Smsbus,
    Bare,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Smsbus => "smsbus",
            Side::Bare => "bare",
        }
    }

    fn sql(self) -> &'static SideSql {
        match self {
            Side::Smsbus => &SMSBUS_SQL,
            Side::Bare => &BARE_SQL,
        }
    }
}

/// The statements of one side. Each is one round trip; the claim returns
/// whole rows and the other steps a count, on both sides.
struct SideSql {
    message: &'static str,
    claim: &'static str,
    mark_sent: &'static str,
    reports: &'static str,
}

const SMSBUS_SQL: SideSql = SideSql {
    message: "smsbus.message",
    claim: "SELECT * FROM smsbus._claim($1, $2, $3, interval '5 minutes')",
    mark_sent: "SELECT smsbus._mark_sent($1, $2, $3, $4)",
    reports: "SELECT smsbus._apply_reports($1, $2, $3, $4)",
};

const BARE_SQL: SideSql = SideSql {
    message: "bench_bare.message",
    claim: "
        WITH picked AS (
            SELECT id FROM bench_bare.message
            WHERE status = 'queued' AND channel = $1 AND scheduled_at <= now()
            ORDER BY priority DESC, id
            LIMIT $3::int
            FOR UPDATE SKIP LOCKED
        )
        UPDATE bench_bare.message m
        SET status = 'sending', claimed_by = $2::text, claimed_until = now() + interval '5 minutes',
            attempts = m.attempts + 1, updated_at = now()
        FROM picked WHERE m.id = picked.id
        RETURNING m.*",
    mark_sent: "
        WITH u AS (
            SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[]) AS u(id, part, reference)
        ), parts AS (
            INSERT INTO bench_bare.message_part (message_id, part, channel, reference)
            SELECT u.id, u.part, $1::text, u.reference FROM u
        ), sent AS (
            UPDATE bench_bare.message m
            SET status = 'sent', reference = u.reference, sent_at = now(), updated_at = now(),
                claimed_by = NULL, claimed_until = NULL, last_error = NULL
            FROM u WHERE m.id = u.id AND u.part = 1 AND m.status = 'sending'
            RETURNING 1
        )
        SELECT count(*)::int FROM sent",
    reports: "
        WITH r AS (
            SELECT * FROM unnest($2::text[], $3::text[], $4::text[]) AS r(reference, status, detail)
        ), applied AS (
            UPDATE bench_bare.message_part p
            SET status = r.status, detail = r.detail, reported_at = now()
            FROM r WHERE p.channel = $1::text AND p.reference = r.reference
            RETURNING p.message_id
        ), delivered AS (
            UPDATE bench_bare.message m
            SET status = 'delivered', delivered_at = now(), updated_at = now()
            FROM (SELECT DISTINCT message_id FROM applied) a
            WHERE m.id = a.message_id AND m.status = 'sent'
        )
        SELECT count(*)::int FROM applied",
};

/// The bare side's tables: smsbus's columns, defaults for what the triggers
/// would compute (every bench message is queued and one segment), and only
/// the indexes the bare statements need (the claim's pick, the report lookup).
const BARE_SCHEMA: &str = "
    CREATE SCHEMA bench_bare;
    CREATE TABLE bench_bare.message (LIKE smsbus.message INCLUDING DEFAULTS INCLUDING IDENTITY);
    ALTER TABLE bench_bare.message
        ADD PRIMARY KEY (id),
        ALTER COLUMN status SET DEFAULT 'queued',
        ALTER COLUMN segments SET DEFAULT 1;
    CREATE INDEX ON bench_bare.message (channel, priority DESC, id) WHERE status = 'queued';
    CREATE TABLE bench_bare.message_part (LIKE smsbus.message_part INCLUDING DEFAULTS);
    ALTER TABLE bench_bare.message_part ADD PRIMARY KEY (message_id, part);
    CREATE INDEX ON bench_bare.message_part (channel, reference);
";

const TRUNCATE_ALL: &str = "
    TRUNCATE smsbus.message, smsbus.message_event, smsbus.message_part, smsbus.pending_report,
             smsbus.channel_wakeup, bench_bare.message, bench_bare.message_part";

mod end_to_end;
mod gsm;
mod routing;
mod scale;
mod triggers;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.validate()?;
    let base: Config = args
        .pg
        .parse()
        .context("--pg / SMSBUS_BENCH_PG is not a PostgreSQL connection string")?;
    let mut admin_config = base.clone();
    admin_config.dbname("postgres");
    let admin = connect(&admin_config, "admin").await?;
    create_database(&admin).await?;

    let mut bench = base.clone();
    bench.dbname(DATABASE);
    let outcome = run(&args, &bench).await;

    // Dropped whatever happened; a run stopped by a signal leaves it for the
    // next run's DROP.
    let dropped = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping database {DATABASE}"));
    let all_pass = outcome?;
    dropped?;
    if args.check && !all_pass {
        bail!("a benchmark missed its target");
    }
    Ok(())
}

async fn create_database(admin: &Client) -> Result<()> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping the previous {DATABASE}"))?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE} TEMPLATE {TEMPLATE}"))
        .await
        .with_context(|| {
            format!(
                "creating {DATABASE} from {TEMPLATE} (does the template exist? \
                 `scripts/cluster.sh template` makes it)"
            )
        })?;
    Ok(())
}

/// Runs every scenario, prints the table and writes the JSON; returns
/// whether every target was met.
async fn run(args: &Args, bench: &Config) -> Result<bool> {
    let control = connect(bench, "control").await?;
    control
        .batch_execute(&format!(
            "INSERT INTO smsbus.channel (name, kind) VALUES ('{CHANNEL}', 'smpp'); {BARE_SCHEMA}"
        ))
        .await
        .context("creating the channel and the bare tables")?;
    let server = server_facts(&control).await?;
    let e2e_settings = end_to_end::Settings {
        messages: args.e2e_messages,
        latency_seconds: args.e2e_latency_seconds,
        throttle_seconds: args.e2e_throttle_seconds,
        sessions: args.e2e_sessions,
        window: args.e2e_window,
    };
    let conninfo = format!("{} dbname={DATABASE}", args.pg);
    if args.only_triggers {
        eprintln!("trigger runner ...");
        let t = triggers::run(&control, &conninfo, args.trigger_messages).await?;
        println!();
        print_table(&trigger_rows(&t));
        return Ok(true);
    }
    if args.only_gsm {
        eprintln!("GSM modem channel ...");
        settle(&control).await?;
        let gsm = gsm::run(&control, &conninfo, args.gsm_messages).await?;
        println!();
        print_table(&gsm_rows(&gsm));
        return Ok(true);
    }
    if args.only_scale {
        eprintln!("scale ...");
        settle(&control).await?;
        let s = scale::run(
            &control,
            &conninfo,
            &e2e_settings,
            args.rounds,
            args.scale_finished,
            args.scale_archived,
            args.scale_long_run,
        )
        .await?;
        println!();
        print_table(&[
            Row {
                scenario: format!(
                    "end to end, {} finished + {} archived",
                    s.finished, s.archived
                ),
                smsbus: s.filled_rate(),
                bare: s.empty_rate(),
                target: ">= 0.90 of empty tables".into(),
                pass: Some(s.pass()),
            },
            Row {
                scenario: format!("long run, {} messages", s.long_run),
                smsbus: s.long_rate,
                bare: f64::NAN,
                target: "- (reported)".into(),
                pass: None,
            },
        ]);
        println!(
            "queue table during the long run: at most {} dead tuples, {:.0} MiB; after it: {} live, {} dead, {:.0} MiB",
            s.peak.dead_tuples, s.peak.mib, s.last.live_tuples, s.last.dead_tuples, s.last.mib
        );
        let results =
            json!({ "server": server, "scenarios": { "scale": s.to_json() }, "pass": s.pass() });
        let output = args.output();
        std::fs::write(&output, serde_json::to_string_pretty(&results)? + "\n")
            .with_context(|| format!("writing {}", output.display()))?;
        println!("figures written to {}", output.display());
        return Ok(s.pass());
    }
    if args.only_end_to_end {
        eprintln!("end to end ...");
        settle(&control).await?;
        let e2e = end_to_end::run(&control, &conninfo, &e2e_settings).await?;
        let rows = end_to_end_rows(&e2e, None);
        println!();
        print_table(&rows);
        let pass = e2e.rate_pass() && e2e.latency_pass() && e2e.throttle_pass();
        let results = json!({
            "server": server,
            "scenarios": { "end_to_end": e2e.to_json(&e2e_settings) },
            "pass": pass,
        });
        let output = args.output();
        std::fs::write(&output, serde_json::to_string_pretty(&results)? + "\n")
            .with_context(|| format!("writing {}", output.display()))?;
        println!("figures written to {}", output.display());
        return Ok(pass);
    }

    print_method(args, &server);

    // Each round starts from empty tables; the side that goes first
    // alternates, so neither always runs on the warmer cluster.
    let (mut bare_lives, mut smsbus_lives) = (Vec::new(), Vec::new());
    let (mut bare_inserts, mut smsbus_inserts) = (Vec::new(), Vec::new());
    let (mut bare_consumed, mut smsbus_consumed) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for side in side_order(round) {
            eprintln!(
                "round {}/{}: lifecycle, {} ...",
                round + 1,
                args.rounds,
                side.name()
            );
            control
                .batch_execute(TRUNCATE_ALL)
                .await
                .context("emptying the tables")?;
            settle(&control).await?;
            let run = run_lifecycle(&control, bench, side, args).await?;
            match side {
                Side::Bare => bare_lives.push(run),
                Side::Smsbus => smsbus_lives.push(run),
            }
        }
        for consumer in [false, true] {
            for side in side_order(round) {
                eprintln!(
                    "round {}/{}: concurrent insert{}, {} ...",
                    round + 1,
                    args.rounds,
                    if consumer { " with a consumer" } else { "" },
                    side.name()
                );
                control
                    .batch_execute(TRUNCATE_ALL)
                    .await
                    .context("emptying the tables")?;
                settle(&control).await?;
                let run = run_inserts(bench, side, args, consumer).await?;
                match (side, consumer) {
                    (Side::Bare, false) => bare_inserts.push(run),
                    (Side::Smsbus, false) => smsbus_inserts.push(run),
                    (Side::Bare, true) => bare_consumed.push(run),
                    (Side::Smsbus, true) => smsbus_consumed.push(run),
                }
            }
        }
    }
    let mut routings = Vec::new();
    for round in 0..args.rounds {
        eprintln!(
            "round {}/{}: inserts with {} routes and {} blocking rules, and with none ...",
            round + 1,
            args.rounds,
            routing::ROUTES,
            routing::BLOCKS
        );
        routings.push(routing::run_round(&control, round, TRUNCATE_ALL).await?);
    }
    let routing_run = median_by(&mut routings, routing::RoutingRun::ratio);
    let routing_ratio = routing_run.ratio();
    let routing_pass = routing_ratio >= routing::MIN_RATIO;

    let mut workers = None;
    if !args.only_queue {
        eprintln!("end to end ...");
        control
            .batch_execute(TRUNCATE_ALL)
            .await
            .context("emptying the tables")?;
        settle(&control).await?;
        let e2e = end_to_end::run(&control, &conninfo, &e2e_settings).await?;
        eprintln!("GSM modem channel ...");
        control
            .batch_execute(TRUNCATE_ALL)
            .await
            .context("emptying the tables")?;
        let gsm = gsm::run(&control, &conninfo, args.gsm_messages).await?;
        eprintln!("trigger runner ...");
        let trigger_run = triggers::run(&control, &conninfo, args.trigger_messages).await?;
        workers = Some((e2e, gsm, trigger_run));
    }

    let bare_life = median_by(&mut bare_lives, LifecycleRun::rate);
    let smsbus_life = median_by(&mut smsbus_lives, LifecycleRun::rate);
    let bare_ins = median_by(&mut bare_inserts, InsertRun::rate);
    let smsbus_ins = median_by(&mut smsbus_inserts, InsertRun::rate);
    let bare_con = median_by(&mut bare_consumed, InsertRun::rate);
    let smsbus_con = median_by(&mut smsbus_consumed, InsertRun::rate);

    let life_ratio = smsbus_life.rate() / bare_life.rate();
    let life_pass = smsbus_life.rate() >= LIFECYCLE_MIN_RATE && life_ratio >= LIFECYCLE_MIN_RATIO;
    let ins_ratio = smsbus_ins.rate() / bare_ins.rate();
    let ins_pass = ins_ratio >= INSERT_MIN_RATIO;

    let mut rows = vec![Row {
        scenario: "lifecycle insert->delivered".into(),
        smsbus: smsbus_life.rate(),
        bare: bare_life.rate(),
        target: format!(">= {LIFECYCLE_MIN_RATE:.0}/s and >= {LIFECYCLE_MIN_RATIO:.2}"),
        pass: Some(life_pass),
    }];
    for (i, (_, name, _)) in smsbus_life.phases().iter().enumerate() {
        rows.push(Row {
            scenario: format!("  {name}"),
            smsbus: smsbus_life.phase_rate(i),
            bare: bare_life.phase_rate(i),
            target: "-".into(),
            pass: None,
        });
    }
    rows.push(Row {
        scenario: format!("concurrent insert, {} clients", args.clients),
        smsbus: smsbus_ins.rate(),
        bare: bare_ins.rate(),
        target: format!(">= {INSERT_MIN_RATIO:.2}"),
        pass: Some(ins_pass),
    });
    rows.push(Row {
        scenario: "  with a consumer claiming".into(),
        smsbus: smsbus_con.rate(),
        bare: bare_con.rate(),
        target: "-".into(),
        pass: None,
    });
    rows.push(Row {
        scenario: format!(
            "insert, {} routes + {} blocks",
            routing::ROUTES,
            routing::BLOCKS
        ),
        smsbus: routing::RoutingRun::rate(routing_run.rules),
        bare: routing::RoutingRun::rate(routing_run.no_rules),
        target: format!(">= {:.2} of no rules", routing::MIN_RATIO),
        pass: Some(routing_pass),
    });
    if let Some((e2e, gsm, trigger_run)) = &workers {
        rows.extend(end_to_end_rows(e2e, Some(bare_life.rate())));
        rows.extend(gsm_rows(gsm));
        rows.extend(trigger_rows(trigger_run));
    }
    println!();
    print_table(&rows);
    println!();
    println!(
        "notifications received on {QUEUE_NOTIFY}: lifecycle {} (statements: {}), concurrent insert {} (commits: {}), with a consumer {} (commits: {})",
        smsbus_life.notifications,
        smsbus_life.insert_statements,
        smsbus_ins.notifications,
        smsbus_ins.inserts,
        smsbus_con.notifications,
        smsbus_con.inserts
    );

    let mut all_pass = life_pass && ins_pass && routing_pass;
    let (mut e2e_json, mut gsm_json, mut triggers_json) = (Value::Null, Value::Null, Value::Null);
    if let Some((e2e, gsm, trigger_run)) = &workers {
        let e2e_pass = e2e.rate_pass() && e2e.latency_pass() && e2e.throttle_pass();
        all_pass &= e2e_pass;
        e2e_json = e2e.to_json(&e2e_settings);
        e2e_json["lifecycle_ceiling_msg_per_s"] = json!(bare_life.rate());
        e2e_json["ratio_to_ceiling"] = json!(e2e.rate / bare_life.rate());
        e2e_json["pass"] = json!(e2e_pass);
        gsm_json = gsm.to_json();
        triggers_json = trigger_run.to_json();
    }
    let results = json!({
        "measured_at_unix": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "harness_build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "server": server,
        "settings": {
            "messages": args.messages,
            "batch": args.batch,
            "clients": args.clients,
            "insert_seconds": if args.inserts_per_client.is_some() { Value::Null } else { json!(args.insert_seconds) },
            "inserts_per_client": args.inserts_per_client,
        },
        "scenarios": {
            "lifecycle": {
                "smsbus": smsbus_life.to_json(),
                "bare": bare_life.to_json(),
                "ratio": life_ratio,
                "target": { "min_msg_per_s": LIFECYCLE_MIN_RATE, "min_ratio": LIFECYCLE_MIN_RATIO },
                "pass": life_pass,
            },
            "concurrent_insert": {
                "smsbus": smsbus_ins.to_json(),
                "bare": bare_ins.to_json(),
                "ratio": ins_ratio,
                "target": { "min_ratio": INSERT_MIN_RATIO },
                "pass": ins_pass,
            },
            "routing": {
                "routes": routing::ROUTES,
                "blocks": routing::BLOCKS,
                "with_rules_msg_per_s": routing::RoutingRun::rate(routing_run.rules),
                "no_rules_msg_per_s": routing::RoutingRun::rate(routing_run.no_rules),
                "ratio": routing_ratio,
                "target": { "min_ratio": routing::MIN_RATIO },
                "pass": routing_pass,
            },
            "end_to_end": e2e_json,
            "gsm": gsm_json,
            "triggers": triggers_json,
            "concurrent_insert_with_consumer": {
                "smsbus": smsbus_con.to_json(),
                "bare": bare_con.to_json(),
                "ratio": smsbus_con.rate() / bare_con.rate(),
            },
        },
        "pass": all_pass,
    });
    let output = args.output();
    let text = serde_json::to_string_pretty(&results).context("serialising the results")?;
    std::fs::write(&output, text + "\n")
        .with_context(|| format!("writing {}", output.display()))?;
    println!("figures written to {}", output.display());
    Ok(all_pass)
}

/// The trigger runner's figures as table rows (no target: reported).
fn trigger_rows(t: &triggers::Figures) -> Vec<Row> {
    let names = [
        "trigger runs/s, trivial SQL",
        "trigger runs/s, trivial Lua",
        "trigger runs/s, Lua smsbus.send",
    ];
    names
        .iter()
        .zip(&t.rates)
        .map(|(name, rate)| Row {
            scenario: (*name).into(),
            smsbus: *rate,
            bare: f64::NAN,
            target: "- (reported)".into(),
            pass: None,
        })
        .collect()
}

/// The GSM channel's figures as table rows (no target: reported).
fn gsm_rows(gsm: &gsm::Figures) -> Vec<Row> {
    vec![
        Row {
            scenario: "GSM modem, instant simulator".into(),
            smsbus: gsm.rate,
            bare: f64::NAN,
            target: "- (reported)".into(),
            pass: None,
        },
        Row {
            scenario: "  AT round trips per message".into(),
            smsbus: gsm.round_trips_per_message,
            bare: f64::NAN,
            target: "-".into(),
            pass: None,
        },
    ]
}

/// The end-to-end figures as table rows; the throughput beside the bare
/// SQL lifecycle (the ceiling) when it was measured in the same run.
fn end_to_end_rows(e2e: &end_to_end::Figures, ceiling: Option<f64>) -> Vec<Row> {
    vec![
        Row {
            scenario: "end to end insert->delivered (SMPP)".into(),
            smsbus: e2e.rate,
            bare: ceiling.unwrap_or(f64::NAN),
            target: format!(">= {:.0}/s", end_to_end::MIN_RATE),
            pass: Some(e2e.rate_pass()),
        },
        Row {
            scenario: "  latency p99 ms (p50, p95 in JSON)".into(),
            smsbus: e2e.p99_ms,
            bare: f64::NAN,
            target: format!("<= {:.0} ms", end_to_end::MAX_P99_MS),
            pass: Some(e2e.latency_pass()),
        },
        Row {
            scenario: format!("  throttle at {}/s", end_to_end::THROTTLE_RATE),
            smsbus: e2e.throttle_rate,
            bare: f64::NAN,
            target: format!("+-{:.0} %", end_to_end::THROTTLE_TOLERANCE * 100.0),
            pass: Some(e2e.throttle_pass()),
        },
        Row {
            scenario: "  worker peak RSS MiB".into(),
            smsbus: e2e.peak_rss_kib as f64 / 1024.0,
            bare: f64::NAN,
            target: "-".into(),
            pass: None,
        },
        Row {
            scenario: "  simulator submit_sm/s".into(),
            smsbus: e2e.simulator_rate,
            bare: f64::NAN,
            target: format!(">= {:.0}", end_to_end::MIN_SIMULATOR_RATE),
            pass: Some(e2e.simulator_pass()),
        },
    ]
}

/// Which side goes first in a round.
fn side_order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Bare, Side::Smsbus]
    } else {
        [Side::Smsbus, Side::Bare]
    }
}

/// The run with the median `rate` (the upper one of an even count).
fn median_by<T>(runs: &mut [T], rate: impl Fn(&T) -> f64) -> &T {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    &runs[runs.len() / 2]
}

/// What the figures depend on besides the code.
async fn server_facts(client: &Client) -> Result<Value> {
    let mut facts = serde_json::Map::new();
    for setting in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "shared_buffers",
        "max_wal_size",
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .with_context(|| format!("SHOW {setting}"))?;
        facts.insert(setting.into(), Value::String(row.try_get(0)?));
    }
    Ok(Value::Object(facts))
}

fn print_method(args: &Args, server: &Value) {
    let duration = match args.inserts_per_client {
        Some(n) => format!("{n} inserts per client"),
        None => format!("{} s per side", args.insert_seconds),
    };
    println!("smsbus-bench: smsbus against the same row operations on bare tables (no triggers,");
    println!("only the indexes their statements need), both sides in one database and one run.");
    println!(
        "PostgreSQL {} (synchronous_commit={}, fsync={}), {} CPUs, harness {} build.",
        server["server_version"].as_str().unwrap_or("?"),
        server["synchronous_commit"].as_str().unwrap_or("?"),
        server["fsync"].as_str().unwrap_or("?"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    println!(
        "- lifecycle: {} messages, batches of {}: multi-row INSERTs, then per batch claim,",
        args.messages, args.batch
    );
    println!("  mark sent (one part each) and delivery reports, each one statement and one");
    println!("  transaction (inserts on one connection, worker steps on another).");
    println!("  msg/s = messages / summed statement time.");
    println!("  VACUUM ANALYZE and CHECKPOINT (untimed) before each side and after its inserts.");
    println!(
        "- concurrent insert: {} clients, single-row autocommit INSERTs, {duration};",
        args.clients
    );
    println!("  msg/s = committed rows / wall time. smsbus side: a LISTEN connection is open.");
    println!(
        "  Then again with a consumer claiming {CONSUMER_BATCH} at a time, pausing 5 ms when it gets fewer."
    );
    println!(
        "{} rounds from empty tables, the first side alternating; each side's median run is shown.",
        args.rounds
    );
}

/// VACUUM ANALYZE and a CHECKPOINT, so that neither side pays for the
/// other's dead rows or dirty pages.
async fn settle(control: &Client) -> Result<()> {
    control
        .batch_execute("VACUUM ANALYZE")
        .await
        .context("VACUUM ANALYZE")?;
    control
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT")?;
    Ok(())
}

/// One side of the lifecycle scenario.
struct LifecycleRun {
    side: Side,
    messages: usize,
    insert_statements: u64,
    /// insert, claim, mark sent, reports.
    phase_times: [Duration; 4],
    notifications: u64,
}

impl LifecycleRun {
    fn total(&self) -> Duration {
        self.phase_times.iter().sum()
    }

    fn rate(&self) -> f64 {
        self.messages as f64 / self.total().as_secs_f64()
    }

    /// (JSON key, table label, time) of each step.
    fn phases(&self) -> [(&'static str, &'static str, Duration); 4] {
        let [insert, claim, sent, reports] = self.phase_times;
        [
            ("insert", "insert (batch)", insert),
            ("claim", "claim", claim),
            ("mark_sent", "mark sent", sent),
            ("reports", "delivery reports", reports),
        ]
    }

    fn phase_rate(&self, i: usize) -> f64 {
        self.messages as f64 / self.phase_times[i].as_secs_f64()
    }

    fn to_json(&self) -> Value {
        let phases: serde_json::Map<String, Value> = self
            .phases()
            .iter()
            .enumerate()
            .map(|(i, (key, _, t))| {
                (
                    key.to_string(),
                    json!({ "seconds": t.as_secs_f64(), "msg_per_s": self.phase_rate(i) }),
                )
            })
            .collect();
        let mut value = json!({
            "messages": self.messages,
            "seconds": self.total().as_secs_f64(),
            "msg_per_s": self.rate(),
            "phases": phases,
        });
        if self.side == Side::Smsbus {
            value["notifications"] = json!(self.notifications);
        }
        value
    }
}

async fn run_lifecycle(
    control: &Client,
    config: &Config,
    side: Side,
    args: &Args,
) -> Result<LifecycleRun> {
    let sql = side.sql();
    // The application and the worker are different sessions, as in production.
    let app = connect(config, "app").await?;
    let worker = connect(config, "worker").await?;
    worker
        .batch_execute(&format!("SET smsbus.actor = 'worker:{WORKER}'"))
        .await
        .context("setting smsbus.actor")?;
    if side == Side::Bare {
        // Every bare step is a key lookup; without this the planner, misled
        // by statistics taken on empty tables, hash-joins the claim against
        // a scan of the whole table and the ceiling would be set too low.
        worker
            .batch_execute("SET enable_seqscan = off")
            .await
            .context("setting enable_seqscan")?;
    }
    let listener = match side {
        Side::Smsbus => Some(Listener::start(config).await?),
        Side::Bare => None,
    };

    let mut times = [Duration::ZERO; 4];
    let full_insert = app
        .prepare(&insert_sql(sql.message, args.batch))
        .await
        .context("preparing the batch INSERT")?;
    let mut statements = 0u64;
    let mut next = 0usize;
    while next < args.messages {
        let n = args.batch.min(args.messages - next);
        let rows: Vec<(String, String)> = (next..next + n).map(message_values).collect();
        let params: Vec<&(dyn ToSql + Sync)> = rows
            .iter()
            .flat_map(|(to, body)| [to as &(dyn ToSql + Sync), body, &CHANNEL])
            .collect();
        let started = Instant::now();
        let inserted = if n == args.batch {
            app.execute(&full_insert, &params).await
        } else {
            // The last, shorter batch: an unprepared statement, once.
            app.execute(insert_sql(sql.message, n).as_str(), &params)
                .await
        }
        .with_context(|| format!("inserting messages {next}.. into {}", sql.message))?;
        times[0] += started.elapsed();
        ensure!(
            inserted == n as u64,
            "inserted {inserted} rows, expected {n}"
        );
        statements += 1;
        next += n;
    }
    // Fresh statistics for the worker's statements on both sides. They
    // describe an all-queued table, as statistics of a busy queue are always
    // somewhat behind it.
    settle(control).await?;

    let claim = worker
        .prepare(sql.claim)
        .await
        .context("preparing the claim")?;
    let mark_sent = worker
        .prepare(sql.mark_sent)
        .await
        .context("preparing mark sent")?;
    let reports = worker
        .prepare(sql.reports)
        .await
        .context("preparing the reports")?;
    let limit = i32::try_from(args.batch).context("--batch is too large")?;
    let mut done = 0usize;
    loop {
        let started = Instant::now();
        let claimed = worker
            .query(&claim, &[&CHANNEL, &WORKER, &limit])
            .await
            .with_context(|| format!("claiming on the {} side", side.name()))?;
        times[1] += started.elapsed();
        if claimed.is_empty() {
            break;
        }
        let (mut ids, mut parts, mut refs) = (Vec::new(), Vec::new(), Vec::new());
        for row in &claimed {
            let id: i64 = row.try_get("id").context("claimed row without id")?;
            let segments: i32 = row
                .try_get("segments")
                .context("claimed row without segments")?;
            for part in 1..=segments {
                ids.push(id);
                parts.push(part);
                // Provider references look like this: opaque, unique per part.
                refs.push(format!("{id:x}.{part}"));
            }
        }

        let started = Instant::now();
        let sent: i32 = worker
            .query_one(&mark_sent, &[&CHANNEL, &ids, &parts, &refs])
            .await
            .with_context(|| format!("marking sent on the {} side", side.name()))?
            .try_get(0)?;
        times[2] += started.elapsed();
        ensure!(
            sent as usize == claimed.len(),
            "{sent} marked sent of {} claimed",
            claimed.len()
        );

        let statuses = vec!["delivered"; refs.len()];
        let details: Vec<Option<&str>> = vec![None; refs.len()];
        let started = Instant::now();
        let matched: i32 = worker
            .query_one(&reports, &[&CHANNEL, &refs, &statuses, &details])
            .await
            .with_context(|| format!("applying reports on the {} side", side.name()))?
            .try_get(0)?;
        times[3] += started.elapsed();
        ensure!(
            matched as usize == refs.len(),
            "{matched} reports matched of {}",
            refs.len()
        );
        done += claimed.len();
    }

    // The figures count only if every message really made the whole trip.
    let delivered: i64 = control
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE status = 'delivered'",
                sql.message
            ),
            &[],
        )
        .await
        .context("counting delivered messages")?
        .try_get(0)?;
    ensure!(
        done == args.messages && delivered == args.messages as i64,
        "{} side: {done} messages went through, {delivered} delivered, of {}",
        side.name(),
        args.messages
    );
    let notifications = match listener {
        Some(l) => l.finish(statements).await,
        None => 0,
    };
    Ok(LifecycleRun {
        side,
        messages: args.messages,
        insert_statements: statements,
        phase_times: times,
        notifications,
    })
}

/// `INSERT INTO table (to_address, body, channel) VALUES ($1, $2, $3), ...`
fn insert_sql(table: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
        .collect();
    format!(
        "INSERT INTO {table} (to_address, body, channel) VALUES {}",
        values.join(", ")
    )
}

/// Recipient and body of the i-th message: an international mobile number
/// and a one-segment GSM 03.38 text, so both sides store the same row.
fn message_values(i: usize) -> (String, String) {
    (
        format!("+4670{:07}", i % 10_000_000),
        format!("smsbus bench message {i}"),
    )
}

/// One side of the concurrent insert scenario.
struct InsertRun {
    side: Side,
    clients: usize,
    inserts: u64,
    elapsed: Duration,
    notifications: u64,
}

impl InsertRun {
    fn rate(&self) -> f64 {
        self.inserts as f64 / self.elapsed.as_secs_f64()
    }

    fn to_json(&self) -> Value {
        let mut value = json!({
            "clients": self.clients,
            "inserts": self.inserts,
            "seconds": self.elapsed.as_secs_f64(),
            "msg_per_s": self.rate(),
        });
        if self.side == Side::Smsbus {
            value["notifications"] = json!(self.notifications);
        }
        value
    }
}

/// Rows a consumer claims at a time, like a channel with a window of 100.
const CONSUMER_BATCH: i32 = 100;

/// Claims the channel's queue in a loop, as a channel task would, until
/// `stop`; a short claim means the queue is drained, so it pauses 5 ms (on
/// the smsbus side that short claim also arms the channel's wake-up, which
/// is what makes the next INSERT notify).
async fn consume(config: Config, side: Side, stop: Arc<AtomicBool>) -> Result<u64> {
    let client = connect(&config, "consumer").await?;
    let claim = client
        .prepare(side.sql().claim)
        .await
        .context("preparing the claim")?;
    let mut claimed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let rows = client
            .query(&claim, &[&CHANNEL, &WORKER, &CONSUMER_BATCH])
            .await
            .context("consumer claim")?;
        claimed += rows.len() as u64;
        if rows.len() < CONSUMER_BATCH as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(claimed)
}

async fn run_inserts(
    config: &Config,
    side: Side,
    args: &Args,
    with_consumer: bool,
) -> Result<InsertRun> {
    let listener = match side {
        Side::Smsbus => Some(Listener::start(config).await?),
        Side::Bare => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = with_consumer.then(|| tokio::spawn(consume(config.clone(), side, stop.clone())));
    let sql = format!(
        "INSERT INTO {} (to_address, body, channel) VALUES ($1, $2, $3)",
        side.sql().message
    );
    // Connect and prepare before the clock starts; start together.
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let mut tasks: Vec<JoinHandle<Result<u64>>> = Vec::new();
    for c in 0..args.clients {
        let client = connect(config, &format!("insert {c}")).await?;
        let statement = client.prepare(&sql).await.context("preparing the INSERT")?;
        let barrier = barrier.clone();
        let fixed = args.inserts_per_client;
        let duration = Duration::from_secs_f64(args.insert_seconds);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut n = 0u64;
            loop {
                let done = match fixed {
                    Some(count) => n >= count,
                    None => Instant::now() >= deadline,
                };
                if done {
                    return Ok(n);
                }
                // Distinct numbers per client, like distinct senders.
                let (to, body) = message_values(c * 1_000_000 + n as usize);
                client
                    .execute(&statement, &[&to, &body, &CHANNEL])
                    .await
                    .with_context(|| format!("client {c}: insert {n}"))?;
                n += 1;
            }
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut inserts = 0;
    for task in tasks {
        inserts += task.await.context("an insert client panicked")??;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(consumer) = consumer {
        consumer.await.context("the consumer panicked")??;
    }
    let notifications = match listener {
        Some(l) => l.finish(inserts).await,
        None => 0,
    };
    Ok(InsertRun {
        side,
        clients: args.clients,
        inserts,
        elapsed,
        notifications,
    })
}

/// A LISTEN connection on the queue channel, as the worker keeps one: it
/// proves NOTIFY fires and makes the server deliver what it queues.
struct Listener {
    _client: Client,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Listener {
    async fn start(config: &Config) -> Result<Listener> {
        let mut config = config.clone();
        config.application_name("smsbus-bench listener");
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .context("connecting the listener")?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("listener connection ended: {e}");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {QUEUE_NOTIFY}"))
            .await
            .context("LISTEN")?;
        Ok(Listener {
            _client: client,
            received,
            task,
        })
    }

    /// How many notifications arrived, after waiting a little for the
    /// `expected` ones still in flight.
    async fn finish(self, expected: u64) -> u64 {
        let wait_until = Instant::now() + Duration::from_secs(5);
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        self.received.load(Ordering::Relaxed)
    }
}

/// Connects and drives the connection in the background.
async fn connect(config: &Config, role: &str) -> Result<Client> {
    let mut config = config.clone();
    config.application_name(format!("smsbus-bench {role}"));
    let (client, connection) = config.connect(NoTls).await.with_context(|| {
        format!(
            "cannot connect to {:?} (database {:?})",
            config.get_hosts(),
            config.get_dbname().unwrap_or("")
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench connection ended: {e}");
        }
    });
    Ok(client)
}

/// One line of the results table.
struct Row {
    scenario: String,
    smsbus: f64,
    bare: f64,
    target: String,
    /// None for lines that only explain another line.
    pass: Option<bool>,
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<36} {:>12} {:>12} {:>7}  {:<28} result",
        "scenario", "smsbus msg/s", "bare msg/s", "ratio", "target"
    );
    for row in rows {
        let result = match row.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "",
        };
        let (bare, ratio) = if row.bare.is_nan() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.0}", row.bare),
                format!("{:.2}", row.smsbus / row.bare),
            )
        };
        println!(
            "{:<36} {:>12.0} {:>12} {:>7}  {:<28} {result}",
            row.scenario, row.smsbus, bare, ratio, row.target
        );
    }
}
