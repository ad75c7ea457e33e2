//! Poolers: the end-to-end throughput with the worker connected directly,
//! through PgBouncer in session mode, in transaction mode with a direct
//! --listen-url, and in transaction mode poll-only; each round runs all
//! four in turn, and each pooled figure is a ratio to the direct one of
//! the same run (medians of the rounds).

use anyhow::Result;
use serde_json::{json, Value};
use smsbus_tests::pgbouncer::{PgBouncer, PoolMode};
use tokio_postgres::Client;

use crate::end_to_end::{self, Settings};
use crate::report::Row;

/// PgBouncer's server connections in transaction mode: as many as the
/// worker's pool, so that the figure is the pooler's cost, not a
/// smaller pool's.
const TRANSACTION_POOL: u32 = 8;
/// In session mode every worker connection holds one.
const SESSION_POOL: u32 = 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Session,
    TransactionListening,
    TransactionPolling,
}

const PATHS: [Path; 4] = [
    Path::Direct,
    Path::Session,
    Path::TransactionListening,
    Path::TransactionPolling,
];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Session => "pgbouncer_session",
            Path::TransactionListening => "pgbouncer_transaction_listen_url",
            Path::TransactionPolling => "pgbouncer_transaction_poll_only",
        }
    }
}

pub struct Figures {
    messages: usize,
    /// Per path, each round's rate.
    rates: Vec<Vec<f64>>,
    /// Per path, each round's p50 and p99 latency (commit to submit_sm),
    /// which poll-only pays for in its tick.
    latencies_ms: Vec<Vec<(f64, f64)>>,
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

impl Figures {
    fn rate(&self, path: Path) -> f64 {
        median(&self.rates[path as usize])
    }

    pub fn rows(&self) -> Vec<Row> {
        PATHS
            .iter()
            .map(|&path| Row {
                scenario: format!("e2e {}", path.name().replace('_', " ")),
                smsbus: self.rate(path),
                bare: if path == Path::Direct {
                    f64::NAN
                } else {
                    self.rate(Path::Direct)
                },
                target: "ratio to direct, reported".into(),
                pass: None,
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let direct = self.rate(Path::Direct);
        let paths: serde_json::Map<String, Value> = PATHS
            .iter()
            .map(|&path| {
                (
                    path.name().to_owned(),
                    json!({
                        "delivered_msg_per_s": self.rate(path),
                        "rounds_msg_per_s": self.rates[path as usize],
                        "ratio_to_direct": self.rate(path) / direct,
                        "latency_p50_ms": median(&self.latencies_ms[path as usize].iter().map(|l| l.0).collect::<Vec<_>>()),
                        "latency_p99_ms": median(&self.latencies_ms[path as usize].iter().map(|l| l.1).collect::<Vec<_>>()),
                    }),
                )
            })
            .collect();
        json!({
            "messages": self.messages,
            "pgbouncer_pool_size": {"session": SESSION_POOL, "transaction": TRANSACTION_POOL},
            "paths": paths,
        })
    }
}

/// `server` is the bench cluster without a database name; `database`
/// the bench database.
pub async fn run(
    control: &Client,
    server: &str,
    database: &str,
    base: &Settings,
    rounds: usize,
) -> Result<Figures> {
    let settings = Settings {
        latency_seconds: 2.0,
        throttle_seconds: 0.5,
        ..base.clone()
    };
    let direct = format!("{server} dbname={database}");
    let session = PgBouncer::start_for(server, PoolMode::Session, SESSION_POOL).await;
    let transaction = PgBouncer::start_for(server, PoolMode::Transaction, TRANSACTION_POOL).await;
    let mut rates = vec![Vec::new(); PATHS.len()];
    let mut latencies_ms = vec![Vec::new(); PATHS.len()];
    for round in 1..=rounds {
        for path in PATHS {
            eprintln!("  {}, round {round} of {rounds} ...", path.name());
            // The worker's connection; the harness's own clients (the
            // paced inserts) connect directly, as applications would not
            // share the worker's pooler settings.
            let pooled = match path {
                Path::Direct => None,
                Path::Session => Some(session.conninfo(database)),
                Path::TransactionListening | Path::TransactionPolling => {
                    Some(transaction.conninfo(database))
                }
            };
            let mut args: Vec<&str> = Vec::new();
            if let Some(pooled) = &pooled {
                args.extend(["--database-url", pooled]);
            }
            if path == Path::TransactionListening {
                args.extend(["--listen-url", &direct]);
            }
            let figures = end_to_end::run_with(control, &direct, &args, &settings).await?;
            eprintln!("    {:.0} msg/s", figures.rate);
            rates[path as usize].push(figures.rate);
            latencies_ms[path as usize].push((figures.p50_ms, figures.p99_ms));
            control
                .batch_execute(
                    "DELETE FROM smsbus.channel_state;
                     DELETE FROM smsbus.channel WHERE name IN ('e2e', 'throttled')",
                )
                .await?;
            crate::common::empty(control).await?;
        }
    }
    Ok(Figures {
        messages: settings.messages,
        rates,
        latencies_ms,
    })
}
