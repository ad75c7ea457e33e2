//! What explain_route said against what the INSERT did: the decision's
//! kind, and every way the two must agree.

use super::conditions::Kind;
use super::fixtures::RAISES;
use super::rule_set::{Message, RuleSet};

/// What came back for one message.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) explained: Vec<String>,
    pub(crate) explain_error: Option<String>,
    pub(crate) rust: Vec<String>,
    pub(crate) insert: Insert,
    pub(crate) insert_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Insert {
    pub(crate) status: Option<String>,
    pub(crate) channel: Option<String>,
    pub(crate) routed_by: Option<String>,
    pub(crate) last_error: Option<String>,
}

pub(crate) fn insert(
    status: &str,
    channel: Option<&str>,
    by: Option<&str>,
    error: Option<&str>,
) -> Insert {
    Insert {
        status: Some(status.to_owned()),
        channel: channel.map(str::to_owned),
        routed_by: by.map(str::to_owned),
        last_error: error.map(str::to_owned),
    }
}

/// One row of explain_route: rule, matched, outcome.
pub(crate) struct Row<'a> {
    pub(crate) rule: &'a str,
    pub(crate) matched: Option<bool>,
    pub(crate) outcome: &'a str,
}

pub(crate) fn rows(explained: &[String]) -> Vec<Row<'_>> {
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
pub(crate) fn rule_id(rule: &str, table: &str) -> Option<i64> {
    let rest = rule.strip_prefix(table)?.strip_prefix(' ')?;
    rest.split([' ', ':']).next()?.parse().ok()
}

/// "route 4: channel ..." -> the route's (position, id), to order the
/// reasons of skipped routes (routes sharing a position are tried in a
/// random order).
pub(crate) fn reason_order(set: &RuleSet, part: &str) -> (i32, i64) {
    let id = part
        .strip_prefix("route ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1);
    (set.route(id).map_or(i32::MAX, |r| r.position), id)
}

/// How a decision ended, for the coverage count.
pub(crate) fn decision_kind(
    set: &RuleSet,
    message: &Message,
    explained: &[String],
) -> &'static str {
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
pub(crate) fn agree(set: &RuleSet, message: &Message, outcome: &Outcome) -> Result<(), String> {
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
