//! The default run (`--scenario all`) and `--scenario queue`: the queue's
//! scenarios, each against the bare tables in alternating rounds —
//! lifecycle (`lifecycle.rs`), concurrent insert without and with a
//! consumer (`concurrent_insert.rs`), routing (`routing.rs`) — then, in the
//! full run, end to end, GSM and the trigger runner once each. One table of
//! every figure, one JSON file, and whether every target was met.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio_postgres::{Client, Config};

use crate::cli::Args;
use crate::common::{empty, median_by, QUEUE_NOTIFY, TRUNCATE_ALL};
use crate::concurrent_insert::{self, InsertRun};
use crate::lifecycle::{self, LifecycleRun};
use crate::report::{self, Row};
use crate::side::{side_order, Side};
use crate::{end_to_end, gsm, http_api, http_channel, routing, smpp_server, triggers};

/// Every round's runs of the queue's scenarios, each side's apart.
#[derive(Default)]
struct Rounds {
    bare_lives: Vec<LifecycleRun>,
    smsbus_lives: Vec<LifecycleRun>,
    bare_inserts: Vec<InsertRun>,
    smsbus_inserts: Vec<InsertRun>,
    bare_consumed: Vec<InsertRun>,
    smsbus_consumed: Vec<InsertRun>,
    routings: Vec<routing::RoutingRun>,
}

/// The worker's scenarios, run once each after the queue's.
struct Workers {
    e2e: end_to_end::Figures,
    gsm: gsm::Figures,
    triggers: triggers::Figures,
    smpp_server: smpp_server::Figures,
    http_api: http_api::Figures,
    http_channel: http_channel::Figures,
}

/// Runs the queue's scenarios (and the worker's if `with_workers`), prints
/// the method and the table, writes the JSON; returns whether every target
/// was met.
pub async fn run(
    args: &Args,
    control: &Client,
    bench: &Config,
    conninfo: &str,
    server: &Value,
    with_workers: bool,
) -> Result<bool> {
    report::print_method(args, server);
    let mut rounds = measure_rounds(args, control, bench).await?;
    let workers = if with_workers {
        Some(measure_workers(args, control, conninfo).await?)
    } else {
        None
    };

    let routing_run = median_by(&mut rounds.routings, routing::RoutingRun::ratio);
    let routing_ratio = routing_run.ratio();
    let routing_pass = routing_ratio >= routing::MIN_RATIO;
    let bare_life = median_by(&mut rounds.bare_lives, LifecycleRun::rate);
    let smsbus_life = median_by(&mut rounds.smsbus_lives, LifecycleRun::rate);
    let bare_ins = median_by(&mut rounds.bare_inserts, InsertRun::rate);
    let smsbus_ins = median_by(&mut rounds.smsbus_inserts, InsertRun::rate);
    let bare_con = median_by(&mut rounds.bare_consumed, InsertRun::rate);
    let smsbus_con = median_by(&mut rounds.smsbus_consumed, InsertRun::rate);

    let life_ratio = smsbus_life.rate() / bare_life.rate();
    let life_pass = smsbus_life.rate() >= lifecycle::MIN_RATE && life_ratio >= lifecycle::MIN_RATIO;
    let ins_ratio = smsbus_ins.rate() / bare_ins.rate();
    let ins_pass = ins_ratio >= concurrent_insert::MIN_RATIO;

    let mut rows = vec![Row {
        scenario: "lifecycle insert->delivered".into(),
        smsbus: smsbus_life.rate(),
        bare: bare_life.rate(),
        target: format!(
            ">= {:.0}/s and >= {:.2}",
            lifecycle::MIN_RATE,
            lifecycle::MIN_RATIO
        ),
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
        target: format!(">= {:.2}", concurrent_insert::MIN_RATIO),
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
    if let Some(w) = &workers {
        rows.extend(report::end_to_end_rows(&w.e2e, Some(bare_life.rate())));
        rows.extend(report::gsm_rows(&w.gsm));
        rows.extend(report::trigger_rows(&w.triggers));
        rows.extend(report::smpp_server_rows(&w.smpp_server));
        rows.extend(report::http_api_rows(&w.http_api));
        rows.extend(w.http_channel.rows());
    }
    println!();
    report::print_table(&rows);
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
    let (mut e2e_json, mut gsm_json, mut triggers_json, mut smpp_server_json, mut http_api_json) = (
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    );
    let mut http_channel_json = Value::Null;
    if let Some(w) = &workers {
        let e2e_pass = w.e2e.rate_pass() && w.e2e.latency_pass() && w.e2e.throttle_pass();
        all_pass &= e2e_pass;
        e2e_json = w.e2e.to_json(&args.e2e_settings());
        e2e_json["lifecycle_ceiling_msg_per_s"] = json!(bare_life.rate());
        e2e_json["ratio_to_ceiling"] = json!(w.e2e.rate / bare_life.rate());
        e2e_json["pass"] = json!(e2e_pass);
        gsm_json = w.gsm.to_json();
        triggers_json = w.triggers.to_json();
        all_pass &= w.smpp_server.pass();
        smpp_server_json = w.smpp_server.to_json(&args.smpp_settings());
        smpp_server_json["pass"] = json!(w.smpp_server.pass());
        all_pass &= w.http_api.pass();
        http_api_json = w.http_api.to_json(&args.http_settings());
        http_api_json["pass"] = json!(w.http_api.pass());
        all_pass &= w.http_channel.pass();
        http_channel_json = w.http_channel.to_json(&args.http_channel_settings());
        http_channel_json["pass"] = json!(w.http_channel.pass());
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
                "target": { "min_msg_per_s": lifecycle::MIN_RATE, "min_ratio": lifecycle::MIN_RATIO },
                "pass": life_pass,
            },
            "concurrent_insert": {
                "smsbus": smsbus_ins.to_json(),
                "bare": bare_ins.to_json(),
                "ratio": ins_ratio,
                "target": { "min_ratio": concurrent_insert::MIN_RATIO },
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
            "smpp_server": smpp_server_json,
            "http_api": http_api_json,
            "http_channel": http_channel_json,
            "concurrent_insert_with_consumer": {
                "smsbus": smsbus_con.to_json(),
                "bare": bare_con.to_json(),
                "ratio": smsbus_con.rate() / bare_con.rate(),
            },
        },
        "pass": all_pass,
    });
    report::write_results(&args.output(), &results)?;
    Ok(all_pass)
}

/// `--rounds` rounds of lifecycle and concurrent insert (without, then with
/// a consumer), each side from empty tables and the first side alternating,
/// then `--rounds` rounds of routing.
async fn measure_rounds(args: &Args, control: &Client, bench: &Config) -> Result<Rounds> {
    let mut r = Rounds::default();
    let inserts = args.insert_settings();
    for round in 0..args.rounds {
        for side in side_order(round) {
            eprintln!(
                "round {}/{}: lifecycle, {} ...",
                round + 1,
                args.rounds,
                side.name()
            );
            empty(control).await?;
            let run = lifecycle::run(control, bench, side, args.messages, args.batch).await?;
            match side {
                Side::Bare => r.bare_lives.push(run),
                Side::Smsbus => r.smsbus_lives.push(run),
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
                empty(control).await?;
                let run = concurrent_insert::run(bench, side, &inserts, consumer).await?;
                match (side, consumer) {
                    (Side::Bare, false) => r.bare_inserts.push(run),
                    (Side::Smsbus, false) => r.smsbus_inserts.push(run),
                    (Side::Bare, true) => r.bare_consumed.push(run),
                    (Side::Smsbus, true) => r.smsbus_consumed.push(run),
                }
            }
        }
    }
    for round in 0..args.rounds {
        eprintln!(
            "round {}/{}: inserts with {} routes and {} blocking rules, and with none ...",
            round + 1,
            args.rounds,
            routing::ROUTES,
            routing::BLOCKS
        );
        r.routings
            .push(routing::run_round(control, round, TRUNCATE_ALL).await?);
    }
    Ok(r)
}

/// End to end, GSM and the trigger runner, once each.
async fn measure_workers(args: &Args, control: &Client, conninfo: &str) -> Result<Workers> {
    eprintln!("end to end ...");
    empty(control).await?;
    let e2e = end_to_end::run(control, conninfo, &args.e2e_settings()).await?;
    eprintln!("GSM modem channel ...");
    control
        .batch_execute(TRUNCATE_ALL)
        .await
        .context("emptying the tables")?;
    let gsm = gsm::run(control, conninfo, args.gsm_messages).await?;
    eprintln!("trigger runner ...");
    let triggers = triggers::run(control, conninfo, args.trigger_messages).await?;
    eprintln!("SMPP server ...");
    empty(control).await?;
    let smpp_server = smpp_server::run(control, conninfo, &args.smpp_settings()).await?;
    eprintln!("HTTP API ...");
    empty(control).await?;
    let http_api = http_api::run(control, conninfo, &args.http_settings()).await?;
    eprintln!("HTTP channel ...");
    empty(control).await?;
    let http_channel = http_channel::run(control, conninfo, &args.http_channel_settings()).await?;
    Ok(Workers {
        e2e,
        gsm,
        triggers,
        smpp_server,
        http_api,
        http_channel,
    })
}
