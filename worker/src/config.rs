//! The worker's settings. Only what is needed to reach the database comes
//! from flags and the environment; everything else is read from the database.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

/// Command-line flags (each also readable from the environment).
#[derive(Debug, Parser)]
#[command(
    name = "smsbus-worker",
    version,
    about = "Runs the channels, triggers and maintenance of an smsbus database"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// PostgreSQL connection: a URL (postgresql://user@host/db) or key=value pairs.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Connection for what must keep its server session: LISTEN and the
    /// channel ownership locks. Give a direct one to the primary when
    /// --database-url goes through a pooler in transaction mode
    /// (default: --database-url).
    #[arg(long, env = "SMSBUS_LISTEN_URL", hide_env_values = true)]
    pub listen_url: Option<String>,

    /// Never LISTEN: look for work on a short timer instead. Chosen by
    /// itself, with a warning, when notifications do not come through
    /// (a pooler in transaction mode and no --listen-url).
    #[arg(long, env = "SMSBUS_POLL_ONLY")]
    pub poll_only: bool,

    /// This worker's name in leases, channel ownership and the trace
    /// (default: host name and process id).
    #[arg(long, env = "SMSBUS_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Seconds between maintenance passes (due scheduled messages, expired
    /// leases, overdue reports); notifications wake it sooner.
    #[arg(long, env = "SMSBUS_MAINTENANCE_INTERVAL", default_value_t = 1.0)]
    pub maintenance_interval: f64,

    /// Hours a sent message waits for its delivery report before it becomes
    /// noreport, unless its channel's config sets report_timeout_s.
    #[arg(long, env = "SMSBUS_REPORT_TIMEOUT_HOURS", default_value_t = 48.0)]
    pub report_timeout_hours: f64,

    /// Seconds the parts of a concatenated inbound message wait for their
    /// siblings; then what arrived is stored as one message marked incomplete.
    #[arg(long, env = "SMSBUS_INBOUND_PART_TIMEOUT", default_value_t = 3600.0)]
    pub inbound_part_timeout: f64,

    /// Seconds a channel driver may go without a sign of life before it is
    /// restarted as hung.
    #[arg(long, env = "SMSBUS_CHANNEL_HANG_TIMEOUT", default_value_t = 60.0)]
    pub channel_hang_timeout: f64,

    /// Runs Lua triggers without `io`, `os` (but its clock and dates),
    /// `require` and file loading: scripts cannot touch files or programs.
    #[arg(long, env = "SMSBUS_SANDBOX")]
    pub sandbox: bool,

    /// Seconds one trigger script may run (its database work included);
    /// every statement of a trigger is bounded by it too.
    #[arg(long, env = "SMSBUS_TRIGGER_TIME_LIMIT", default_value_t = 10.0)]
    pub trigger_time_limit: f64,

    /// MiB one Lua trigger's state may hold.
    #[arg(long, env = "SMSBUS_LUA_MEMORY_LIMIT", default_value_t = 64)]
    pub lua_memory_limit: usize,

    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g.
    /// 127.0.0.1:9187; none by default.
    #[arg(long, env = "SMSBUS_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Serve the HTTP API (`/v1/...`, `/healthz`, `/readyz`) on this
    /// address, e.g. 0.0.0.0:8080; none by default.
    #[arg(long, env = "SMSBUS_HTTP_ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,

    /// Serve the HTTP API over TLS with this certificate chain (PEM);
    /// needs --http-tls-key.
    #[arg(long, env = "SMSBUS_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, env = "SMSBUS_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<std::path::PathBuf>,

    /// Show the status page (`/` of the HTTP API) without a key to
    /// clients on a loopback address; others always need an admin key.
    #[arg(long, env = "SMSBUS_STATUS_PAGE_LOCAL")]
    pub status_page_local: bool,

    /// Most connections the worker opens (the listener's is extra).
    #[arg(long, env = "SMSBUS_POOL_SIZE", default_value_t = 8)]
    pub pool_size: usize,

    /// Shortest lease, in seconds, on a claimed message (a channel whose
    /// timeouts need longer takes longer): when a worker dies, its
    /// messages go back to the queue after it.
    #[arg(long, env = "SMSBUS_MIN_LEASE", default_value_t = 60.0)]
    pub min_lease: f64,

    /// Seconds a failing write of outcomes (sent, failed, retry) is tried
    /// again before each of its messages is settled on its own: its real
    /// outcome if that alone can be written, else `failed` with
    /// last_error "outcome not recorded: ...". Never sent again either way.
    #[arg(long, env = "SMSBUS_OUTCOME_RETRY_HORIZON", default_value_t = 120.0)]
    pub outcome_retry_horizon: f64,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the database, the extension's version and every enabled
    /// channel, route, blocking rule and trigger; print what is wrong and
    /// exit 1 if anything is.
    Check,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: tokio_postgres::Config,
    /// Where LISTEN and channel ownership connect (--listen-url).
    pub listen: tokio_postgres::Config,
    pub poll_only: bool,
    pub worker_id: String,
    pub maintenance_interval: Duration,
    pub report_timeout: Duration,
    pub inbound_part_timeout: Duration,
    pub hang_timeout: Duration,
    pub pool_size: usize,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub http: Option<crate::http_api::Settings>,
    pub lua: crate::triggers::lua::Settings,
    pub claims: crate::channels::outbox::ClaimSettings,
}

/// Most rows one maintenance statement touches, so a backlog is worked off
/// in short transactions.
pub const MAINTENANCE_BATCH: i32 = 10_000;

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let database: tokio_postgres::Config = args
            .database_url
            .parse()
            .context("--database-url / DATABASE_URL is not a PostgreSQL connection string")?;
        let listen = match &args.listen_url {
            Some(url) => url.parse().context(
                "--listen-url / SMSBUS_LISTEN_URL is not a PostgreSQL connection string",
            )?,
            None => database.clone(),
        };
        let worker_id = match args.worker_id {
            Some(id) => id,
            None => default_worker_id(),
        };
        // The id travels in application_name (smsbus_core::actor), which
        // PostgreSQL cuts at 63 bytes and keeps only in ASCII.
        if worker_id.is_empty() || !smsbus_core::actor::fits(&worker_id) {
            bail!("--worker-id must be 1 to {WORKER_ID_MAX} printable ASCII characters");
        }
        Ok(Config {
            database,
            listen,
            poll_only: args.poll_only,
            worker_id,
            maintenance_interval: seconds(
                "--maintenance-interval",
                args.maintenance_interval,
                0.05,
                3600.0,
            )?,
            report_timeout: seconds(
                "--report-timeout-hours",
                args.report_timeout_hours * 3600.0,
                1.0,
                365.0 * 86400.0,
            )?,
            inbound_part_timeout: seconds(
                "--inbound-part-timeout",
                args.inbound_part_timeout,
                1.0,
                30.0 * 86400.0,
            )?,
            hang_timeout: seconds(
                "--channel-hang-timeout",
                args.channel_hang_timeout,
                0.5,
                86400.0,
            )?,
            pool_size: match args.pool_size {
                1..=256 => args.pool_size,
                n => bail!("--pool-size must be between 1 and 256, not {n}"),
            },
            metrics_addr: args.metrics_addr,
            http: match args.http_addr {
                Some(addr) => Some(crate::http_api::Settings {
                    addr,
                    tls: args.http_tls_cert.zip(args.http_tls_key),
                    status_page_local: args.status_page_local,
                }),
                None if args.http_tls_cert.is_some() || args.status_page_local => {
                    bail!("--http-tls-cert and --status-page-local need --http-addr")
                }
                None => None,
            },
            claims: crate::channels::outbox::ClaimSettings {
                min_lease: seconds("--min-lease", args.min_lease, 1.0, 86400.0)?,
                outcome_retry_horizon: seconds(
                    "--outcome-retry-horizon",
                    args.outcome_retry_horizon,
                    0.1,
                    86400.0,
                )?,
            },
            lua: crate::triggers::lua::Settings {
                sandbox: args.sandbox,
                time_limit: seconds(
                    "--trigger-time-limit",
                    args.trigger_time_limit,
                    0.01,
                    3600.0,
                )?,
                memory_limit: match args.lua_memory_limit {
                    1..=65536 => args.lua_memory_limit * 1024 * 1024,
                    n => bail!("--lua-memory-limit must be between 1 and 65536 MiB, not {n}"),
                },
            },
        })
    }
}

fn seconds(flag: &str, value: f64, min: f64, max: f64) -> anyhow::Result<Duration> {
    if !(min..=max).contains(&value) {
        bail!("{flag} is out of range ({value})");
    }
    Ok(Duration::from_secs_f64(value))
}

/// The longest worker id [`smsbus_core::actor::fits`].
const WORKER_ID_MAX: usize = 40;

/// `host:pid`, the host name cut short enough to fit.
fn default_worker_id() -> String {
    let pid = std::process::id().to_string();
    let host: String = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(WORKER_ID_MAX - pid.len() - 1)
        .collect();
    let host = if host.is_empty() {
        "worker".to_owned()
    } else {
        host
    };
    format!("{host}:{pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_fit_up_to_the_limit_and_the_default_fits() {
        assert!(smsbus_core::actor::fits(&"x".repeat(WORKER_ID_MAX)));
        assert!(!smsbus_core::actor::fits(&"x".repeat(WORKER_ID_MAX + 1)));
        assert!(smsbus_core::actor::fits(&default_worker_id()));
    }
}
