//! # smsbus-tests
//!
//! End-to-end tests run against a real PostgreSQL 15 cluster with the
//! extension installed (`make test` starts it and exports `SMSBUS_TEST_PG`).
//!
//! - [`api_client`]: a client of smsbus's HTTP API.
//! - [`cluster`]: a cluster of a test's own, to crash and restart.
//! - [`db`]: a fresh database per test, copied from a template that already
//!   has the extension and dropped afterwards, so tests run in parallel.
//! - [`fixtures`]: a database holding everything smsbus keeps, its
//!   contents and schema as text (backup and upgrade tests).
//! - [`pgbouncer`]: PgBouncer in front of the test cluster, in session or
//!   transaction mode.
//! - [`providers`]: the REST provider simulator (Twilio, Vonage,
//!   Infobip, Kannel generic) over real HTTP.
//! - [`roles`]: login roles granted smsbus roles, for attack tests.
//! - [`scenario`]: a channel, a simulated provider and a worker, set up
//!   the way most end-to-end tests need them.
//! - [`smsc`]: the SMSC simulator (SMPP over TCP).
//! - [`smpp_client`]: the project's own SMPP client (an application
//!   binding to smsbus or to the simulator).
//! - [`modem`]: the GSM modem simulator (AT commands on a pseudo-terminal).
//! - [`triggers`]: what trigger tests share.
//! - [`http`]: a local HTTP endpoint for `smsbus.http`.
//! - [`metrics`]: the worker's Prometheus endpoint, scraped.
//! - [`net`]: free local ports for the servers tests start.
//! - [`worker`]: starting `smsbus-worker` as a child process.
//! - `src/bin/bench/`: the benchmark harness (`make bench`).

pub mod api_client;
pub mod cluster;
pub mod db;
pub mod fixtures;
pub mod http;
pub mod metrics;
pub mod modem;
pub mod net;
pub mod pgbouncer;
pub mod providers;
pub mod roles;
pub mod scenario;
pub mod smpp_client;
pub mod smsc;
pub mod triggers;
pub mod worker;
