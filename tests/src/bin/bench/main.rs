//! `smsbus-bench`: the throughput of the smsbus queue against the same row
//! operations on a bare table, measured in one run (README.md#benchmarks).
//!
//! Every run makes a database of its own from the test template, runs the
//! scenarios `--scenario` selects (or an `--only-*` flag: `--only-queue`,
//! `--only-end-to-end`, `--only-gsm`, `--only-triggers`, `--only-scale`),
//! prints a table, writes bench-results.json and drops the database.
//!
//! # Scenarios
//!
//! Run on both sides (smsbus and the bare tables) in alternating rounds:
//!
//! - **lifecycle** (`lifecycle.rs`): batched multi-row INSERTs, then per
//!   batch the worker's steps `_claim` -> `_mark_sent` -> `_apply_reports`.
//! - **concurrent insert** (`concurrent_insert.rs`): clients doing
//!   single-row autocommit INSERTs, without and with a consumer claiming.
//! - **routing** (`routing.rs`): inserts with 100 routes and 20 blocking
//!   rules against inserts with none.
//!
//! Run once, with the worker as a separate process:
//!
//! - **end to end** (`end_to_end.rs`): the SMPP channel against the SMSC
//!   simulator: throughput, latency, throttle, memory.
//! - **GSM** (`gsm.rs`): the modem channel against the modem simulator.
//! - **triggers** (`triggers.rs`): the worker's trigger runner.
//! - **HTTP API** (`http_api.rs`): single POSTs against the same SQL
//!   INSERTs, batches, and webhook events delivered.
//! - **HTTP channel** (`http_channel.rs`): the HTTP channel against the
//!   provider simulator, reports by webhook, as a ratio to SMPP.
//! - **SMPP server** (`smpp_server.rs`): submissions accepted (against the
//!   simulator, in alternating rounds), the full loop with receipts, and
//!   paced latency.
//! - **scale** (`scale.rs`, only with `--scenario scale`): end to end on
//!   empty tables against tables of millions, then a long run and the bloat.
//! - **poolers** (`poolers.rs`, only with `--scenario poolers`): end to end
//!   directly and through PgBouncer in session and transaction mode, as
//!   ratios to direct.
//! - **retention** (`retention.rs`, only with `--scenario retention`): a
//!   month of the archive dropped against as many rows deleted.
//!
//! # Layout
//!
//! - `main.rs`: makes and drops the database, dispatches on the scenario.
//! - `cli.rs`: the arguments, [`cli::Scenario`], validation.
//! - `queue.rs`: the default run: the queue's rounds, then the worker's
//!   scenarios unless `--scenario queue`; its table and JSON.
//! - `side.rs`: the two sides' statements and the bare schema.
//! - `common.rs`: names in the database, connecting, settling, the LISTEN
//!   connection, the median.
//! - `report.rs`: the results table, each scenario's rows, the JSON file.
//!
//! The bare side has the columns of `smsbus.message` and `smsbus.message_part`
//! (defaults standing in for what the triggers compute), only the indexes its
//! own statements need, and no triggers: the database's ceiling on this machine.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tokio_postgres::{Client, Config};

use cli::{Args, Scenario};
use common::{connect, create_database, settle, CHANNEL, DATABASE};
use report::print_table;

mod cli;
mod common;
mod concurrent_insert;
mod end_to_end;
mod gsm;
mod http_api;
mod http_channel;
mod lifecycle;
mod poolers;
mod queue;
mod report;
mod retention;
mod routing;
mod scale;
mod side;
mod smpp_server;
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

/// Runs the selected scenarios, prints the table and writes the JSON (the
/// GSM and trigger runs alone write none); returns whether every target was
/// met.
async fn run(args: &Args, bench: &Config) -> Result<bool> {
    let control = connect(bench, "control").await?;
    control
        .batch_execute(&format!(
            "INSERT INTO smsbus.channel (name, kind) VALUES ('{CHANNEL}', 'smpp'); {}",
            side::BARE_SCHEMA
        ))
        .await
        .context("creating the channel and the bare tables")?;
    let server = common::server_facts(&control).await?;
    let conninfo = format!("{} dbname={DATABASE}", args.pg);
    match args.scenario() {
        Scenario::All => queue::run(args, &control, bench, &conninfo, &server, true).await,
        Scenario::Queue => queue::run(args, &control, bench, &conninfo, &server, false).await,
        Scenario::EndToEnd => end_to_end_alone(args, &control, &conninfo, &server).await,
        Scenario::Gsm => {
            eprintln!("GSM modem channel ...");
            settle(&control).await?;
            let gsm = gsm::run(&control, &conninfo, args.gsm_messages).await?;
            println!();
            print_table(&report::gsm_rows(&gsm));
            Ok(true)
        }
        Scenario::Triggers => {
            eprintln!("trigger runner ...");
            let t = triggers::run(&control, &conninfo, args.trigger_messages).await?;
            println!();
            print_table(&report::trigger_rows(&t));
            Ok(true)
        }
        Scenario::Scale => scale_alone(args, &control, &conninfo, &server).await,
        Scenario::Poolers => {
            eprintln!("poolers ...");
            settle(&control).await?;
            let settings = end_to_end::Settings {
                messages: args.pooler_messages,
                ..args.e2e_settings()
            };
            let figures =
                poolers::run(&control, &args.pg, DATABASE, &settings, args.rounds).await?;
            println!();
            print_table(&figures.rows());
            let results = json!({
                "server": server,
                "scenarios": { "poolers": figures.to_json() },
            });
            report::write_results(&args.output(), &results)?;
            Ok(true)
        }
        Scenario::Retention => {
            eprintln!("retention ...");
            settle(&control).await?;
            let figures = retention::run(&control, args.retention_rows).await?;
            println!();
            print_table(&figures.rows());
            let results = json!({
                "server": server,
                "scenarios": { "retention": figures.to_json() },
            });
            report::write_results(&args.output(), &results)?;
            Ok(true)
        }
        Scenario::HttpApi => {
            eprintln!("HTTP API ...");
            settle(&control).await?;
            let settings = args.http_settings();
            let figures = http_api::run(&control, &conninfo, &settings).await?;
            println!();
            print_table(&report::http_api_rows(&figures));
            let results = json!({
                "server": server,
                "scenarios": { "http_api": figures.to_json(&settings) },
                "pass": figures.pass(),
            });
            report::write_results(&args.output(), &results)?;
            Ok(figures.pass())
        }
        Scenario::HttpChannel => {
            eprintln!("HTTP channel ...");
            settle(&control).await?;
            let settings = args.http_channel_settings();
            let figures = http_channel::run(&control, &conninfo, &settings).await?;
            println!();
            print_table(&figures.rows());
            let results = json!({
                "server": server,
                "scenarios": { "http_channel": figures.to_json(&settings) },
                "pass": figures.pass(),
            });
            report::write_results(&args.output(), &results)?;
            Ok(figures.pass())
        }
        Scenario::SmppServer => {
            eprintln!("SMPP server ...");
            settle(&control).await?;
            let settings = args.smpp_settings();
            let figures = smpp_server::run(&control, &conninfo, &settings).await?;
            println!();
            print_table(&report::smpp_server_rows(&figures));
            let results = json!({
                "server": server,
                "scenarios": { "smpp_server": figures.to_json(&settings) },
                "pass": figures.pass(),
            });
            report::write_results(&args.output(), &results)?;
            Ok(figures.pass())
        }
    }
}

/// `--scenario end-to-end`: the end-to-end figures without the bare
/// lifecycle beside them.
async fn end_to_end_alone(
    args: &Args,
    control: &Client,
    conninfo: &str,
    server: &Value,
) -> Result<bool> {
    eprintln!("end to end ...");
    settle(control).await?;
    let settings = args.e2e_settings();
    let e2e = end_to_end::run(control, conninfo, &settings).await?;
    println!();
    print_table(&report::end_to_end_rows(&e2e, None));
    let pass = e2e.rate_pass() && e2e.latency_pass() && e2e.throttle_pass();
    let results = json!({
        "server": server,
        "scenarios": { "end_to_end": e2e.to_json(&settings) },
        "pass": pass,
    });
    report::write_results(&args.output(), &results)?;
    Ok(pass)
}

/// `--scenario scale`: filled tables against empty ones, the long run and
/// the queue table's bloat.
async fn scale_alone(
    args: &Args,
    control: &Client,
    conninfo: &str,
    server: &Value,
) -> Result<bool> {
    eprintln!("scale ...");
    settle(control).await?;
    let s = scale::run(
        control,
        conninfo,
        &args.e2e_settings(),
        args.rounds,
        args.scale_finished,
        args.scale_archived,
        args.scale_long_run,
    )
    .await?;
    println!();
    print_table(&report::scale_rows(&s));
    println!(
        "queue table during the long run: at most {} dead tuples, {:.0} MiB; after it: {} live, {} dead, {:.0} MiB",
        s.peak.dead_tuples, s.peak.mib, s.last.live_tuples, s.last.dead_tuples, s.last.mib
    );
    let results =
        json!({ "server": server, "scenarios": { "scale": s.to_json() }, "pass": s.pass() });
    report::write_results(&args.output(), &results)?;
    Ok(s.pass())
}
