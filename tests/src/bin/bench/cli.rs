//! The command line: which scenarios run (`--scenario`, or the older
//! `--only-*` flags, which stay), and the settings of each, grouped in
//! `--help` under the scenario they shape.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::{Parser, ValueEnum};

use crate::{concurrent_insert, end_to_end, http_api, http_channel, smpp_server};

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Everything but scale: the queue's scenarios, then end to end, GSM and
    /// the trigger runner.
    All,
    /// The queue's scenarios only: lifecycle, concurrent insert and routing
    /// (no worker, no simulator). Same as --only-queue.
    Queue,
    /// The worker and the SMPP channel against the SMSC simulator:
    /// throughput, latency, throttle, memory. Same as --only-end-to-end.
    EndToEnd,
    /// The GSM modem channel against the modem simulator. Same as --only-gsm.
    Gsm,
    /// The trigger runner: trivial SQL, trivial Lua, Lua sending a reply.
    /// Same as --only-triggers.
    Triggers,
    /// smsbus's SMPP server: submissions accepted against the simulator,
    /// the full loop with receipts, and paced latency.
    SmppServer,
    /// smsbus's HTTP API: single POSTs against SQL INSERTs, batches, and
    /// webhook delivery.
    HttpApi,
    /// The HTTP channel end to end against the provider simulator, reports
    /// by webhook, as a ratio to the SMPP channel in the same rounds.
    HttpChannel,
    /// The end-to-end throughput directly and through PgBouncer (session
    /// mode; transaction mode with --listen-url, and poll-only).
    Poolers,
    /// Dropping a month of --retention-rows archived messages against
    /// deleting as many: time, WAL, size after.
    Retention,
    /// End-to-end throughput on empty tables and with --scale-finished /
    /// --scale-archived rows, then a long run and the queue table's bloat.
    /// Same as --only-scale.
    Scale,
}

#[derive(Parser, Debug)]
#[command(
    name = "smsbus-bench",
    about = "Throughput of smsbus against the same row operations on a bare table",
    after_help = "Without --scenario or an --only-* flag every scenario but scale runs \
                  (--scenario all). The figures go to bench-results.json; --check makes a \
                  missed target exit with status 1."
)]
pub struct Args {
    /// PostgreSQL connection settings without a database name (key=value or
    /// URL); the user must be allowed to create databases and CHECKPOINT.
    #[arg(long, env = "SMSBUS_BENCH_PG")]
    pub pg: String,
    /// Where to write the figures as JSON [default: bench-results.json in the
    /// repository root].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Rounds of each scenario. The sides alternate which goes first and
    /// the median of each side is reported: on a shared machine the speed
    /// drifts between runs, and a single pair would measure the drift.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub check: bool,

    /// The scenarios to run.
    #[arg(
        long,
        value_enum,
        default_value_t = Scenario::All,
        help_heading = "Scenarios",
        conflicts_with_all = ["only_queue", "only_end_to_end", "only_gsm", "only_triggers", "only_scale"]
    )]
    pub scenario: Scenario,
    /// Run only the queue's scenarios: lifecycle, concurrent insert and
    /// routing (no worker, no simulator). Same as --scenario queue.
    #[arg(long, help_heading = "Scenarios")]
    pub only_queue: bool,
    /// Run only the end-to-end benchmark (worker + SMPP + simulator). Same
    /// as --scenario end-to-end.
    #[arg(long, help_heading = "Scenarios")]
    pub only_end_to_end: bool,
    /// Run only the GSM modem channel benchmark. Same as --scenario gsm.
    #[arg(long, help_heading = "Scenarios")]
    pub only_gsm: bool,
    /// Run only the trigger runner benchmark. Same as --scenario triggers.
    #[arg(long, help_heading = "Scenarios")]
    pub only_triggers: bool,
    /// Run only the scale benchmark: end-to-end throughput on empty tables
    /// and with --scale-finished / --scale-archived rows, then a long run
    /// and the queue table's bloat. Same as --scenario scale.
    #[arg(long, help_heading = "Scenarios")]
    pub only_scale: bool,

    /// Messages taken through the lifecycle, per side.
    #[arg(long, default_value_t = 100_000, help_heading = "Queue")]
    pub messages: usize,
    /// Rows per INSERT and per claim in the lifecycle.
    #[arg(long, default_value_t = 1000, help_heading = "Queue")]
    pub batch: usize,
    /// Concurrent clients of the insert scenario.
    #[arg(long, default_value_t = 8, help_heading = "Queue")]
    pub clients: usize,
    /// Seconds each side of the insert scenario runs.
    #[arg(long, default_value_t = 10.0, help_heading = "Queue")]
    pub insert_seconds: f64,
    /// Insert this many rows per client instead of running for a duration.
    #[arg(long, help_heading = "Queue")]
    pub inserts_per_client: Option<u64>,

    /// Messages of the end-to-end throughput run.
    #[arg(long, default_value_t = 100_000, help_heading = "End to end")]
    pub e2e_messages: usize,

    /// Messages of each run of the HTTP channel scenario (and of the SMPP
    /// run it is compared with).
    #[arg(long, default_value_t = 20_000, help_heading = "HTTP channel")]
    pub http_channel_messages: usize,

    /// Messages of each end-to-end run of the pooler scenario.
    #[arg(long, default_value_t = 20_000, help_heading = "Poolers")]
    pub pooler_messages: usize,

    /// Archived messages in each of the retention scenario's two months.
    #[arg(long, default_value_t = 10_000_000, help_heading = "Retention")]
    pub retention_rows: usize,
    /// SMPP sessions of the end-to-end channel.
    #[arg(long, default_value_t = 2, help_heading = "End to end")]
    pub e2e_sessions: u32,
    /// SMPP window of the end-to-end channel (its `window` setting).
    #[arg(long, default_value_t = 200, help_heading = "End to end")]
    pub e2e_window: u32,
    /// Seconds of paced inserts for the latency figure.
    #[arg(long, default_value_t = 30.0, help_heading = "End to end")]
    pub e2e_latency_seconds: f64,
    /// Seconds the throttled channel is measured.
    #[arg(long, default_value_t = 10.0, help_heading = "End to end")]
    pub e2e_throttle_seconds: f64,

    /// POST /v1/messages of each round of the HTTP API (and as many SQL
    /// INSERTs); batches and webhook events are multiples of it.
    #[arg(long, default_value_t = 10_000, help_heading = "HTTP API")]
    pub http_messages: usize,
    /// Concurrent keep-alive clients of the HTTP API (and SQL connections).
    #[arg(long, default_value_t = 32, help_heading = "HTTP API")]
    pub http_clients: usize,
    /// submit_sm of each accept round of the SMPP server (and of the
    /// simulator's).
    #[arg(long, default_value_t = 100_000, help_heading = "SMPP server")]
    pub smpp_messages: usize,
    /// Messages of the SMPP server's full loop (each with a receipt back).
    #[arg(long, default_value_t = 20_000, help_heading = "SMPP server")]
    pub smpp_loop_messages: usize,
    /// Client binds submitting at once.
    #[arg(long, default_value_t = 4, help_heading = "SMPP server")]
    pub smpp_binds: usize,
    /// Unanswered submit_sm per bind.
    #[arg(long, default_value_t = 100, help_heading = "SMPP server")]
    pub smpp_window: usize,
    /// Seconds of submissions paced at 1,000/s for the latency figure.
    #[arg(long, default_value_t = 10.0, help_heading = "SMPP server")]
    pub smpp_latency_seconds: f64,

    /// Messages through the GSM modem channel.
    #[arg(long, default_value_t = 2_000, help_heading = "GSM")]
    pub gsm_messages: usize,

    /// Inbound messages through each trigger scenario (trivial SQL,
    /// trivial Lua, Lua sending a reply).
    #[arg(long, default_value_t = 50_000, help_heading = "Triggers")]
    pub trigger_messages: usize,

    /// Finished messages left in smsbus.message for the filled run.
    #[arg(long, default_value_t = 1_000_000, help_heading = "Scale")]
    pub scale_finished: usize,
    /// Messages in the archive for the filled run.
    #[arg(long, default_value_t = 10_000_000, help_heading = "Scale")]
    pub scale_archived: usize,
    /// Messages of the long run after the filled one.
    #[arg(long, default_value_t = 1_000_000, help_heading = "Scale")]
    pub scale_long_run: usize,
}

impl Args {
    pub fn validate(&self) -> Result<()> {
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
        ensure!(
            self.smpp_binds >= 1 && self.smpp_window >= 1,
            "--smpp-binds and --smpp-window must be at least 1"
        );
        ensure!(
            self.smpp_messages >= self.smpp_binds && self.smpp_loop_messages >= self.smpp_binds,
            "--smpp-messages and --smpp-loop-messages must be at least --smpp-binds"
        );
        ensure!(
            self.smpp_latency_seconds > 0.0 && self.smpp_latency_seconds.is_finite(),
            "--smpp-latency-seconds must be a positive number of seconds"
        );
        Ok(())
    }

    /// The scenario selected: an `--only-*` flag if one is given, else
    /// `--scenario` (clap refuses both together). Of several `--only-*`
    /// flags the first in this list wins, as it always has.
    pub fn scenario(&self) -> Scenario {
        [
            (self.only_triggers, Scenario::Triggers),
            (self.only_gsm, Scenario::Gsm),
            (self.only_scale, Scenario::Scale),
            (self.only_end_to_end, Scenario::EndToEnd),
            (self.only_queue, Scenario::Queue),
        ]
        .into_iter()
        .find_map(|(given, scenario)| given.then_some(scenario))
        .unwrap_or(self.scenario)
    }

    pub fn output(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            // The binary is built from tests/; the repository root is its parent.
            let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(&tests).join("bench-results.json")
        })
    }

    pub fn insert_settings(&self) -> concurrent_insert::Settings {
        concurrent_insert::Settings {
            clients: self.clients,
            seconds: self.insert_seconds,
            per_client: self.inserts_per_client,
        }
    }

    pub fn smpp_settings(&self) -> smpp_server::Settings {
        smpp_server::Settings {
            messages: self.smpp_messages,
            loop_messages: self.smpp_loop_messages,
            binds: self.smpp_binds,
            window: self.smpp_window,
            latency_seconds: self.smpp_latency_seconds,
            rounds: self.rounds,
        }
    }

    pub fn http_settings(&self) -> http_api::Settings {
        http_api::Settings {
            messages: self.http_messages,
            clients: self.http_clients.max(1),
            rounds: self.rounds,
        }
    }

    pub fn http_channel_settings(&self) -> http_channel::Settings {
        http_channel::Settings {
            messages: self.http_channel_messages,
            rounds: self.rounds,
            sessions: self.e2e_sessions,
            window: self.e2e_window,
        }
    }

    pub fn e2e_settings(&self) -> end_to_end::Settings {
        end_to_end::Settings {
            messages: self.e2e_messages,
            latency_seconds: self.e2e_latency_seconds,
            throttle_seconds: self.e2e_throttle_seconds,
            sessions: self.e2e_sessions,
            window: self.e2e_window,
        }
    }
}
