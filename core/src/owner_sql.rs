//! The SQL statements the extension runs with its tables' owner's rights
//! (the owner context, `extension/src/owner.rs`), whoever set them off.
//!
//! Each names every function, operator and type with its schema:
//! `pg_catalog.count(...)`, `OPERATOR(pg_catalog.=)`, `::pg_catalog.text[]`.
//! The extension also plans them under a fixed `search_path`, but a
//! qualified name cannot be stood in for whatever the path says — not by a
//! caller's `myschema.pg_notify(text, text)`, nor by a better-matching
//! overload in any schema. Constructs that look an operator up by its bare
//! name (`IN`, `BETWEEN`, `LIKE`, `NULLIF`, `IS DISTINCT FROM`) are not
//! used. The test below checks every statement listed in [`ALL`].

/// Takes the armed wake-up rows of the channels in `$1` (text[]) and
/// notifies their owners on `smsbus_queue`.
pub const WAKE: &str = "
    WITH taken AS (
        DELETE FROM smsbus.channel_wakeup w
        WHERE w.channel OPERATOR(pg_catalog.=) ANY (
            SELECT x.channel FROM smsbus.channel_wakeup x
            WHERE x.channel OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])
            FOR UPDATE SKIP LOCKED)
        RETURNING w.channel
    )
    SELECT pg_catalog.count(pg_catalog.pg_notify('smsbus_queue', t.channel)) FROM taken t";

/// Counts one routed message against channel `$1`'s daily limit `$2`
/// (int4) for today (UTC); returns a row when it was under the limit. The
/// WHERE makes taking the last unit and refusing the next one atomic under
/// concurrent inserts.
pub const TAKE_QUOTA: &str = "
    INSERT INTO smsbus.channel_usage AS u (channel, day, routed)
    VALUES ($1, (pg_catalog.now() AT TIME ZONE 'UTC')::pg_catalog.date, 1)
    ON CONFLICT (channel, day) DO UPDATE SET routed = u.routed OPERATOR(pg_catalog.+) 1
    WHERE u.routed OPERATOR(pg_catalog.<) $2
    RETURNING u.routed";

/// Writes the delivery receipts owed to accounts for the messages `$1`
/// (int8[]) that reached a final status (sql/smpp_outbox.sql).
pub const QUEUE_RECEIPTS: &str = "SELECT smsbus._queue_receipts($1::pg_catalog.int8[])";

/// Writes the webhook events owed to accounts for the messages `$1`
/// (int8[]) whose status changed (sql/webhooks.sql).
pub const QUEUE_WEBHOOKS: &str = "SELECT smsbus._queue_webhooks($1::pg_catalog.int8[])";

/// Every owner-context statement, by name.
pub const ALL: &[(&str, &str)] = &[
    ("WAKE", WAKE),
    ("TAKE_QUOTA", TAKE_QUOTA),
    ("QUEUE_RECEIPTS", QUEUE_RECEIPTS),
    ("QUEUE_WEBHOOKS", QUEUE_WEBHOOKS),
];

/// What makes a statement unsafe to run in the owner context: the first
/// name that is resolved through `search_path`, or None.
pub fn unqualified_name(sql: &str) -> Option<String> {
    let tokens = tokenize(sql);
    // Keywords that may stand before "(": not function calls.
    const BEFORE_PAREN: &[&str] = &[
        "any", "all", "values", "exists", "operator", "as", "conflict", "from", "in", "select",
    ];
    // Constructs that look up an operator by its bare name.
    const BARE_OPERATOR_KEYWORDS: &[&str] =
        &["in", "between", "like", "ilike", "similar", "nullif"];
    for (i, token) in tokens.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| tokens[p].as_str());
        let next = tokens.get(i + 1).map(String::as_str);
        let lower = token.to_ascii_lowercase();
        if is_identifier(token) {
            if BARE_OPERATOR_KEYWORDS.contains(&lower.as_str())
                || (lower == "distinct" && previous.is_some_and(|p| p.eq_ignore_ascii_case("is")))
            {
                return Some(token.clone());
            }
            let call = next == Some("(");
            let alias = previous.is_some_and(|p| p.eq_ignore_ascii_case("as"));
            let insert_target = tokens
                .get(i.wrapping_sub(2))
                .is_some_and(|t| t.eq_ignore_ascii_case("as"));
            if call
                && !BEFORE_PAREN.contains(&lower.as_str())
                && !alias
                && !insert_target
                && !token.contains('.')
            {
                return Some(token.clone());
            }
            if previous == Some("::") && !token.contains('.') {
                return Some(format!("::{token}"));
            }
        } else if is_operator(token) {
            let inside_operator = previous == Some(".")
                || tokens
                    .get(i.wrapping_sub(2))
                    .is_some_and(|t| t == "pg_catalog");
            // `SET column = value` assigns; it resolves no operator.
            let assignment = token == "="
                && tokens
                    .get(i.wrapping_sub(2))
                    .is_some_and(|t| t.eq_ignore_ascii_case("set"));
            // `count(*)`, `SELECT *`, `t.*`.
            let star = token == "*"
                && (previous
                    .is_some_and(|p| p == "(" || p == "." || p.eq_ignore_ascii_case("select")));
            if !inside_operator && !assignment && !star {
                return Some(token.clone());
            }
        }
    }
    None
}

fn is_identifier(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '"')
}

fn is_operator(token: &str) -> bool {
    token != "::" && token.chars().all(|c| "+-*/<>=~!@#%^&|`?".contains(c))
}

/// Splits SQL into identifiers (with their dots: `pg_catalog.count`),
/// numbers, parameters, string literals (one token each), punctuation and
/// runs of operator characters; comments are dropped.
fn tokenize(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            i += 1;
            while i < chars.len() {
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            if c == '"' {
                // A quoted identifier, possibly qualified: "a"."b".
                while i < chars.len() && chars[i] == '.' {
                    i += 1;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                if chars[i] == '.'
                    && !chars
                        .get(i + 1)
                        .is_some_and(|n| n.is_alphabetic() || *n == '_')
                {
                    break;
                }
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else if is_operator(&c.to_string()) {
            while i < chars.len() && is_operator(&chars[i].to_string()) {
                i += 1;
            }
        } else {
            i += 1;
        }
        tokens.push(chars[start..i].iter().collect());
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_owner_statement_names_its_functions_operators_and_types_with_their_schema() {
        for (name, sql) in ALL {
            assert_eq!(
                unqualified_name(sql),
                None,
                "{name} resolves a name through search_path"
            );
        }
    }

    #[test]
    fn the_check_finds_what_search_path_would_resolve() {
        for (sql, found) in [
            ("SELECT count(pg_notify('a', 'b'))", "count"),
            ("SELECT pg_catalog.count(pg_notify('a', 'b'))", "pg_notify"),
            ("SELECT 1 WHERE a = b", "="),
            ("SELECT 1 WHERE a OPERATOR(pg_catalog.=) b OR c < d", "<"),
            ("SELECT $1::text[]", "::text"),
            ("SELECT 1 WHERE a IN (1, 2)", "IN"),
            ("SELECT 1 WHERE a IS DISTINCT FROM b", "DISTINCT"),
            ("SELECT nullif(a, b)", "nullif"),
            ("SELECT x || y", "||"),
        ] {
            assert_eq!(unqualified_name(sql).as_deref(), Some(found), "{sql}");
        }
        for sql in [
            "SELECT pg_catalog.count(*) FROM smsbus.message m WHERE m.id OPERATOR(pg_catalog.=) $1",
            "UPDATE smsbus.t SET a = 1 WHERE b OPERATOR(pg_catalog.<>) 'x = y' -- a = b",
            "WITH t AS (SELECT 1) SELECT t.* FROM t",
        ] {
            assert_eq!(unqualified_name(sql), None, "{sql}");
        }
    }
}
