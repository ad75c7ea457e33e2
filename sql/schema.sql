-- smsbus schema: types, tables, indexes and roles.
--
-- Installed by CREATE EXTENSION smsbus into schema smsbus (the control file
-- names it). Functions, triggers and views are in the other files of sql/,
-- which run after the Rust functions exist (extension/src/lib.rs says the
-- order).

-- Where a message is in its life; core/src/status.rs has the transitions
-- (docs/ARCHITECTURE.md#the-state-machine).
CREATE TYPE status AS ENUM (
    'scheduled', 'queued', 'sending', 'sent', 'failed', 'nochannel',
    'blocked', 'dailylimit', 'expired', 'received', 'delivered',
    'notdelivered', 'noreport', 'cancelled'
);

-- Where a message is with its triggers.
CREATE TYPE trigger_status AS ENUM (
    'none', 'pending', 'processing', 'processed', 'failed', 'notriggers', 'nomatch'
);

-- A connection to the outside world: an SMPP provider, a GSM modem or a REST
-- provider (HTTP).
CREATE TABLE channel (
    name        text PRIMARY KEY
                CONSTRAINT channel_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    kind        text NOT NULL CONSTRAINT channel_kind CHECK (kind IN ('smpp', 'gsm', 'http')),
    enabled     boolean NOT NULL DEFAULT true,
    can_send    boolean NOT NULL DEFAULT true,
    can_receive boolean NOT NULL DEFAULT true,
    -- Most messages the channel may send per day (null: no limit).
    daily_limit integer CONSTRAINT channel_daily_limit CHECK (daily_limit >= 0),
    -- Driver settings, credentials included: senders cannot read this column.
    config      jsonb NOT NULL DEFAULT '{}'
                CONSTRAINT channel_config_object CHECK (jsonb_typeof(config) = 'object'),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE channel IS 'SMPP providers and GSM modems; the worker follows changes live.';

-- What the worker knows about each channel right now.
CREATE TABLE channel_state (
    channel       text PRIMARY KEY REFERENCES channel (name) ON UPDATE CASCADE ON DELETE CASCADE,
    status        text NOT NULL DEFAULT 'disconnected'
                  CONSTRAINT channel_state_status CHECK (status IN
                      ('disconnected', 'connecting', 'connected', 'disconnecting', 'error')),
    owner         text,
    since         timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    submitted     bigint NOT NULL DEFAULT 0,
    sent          bigint NOT NULL DEFAULT 0,
    failed        bigint NOT NULL DEFAULT 0,
    reports       bigint NOT NULL DEFAULT 0,
    inbound       bigint NOT NULL DEFAULT 0,
    window_in_use integer NOT NULL DEFAULT 0,
    rate          real NOT NULL DEFAULT 0,
    detail        jsonb NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE channel_state IS 'Written by the worker: link status, owner and counters per channel.';

-- The outside clients of smsbus: applications that bind over SMPP (and,
-- later, call the HTTP API). Admins write them; the password is set with
-- smsbus.set_password and kept only as a salted argon2id hash, which no
-- smsbus role may read (sql/accounts.sql).
CREATE TABLE account (
    -- The SMPP system_id: at most 15 characters (a C-Octet String of 16).
    name            text PRIMARY KEY
                    CONSTRAINT account_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$'),
    enabled         boolean NOT NULL DEFAULT true,
    password_hash   text,
    -- The SMPP binds it may open.
    bind_types      text[] NOT NULL DEFAULT '{transmitter,receiver,transceiver}'
                    CONSTRAINT account_bind_types CHECK (
                        cardinality(bind_types) > 0
                        AND bind_types <@ ARRAY['transmitter', 'receiver', 'transceiver']),
    max_binds       integer NOT NULL DEFAULT 4 CONSTRAINT account_max_binds CHECK (max_binds >= 0),
    -- Where it may connect from (null: anywhere).
    allowed_ips     cidr[],
    -- A regular expression every source address it gives must match (null: any).
    allowed_sources text,
    -- The source address of its messages that give none.
    default_source  text,
    -- Submissions per second across its binds (null: no limit).
    throughput      real CONSTRAINT account_throughput CHECK (throughput > 0),
    -- Unanswered deliver_sm per bind.
    deliver_window  integer NOT NULL DEFAULT 10
                    CONSTRAINT account_deliver_window CHECK (deliver_window BETWEEN 1 AND 1000),
    -- Parts it may still send (null: no credit kept).
    credit          bigint CONSTRAINT account_credit CHECK (credit >= 0),
    -- Most messages it may submit per day, UTC (null: no limit).
    daily_limit     integer CONSTRAINT account_daily_limit CHECK (daily_limit >= 0),
    -- The channel its messages go to (null: the router chooses).
    channel         text REFERENCES channel (name) ON UPDATE CASCADE ON DELETE SET NULL,
    -- How it is told its messages' ids: decimal or hexadecimal.
    message_id_format text NOT NULL DEFAULT 'dec'
                    CONSTRAINT account_message_id_format CHECK (message_id_format IN ('dec', 'hex')),
    -- How long a delivery receipt waits for a receiver bind of the account.
    report_keep     interval NOT NULL DEFAULT '72 hours'
                    CONSTRAINT account_report_keep CHECK (report_keep > interval '0'),
    -- How a long inbound message goes to it: whole in message_payload, or
    -- in parts with a concatenation UDH or SAR TLVs.
    long_message    text NOT NULL DEFAULT 'payload'
                    CONSTRAINT account_long_message CHECK (long_message IN ('payload', 'udh', 'sar')),
    -- Receipts for a message sent in parts: one for the message, or one
    -- for each part with that part's own outcome.
    report_parts    text NOT NULL DEFAULT 'message'
                    CONSTRAINT account_report_parts CHECK (report_parts IN ('message', 'each')),
    -- Send its messages' parts on with the user data headers it gave them
    -- (message.client_parts), instead of the channel's own.
    keep_udh        boolean NOT NULL DEFAULT false,
    -- The database role its HTTP API requests run as (SET LOCAL ROLE), so
    -- grants and row security apply to them as to that role's own SQL.
    db_role         text CONSTRAINT account_db_role UNIQUE,
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE account IS 'Outside clients (SMPP binds): credentials as argon2id hashes, limits, defaults.';

-- The HTTP API's keys: an account's credentials for `Authorization:
-- Bearer`. smsbus.create_api_key makes one and shows it once; only its
-- SHA-256 is kept (a key is 256 random bits, so neither a salt nor a slow
-- hash would add anything), which no smsbus role may read
-- (sql/api_keys.sql).
CREATE TABLE api_key (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     text NOT NULL REFERENCES account (name) ON UPDATE CASCADE ON DELETE CASCADE,
    key_hash    bytea NOT NULL CONSTRAINT api_key_hash_unique UNIQUE,
    -- The key's first characters, to tell keys apart in lists and logs.
    prefix      text NOT NULL,
    -- What it may do: send (create and cancel messages), read (messages,
    -- channels, the queue), admin (the status page).
    scopes      text[] NOT NULL DEFAULT '{send,read}'
                CONSTRAINT api_key_scopes CHECK (
                    cardinality(scopes) > 0 AND scopes <@ ARRAY['send', 'read', 'admin']),
    -- Where it may be used from (null: anywhere).
    allowed_ips cidr[],
    -- Requests per second it may make on each worker (null: no limit).
    rate_limit  real CONSTRAINT api_key_rate_limit CHECK (rate_limit > 0),
    enabled     boolean NOT NULL DEFAULT true,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_key_account ON api_key (account);
COMMENT ON TABLE api_key IS 'HTTP API keys of accounts: SHA-256 of each key, scopes, address ranges.';

-- Webhooks: where an account's events go over HTTP (sql/webhooks.sql).
-- The secret signs each call (X-Smsbus-Signature, HMAC-SHA256); smsbus
-- must present it, so it is kept as given, in a column only admins and
-- the worker read.
CREATE TABLE webhook (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account       text NOT NULL REFERENCES account (name) ON UPDATE CASCADE ON DELETE CASCADE,
    url           text NOT NULL CONSTRAINT webhook_url CHECK (url ~ '^https?://[^[:space:]]+$'),
    -- Signs smsbus-style calls; compatibility callbacks are not signed.
    secret        text CONSTRAINT webhook_secret CHECK (length(secret) >= 16),
    -- status: every status change of its messages; report: delivered and
    -- notdelivered only; inbound: messages given to the account.
    events        text[] NOT NULL DEFAULT '{status,inbound}'
                  CONSTRAINT webhook_events CHECK (
                      cardinality(events) > 0 AND events <@ ARRAY['status', 'report', 'inbound']),
    enabled       boolean NOT NULL DEFAULT true,
    -- Calls in flight to it at once.
    concurrency   integer NOT NULL DEFAULT 4 CONSTRAINT webhook_concurrency CHECK (concurrency BETWEEN 1 AND 100),
    timeout_s     real NOT NULL DEFAULT 10 CONSTRAINT webhook_timeout CHECK (timeout_s > 0 AND timeout_s <= 120),
    -- How long an event is tried before it is kept as dead.
    retry_horizon interval NOT NULL DEFAULT '24 hours'
                  CONSTRAINT webhook_retry_horizon CHECK (retry_horizon > interval '0'),
    -- A callback of one message (the dlr-url of a Kannel or Jasmin send)
    -- instead of the account's messages: dropped once the message is done
    -- and its events are taken (_prune_callbacks).
    message_id    bigint,
    -- How a call looks: smsbus (signed JSON), kannel (the url with its
    -- %-escapes filled in), jasmin (the receipt as form fields, answered
    -- ACK/Jasmin).
    style         text NOT NULL DEFAULT 'smsbus'
                  CONSTRAINT webhook_style CHECK (style IN ('smsbus', 'kannel', 'jasmin')),
    method        text NOT NULL DEFAULT 'POST' CONSTRAINT webhook_method CHECK (method IN ('GET', 'POST')),
    -- Which reports a callback wants, as Kannel's dlr-mask: 1 delivered,
    -- 2 not delivered, 8 taken by the SMSC, 16 refused by it.
    report_mask   integer CONSTRAINT webhook_report_mask CHECK (report_mask BETWEEN 1 AND 31),
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_callback CHECK ((message_id IS NULL) = (style = 'smsbus')
                                       AND (style = 'smsbus') = (report_mask IS NULL)),
    CONSTRAINT webhook_signed CHECK (style <> 'smsbus' OR secret IS NOT NULL)
);
CREATE INDEX webhook_account ON webhook (account) WHERE enabled AND message_id IS NULL;
CREATE INDEX webhook_message ON webhook (message_id) WHERE message_id IS NOT NULL;
COMMENT ON TABLE webhook IS 'Where accounts'' events (status changes, reports, inbound messages) are sent over HTTP.';

-- Events on their way to a webhook, written in the transaction of the
-- change that caused them and deleted when the endpoint answered 2xx;
-- dead ones (past the retry horizon) are kept with their last error until
-- smsbus.retry_webhooks or an admin removes them.
CREATE TABLE webhook_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
    message_id      bigint NOT NULL,
    event           text NOT NULL,
    -- The body sent, as it was when the change happened.
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    dead            boolean NOT NULL DEFAULT false,
    claimed_by      text,
    claimed_until   timestamptz
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE NOT dead;
CREATE INDEX webhook_outbox_message ON webhook_outbox (webhook_id, message_id, id) WHERE NOT dead;
-- What is taken: a claim counts it per webhook without reading the backlog.
CREATE INDEX webhook_outbox_taken ON webhook_outbox (webhook_id) WHERE claimed_by IS NOT NULL AND NOT dead;
COMMENT ON TABLE webhook_outbox IS 'Webhook events waiting for their endpoint''s 2xx, in order per message; dead ones kept.';

-- Where applications bind to smsbus over SMPP. Every worker opens every
-- enabled listener (on one host they share the port: SO_REUSEPORT), so a
-- bound account may be served by any worker (worker/src/smpp_server/).
CREATE TABLE smpp_server (
    name            text PRIMARY KEY,
    enabled         boolean NOT NULL DEFAULT true,
    -- host:port, e.g. '0.0.0.0:2775' or '[::]:2776'.
    listen          text NOT NULL,
    -- PEM files on the workers' machines: both for TLS, neither for plain TCP.
    tls_cert_file   text,
    tls_key_file    text,
    CONSTRAINT smpp_server_tls CHECK ((tls_cert_file IS NULL) = (tls_key_file IS NULL)),
    -- The SMPP versions a bind may ask for.
    interface_versions text[] NOT NULL DEFAULT '{3.3,3.4,5.0}'
                    CONSTRAINT smpp_server_versions CHECK (
                        cardinality(interface_versions) > 0
                        AND interface_versions <@ ARRAY['3.3', '3.4', '5.0']),
    -- Seconds a connection may take to bind before it is closed.
    bind_timeout_s  integer NOT NULL DEFAULT 10 CONSTRAINT smpp_server_bind_timeout CHECK (bind_timeout_s > 0),
    -- Seconds of silence after which the server sends enquire_link.
    enquire_link_s  integer NOT NULL DEFAULT 30 CONSTRAINT smpp_server_enquire_link CHECK (enquire_link_s > 0),
    -- Seconds without a PDU from the client after which the session ends.
    inactivity_timeout_s integer NOT NULL DEFAULT 120
                    CONSTRAINT smpp_server_inactivity CHECK (inactivity_timeout_s > 0),
    -- Submissions a bind may have waiting for their submit_sm_resp;
    -- beyond it they are refused with ESME_RTHROTTLED.
    submit_window   integer NOT NULL DEFAULT 1000
                    CONSTRAINT smpp_server_submit_window CHECK (submit_window BETWEEN 1 AND 100000),
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE smpp_server IS 'SMPP listeners every worker opens, for accounts to bind to.';

-- The binds open now, on every worker: written by the workers, which
-- keep alive_until ahead of now while the bind is open. A row whose
-- alive_until passed belongs to a worker that died; it no longer counts
-- against max_binds and maintenance removes it.
CREATE TABLE smpp_bind (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account         text NOT NULL REFERENCES account (name) ON UPDATE CASCADE ON DELETE CASCADE,
    server          text NOT NULL,
    worker          text NOT NULL,
    -- transmitter, receiver or transceiver.
    bind_type       text NOT NULL,
    interface_version text NOT NULL,
    peer            inet NOT NULL,
    peer_port       integer NOT NULL,
    since           timestamptz NOT NULL DEFAULT now(),
    alive_until     timestamptz NOT NULL,
    -- Counters, written with alive_until.
    submitted       bigint NOT NULL DEFAULT 0,
    refused         bigint NOT NULL DEFAULT 0,
    throttled       bigint NOT NULL DEFAULT 0,
    delivered       bigint NOT NULL DEFAULT 0,
    -- Submissions waiting for their submit_sm_resp.
    window_in_use   integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE smpp_bind IS 'Open SMPP binds of accounts, on every worker.';
CREATE INDEX smpp_bind_account ON smpp_bind (account);

-- Messages each account submitted per day (UTC), counted only for
-- accounts with a daily_limit, in the transaction that accepts them
-- (_take_account_quota, sql/accounts.sql).
CREATE TABLE account_usage (
    account   text NOT NULL REFERENCES account (name) ON UPDATE CASCADE ON DELETE CASCADE,
    day       date NOT NULL,
    submitted bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account, day)
);
COMMENT ON TABLE account_usage IS 'Messages each account submitted per UTC day, for its daily_limit.';

-- What must reach an account's receiver binds as deliver_sm: delivery
-- receipts, written in the transaction that gave a message its final
-- status, and inbound messages given to the account, written when their
-- triggers ran (sql/smpp_outbox.sql); deleted only when a bind's
-- deliver_sm_resp said OK. A row keeps what its deliver_sm says: the
-- message may be archived before the account binds again.
CREATE TABLE smpp_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account         text NOT NULL REFERENCES account (name) ON UPDATE CASCADE ON DELETE CASCADE,
    message_id      bigint NOT NULL,
    -- 'receipt' (of an outbound message) or 'inbound' (the message itself).
    kind            text NOT NULL DEFAULT 'receipt'
                    CONSTRAINT smpp_outbox_kind CHECK (kind IN ('receipt', 'inbound')),
    -- The final status reported (received for an inbound message).
    status          status NOT NULL,
    -- The message's addresses: a receipt goes from its destination to its source.
    to_address      text,
    from_address    text,
    submitted_at    timestamptz NOT NULL,
    done_at         timestamptz NOT NULL,
    -- The error the receipt names (its err: field), 3 characters at most.
    error_code      text NOT NULL DEFAULT '000',
    -- The message's first 20 characters (the receipt's text: field).
    sample          text NOT NULL DEFAULT '',
    -- An inbound message's text, and its encoding (binary: 8-bit data in
    -- hexadecimal digits).
    body            text,
    encoding        text,
    -- The part a receipt is for (report_parts 'each'); null: the message.
    part            smallint,
    segments        integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    -- Times it went out without an OK, and when it may go again.
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- The lease of the worker whose bind is sending it.
    claimed_by      text,
    claimed_until   timestamptz
);
COMMENT ON TABLE smpp_outbox IS 'Delivery receipts and inbound messages waiting for a receiver bind of their account, until it acknowledges them.';
CREATE UNIQUE INDEX smpp_outbox_inbound ON smpp_outbox (message_id) WHERE kind = 'inbound';
CREATE INDEX smpp_outbox_account ON smpp_outbox (account, id);
CREATE INDEX smpp_outbox_expires ON smpp_outbox (expires_at);

-- The queue. Users write the first group of columns; the extension and the
-- worker write the rest.
CREATE TABLE message (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- written by users
    to_address      text,
    body            text NOT NULL,
    from_address    text,
    channel         text,
    priority        smallint NOT NULL DEFAULT 0,
    scheduled_at    timestamptz NOT NULL DEFAULT now(),
    valid_until     timestamptz,
    request_report  boolean NOT NULL DEFAULT true,
    encoding        text,
    custom          jsonb,
    batch_id        text,
    idempotency_key text,
    -- written by the system
    -- 'out' or 'in'.
    direction       text NOT NULL DEFAULT 'out',
    status          status NOT NULL,
    -- The status before the last update (equal to status when that update
    -- did not change it); lets the trace be written from the new rows alone.
    previous_status status,
    trigger_status  trigger_status NOT NULL DEFAULT 'none',
    segments        integer NOT NULL,
    to_ton          smallint,
    to_npi          smallint,
    from_ton        smallint,
    from_npi        smallint,
    reference       text,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    -- What chose the channel when the message last became due: 'route 4',
    -- 'round robin', 'channel given', or the 'block 2' that stopped it.
    routed_by       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz,
    received_at     timestamptz,
    claimed_by      text,
    claimed_until   timestamptz,
    -- The account that submitted it (over SMPP or HTTP); null for SQL.
    account         text,
    -- The delivery receipts its account asked for (SMPP registered_delivery):
    -- bits 1-0 1 every final outcome, 2 failures, 3 successes; bit 4 (16)
    -- an intermediate one when sent; null none.
    receipts        smallint,
    -- The parts a client sent it in, for an account that passes their user
    -- data headers through (account.keep_udh): [{"udh": hex, "chars": n}],
    -- in order, n the part's characters of body; null: channels cut their own.
    client_parts    jsonb
    -- No CHECK constraints: PostgreSQL compiles them again for every
    -- statement, a twentieth of a single-row INSERT. The row triggers
    -- check what they would: direction is 'out' or 'in', and an outbound
    -- message has a to_address (inbound ones may not know it).
);
COMMENT ON TABLE message IS 'The queue: INSERT to send; every row follows the state machine of smsbus.status.';

-- A repeated idempotency key never yields a second message.
CREATE UNIQUE INDEX message_idempotency_key ON message (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Partial indexes on the active statuses: a table of millions of finished
-- rows costs the hot paths nothing.
CREATE INDEX message_queued ON message (channel, priority DESC, id) WHERE status = 'queued';
CREATE INDEX message_scheduled ON message (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX message_sending ON message (claimed_until) WHERE status = 'sending';
-- Queued messages with a validity, for maintenance to expire those that
-- waited past it.
CREATE INDEX message_queued_validity ON message (valid_until)
    WHERE status = 'queued' AND valid_until IS NOT NULL;
CREATE INDEX message_awaiting_report ON message (sent_at) WHERE status = 'sent';
-- Messages armed for their triggers, or being run by a worker.
CREATE INDEX message_triggers ON message (id) WHERE trigger_status IN ('pending', 'processing');
CREATE INDEX message_batch ON message (batch_id) WHERE batch_id IS NOT NULL;
-- A received message the provider names (an HTTP channel's webhook) is
-- stored once, however often the provider posts it.
CREATE UNIQUE INDEX message_inbound_reference ON message (channel, reference)
    WHERE direction = 'in' AND reference IS NOT NULL;
CREATE INDEX message_finished ON message (updated_at)
    WHERE status NOT IN ('scheduled', 'queued', 'sending', 'sent');

-- Routing rules (docs/ARCHITECTURE.md#the-router; compiled into smsbus._router by
-- sql/router_compile.sql). A route sends the messages its condition matches to its
-- channel, or to the channel its function names; routes at one position
-- share the traffic by weight.
CREATE TABLE route (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    position    integer NOT NULL DEFAULT 100,
    enabled     boolean NOT NULL DEFAULT true,
    -- An SQL boolean expression over the message's columns.
    condition   text NOT NULL DEFAULT 'true',
    channel     text REFERENCES channel (name) ON UPDATE CASCADE,
    -- A function (smsbus.message) RETURNS text naming the channel, or null.
    function    text,
    weight      integer NOT NULL DEFAULT 1 CONSTRAINT route_weight CHECK (weight >= 1),
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT route_target CHECK ((channel IS NULL) <> (function IS NULL))
);
CREATE INDEX route_channel ON route (channel);
COMMENT ON TABLE route IS 'Routing rules: condition + channel, or a function naming the channel; first match by position.';

-- Blocking rules, checked before the routes: a match blocks the message.
CREATE TABLE block (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    enabled     boolean NOT NULL DEFAULT true,
    condition   text NOT NULL,
    reason      text NOT NULL DEFAULT 'blocked by a rule',
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE block IS 'Blocking rules: a message matching an enabled condition is blocked with its reason.';

-- Messages routed to each channel per day (UTC), counted only for channels
-- with a daily_limit: one row a day, incremented in the routing transaction.
CREATE TABLE channel_usage (
    channel text NOT NULL REFERENCES channel (name) ON UPDATE CASCADE ON DELETE CASCADE,
    day     date NOT NULL,
    routed  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, day)
);

-- What the router decides for one message.
CREATE TYPE _routing AS (status text, channel text, routed_by text, reason text);

-- The trace: one row per transition.
CREATE TABLE message_event (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    message_id  bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    from_status status,
    to_status   status NOT NULL,
    actor       text NOT NULL,
    detail      text,
    -- The login role of the session, when it named its actor itself
    -- (smsbus.actor, or a worker's application_name): who is behind
    -- 'worker:w1'. smsbus._actor() and _actor_login() give both.
    session_role text
);
-- One index, not a primary key on id beside it: every transition writes a
-- row here, and this key is both unique and the one the trace is read by.
CREATE UNIQUE INDEX message_event_message ON message_event (message_id, id);
ALTER TABLE message_event REPLICA IDENTITY USING INDEX message_event_message;
-- Events by time, for the status page's last hour: a BRIN index, as the
-- rows come in time order, costs an insert next to nothing.
CREATE INDEX message_event_at ON message_event USING brin (at) WITH (autosummarize = on);
COMMENT ON TABLE message_event IS 'Every status change of every message, with who made it and why.';

-- One row per submitted segment; delivery reports are matched on
-- (channel, reference).
CREATE TABLE message_part (
    message_id   bigint NOT NULL,
    part         smallint NOT NULL CONSTRAINT message_part_number CHECK (part >= 1),
    channel      text NOT NULL,
    reference    text NOT NULL,
    status       text NOT NULL DEFAULT 'sent'
                 CONSTRAINT message_part_status CHECK (status IN ('sent', 'delivered', 'notdelivered', 'enroute')),
    detail       text,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    reported_at  timestamptz,
    PRIMARY KEY (message_id, part)
);
CREATE INDEX message_part_reference ON message_part (channel, reference);

-- Delivery reports that arrived before their submit outcome was recorded
-- (the SMSC may answer faster than our batching writer); applied when it is.
CREATE TABLE pending_report (
    channel     text NOT NULL,
    reference   text NOT NULL,
    -- The id in the other base (dlr_id_format auto), also tried.
    alternate   text,
    status      text NOT NULL CONSTRAINT pending_report_status CHECK (status IN ('delivered', 'notdelivered', 'enroute')),
    detail      text,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_report_reference ON pending_report (channel, reference);
CREATE INDEX pending_report_alternate ON pending_report (channel, alternate) WHERE alternate IS NOT NULL;

-- Parts of concatenated inbound messages waiting for their siblings. Each
-- part is committed here before it is acknowledged to the peer; the last
-- one turns the set into one received message (smsbus._record_inbound_parts).
-- A set still incomplete after the timeout becomes a message with what
-- arrived, marked incomplete (smsbus._expire_inbound_parts).
CREATE TABLE inbound_part (
    channel     text NOT NULL,
    source      text NOT NULL,
    destination text NOT NULL,
    reference   integer NOT NULL,
    total       integer NOT NULL CONSTRAINT inbound_part_total CHECK (total BETWEEN 2 AND 255),
    seq         integer NOT NULL,
    body        text NOT NULL,
    custom      jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, source, destination, reference, total, seq),
    CONSTRAINT inbound_part_seq CHECK (seq BETWEEN 1 AND total)
);
CREATE INDEX inbound_part_received ON inbound_part (received_at);

-- Channels whose owner is idle and waiting for a NOTIFY. A NOTIFY makes its
-- committing transaction take a database-wide lock across the WAL flush, so
-- notifying on every INSERT serialises busy senders; instead a channel task
-- that finds its queue empty arms its row here, and the first statement that
-- queues work for it takes the row and notifies. Busy channels are never
-- armed and cost inserters nothing.
CREATE TABLE channel_wakeup (
    channel  text PRIMARY KEY,
    armed_at timestamptz NOT NULL DEFAULT now()
);

-- Finished messages moved out of the queue by smsbus.archive(), with
-- their parts and trace: partitioned by month (UTC) of the message's
-- created_at, the part's submitted_at and the event's at, so that
-- retention (archiving.keep) drops whole months instead of deleting rows.
-- The months are tables of their own, made by sql/archive.sql
-- (_archive_partitions) with their indexes: not members of the extension,
-- so pg_dump carries each with its rows, and no index here for a dump's
-- to collide with.
CREATE TABLE message_archive (LIKE message INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
CREATE TABLE message_part_archive (LIKE message_part INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (submitted_at);
CREATE TABLE message_event_archive (LIKE message_event INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (at);

-- When the worker archives (one row): finished messages unchanged for
-- older_than move to the archive, batch_size at a time (short
-- transactions beside the sending), looked for every `every`, and batch
-- after batch while a backlog lasts.
CREATE TABLE archiving (
    singleton  boolean PRIMARY KEY DEFAULT true CONSTRAINT archiving_one_row CHECK (singleton),
    enabled    boolean NOT NULL DEFAULT true,
    older_than interval NOT NULL DEFAULT interval '30 days'
               CONSTRAINT archiving_older_than CHECK (older_than >= interval '0'),
    batch_size integer NOT NULL DEFAULT 1000 CONSTRAINT archiving_batch_size CHECK (batch_size BETWEEN 1 AND 100000),
    every      interval NOT NULL DEFAULT interval '1 minute' CONSTRAINT archiving_every CHECK (every >= interval '0'),
    -- Written by the worker.
    last_run   timestamptz,
    last_moved bigint NOT NULL DEFAULT 0,
    -- How long the archive keeps a month (null: for ever): a month whose
    -- end is longer ago than this is dropped whole.
    keep       interval CONSTRAINT archiving_keep CHECK (keep > interval '0')
);
INSERT INTO archiving DEFAULT VALUES;
COMMENT ON TABLE archiving IS 'smsbus: when the worker moves finished messages to message_archive.';

-- An INSERT replaces the one row: a restored dump brings its settings
-- into a database whose CREATE EXTENSION already wrote the defaults.
CREATE FUNCTION _archiving_replace() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM smsbus.archiving;
    RETURN NEW;
END
$$;
CREATE TRIGGER archiving_replace BEFORE INSERT ON archiving
    FOR EACH ROW EXECUTE FUNCTION _archiving_replace();

-- Roles. They are cluster-wide, so another database's CREATE EXTENSION may
-- have made them already.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsbus_sender') THEN
        CREATE ROLE smsbus_sender NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsbus_admin') THEN
        CREATE ROLE smsbus_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsbus_worker') THEN
        CREATE ROLE smsbus_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsbus_rules') THEN
        CREATE ROLE smsbus_rules NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE smsbus_sender IS 'smsbus: may send messages and read them; cannot read channel credentials or change rules.';
COMMENT ON ROLE smsbus_admin IS 'smsbus: configures channels, routes and triggers.';
COMMENT ON ROLE smsbus_worker IS 'smsbus: the role smsbus-worker logs in with (grant it to a login role).';
COMMENT ON ROLE smsbus_rules IS 'smsbus: owns the compiled routing rules, which run with smsbus_admin''s rights; grant it to no one.';
-- The compiled rules run with the rights of smsbus_admin, whoever inserts;
-- their owner is a role of its own, so that no admin can replace them.
GRANT smsbus_admin TO smsbus_rules;

GRANT USAGE ON SCHEMA smsbus TO smsbus_sender, smsbus_admin, smsbus_worker;

-- Senders: write messages, read messages and their trace, see channels
-- without their config.
GRANT SELECT ON message TO smsbus_sender;
GRANT INSERT (to_address, body, from_address, channel, priority, scheduled_at, valid_until,
              request_report, encoding, custom, batch_id, idempotency_key)
    ON message TO smsbus_sender;
GRANT SELECT ON message_event, message_part, message_archive, message_part_archive, message_event_archive,
    channel_state
    TO smsbus_sender;
GRANT SELECT (name, kind, enabled, can_send, can_receive, daily_limit, description, created_at, updated_at)
    ON channel TO smsbus_sender;
GRANT SELECT ON channel_usage TO smsbus_sender;

-- Admins: configure channels, rules and archiving; read and correct
-- messages; read what the system records. No role gets TRIGGER, TRUNCATE
-- or REFERENCES on any smsbus table: the system writes some of them in the
-- owner context, where a trigger of someone else's would run with the
-- owner's rights (README: Security model). smsbus.trigger is where
-- admins attach code to messages.
GRANT SELECT, INSERT, UPDATE, DELETE ON channel, route, block, archiving, message, smpp_server TO smsbus_admin;
-- Accounts: everything but the password's hash, which only
-- smsbus.set_password writes and smsbus._verify_password reads.
GRANT SELECT (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, report_keep, long_message, report_parts, keep_udh, description,
              created_at, updated_at),
      INSERT (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, report_keep, long_message, report_parts, keep_udh,
              description),
      UPDATE (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, report_keep, long_message, report_parts, keep_udh,
              description),
      DELETE
    ON account TO smsbus_admin;
GRANT SELECT ON channel_state, message_event, message_part, pending_report, inbound_part, channel_wakeup,
    smpp_bind
    TO smsbus_admin;
GRANT SELECT, DELETE ON smpp_outbox TO smsbus_admin;
-- API keys: everything but the hash; new keys only by smsbus.create_api_key.
GRANT SELECT (id, account, prefix, scopes, allowed_ips, rate_limit, enabled, description, created_at),
      UPDATE (scopes, allowed_ips, rate_limit, enabled, description),
      DELETE
    ON api_key TO smsbus_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook TO smsbus_admin;
GRANT SELECT, DELETE ON webhook_outbox TO smsbus_admin;
GRANT SELECT ON webhook TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_outbox TO smsbus_worker;
GRANT SELECT, UPDATE, DELETE ON account_usage TO smsbus_admin;
GRANT SELECT, UPDATE, DELETE ON channel_usage TO smsbus_admin;
GRANT SELECT, DELETE ON message_archive, message_part_archive TO smsbus_admin;
GRANT SELECT ON message_event_archive TO smsbus_admin;

-- The worker: runs the queue.
GRANT SELECT ON channel, smpp_server TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON smpp_bind TO smsbus_worker;
GRANT SELECT (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, report_keep, long_message, report_parts, keep_udh,
              updated_at)
    ON account TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON smpp_outbox TO smsbus_worker;
-- Submissions over SMPP take the account's credit and count against its daily limit.
GRANT UPDATE (credit) ON account TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON account_usage TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE ON message TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON channel_state, message_part, pending_report, channel_wakeup,
    inbound_part TO smsbus_worker;
GRANT SELECT, DELETE ON channel_usage TO smsbus_worker;
GRANT SELECT, INSERT ON message_event TO smsbus_worker;
GRANT SELECT, INSERT, DELETE ON message_archive, message_part_archive TO smsbus_worker;
GRANT SELECT ON message_event_archive TO smsbus_worker;
GRANT SELECT, UPDATE (last_run, last_moved) ON archiving TO smsbus_worker;
GRANT DELETE ON message TO smsbus_worker;
