//! Random rule sets (channels, blocks, routes with positions and weights)
//! and messages, and the SQL that installs them.

use std::fmt::Write as _;

use super::conditions::{atom, cond, condition, wrapped, Cond, Kind, Style};
use super::fixtures::{
    Rng, ADDRESSES, BATCHES, BODIES, CHANNELS, CUSTOMS, FROMS, RAISES, ROUTE_FUNCTIONS,
    USER_OBJECTS,
};

#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub(crate) name: &'static str,
    pub(crate) enabled: bool,
    pub(crate) can_send: bool,
    pub(crate) daily_limit: Option<i32>,
    /// Routed today already (channel_usage).
    pub(crate) used: i32,
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) id: i64,
    pub(crate) enabled: bool,
    pub(crate) condition: Cond,
    /// Blocks: the reason; routes: unused.
    pub(crate) reason: String,
    pub(crate) position: i32,
    pub(crate) channel: Option<&'static str>,
    pub(crate) function: Option<&'static str>,
    pub(crate) weight: i32,
}

pub(crate) struct RuleSet {
    pub(crate) style: Style,
    pub(crate) channels: Vec<Channel>,
    pub(crate) blocks: Vec<Rule>,
    pub(crate) routes: Vec<Rule>,
}

pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn opt_lit(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_owned(), lit)
}

pub(crate) fn opt_num(n: Option<i32>) -> String {
    n.map_or_else(|| "NULL".to_owned(), |n| n.to_string())
}

impl RuleSet {
    /// The rule sets every run begins with, so each compiled shape and
    /// each kind of decision occurs whatever the seed: all built-in rules
    /// (blocks and routes in one Rust call, then failover in Rust),
    /// routes sharing a position with a function route that raises, and
    /// every channel at its daily limit.
    pub(crate) fn pinned(k: usize) -> RuleSet {
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

    pub(crate) fn random(rng: &mut Rng) -> RuleSet {
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

    pub(crate) fn rule_sql(&self) -> String {
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

    pub(crate) fn usage_sql(&self) -> String {
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
    pub(crate) fn apply_sql(&self) -> String {
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
    pub(crate) fn describe(&self) -> String {
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

    pub(crate) fn route(&self, id: i64) -> Option<&Rule> {
        self.routes.iter().find(|r| r.id == id)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub(crate) to_address: &'static str,
    pub(crate) body: &'static str,
    pub(crate) from_address: Option<&'static str>,
    pub(crate) channel: Option<&'static str>,
    pub(crate) priority: i32,
    pub(crate) custom: Option<&'static str>,
    pub(crate) batch_id: Option<&'static str>,
}

impl Message {
    pub(crate) fn random(rng: &mut Rng) -> Message {
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
    pub(crate) fn json(&self, rng: &mut Rng) -> serde_json::Value {
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
