//! The two sides the queue's scenarios compare: smsbus's own tables and
//! functions, and bare tables with the same columns doing the same row
//! operations without triggers (the database's ceiling on this machine).

/// Which tables a run writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Smsbus,
    Bare,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Smsbus => "smsbus",
            Side::Bare => "bare",
        }
    }

    pub fn sql(self) -> &'static SideSql {
        match self {
            Side::Smsbus => &SMSBUS_SQL,
            Side::Bare => &BARE_SQL,
        }
    }
}

/// Which side goes first in a round: it alternates, so neither always runs
/// on the warmer cluster.
pub fn side_order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Bare, Side::Smsbus]
    } else {
        [Side::Smsbus, Side::Bare]
    }
}

/// The statements of one side. Each is one round trip; the claim returns
/// whole rows and the other steps a count, on both sides.
pub struct SideSql {
    pub message: &'static str,
    pub claim: &'static str,
    pub mark_sent: &'static str,
    pub reports: &'static str,
}

const SMSBUS_SQL: SideSql = SideSql {
    message: "smsbus.message",
    claim: "SELECT * FROM smsbus._claim($1, $2, $3, interval '5 minutes')",
    mark_sent: "SELECT smsbus._mark_sent($1, $2, $3, $4)",
    reports: "SELECT smsbus._apply_reports($1, $2, $3, $4)",
};

const BARE_SQL: SideSql = SideSql {
    message: "bench_bare.message",
    claim: "
        WITH picked AS (
            SELECT id FROM bench_bare.message
            WHERE status = 'queued' AND channel = $1 AND scheduled_at <= now()
            ORDER BY priority DESC, id
            LIMIT $3::int
            FOR UPDATE SKIP LOCKED
        )
        UPDATE bench_bare.message m
        SET status = 'sending', claimed_by = $2::text, claimed_until = now() + interval '5 minutes',
            attempts = m.attempts + 1, updated_at = now()
        FROM picked WHERE m.id = picked.id
        RETURNING m.*",
    mark_sent: "
        WITH u AS (
            SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[]) AS u(id, part, reference)
        ), parts AS (
            INSERT INTO bench_bare.message_part (message_id, part, channel, reference)
            SELECT u.id, u.part, $1::text, u.reference FROM u
        ), sent AS (
            UPDATE bench_bare.message m
            SET status = 'sent', reference = u.reference, sent_at = now(), updated_at = now(),
                claimed_by = NULL, claimed_until = NULL, last_error = NULL
            FROM u WHERE m.id = u.id AND u.part = 1 AND m.status = 'sending'
            RETURNING 1
        )
        SELECT count(*)::int FROM sent",
    reports: "
        WITH r AS (
            SELECT * FROM unnest($2::text[], $3::text[], $4::text[]) AS r(reference, status, detail)
        ), applied AS (
            UPDATE bench_bare.message_part p
            SET status = r.status, detail = r.detail, reported_at = now()
            FROM r WHERE p.channel = $1::text AND p.reference = r.reference
            RETURNING p.message_id
        ), delivered AS (
            UPDATE bench_bare.message m
            SET status = 'delivered', delivered_at = now(), updated_at = now()
            FROM (SELECT DISTINCT message_id FROM applied) a
            WHERE m.id = a.message_id AND m.status = 'sent'
        )
        SELECT count(*)::int FROM applied",
};

/// The bare side's tables: smsbus's columns, defaults for what the triggers
/// would compute (every bench message is queued and one segment), and only
/// the indexes the bare statements need (the claim's pick, the report lookup).
pub const BARE_SCHEMA: &str = "
    CREATE SCHEMA bench_bare;
    CREATE TABLE bench_bare.message (LIKE smsbus.message INCLUDING DEFAULTS INCLUDING IDENTITY);
    ALTER TABLE bench_bare.message
        ADD PRIMARY KEY (id),
        ALTER COLUMN status SET DEFAULT 'queued',
        ALTER COLUMN segments SET DEFAULT 1;
    CREATE INDEX ON bench_bare.message (channel, priority DESC, id) WHERE status = 'queued';
    CREATE TABLE bench_bare.message_part (LIKE smsbus.message_part INCLUDING DEFAULTS);
    ALTER TABLE bench_bare.message_part ADD PRIMARY KEY (message_id, part);
    CREATE INDEX ON bench_bare.message_part (channel, reference);
";
