//! One routing oracle: random rule sets and random messages, and for each
//! message what `smsbus.explain_route(jsonb)` decides (its last row) must
//! be what an INSERT of that message does (status, channel, routed_by,
//! last_error).
//!
//! Routing's meaning is written several times: the PL/pgSQL that
//! `_compile_router` generates (single IFs, CASE runs, `_route_group` for
//! weights), the runs evaluated in Rust (`_first_match`, `_route_first`,
//! `_block_route_first`, rule_eval.rs), and `_explain_route`, which reads
//! every rule again with the SQL executor. This test sets them against
//! each other:
//!
//! - explain's decision against the INSERT: refused (a channel that does
//!   not exist: the INSERT's error), blocked (rule and reason), channel
//!   given (queued, or why not), a function route that failed,
//!   queued by a route, or by one of the routes at one position (explain
//!   lists the candidates "or on X ... by weight"; the INSERT must pick one
//!   of them), every match skipped (the INSERT's reasons are explain's
//!   skipped rows), round robin (one of the channels explain names), no
//!   channel;
//! - explain's per-rule `matched` against `smsbus._first_match` run over
//!   the same enabled built-in conditions and the same row, every match
//!   found in turn (`after` 0 takes the run's CASE, later calls each
//!   condition alone);
//! - the kind each condition is compiled as (`_condition_kind`) against the
//!   generator's: built-in only, calling a user function, or a subquery.
//!
//! Each condition is written plain, wrapped in a user function
//! (`public.oracle_t(...)`, forcing a PL/pgSQL CASE run) or in a subquery
//! (`(SELECT ...)`, an IF of its own), in proportions that depend on the
//! rule set's style, so the compiled router's runs take every shape; the
//! test checks each shape (`_block_route_first`, `_route_first`,
//! `_first_match`, CASE runs, `_route_group`) and each kind of decision
//! occurred (in runs of at least `DEFAULT_CASES`; the first three rule
//! sets are fixed ones, `RuleSet::pinned`, so that holds for any seed).
//! Some conditions raise for some messages (`RAISES`): explain and the
//! INSERT must then fail alike where the router reads them, and explain
//! says "not reached" where it does not.
//!
//! Daily limits: explain takes no quota, the INSERT does. Each message is
//! explained right before it is inserted, in one server-side loop
//! (`oracle_run`), so explain always sees the quota the INSERT will find,
//! and limits that run out during the run are compared exactly.
//!
//! Deterministic: a fixed seed (SplitMix64). `make test` runs
//! `DEFAULT_CASES` messages over rule sets of `MESSAGES_PER_SET` (about
//! 10 s in a debug build). Longer (about 80 s per 60,000 messages), with
//! another seed:
//!
//! ```text
//! SMSBUS_ORACLE_CASES=100000 SMSBUS_ORACLE_SEED=7 cargo test -p smsbus-tests --test routing_oracle -- --nocapture
//! ```
//!
//! A disagreement prints the rule set as SQL to run on a fresh database,
//! the message, explain's rows and the INSERT's answer.
//!
//! - [`fixtures`]: the generator, the values, the SQL objects installed;
//! - [`conditions`], [`rule_set`]: random conditions, rule sets, messages;
//! - [`verdict`]: explain's decision against the INSERT's;
//! - here: the run, and the shapes and decisions it must have met.

use std::collections::BTreeMap;
use std::time::Instant;

use smsbus_tests::db::TestDb;
use tokio_postgres::Client;

const DEFAULT_CASES: usize = 8000;
const MESSAGES_PER_SET: usize = 200;
const DEFAULT_SEED: u64 = 0x5EED_0019;

mod conditions;
mod fixtures;
mod rule_set;
mod verdict;

use conditions::Kind;
use fixtures::{Rng, CHANNELS, DRIVER, USER_OBJECTS};
use rule_set::{Message, RuleSet};
use verdict::{agree, decision_kind, Insert, Outcome};

async fn setup(c: &Client) {
    let channels: Vec<String> = CHANNELS
        .iter()
        .map(|name| format!("('{name}', 'smpp')"))
        .collect();
    c.batch_execute(&format!(
        "{USER_OBJECTS}{DRIVER}INSERT INTO smsbus.channel (name, kind) VALUES {};",
        channels.join(", ")
    ))
    .await
    .unwrap();
}

/// Marks in the compiled router of the shapes its runs take.
const SHAPES: [(&str, &str); 6] = [
    (
        "blocks and routes in one Rust call",
        "smsbus._block_route_first(",
    ),
    ("routes run in Rust", "smsbus._route_first("),
    ("blocks run in Rust", "smsbus._first_match("),
    ("CASE run", "_r_hit := CASE"),
    ("routes sharing a position", "smsbus._route_group("),
    ("a rule on its own", "    IF (\n"),
];

const DECISIONS: [&str; 13] = [
    "refused: unknown channel given",
    "blocked",
    "channel given, queued",
    "channel given, not queued",
    "function route failed",
    "function route failed beside a route that could take it",
    "no route matched, dailylimit",
    "queued by weight",
    "queued by a route",
    "every match skipped, dailylimit",
    "every match skipped, nochannel",
    "round robin",
    "no route matched, nochannel",
];

#[tokio::test]
async fn explain_route_and_insert_agree() {
    let cases: usize = std::env::var("SMSBUS_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("SMSBUS_ORACLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let started = Instant::now();
    let db = TestDb::new().await;
    let c = db.connect().await;
    setup(&c).await;
    let mut rng = Rng(seed);

    let mut failures: Vec<String> = Vec::new();
    let mut decisions: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut shapes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut done = 0;
    let mut sets = 0;
    while done < cases {
        let set = if sets < 3 {
            RuleSet::pinned(sets)
        } else {
            RuleSet::random(&mut rng)
        };
        sets += 1;
        if let Err(e) = c.batch_execute(&set.apply_sql()).await {
            panic!("rule set {sets} was refused: {e:?}\n{}", set.describe());
        }
        // Each condition is compiled as the generator meant it.
        for rule in set.blocks.iter().chain(&set.routes) {
            let kind: String = c
                .query_one("SELECT smsbus._condition_kind($1)", &[&rule.condition.text])
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                kind,
                rule.condition.kind.name(),
                "the kind of {:?}",
                rule.condition.text
            );
        }
        let router: String = c
            .query_one(
                "SELECT prosrc FROM pg_proc WHERE oid = 'smsbus._router(smsbus.message)'::regprocedure",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        for (shape, mark) in SHAPES {
            if router.contains(mark) {
                *shapes.entry(shape).or_default() += 1;
            }
        }

        let n = MESSAGES_PER_SET.min(cases - done);
        let messages: Vec<Message> = (0..n).map(|_| Message::random(&mut rng)).collect();
        let json: Vec<serde_json::Value> = messages.iter().map(|m| m.json(&mut rng)).collect();
        // The enabled built-in conditions, for smsbus._first_match.
        let mut conditions = Vec::new();
        let mut names = Vec::new();
        for b in set.blocks.iter().filter(|b| b.enabled) {
            if b.condition.kind == Kind::Builtin {
                conditions.push(b.condition.text.clone());
                names.push(format!("block {}", b.id));
            }
        }
        for r in set
            .routes
            .iter()
            .filter(|r| r.enabled && r.function.is_none())
        {
            if r.condition.kind == Kind::Builtin {
                conditions.push(r.condition.text.clone());
                names.push(format!("route {}", r.id));
            }
        }
        // A key of the test's own: the backend keeps runs by key.
        let key = (rng.next() >> 2) as i64;
        let result = c
            .query(
                "SELECT * FROM public.oracle_run($1::text::jsonb, $2, $3, $4)",
                &[
                    &serde_json::Value::Array(json.clone()).to_string(),
                    &conditions,
                    &names,
                    &key,
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("oracle_run: {e:?}\n{}", set.describe()));
        assert_eq!(result.len(), n);
        for (i, row) in result.iter().enumerate() {
            let outcome = Outcome {
                explained: row.get::<_, Option<Vec<String>>>(0).unwrap_or_default(),
                explain_error: row.get(1),
                rust: row.get::<_, Option<Vec<String>>>(2).unwrap_or_default(),
                insert: Insert {
                    status: row.get(3),
                    channel: row.get(4),
                    routed_by: row.get(5),
                    last_error: row.get(6),
                },
                insert_error: row.get(7),
            };
            *decisions
                .entry(decision_kind(&set, &messages[i], &outcome.explained))
                .or_default() += 1;
            if let Err(why) = agree(&set, &messages[i], &outcome) {
                if failures.len() < 10 {
                    failures.push(format!(
                        "=== disagreement (rule set {sets}, message {i}): {why}\n\
                         --- rule set:\n{}\
                         --- message: SELECT * FROM smsbus.explain_route('{}'::jsonb);\n\
                         --- explain_route:\n    {}\n{}\
                         --- smsbus._first_match over the built-in conditions: {:?}\n\
                         --- INSERT: {:?}{}\n",
                        set.describe(),
                        json[i].to_string().replace('\'', "''"),
                        outcome.explained.join("\n    "),
                        outcome
                            .explain_error
                            .as_deref()
                            .map(|e| format!("    error: {e}\n"))
                            .unwrap_or_default(),
                        outcome.rust,
                        outcome.insert,
                        outcome
                            .insert_error
                            .as_deref()
                            .map(|e| format!(" error: {e}"))
                            .unwrap_or_default(),
                    ));
                } else {
                    failures.push(String::new());
                }
            }
        }
        done += n;
    }
    println!(
        "routing oracle: {done} messages over {sets} rule sets, seed {seed}, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("decisions: {decisions:#?}");
    println!("compiled shapes (rule sets): {shapes:#?}");
    assert!(
        failures.is_empty(),
        "{} disagreements between explain_route and INSERT; the first ones:\n{}",
        failures.len(),
        failures.concat()
    );
    // A run that never reached a decision or a compiled shape tested
    // nothing there.
    if cases >= DEFAULT_CASES {
        for decision in DECISIONS {
            assert!(
                decisions.contains_key(decision),
                "no message ended in {decision}: {decisions:?}"
            );
        }
        for (shape, _) in SHAPES {
            assert!(
                shapes.contains_key(shape),
                "no rule set compiled to {shape}: {shapes:?}"
            );
        }
    }
}
