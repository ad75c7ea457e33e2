//! What a run prints and writes: the method paragraph before the queue's
//! scenarios, the results table (one [`Row`] a line, with each scenario's
//! rows built here), and the JSON file of the figures.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::Args;
use crate::concurrent_insert::CONSUMER_BATCH;
use crate::{end_to_end, gsm, http_api, scale, smpp_server, triggers};

/// One line of the results table.
pub struct Row {
    pub scenario: String,
    pub smsbus: f64,
    /// NaN where there is no bare side: the table shows `-`.
    pub bare: f64,
    pub target: String,
    /// None for lines that only explain another line.
    pub pass: Option<bool>,
}

pub fn print_table(rows: &[Row]) {
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

/// Writes the figures to `output` as pretty JSON and says where.
pub fn write_results(output: &Path, results: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(results).context("serialising the results")?;
    std::fs::write(output, text + "\n").with_context(|| format!("writing {}", output.display()))?;
    println!("figures written to {}", output.display());
    Ok(())
}

/// The trigger runner's figures as table rows (no target: reported).
pub fn trigger_rows(t: &triggers::Figures) -> Vec<Row> {
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
pub fn gsm_rows(gsm: &gsm::Figures) -> Vec<Row> {
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
pub fn end_to_end_rows(e2e: &end_to_end::Figures, ceiling: Option<f64>) -> Vec<Row> {
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

/// The SMPP server's figures as table rows: accepted submissions beside
/// the simulator's (which commits nothing), the full loop, the latency.
pub fn http_api_rows(f: &http_api::Figures) -> Vec<Row> {
    vec![
        Row {
            scenario: "HTTP API POST /v1/messages".into(),
            smsbus: f.single_rate,
            bare: f.sql_rate,
            target: format!(">= {:.1} of SQL INSERTs", http_api::MIN_RATIO),
            pass: Some(f.single_pass()),
        },
        Row {
            scenario: "  POST /v1/messages/batch".into(),
            smsbus: f.batch_rate,
            bare: f64::NAN,
            target: format!(">= {:.0}/s", http_api::MIN_BATCH_RATE),
            pass: Some(f.batch_pass()),
        },
        Row {
            scenario: "  webhook events delivered".into(),
            smsbus: f.webhook_rate,
            bare: f64::NAN,
            target: format!(">= {:.0}/s", http_api::MIN_WEBHOOK_RATE),
            pass: Some(f.webhook_pass()),
        },
        Row {
            scenario: "  webhook p99 ms at 500/s (p50 in bare)".into(),
            smsbus: f.webhook_p99_ms,
            bare: f.webhook_p50_ms,
            target: format!("<= {:.0} ms", http_api::MAX_WEBHOOK_P99_MS),
            pass: Some(f.latency_pass()),
        },
    ]
}

pub fn smpp_server_rows(f: &smpp_server::Figures) -> Vec<Row> {
    vec![
        Row {
            scenario: "SMPP server submit_sm accepted".into(),
            smsbus: f.accept_rate,
            bare: f.simulator_rate,
            target: format!(
                ">= {:.0}/s, >= {:.1} of simulator",
                smpp_server::MIN_ACCEPT_RATE,
                smpp_server::MIN_ACCEPT_RATIO
            ),
            pass: Some(f.accept_pass()),
        },
        Row {
            scenario: "  full loop with receipts".into(),
            smsbus: f.loop_rate,
            bare: f64::NAN,
            target: format!(">= {:.0}/s", smpp_server::MIN_LOOP_RATE),
            pass: Some(f.loop_pass()),
        },
        Row {
            scenario: "  submit_sm_resp p99 ms at 1,000/s".into(),
            smsbus: f.p99_ms,
            bare: f64::NAN,
            target: format!("<= {:.0} ms", smpp_server::MAX_P99_MS),
            pass: Some(f.latency_pass()),
        },
    ]
}

/// The scale figures as table rows: the filled tables' throughput beside
/// the empty tables', and the long run's.
pub fn scale_rows(s: &scale::Figures) -> Vec<Row> {
    vec![
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
    ]
}

/// How the queue's scenarios measure, printed before they run.
pub fn print_method(args: &Args, server: &Value) {
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
