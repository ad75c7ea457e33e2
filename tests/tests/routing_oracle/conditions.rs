//! Random rule conditions: built-in only, calling a user function, or a
//! subquery, each with the kind the compiled router must give it.

use super::fixtures::{Rng, ADDRESSES};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Kind {
    Builtin,
    Simple,
    Query,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Builtin => "builtin",
            Kind::Simple => "simple",
            Kind::Query => "query",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Cond {
    pub(crate) text: String,
    pub(crate) kind: Kind,
}

pub(crate) fn cond(text: String, kind: Kind) -> Cond {
    Cond { text, kind }
}

/// A condition of one test; `builtin_only` leaves out those calling user
/// functions or holding subqueries.
pub(crate) fn atom(rng: &mut Rng, builtin_only: bool) -> Cond {
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

pub(crate) fn condition(rng: &mut Rng, depth: u32, builtin_only: bool) -> Cond {
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
pub(crate) enum Style {
    Rust,
    PlPgSql,
    Mixed,
}

pub(crate) fn wrapped(rng: &mut Rng, style: Style, c: Cond) -> Cond {
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
