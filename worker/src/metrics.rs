//! Prometheus metrics, served on `--metrics-addr` (`GET /metrics`) by the
//! `metrics` facade and its Prometheus exporter. Channels count what they
//! do (labelled by channel) through their [`StateHandle`], the trigger
//! runner counts runs; two histograms time a message's path: due → first
//! submit_sm, and submit → delivery report.
//!
//! [`StateHandle`]: crate::channels::state::StateHandle

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub const SUBMITTED: &str = "smsbus_channel_submitted_total";
pub const SENT: &str = "smsbus_channel_sent_total";
pub const FAILED: &str = "smsbus_channel_failed_total";
pub const UNRECORDED: &str = "smsbus_channel_outcome_unrecorded_total";
pub const REPORTS: &str = "smsbus_channel_reports_total";
pub const DELIVERED: &str = "smsbus_channel_delivered_total";
pub const INBOUND: &str = "smsbus_channel_inbound_total";
pub const THROTTLED: &str = "smsbus_channel_throttled_total";
pub const RECONNECTS: &str = "smsbus_channel_reconnects_total";
pub const WINDOW: &str = "smsbus_channel_window_in_use";
pub const DUE_TO_SUBMIT: &str = "smsbus_due_to_submit_seconds";
pub const SUBMIT_TO_REPORT: &str = "smsbus_submit_to_report_seconds";
pub const TRIGGER_RUNS: &str = "smsbus_trigger_runs_total";
pub const TRIGGER_FAILURES: &str = "smsbus_trigger_failures_total";
pub const SMPP_SERVER_SUBMITTED: &str = "smsbus_smpp_server_submitted_total";
pub const SMPP_SERVER_REFUSED: &str = "smsbus_smpp_server_refused_total";
pub const SMPP_SERVER_THROTTLED: &str = "smsbus_smpp_server_throttled_total";
pub const SMPP_SERVER_BINDS: &str = "smsbus_smpp_server_binds";
pub const SMPP_SERVER_BIND_REFUSALS: &str = "smsbus_smpp_server_bind_refusals_total";
pub const SMPP_SERVER_BATCH: &str = "smsbus_smpp_server_commit_batch_size";
pub const SMPP_SERVER_RECEIPTS: &str = "smsbus_smpp_server_receipts_delivered_total";
pub const SMPP_SERVER_OUTBOX: &str = "smsbus_smpp_server_outbox_depth";
pub const WEBHOOKS_DELIVERED: &str = "smsbus_webhooks_delivered_total";
pub const WEBHOOKS_FAILED: &str = "smsbus_webhooks_failed_total";

/// Latency buckets, in seconds: from a fast provider's milliseconds to a
/// handset that was off for a day.
const BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
    86400.0,
];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are served: without, nothing is recorded (and the
/// bookkeeping for the histograms is not kept).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the exporter and its HTTP listener on `addr` (inside the
/// runtime).
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    describe_counter!(
        SUBMITTED,
        "submit_sm PDUs (or modem submissions) written, per part"
    );
    describe_counter!(SENT, "messages the provider accepted (outcome committed)");
    describe_counter!(
        FAILED,
        "messages the provider refused for good (outcome committed)"
    );
    describe_counter!(
        UNRECORDED,
        "messages whose outcome could not be written, marked failed \"outcome not recorded\""
    );
    describe_counter!(REPORTS, "delivery reports recorded");
    describe_counter!(DELIVERED, "delivery reports saying delivered");
    describe_counter!(INBOUND, "inbound messages committed");
    describe_counter!(THROTTLED, "throttling and queue-full answers");
    describe_counter!(RECONNECTS, "connections (re)opened after a loss");
    describe_gauge!(
        WINDOW,
        "submissions in flight (unanswered or not yet recorded)"
    );
    describe_histogram!(
        DUE_TO_SUBMIT,
        Unit::Seconds,
        "from a message coming due (inserted or scheduled) to its first submission"
    );
    describe_histogram!(SUBMIT_TO_REPORT, Unit::Seconds, "from the provider accepting a part to its delivery report (reports this worker saw both ends of)");
    describe_counter!(TRIGGER_RUNS, "trigger scripts run, by trigger");
    describe_counter!(
        TRIGGER_FAILURES,
        "trigger scripts (or conditions) that failed, by trigger"
    );
    describe_counter!(
        SMPP_SERVER_SUBMITTED,
        "messages accepted from SMPP clients (committed before submit_sm_resp), by account"
    );
    describe_counter!(
        SMPP_SERVER_REFUSED,
        "submissions refused (bad input, not allowed, database unavailable), by account"
    );
    describe_counter!(
        SMPP_SERVER_THROTTLED,
        "submissions refused with ESME_RTHROTTLED (throughput or window), by account"
    );
    describe_gauge!(SMPP_SERVER_BINDS, "SMPP client binds open on this worker");
    describe_counter!(SMPP_SERVER_BIND_REFUSALS, "binds refused, by status");
    describe_counter!(
        SMPP_SERVER_RECEIPTS,
        "delivery receipts SMPP clients acknowledged, by account"
    );
    describe_gauge!(
        SMPP_SERVER_OUTBOX,
        "receipts and inbound messages waiting in smsbus.smpp_outbox, by account (the whole database's)"
    );
    describe_counter!(
        WEBHOOKS_DELIVERED,
        "webhook events their endpoints took (2xx)"
    );
    describe_counter!(
        WEBHOOKS_FAILED,
        "webhook calls refused or unanswered (each goes again, or dies past its horizon)"
    );
    describe_histogram!(
        SMPP_SERVER_BATCH,
        "submissions per group-commit transaction"
    );
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(%addr, "serving metrics");
    Ok(())
}
