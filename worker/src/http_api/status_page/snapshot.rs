//! One read of what the status page shows, as typed rows. Times come as
//! UTC text from the database, so the page needs no time zone handling.
//! Every query reads through indexes or small tables: the queue through
//! its partial indexes, the trace by message.

use tokio_postgres::{Client, Row};

use crate::statements::{self, params};

/// How many of the newest messages the page shows, with their trace.
pub const RECENT_MESSAGES: i64 = 10;

pub struct Snapshot {
    pub taken_at: String,
    pub channels: Vec<Channel>,
    pub queue: Vec<Depth>,
    pub messages: Vec<Recent>,
    pub webhooks: Vec<Webhook>,
    pub binds: Vec<Bind>,
}

pub struct Channel {
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub link: String,
    pub since: Option<String>,
    pub owner: Option<String>,
    pub rate: f32,
    pub window_in_use: i32,
    pub sent: i64,
    pub failed: i64,
    pub reports: i64,
    pub inbound: i64,
    pub last_error: Option<String>,
    pub queued: i64,
    pub sending: i64,
}

pub struct Depth {
    pub channel: Option<String>,
    pub status: String,
    pub messages: i64,
    pub oldest: String,
}

pub struct Recent {
    pub id: i64,
    pub created_at: String,
    pub direction: String,
    pub status: String,
    pub channel: Option<String>,
    pub account: Option<String>,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    pub segments: i32,
    pub trace: Vec<Step>,
}

pub struct Step {
    pub at: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub detail: Option<String>,
}

pub struct Webhook {
    pub id: i64,
    pub account: String,
    /// Scheme, host and path only: a query may carry a token.
    pub endpoint: String,
    pub enabled: bool,
    pub waiting: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub oldest: Option<String>,
    pub last_error: Option<String>,
}

pub struct Bind {
    pub account: String,
    pub server: String,
    pub worker: String,
    pub bind_type: String,
    pub peer: String,
    pub since: String,
    pub submitted: i64,
    pub refused: i64,
    pub throttled: i64,
    pub delivered: i64,
    pub window_in_use: i32,
}

/// `to_char` of a timestamptz column as UTC text.
macro_rules! utc {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
        )
    };
}

const CHANNELS: &str = concat!(
    "SELECT c.name, c.kind, c.enabled, c.link, ",
    utc!("s.since"),
    ", s.owner, coalesce(s.rate, 0), coalesce(s.window_in_use, 0),
            coalesce(s.sent, 0), coalesce(s.failed, 0), coalesce(s.reports, 0),
            coalesce(s.inbound, 0), c.last_error, c.queued, c.sending
     FROM smsbus.channel_overview c LEFT JOIN smsbus.channel_state s ON s.channel = c.name
     ORDER BY c.name"
);

const QUEUE: &str = concat!(
    "SELECT channel, status::text, count(*), ",
    utc!("min(created_at)"),
    " FROM smsbus.message
     WHERE status IN ('scheduled', 'queued', 'sending')
     GROUP BY channel, status ORDER BY channel, status"
);

const MESSAGES: &str = concat!(
    "SELECT id, ",
    utc!("created_at"),
    ", direction::text, status::text, channel, account, from_address, to_address, segments
     FROM smsbus.message ORDER BY id DESC LIMIT $1"
);

const TRACE: &str = concat!(
    "SELECT message_id, ",
    utc!("at"),
    ", from_status::text, to_status::text, actor, detail
     FROM smsbus.message_event WHERE message_id = ANY ($1) ORDER BY message_id, id"
);

/// Each account webhook, and the dlr-url callbacks of the Kannel and
/// Jasmin endpoints together in one row (id 0): there is one a message.
const WEBHOOKS: &str = concat!(
    "SELECT w.id, w.account,
            regexp_replace(w.url, '^([a-z]+://)(?:[^@/]*@)?([^?#]*).*$', '\\1\\2'),
            w.enabled,
            count(o.id) FILTER (WHERE NOT o.dead AND o.claimed_by IS NULL),
            count(o.id) FILTER (WHERE NOT o.dead AND o.claimed_by IS NOT NULL),
            count(o.id) FILTER (WHERE o.dead), ",
    utc!("min(o.created_at) FILTER (WHERE NOT o.dead)"),
    ", (SELECT e.last_error FROM smsbus.webhook_outbox e
        WHERE e.webhook_id = w.id AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1)
     FROM smsbus.webhook w LEFT JOIN smsbus.webhook_outbox o ON o.webhook_id = w.id
     WHERE w.message_id IS NULL
     GROUP BY w.id
     UNION ALL
     SELECT 0, '(callbacks)', 'dlr-url callbacks of ' || count(DISTINCT w.id) || ' messages', true,
            count(o.id) FILTER (WHERE NOT o.dead AND o.claimed_by IS NULL),
            count(o.id) FILTER (WHERE NOT o.dead AND o.claimed_by IS NOT NULL),
            count(o.id) FILTER (WHERE o.dead), ",
    utc!("min(o.created_at) FILTER (WHERE NOT o.dead)"),
    ", (SELECT e.last_error FROM smsbus.webhook_outbox e JOIN smsbus.webhook x ON x.id = e.webhook_id
        WHERE x.message_id IS NOT NULL AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1)
     FROM smsbus.webhook w LEFT JOIN smsbus.webhook_outbox o ON o.webhook_id = w.id
     WHERE w.message_id IS NOT NULL
     HAVING count(DISTINCT w.id) > 0
     ORDER BY 2, 1"
);

const BINDS: &str = concat!(
    "SELECT account, server, worker, bind_type, host(peer) || ':' || peer_port, ",
    utc!("since"),
    ", submitted, refused, throttled, delivered, window_in_use
     FROM smsbus.smpp_bind WHERE alive_until > now() ORDER BY account, since"
);

pub async fn read(client: &Client) -> Result<Snapshot, tokio_postgres::Error> {
    let taken_at: String = statements::query_one(client, concat!("SELECT ", utc!("now()")), &[])
        .await?
        .get(0);
    let channels = statements::query(client, CHANNELS, &[])
        .await?
        .iter()
        .map(|r| Channel {
            name: r.get(0),
            kind: r.get(1),
            enabled: r.get(2),
            link: r.get(3),
            since: r.get(4),
            owner: r.get(5),
            rate: r.get(6),
            window_in_use: r.get(7),
            sent: r.get(8),
            failed: r.get(9),
            reports: r.get(10),
            inbound: r.get(11),
            last_error: r.get(12),
            queued: r.get(13),
            sending: r.get(14),
        })
        .collect();
    let queue = statements::query(client, QUEUE, &[])
        .await?
        .iter()
        .map(|r| Depth {
            channel: r.get(0),
            status: r.get(1),
            messages: r.get(2),
            oldest: r.get(3),
        })
        .collect();
    let mut messages: Vec<Recent> = statements::query(client, MESSAGES, &params![RECENT_MESSAGES])
        .await?
        .iter()
        .map(|r| Recent {
            id: r.get(0),
            created_at: r.get(1),
            direction: r.get(2),
            status: r.get(3),
            channel: r.get(4),
            account: r.get(5),
            from_address: r.get(6),
            to_address: r.get(7),
            segments: r.get(8),
            trace: Vec::new(),
        })
        .collect();
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    for row in statements::query(client, TRACE, &params![ids]).await? {
        let id: i64 = row.get(0);
        if let Some(message) = messages.iter_mut().find(|m| m.id == id) {
            message.trace.push(step(&row));
        }
    }
    let webhooks = statements::query(client, WEBHOOKS, &[])
        .await?
        .iter()
        .map(|r| Webhook {
            id: r.get(0),
            account: r.get(1),
            endpoint: r.get(2),
            enabled: r.get(3),
            waiting: r.get(4),
            in_flight: r.get(5),
            dead: r.get(6),
            oldest: r.get(7),
            last_error: r.get(8),
        })
        .collect();
    let binds = statements::query(client, BINDS, &[])
        .await?
        .iter()
        .map(|r| Bind {
            account: r.get(0),
            server: r.get(1),
            worker: r.get(2),
            bind_type: r.get(3),
            peer: r.get(4),
            since: r.get(5),
            submitted: r.get(6),
            refused: r.get(7),
            throttled: r.get(8),
            delivered: r.get(9),
            window_in_use: r.get(10),
        })
        .collect();
    Ok(Snapshot {
        taken_at,
        channels,
        queue,
        messages,
        webhooks,
        binds,
    })
}

fn step(row: &Row) -> Step {
    Step {
        at: row.get(1),
        from_status: row.get(2),
        to_status: row.get(3),
        actor: row.get(4),
        detail: row.get(5),
    }
}
