//! The router's cost: inserting messages with 100 routing rules and 20
//! blocking rules against inserting them with no rules (round robin), in
//! the same run. The rules are the worst case for a compiled first-match
//! router: every blocking rule is checked and misses, and only the last
//! route matches, so each message evaluates all 120 conditions.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// Rules per scenario.
pub const ROUTES: usize = 100;
pub const BLOCKS: usize = 20;
/// Target: insert throughput with the rules, as a share of without.
pub const MIN_RATIO: f64 = 0.8;
/// Messages per timed run and per INSERT statement.
const MESSAGES: usize = 50_000;
const BATCH: usize = 100;

const CHANNELS: &str = "INSERT INTO smsbus.channel (name, kind)
    SELECT 'route' || g, 'smpp' FROM generate_series(0, 9) g ON CONFLICT DO NOTHING";

/// Inserts MESSAGES messages without a channel, BATCH rows a statement.
async fn insert_messages(client: &Client) -> Result<Duration> {
    let statement = client
        .prepare(&format!(
            "INSERT INTO smsbus.message (to_address, body)
             SELECT '+4670' || lpad((($1::int + g) % 10000000)::text, 7, '0'), 'routing bench ' || g
             FROM generate_series(1, {BATCH}) g"
        ))
        .await
        .context("preparing the routing INSERT")?;
    let started = Instant::now();
    for start in (0..MESSAGES).step_by(BATCH) {
        client
            .execute(&statement, &[&(start as i32)])
            .await
            .context("inserting for the routing bench")?;
    }
    Ok(started.elapsed())
}

/// Replaces the rules: none, or ROUTES routes and BLOCKS blocking rules.
async fn set_rules(client: &Client, with_rules: bool) -> Result<()> {
    client
        .batch_execute("DELETE FROM smsbus.route; DELETE FROM smsbus.block;")
        .await
        .context("removing the rules")?;
    if !with_rules {
        return Ok(());
    }
    client
        .batch_execute(&format!(
            "INSERT INTO smsbus.block (condition, reason)
                SELECT format('to_address = %L', '+99900' || g), 'bench block ' || g
                FROM generate_series(1, {BLOCKS}) g;
             INSERT INTO smsbus.route (position, condition, channel)
                SELECT g, format('to_address LIKE %L AND priority >= 0', '+' || (100 + g) || '%'), 'route' || (g % 10)
                FROM generate_series(1, {ROUTES} - 1) g;
             INSERT INTO smsbus.route (position, condition, channel)
                VALUES ({ROUTES}, 'to_address LIKE ''+46%''', 'route0');"
        ))
        .await
        .context("creating the rules")
}

pub struct RoutingRun {
    pub rules: Duration,
    pub no_rules: Duration,
}

impl RoutingRun {
    pub fn rate(elapsed: Duration) -> f64 {
        MESSAGES as f64 / elapsed.as_secs_f64()
    }

    pub fn ratio(&self) -> f64 {
        Self::rate(self.rules) / Self::rate(self.no_rules)
    }
}

/// One round: both sides, the first one alternating between rounds.
pub async fn run_round(control: &Client, round: usize, truncate: &str) -> Result<RoutingRun> {
    control
        .batch_execute(CHANNELS)
        .await
        .context("creating the routing channels")?;
    let mut rules = Duration::ZERO;
    let mut no_rules = Duration::ZERO;
    let order = if round.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    };
    for with_rules in order {
        control
            .batch_execute(truncate)
            .await
            .context("emptying the tables")?;
        set_rules(control, with_rules).await?;
        let elapsed = insert_messages(control).await?;
        // Every message took the path measured: the last route, or round robin.
        let routed: i64 = control
            .query_one(
                "SELECT count(*) FROM smsbus.message
                 WHERE status = 'queued'
                   AND CASE WHEN $1 THEN channel = 'route0' AND routed_by LIKE 'route %'
                            ELSE routed_by = 'round robin' END",
                &[&with_rules],
            )
            .await?
            .get(0);
        anyhow::ensure!(
            routed as usize == MESSAGES,
            "only {routed} of {MESSAGES} messages were queued as the rules say"
        );
        if with_rules {
            rules = elapsed;
        } else {
            no_rules = elapsed;
        }
    }
    set_rules(control, false).await?;
    Ok(RoutingRun { rules, no_rules })
}
