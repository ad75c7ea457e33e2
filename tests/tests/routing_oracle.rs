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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use smsbus_tests::db::TestDb;
use tokio_postgres::Client;

const DEFAULT_CASES: usize = 8000;
const MESSAGES_PER_SET: usize = 200;
const DEFAULT_SEED: u64 = 0x5EED_0019;

/// SplitMix64: small, seeded, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const CHANNELS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];
const ADDRESSES: [&str; 9] = [
    "+31612345678",
    "+31612345679",
    "+31600000001",
    "+4412345678",
    "+447700900123",
    "+12025550123",
    "+32470123456",
    "+33612345678",
    "1234",
];
const FROMS: [Option<&str>; 6] = [
    None,
    None,
    Some("MyShop"),
    Some("Bank"),
    Some("+31699999999"),
    Some("4455"),
];
const BODIES: [&str; 9] = [
    "hello",
    "Your code is 123456",
    "casino night",
    "STOP",
    "stop",
    "boom",
    "Prijs: 5 €",
    "a much longer body that goes on and on",
    "",
];
const BATCHES: [Option<&str>; 5] = [None, None, Some("b1"), Some("b2"), Some("promo")];
const CUSTOMS: [Option<&str>; 10] = [
    None,
    None,
    Some(r#"{}"#),
    Some(r#"{"tenant": "acme"}"#),
    Some(r#"{"tenant": "acme", "vip": true}"#),
    Some(r#"{"tenant": "other", "n": 5}"#),
    Some(r#"{"n": 2}"#),
    Some(r#"{"route": "c3"}"#),
    Some(r#"{"route": "ghost", "n": 7}"#),
    Some(r#"{"route": "c0", "tenant": "acme"}"#),
];
const ROUTE_FUNCTIONS: [&str; 4] = [
    "oracle_fn_custom",
    "public.oracle_fn_prio",
    "oracle_fn_boom",
    "oracle_fn_custom",
];

/// A condition that raises for a message whose custom tenant is not a number.
const RAISES: &str = "(custom->>'tenant')::int > 0";

/// The user's objects rules read: tables, functions conditions call,
/// route functions.
const USER_OBJECTS: &str = r#"
CREATE TABLE public.oracle_optout (number text PRIMARY KEY);
INSERT INTO public.oracle_optout VALUES ('+31600000001'), ('+12025550123'), ('+447700900123');
CREATE TABLE public.oracle_vip (number text PRIMARY KEY);
INSERT INTO public.oracle_vip VALUES ('+31612345679'), ('+4412345678');
CREATE TABLE public.oracle_words (word text PRIMARY KEY);
INSERT INTO public.oracle_words VALUES ('STOP'), ('hello');
GRANT SELECT ON public.oracle_optout, public.oracle_vip, public.oracle_words TO smsbus_admin;
CREATE FUNCTION public.oracle_t(b boolean) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN RETURN b; END $$;
CREATE FUNCTION public.oracle_vip(number text) RETURNS boolean LANGUAGE sql STABLE
    AS $$ SELECT EXISTS (SELECT 1 FROM public.oracle_vip v WHERE v.number = $1) $$;
CREATE FUNCTION public.oracle_len(t text) RETURNS integer LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN RETURN length(t); END $$;
CREATE FUNCTION public.oracle_fn_custom(m smsbus.message) RETURNS text LANGUAGE sql
    AS $$ SELECT m.custom->>'route' $$;
CREATE FUNCTION public.oracle_fn_prio(m smsbus.message) RETURNS text LANGUAGE sql
    AS $$ SELECT CASE WHEN m.priority >= 5 THEN 'c1' END $$;
CREATE FUNCTION public.oracle_fn_boom(m smsbus.message) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF m.body = 'boom' THEN
        RAISE EXCEPTION 'boom for %', m.to_address;
    END IF;
    RETURN CASE WHEN m.batch_id IS NOT NULL THEN 'c2' END;
END $$;
"#;

/// Explains, then inserts, each message of a JSON array, in order (so
/// explain sees the quota the INSERT will find), and runs
/// smsbus._first_match over `conditions` (the enabled built-in ones, named
/// by `rules`) on the row explain reads.
const DRIVER: &str = r#"
CREATE FUNCTION public.oracle_run(msgs jsonb, conditions text[], rules text[], run_key bigint)
RETURNS TABLE (o_explained text[], o_explain_error text, o_rust text[], o_status text,
               o_channel text, o_routed_by text, o_last_error text, o_insert_error text)
LANGUAGE plpgsql AS $$
DECLARE
    msg jsonb;
    m smsbus.message;
    p integer;
    after integer;
BEGIN
    FOR msg IN SELECT e.v FROM jsonb_array_elements(msgs) WITH ORDINALITY AS e(v, n) ORDER BY e.n LOOP
        o_explained := NULL; o_explain_error := NULL; o_rust := '{}';
        o_status := NULL; o_channel := NULL; o_routed_by := NULL; o_last_error := NULL;
        o_insert_error := NULL;
        BEGIN
            SELECT array_agg(x.rule || E'\t' || coalesce(x.matched::text, '') || E'\t'
                             || coalesce(x.outcome, '<null>') ORDER BY x.step)
            INTO o_explained FROM smsbus.explain_route(msg) x;
        EXCEPTION WHEN OTHERS THEN
            o_explain_error := SQLERRM;
        END;
        m := jsonb_populate_record(NULL::smsbus.message,
            jsonb_build_object('direction', 'out', 'priority', 0, 'request_report', true) || msg);
        IF cardinality(conditions) > 0 THEN
            BEGIN
                after := 0;
                LOOP
                    p := smsbus._first_match(run_key, conditions, after, m);
                    EXIT WHEN p IS NULL;
                    o_rust := o_rust || rules[p];
                    after := p;
                END LOOP;
            EXCEPTION WHEN OTHERS THEN
                o_rust := o_rust || ('error: ' || SQLERRM);
            END;
        END IF;
        BEGIN
            INSERT INTO smsbus.message (to_address, body, from_address, channel, priority, custom, batch_id)
            SELECT r.to_address, r.body, r.from_address, r.channel, coalesce(r.priority, 0), r.custom,
                   r.batch_id
            FROM jsonb_populate_record(NULL::smsbus.message, msg) r
            RETURNING status::text, channel, routed_by, last_error
            INTO o_status, o_channel, o_routed_by, o_last_error;
        EXCEPTION WHEN OTHERS THEN
            o_insert_error := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END $$;
"#;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Builtin,
    Simple,
    Query,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Builtin => "builtin",
            Kind::Simple => "simple",
            Kind::Query => "query",
        }
    }
}

#[derive(Clone, Debug)]
struct Cond {
    text: String,
    kind: Kind,
}

fn cond(text: String, kind: Kind) -> Cond {
    Cond { text, kind }
}

/// A condition of one test; `builtin_only` leaves out those calling user
/// functions or holding subqueries.
fn atom(rng: &mut Rng, builtin_only: bool) -> Cond {
    use Kind::*;
    let n = rng.below(36);
    let n = if builtin_only && (29..=34).contains(&n) {
        n - 29
    } else {
        n
    };
    match n {
        0 => cond(
            format!(
                "to_address LIKE '{}'",
                rng.pick(&["+31%", "+44%", "+1%", "+3161234567_", "%8"])
            ),
            Builtin,
        ),
        1 => cond(
            format!("message.to_address = '{}'", rng.pick(&ADDRESSES)),
            Builtin,
        ),
        2 => cond(
            format!(
                "starts_with(to_address, '{}')",
                rng.pick(&["+32", "+31", "1"])
            ),
            Builtin,
        ),
        3 => cond(
            format!("to_address ~ '^\\+{}'", rng.pick(&["4", "31", "1"])),
            Builtin,
        ),
        4 | 5 => cond(
            format!(
                "priority {} {}",
                rng.pick(&[">", ">=", "=", "<>", "<"]),
                rng.range(-1, 8)
            ),
            Builtin,
        ),
        6 => {
            let low = rng.range(-1, 6);
            cond(
                format!("priority BETWEEN {low} AND {}", low + 2),
                Builtin,
            )
        }
        7 => cond("priority IN (1, 3, 5)".into(), Builtin),
        8 => cond("priority % 2 = 0".into(), Builtin),
        9 => cond(
            format!("body LIKE '%{}%'", rng.pick(&["code", "casino", "o"])),
            Builtin,
        ),
        10 => cond(
            format!("body ILIKE '{}'", rng.pick(&["stop", "%NIGHT", "%€%"])),
            Builtin,
        ),
        11 => cond(
            format!("length(body) > {}", rng.pick(&[0, 5, 10, 20])),
            Builtin,
        ),
        12 => cond("position('casino' in body) > 0".into(), Builtin),
        13 => cond(
            format!("batch_id = '{}'", rng.pick(&["b1", "b2"])),
            Builtin,
        ),
        14 => cond("batch_id IS NULL".into(), Builtin),
        15 => cond("batch_id IS DISTINCT FROM 'b2'".into(), Builtin),
        16 => cond("coalesce(batch_id, '') LIKE 'b%'".into(), Builtin),
        17 => cond(
            format!("custom->>'tenant' = '{}'", rng.pick(&["acme", "other"])),
            Builtin,
        ),
        18 => cond("custom ? 'vip'".into(), Builtin),
        19 => cond("(custom->>'n')::int > 3".into(), Builtin),
        20 => cond(r#"custom @> '{"tenant": "acme"}'"#.into(), Builtin),
        21 => cond("custom IS NULL".into(), Builtin),
        22 => cond("jsonb_typeof(custom->'n') = 'number'".into(), Builtin),
        23 => cond("custom->>'route' IS NOT NULL".into(), Builtin),
        24 => cond("from_address IS NULL".into(), Builtin),
        25 => cond(
            format!(
                "from_address = '{}'",
                rng.pick(&["MyShop", "Bank", "4455"])
            ),
            Builtin,
        ),
        26 => cond("from_address LIKE '+%'".into(), Builtin),
        27 => cond("lower(from_address) = 'bank'".into(), Builtin),
        28 => cond(
            rng.pick(&["true", "false", "NULL::boolean"]).into(),
            Builtin,
        ),
        29 => cond("public.oracle_vip(to_address)".into(), Simple),
        30 => cond(
            format!("oracle_len(body) > {}", rng.pick(&[4, 10])),
            Simple,
        ),
        31 => cond(
            "EXISTS (SELECT 1 FROM public.oracle_optout o WHERE o.number = to_address)".into(),
            Query,
        ),
        32 => cond(
            "to_address IN (SELECT number FROM oracle_optout)".into(),
            Query,
        ),
        33 => cond(
            "(SELECT count(*) FROM public.oracle_optout o WHERE o.number LIKE left(to_address, 3) || '%') > 1"
                .into(),
            Query,
        ),
        34 => cond(
            "body = ANY (SELECT word FROM public.oracle_words)".into(),
            Query,
        ),
        _ => cond(
            "from_address IS NOT DISTINCT FROM 'MyShop'".into(),
            Builtin,
        ),
    }
}

fn condition(rng: &mut Rng, depth: u32, builtin_only: bool) -> Cond {
    if depth == 0 || rng.chance(0.55) {
        return atom(rng, builtin_only);
    }
    match rng.below(3) {
        0 => {
            let inner = condition(rng, depth - 1, builtin_only);
            cond(format!("NOT ({})", inner.text), inner.kind)
        }
        n => {
            let (a, b) = (
                condition(rng, depth - 1, builtin_only),
                condition(rng, depth - 1, builtin_only),
            );
            let op = if n == 1 { "AND" } else { "OR" };
            cond(
                format!("({}) {op} ({})", a.text, b.text),
                a.kind.max(b.kind),
            )
        }
    }
}

/// How a rule set writes its conditions: mostly plain (runs in Rust),
/// mostly through a user function (PL/pgSQL CASE runs), or mixed.
#[derive(Clone, Copy, Debug)]
enum Style {
    Rust,
    PlPgSql,
    Mixed,
}

fn wrapped(rng: &mut Rng, style: Style, c: Cond) -> Cond {
    let (user_fn, select) = match style {
        Style::Rust => (0.05, 0.05),
        Style::PlPgSql => (0.85, 0.05),
        Style::Mixed => (0.3, 0.2),
    };
    let roll = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    if roll < user_fn {
        cond(
            format!("public.oracle_t({})", c.text),
            c.kind.max(Kind::Simple),
        )
    } else if roll < user_fn + select {
        cond(format!("(SELECT {})", c.text), Kind::Query)
    } else {
        c
    }
}

#[derive(Clone, Debug)]
struct Channel {
    name: &'static str,
    enabled: bool,
    can_send: bool,
    daily_limit: Option<i32>,
    /// Routed today already (channel_usage).
    used: i32,
}

#[derive(Clone, Debug)]
struct Rule {
    id: i64,
    enabled: bool,
    condition: Cond,
    /// Blocks: the reason; routes: unused.
    reason: String,
    position: i32,
    channel: Option<&'static str>,
    function: Option<&'static str>,
    weight: i32,
}

struct RuleSet {
    style: Style,
    channels: Vec<Channel>,
    blocks: Vec<Rule>,
    routes: Vec<Rule>,
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn opt_lit(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_owned(), lit)
}

fn opt_num(n: Option<i32>) -> String {
    n.map_or_else(|| "NULL".to_owned(), |n| n.to_string())
}

impl RuleSet {
    /// The rule sets every run begins with, so each compiled shape and
    /// each kind of decision occurs whatever the seed: all built-in rules
    /// (blocks and routes in one Rust call, then failover in Rust),
    /// routes sharing a position with a function route that raises, and
    /// every channel at its daily limit.
    fn pinned(k: usize) -> RuleSet {
        let channel = |name, daily_limit| Channel {
            name,
            enabled: true,
            can_send: name != "c5",
            daily_limit,
            used: 0,
        };
        let rule = |id, position, condition: &str, channel, function, weight| Rule {
            id,
            enabled: true,
            condition: cond(condition.to_owned(), Kind::Builtin),
            reason: format!("reason {id}"),
            position,
            channel,
            function,
            weight,
        };
        let channels = CHANNELS
            .iter()
            .map(|&name| channel(name, (name == "c1").then_some(0)))
            .collect();
        if k == 0 {
            return RuleSet {
                style: Style::Rust,
                channels,
                blocks: vec![
                    rule(1, 0, "body = 'casino night'", None, None, 1),
                    rule(2, 0, "to_address LIKE '+1%'", None, None, 1),
                ],
                routes: vec![
                    rule(1, 10, "priority > 5", Some("c1"), None, 1),
                    rule(2, 20, "to_address LIKE '+31%'", Some("c5"), None, 1),
                    rule(
                        3,
                        30,
                        "custom ? 'vip' OR to_address LIKE '+316%'",
                        Some("c2"),
                        None,
                        1,
                    ),
                    rule(4, 40, "batch_id IS NOT NULL", Some("c3"), None, 1),
                ],
            };
        }
        if k == 2 {
            // Every channel that can send is at its daily limit.
            return RuleSet {
                style: Style::Rust,
                channels: CHANNELS
                    .iter()
                    .map(|&name| channel(name, Some(0)))
                    .collect(),
                blocks: vec![],
                routes: vec![rule(1, 10, "priority > 100", Some("c0"), None, 1)],
            };
        }
        RuleSet {
            style: Style::Mixed,
            channels,
            blocks: vec![],
            routes: vec![
                rule(1, 10, "true", Some("c0"), None, 3),
                rule(2, 10, "true", None, Some("oracle_fn_boom"), 1),
                rule(3, 10, "priority > 3", Some("c2"), None, 2),
                rule(4, 20, "true", Some("c4"), None, 1),
            ],
        }
    }

    fn random(rng: &mut Rng) -> RuleSet {
        let style = match rng.below(3) {
            0 => Style::Rust,
            1 => Style::PlPgSql,
            _ => Style::Mixed,
        };
        // Rust style: user functions and subqueries only now and then, so
        // runs of built-in conditions form.
        let mut builtin_only = || !matches!(style, Style::Rust) || rng.chance(0.9);
        let builtin_only = [builtin_only(), builtin_only()];
        // Now and then few channels can send, so routes run out of them.
        let scarce = rng.chance(0.2);
        let (enabled, can_send) = if scarce { (0.4, 0.4) } else { (0.85, 0.85) };
        let channels = CHANNELS
            .iter()
            .map(|&name| {
                let (daily_limit, used) = match rng.below(20) {
                    _ if scarce && rng.chance(0.4) => (Some(0), 0),
                    0 | 1 => (Some(0), 0),
                    2 | 3 => (Some(1_000_000), 0),
                    // Runs out during the run.
                    4..=6 => (Some(rng.range(1, 6) as i32), 0),
                    // Exhausted already.
                    7 | 8 => (Some(3), 3),
                    _ => (None, 0),
                };
                Channel {
                    name,
                    enabled: rng.chance(enabled),
                    can_send: rng.chance(can_send),
                    daily_limit,
                    used,
                }
            })
            .collect();
        let blocks = (0..rng.below(5))
            .map(|i| Rule {
                id: i as i64 + 1,
                enabled: rng.chance(0.9),
                condition: {
                    // Narrower than routes: most messages get past the blocks.
                    let (a, b) = (
                        atom(rng, builtin_only[0]),
                        condition(rng, 1, builtin_only[0]),
                    );
                    let c = cond(format!("({}) AND ({})", a.text, b.text), a.kind.max(b.kind));
                    wrapped(rng, style, c)
                },
                reason: format!("reason {}", i + 1),
                position: 0,
                channel: None,
                function: None,
                weight: 1,
            })
            .collect();
        let count = rng.range(2, 12);
        // Half the rule sets give each route a position of its own (runs
        // of routes), the others let routes share positions (weights).
        let positions: Vec<i32> = if rng.chance(0.5) {
            (1..=count as i32).map(|p| p * 10).collect()
        } else {
            (1..=rng.range(1, (count / 2).max(1)) as i32)
                .map(|p| p * 10)
                .collect()
        };
        let unique = positions.len() == count as usize;
        let routes = (0..count)
            .map(|i| {
                let function = rng.chance(0.15).then(|| rng.pick(&ROUTE_FUNCTIONS));
                let condition = if function.is_some() && rng.chance(0.5) {
                    cond("true".into(), Kind::Builtin)
                } else {
                    let c = condition(rng, 2, builtin_only[1]);
                    wrapped(rng, style, c)
                };
                Rule {
                    id: i + 1,
                    enabled: rng.chance(0.9),
                    condition,
                    reason: String::new(),
                    position: if unique {
                        positions[i as usize]
                    } else {
                        rng.pick(&positions)
                    },
                    channel: function.is_none().then(|| rng.pick(&CHANNELS)),
                    function,
                    weight: if rng.chance(0.5) {
                        1
                    } else {
                        rng.range(1, 4) as i32
                    },
                }
            })
            .collect();
        let mut routes: Vec<Rule> = routes;
        // Routes sharing a position often share the condition too (the
        // README's 3:1 split): weights then decide between them.
        for i in 1..routes.len() {
            if unique || !rng.chance(0.4) {
                continue;
            }
            if let Some(j) = (0..i).find(|&j| routes[j].position == routes[i].position) {
                routes[i].condition = routes[j].condition.clone();
            }
        }
        let mut set = RuleSet {
            style,
            channels,
            blocks,
            routes,
        };
        // Now and then a condition that raises for some messages (a cast
        // of "acme" to integer), after a part that is often false.
        if rng.chance(0.2) {
            let count = set.blocks.len() + set.routes.len();
            let i = rng.below(count);
            let rule = if i < set.blocks.len() {
                &mut set.blocks[i]
            } else {
                &mut set.routes[i - set.blocks.len()]
            };
            rule.condition.text = format!("({}) AND {RAISES}", rule.condition.text);
        }
        set
    }

    fn rule_sql(&self) -> String {
        let mut sql = String::new();
        if !self.blocks.is_empty() {
            let rows: Vec<String> = self
                .blocks
                .iter()
                .map(|b| {
                    format!(
                        "({}, {}, {}, {})",
                        b.id,
                        b.enabled,
                        lit(&b.condition.text),
                        lit(&b.reason)
                    )
                })
                .collect();
            let _ = writeln!(
                sql,
                "INSERT INTO smsbus.block (id, enabled, condition, reason) VALUES\n    {};",
                rows.join(",\n    ")
            );
        }
        let rows: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                format!(
                    "({}, {}, {}, {}, {}, {}, {})",
                    r.id,
                    r.position,
                    r.enabled,
                    lit(&r.condition.text),
                    opt_lit(r.channel),
                    opt_lit(r.function),
                    r.weight
                )
            })
            .collect();
        let _ = writeln!(
            sql,
            "INSERT INTO smsbus.route (id, position, enabled, condition, channel, function, weight) VALUES\n    {};",
            rows.join(",\n    ")
        );
        sql
    }

    fn usage_sql(&self) -> String {
        let mut sql = String::new();
        for c in self.channels.iter().filter(|c| c.used > 0) {
            let _ = writeln!(
                sql,
                "INSERT INTO smsbus.channel_usage (channel, day, routed) VALUES ({}, (now() AT TIME ZONE 'UTC')::date, {});",
                lit(c.name),
                c.used
            );
        }
        sql
    }

    /// What this test runs to set the rule set up in its database.
    fn apply_sql(&self) -> String {
        let mut sql = String::from(
            "DELETE FROM smsbus.route; DELETE FROM smsbus.block; DELETE FROM smsbus.channel_usage;\n",
        );
        for c in &self.channels {
            let _ = writeln!(
                sql,
                "UPDATE smsbus.channel SET enabled = {}, can_send = {}, daily_limit = {} WHERE name = {};",
                c.enabled,
                c.can_send,
                opt_num(c.daily_limit),
                lit(c.name)
            );
        }
        sql + &self.usage_sql() + &self.rule_sql()
    }

    /// The rule set as SQL for a fresh database with the extension.
    fn describe(&self) -> String {
        let rows: Vec<String> = self
            .channels
            .iter()
            .map(|c| {
                format!(
                    "({}, 'smpp', {}, {}, {})",
                    lit(c.name),
                    c.enabled,
                    c.can_send,
                    opt_num(c.daily_limit)
                )
            })
            .collect();
        format!(
            "-- style {:?}; the user's objects:{USER_OBJECTS}\
             INSERT INTO smsbus.channel (name, kind, enabled, can_send, daily_limit) VALUES\n    {};\n{}{}",
            self.style,
            rows.join(",\n    "),
            self.usage_sql(),
            self.rule_sql()
        )
    }

    fn route(&self, id: i64) -> Option<&Rule> {
        self.routes.iter().find(|r| r.id == id)
    }
}

#[derive(Clone, Debug)]
struct Message {
    to_address: &'static str,
    body: &'static str,
    from_address: Option<&'static str>,
    channel: Option<&'static str>,
    priority: i32,
    custom: Option<&'static str>,
    batch_id: Option<&'static str>,
}

impl Message {
    fn random(rng: &mut Rng) -> Message {
        Message {
            to_address: rng.pick(&ADDRESSES),
            body: rng.pick(&BODIES),
            from_address: rng.pick(&FROMS),
            channel: rng.chance(0.15).then(|| {
                if rng.chance(0.1) {
                    "ghost"
                } else {
                    rng.pick(&CHANNELS)
                }
            }),
            priority: rng.range(-1, 8) as i32,
            custom: rng.pick(&CUSTOMS),
            batch_id: rng.pick(&BATCHES),
        }
    }

    /// explain_route's argument; null columns are sometimes left out.
    fn json(&self, rng: &mut Rng) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("to_address".into(), self.to_address.into());
        o.insert("body".into(), self.body.into());
        if self.priority != 0 || rng.chance(0.5) {
            o.insert("priority".into(), self.priority.into());
        }
        let text = |v: Option<&str>| v.map_or(serde_json::Value::Null, Into::into);
        for (name, value) in [
            ("from_address", text(self.from_address)),
            ("channel", text(self.channel)),
            ("batch_id", text(self.batch_id)),
            (
                "custom",
                self.custom.map_or(serde_json::Value::Null, |c| {
                    serde_json::from_str(c).expect("custom is JSON")
                }),
            ),
        ] {
            if !value.is_null() || rng.chance(0.5) {
                o.insert(name.into(), value);
            }
        }
        serde_json::Value::Object(o)
    }
}

/// What came back for one message.
#[derive(Debug)]
struct Outcome {
    explained: Vec<String>,
    explain_error: Option<String>,
    rust: Vec<String>,
    insert: Insert,
    insert_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Insert {
    status: Option<String>,
    channel: Option<String>,
    routed_by: Option<String>,
    last_error: Option<String>,
}

fn insert(status: &str, channel: Option<&str>, by: Option<&str>, error: Option<&str>) -> Insert {
    Insert {
        status: Some(status.to_owned()),
        channel: channel.map(str::to_owned),
        routed_by: by.map(str::to_owned),
        last_error: error.map(str::to_owned),
    }
}

/// One row of explain_route: rule, matched, outcome.
struct Row<'a> {
    rule: &'a str,
    matched: Option<bool>,
    outcome: &'a str,
}

fn rows(explained: &[String]) -> Vec<Row<'_>> {
    explained
        .iter()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let rule = parts.next().unwrap_or_default();
            let matched = match parts.next().unwrap_or_default() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            };
            Row {
                rule,
                matched,
                outcome: parts.next().unwrap_or_default(),
            }
        })
        .collect()
}

/// "route 3 (position 10, weight 2)" -> 3; "block 2" -> 2.
fn rule_id(rule: &str, table: &str) -> Option<i64> {
    let rest = rule.strip_prefix(table)?.strip_prefix(' ')?;
    rest.split([' ', ':']).next()?.parse().ok()
}

/// "route 4: channel ..." -> the route's (position, id), to order the
/// reasons of skipped routes (routes sharing a position are tried in a
/// random order).
fn reason_order(set: &RuleSet, part: &str) -> (i32, i64) {
    let id = part
        .strip_prefix("route ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1);
    (set.route(id).map_or(i32::MAX, |r| r.position), id)
}

/// How a decision ended, for the coverage count.
fn decision_kind(set: &RuleSet, message: &Message, explained: &[String]) -> &'static str {
    let rows = rows(explained);
    let decision = rows.last().map_or("", |r| r.outcome);
    if decision.starts_with("refused: ") {
        "refused: unknown channel given"
    } else if decision.starts_with("blocked by ") {
        "blocked"
    } else if message.channel.is_some() {
        if decision.starts_with("queued on ") {
            "channel given, queued"
        } else {
            "channel given, not queued"
        }
    } else if let Some(rest) = decision.strip_prefix("failed: ") {
        let position = rule_id(rest, "route")
            .and_then(|id| set.route(id))
            .map(|r| r.position);
        let beside_a_taker = rows.iter().any(|row| {
            row.outcome.starts_with("match: ")
                && rule_id(row.rule, "route")
                    .and_then(|id| set.route(id))
                    .map(|r| r.position)
                    == position
        });
        if beside_a_taker {
            "function route failed beside a route that could take it"
        } else {
            "function route failed"
        }
    } else if decision.contains(" or on ") {
        "queued by weight"
    } else if decision.starts_with("queued on ") {
        "queued by a route"
    } else if decision == "dailylimit: every matching route was skipped" {
        "every match skipped, dailylimit"
    } else if decision == "nochannel: every matching route was skipped" {
        "every match skipped, nochannel"
    } else if decision.starts_with("round robin over ") {
        "round robin"
    } else if decision.starts_with("dailylimit: ") {
        "no route matched, dailylimit"
    } else {
        "no route matched, nochannel"
    }
}

/// Whether the INSERT did what explain decided; Err says how not.
fn agree(set: &RuleSet, message: &Message, outcome: &Outcome) -> Result<(), String> {
    if let Some(e) = &outcome.explain_error {
        return match &outcome.insert_error {
            Some(i) if i == e => Ok(()),
            Some(i) => Err(format!("explain failed ({e}), the INSERT otherwise ({i})")),
            None => Err(format!("explain failed ({e}), the INSERT did not")),
        };
    }
    let explained = rows(&outcome.explained);
    let Some(last) = explained.last().filter(|r| r.rule == "decision") else {
        return Err("explain has no decision row".into());
    };
    let decision = last.outcome;
    if let Some(e) = &outcome.insert_error {
        // "refused: unknown channel ..." is the INSERT's error.
        return if decision.strip_prefix("refused: ") == Some(e.as_str()) {
            Ok(())
        } else {
            Err(format!("the INSERT failed ({e}), explain did not"))
        };
    }
    if decision.starts_with("refused: ") {
        return Err("explain says the INSERT is refused; it was not".into());
    }
    let got = &outcome.insert;
    let given = message.channel;
    let expect = |expected: Insert| {
        if *got == expected {
            Ok(())
        } else {
            Err(format!("expected {expected:?}"))
        }
    };

    // Rust's evaluation of the built-in conditions against explain's.
    let rust: Vec<&str> = outcome.rust.iter().map(String::as_str).collect();
    // _first_match stops at a condition that raises; explain reads on.
    let rust_stopped = rust.iter().any(|r| r.starts_with("error: "));
    for row in &explained {
        if row.outcome.starts_with("not reached (it would raise: ") {
            if rust_stopped {
                // Where _first_match stopped: the rules after it are unknown.
                break;
            }
            continue;
        }
        let name = if let Some(id) = rule_id(row.rule, "block") {
            set.blocks
                .iter()
                .find(|b| b.id == id)
                .map(|b| (format!("block {id}"), b))
        } else if let Some(id) = rule_id(row.rule, "route") {
            set.route(id).map(|r| (format!("route {id}"), r))
        } else {
            None
        };
        let Some((name, rule)) = name else { continue };
        if rule.function.is_some() || rule.condition.kind != Kind::Builtin {
            continue;
        }
        if rust_stopped && rule.condition.text.contains(RAISES) {
            // Where _first_match stopped: the rules after it are unknown.
            break;
        }
        let in_rust = rust.contains(&name.as_str());
        if row.matched != Some(in_rust) {
            return Err(format!(
                "{name}: explain matched {:?}, smsbus._first_match {in_rust}",
                row.matched
            ));
        }
    }

    if let Some(rest) = decision.strip_prefix("blocked by block ") {
        let (id, reason) = rest.split_once(": ").unwrap_or((rest, ""));
        return expect(insert(
            "blocked",
            given,
            Some(&format!("block {id}")),
            Some(reason),
        ));
    }
    if let Some(given) = given {
        if decision == format!("queued on {given} (channel given; routes are not consulted)") {
            return expect(insert("queued", Some(given), Some("channel given"), None));
        }
        for status in ["dailylimit", "nochannel"] {
            if let Some(reason) = decision.strip_prefix(&format!("{status}: ")) {
                return expect(insert(
                    status,
                    Some(given),
                    Some("channel given"),
                    Some(reason),
                ));
            }
        }
        return Err("explain's decision for a message naming its channel is unknown".into());
    }
    if let Some(rest) = decision.strip_prefix("failed: ") {
        let by = rest.split(':').next().unwrap_or_default();
        return expect(insert("failed", None, Some(by), Some(rest)));
    }
    if let Some(rest) = decision.strip_prefix("queued on ") {
        // "X (route N)" then " or on Y (route M), by weight"...
        let candidates: Vec<(String, String)> = rest
            .split(" or on ")
            .map(|c| {
                let c = c.strip_suffix(", by weight").unwrap_or(c);
                let (channel, by) = c.split_once(" (").unwrap_or((c, ""));
                (channel.to_owned(), by.trim_end_matches(')').to_owned())
            })
            .collect();
        let picked = candidates
            .iter()
            .any(|(channel, by)| *got == insert("queued", Some(channel), Some(by), None));
        return if picked {
            Ok(())
        } else {
            Err(format!("expected queued on one of {candidates:?}"))
        };
    }
    for status in ["dailylimit", "nochannel"] {
        if decision == format!("{status}: every matching route was skipped") {
            let mut expected: Vec<String> = explained
                .iter()
                .filter_map(|row| {
                    let reason = row.outcome.strip_prefix("match, skipped: ")?;
                    Some(format!("route {}: {reason}", rule_id(row.rule, "route")?))
                })
                .collect();
            expected.sort_by_key(|p| reason_order(set, p));
            let mut parts: Vec<String> = got
                .last_error
                .as_deref()
                .unwrap_or_default()
                .split("; ")
                .map(str::to_owned)
                .collect();
            let in_position_order = parts
                .windows(2)
                .all(|w| reason_order(set, &w[0]).0 <= reason_order(set, &w[1]).0);
            parts.sort_by_key(|p| reason_order(set, p));
            let same = got.status.as_deref() == Some(status)
                && got.channel.is_none()
                && got.routed_by.is_none()
                && parts == expected
                && in_position_order;
            return if same {
                Ok(())
            } else {
                Err(format!(
                    "expected {status}, no channel, no routed_by, last_error the skipped routes in position order: {expected:?}"
                ))
            };
        }
    }
    if let Some(rest) = decision.strip_prefix("round robin over ") {
        let names: Vec<&str> = rest
            .strip_suffix(" (no route matched)")
            .unwrap_or(rest)
            .split(", ")
            .collect();
        let picked = names
            .iter()
            .any(|name| *got == insert("queued", Some(name), Some("round robin"), None));
        return if picked {
            Ok(())
        } else {
            Err(format!(
                "expected queued by round robin on one of {names:?}"
            ))
        };
    }
    if decision
        == "dailylimit: no route matched and every channel that can send reached its daily limit"
    {
        return expect(insert(
            "dailylimit",
            None,
            None,
            Some("no route matched and every channel that can send reached its daily limit"),
        ));
    }
    if decision == "nochannel: no route matched and no channel can send" {
        return expect(insert(
            "nochannel",
            None,
            None,
            Some("no route matched and no channel can send"),
        ));
    }
    Err("explain's decision is unknown".into())
}

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
