-- smsbus SMPP outbox: what must reach an account's receiver binds
-- (schema.sql has the table): delivery receipts of the messages it
-- submitted, and inbound messages given to it. The statement that gives a
-- message its final status writes its receipt here, in the same
-- transaction (the trace's statement trigger, extension/src/message_trace.rs,
-- calls _queue_receipts); an inbound message whose trigger gave it to an
-- account is written when its triggers have run (_queue_inbound, called
-- by the worker's trigger runner). A receiver bind of the account, on any
-- worker, takes rows in order under a lease (_claim_outbox), sends them as
-- deliver_sm, and deletes each only when the client acknowledged it
-- (_outbox_acknowledged). Unacknowledged ones go back with a backoff
-- (_outbox_returned); maintenance drops those past expires_at.

-- Writes the receipts that messages `p_ids` are owed for their status now
-- (their account asked for them: every final outcome, failures only, or
-- successes only; and, with bit 4 of registered_delivery, an intermediate
-- one when the provider took the message), one for each part submitted
-- where the account asks (report_parts 'each'), and wakes the accounts'
-- binds. Runs in the owner context, for whoever changed the messages.
CREATE FUNCTION _queue_receipts(p_ids bigint[]) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    WITH outcome AS (
        -- One row per message, or per part for an account that asks
        -- (report_parts 'each'): a part's own report where it had one,
        -- else the message's status (noreport, expired, failed).
        SELECT m.account, m.id, p.part,
               CASE p.status WHEN 'delivered' THEN 'delivered'::smsbus.status
                             WHEN 'notdelivered' THEN 'notdelivered'::smsbus.status
                             ELSE m.status END AS status,
               m.to_address, m.from_address, m.created_at,
               coalesce(p.reported_at, m.delivered_at, m.updated_at) AS done_at,
               CASE WHEN p.status IN ('delivered', 'notdelivered') THEN p.detail ELSE m.last_error END AS error,
               left(m.body, 20) AS sample, m.segments, m.receipts, now() + a.report_keep AS expires_at
        FROM smsbus.message m
        JOIN smsbus.account a ON a.name = m.account
        LEFT JOIN smsbus.message_part p
               ON p.message_id = m.id AND a.report_parts = 'each' AND m.status <> 'sent'
        WHERE m.id = ANY (p_ids)
    ), queued AS (
        INSERT INTO smsbus.smpp_outbox (account, message_id, part, status, to_address, from_address, submitted_at,
                                        done_at, error_code, sample, segments, expires_at)
        SELECT o.account, o.id, o.part, o.status, o.to_address, o.from_address, o.created_at, o.done_at,
               CASE WHEN o.status = 'delivered' THEN '000'
                    ELSE coalesce(substring(o.error FROM 'err:([0-9A-Za-z]{1,3})'), '000') END,
               o.sample, o.segments, o.expires_at
        FROM outcome o
        WHERE CASE WHEN o.status = 'sent' THEN o.receipts & 16 <> 0
                   ELSE CASE o.receipts & 3
                            WHEN 1 THEN true
                            WHEN 2 THEN o.status <> 'delivered'
                            WHEN 3 THEN o.status = 'delivered'
                            ELSE false
                        END
              END
        ORDER BY o.id, o.part
        RETURNING account
    )
    SELECT count(pg_notify('smsbus_smpp_outbox', q.account))
    FROM (SELECT DISTINCT account FROM queued) q
$$;

-- Writes the deliver_sm that inbound message p_id is owed, if it was given
-- to an account (a trigger sets message.account) and is not already
-- waiting; the worker calls it when the message's triggers have run.
CREATE FUNCTION _queue_inbound(p_id bigint) RETURNS void
LANGUAGE sql
AS $$
    WITH queued AS (
        INSERT INTO smsbus.smpp_outbox AS o (kind, account, message_id, status, to_address, from_address,
                                             submitted_at, done_at, body, encoding, segments, expires_at)
        SELECT 'inbound', m.account, m.id, m.status, m.to_address, m.from_address,
               coalesce(m.received_at, m.created_at), now(), m.body,
               -- Channels mark the 8-bit data they received in custom.
               CASE WHEN m.custom @> '{"binary": true}' THEN 'binary' ELSE m.encoding END,
               m.segments, now() + a.report_keep
        FROM smsbus.message m
        JOIN smsbus.account a ON a.name = m.account
        WHERE m.id = p_id AND m.direction = 'in'
        ON CONFLICT (message_id) WHERE kind = 'inbound' DO NOTHING
        RETURNING o.account
    )
    SELECT count(pg_notify('smsbus_smpp_outbox', q.account)) FROM queued q
$$;

-- Takes up to p_limit of an account's rows that are due and not leased to
-- a bind, oldest first, for p_lease.
CREATE FUNCTION _claim_outbox(p_account text, p_worker text, p_limit integer, p_lease interval)
RETURNS TABLE (id bigint, kind text, message_id bigint, status text, to_address text, from_address text,
               submit_date text, done_date text, error_code text, sample text, body text, encoding text,
               segments integer, part smallint, attempts integer)
LANGUAGE sql
AS $$
    UPDATE smsbus.smpp_outbox o
    SET claimed_by = p_worker, claimed_until = now() + p_lease, attempts = o.attempts + 1
    FROM (SELECT x.id FROM smsbus.smpp_outbox x
          WHERE x.account = p_account AND x.next_attempt_at <= now() AND x.expires_at > now()
            AND (x.claimed_until IS NULL OR x.claimed_until < now())
          ORDER BY x.id
          LIMIT p_limit
          FOR UPDATE SKIP LOCKED) c
    WHERE o.id = c.id
    RETURNING o.id, o.kind, o.message_id, o.status::text, o.to_address, o.from_address,
              to_char(o.submitted_at AT TIME ZONE 'UTC', 'YYMMDDHH24MI'),
              to_char(o.done_at AT TIME ZONE 'UTC', 'YYMMDDHH24MI'),
              o.error_code, o.sample, o.body, o.encoding, o.segments, o.part, o.attempts
$$;

-- Receipts a client acknowledged (deliver_sm_resp OK): they are done.
CREATE FUNCTION _outbox_acknowledged(p_ids bigint[]) RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM smsbus.smpp_outbox o WHERE o.id = ANY (p_ids) RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- Receipts a bind took but could not hand over (refused, unanswered, or
-- its session ended): free again after their delay, with the reason.
CREATE FUNCTION _outbox_returned(p_worker text, p_ids bigint[], p_errors text[], p_delays_s real[])
RETURNS integer
LANGUAGE sql
AS $$
    WITH back AS (
        UPDATE smsbus.smpp_outbox o
        SET claimed_by = NULL, claimed_until = NULL,
            next_attempt_at = now() + make_interval(secs => r.delay_s),
            last_error = coalesce(r.error, o.last_error)
        FROM unnest(p_ids, p_errors, p_delays_s) AS r(id, error, delay_s)
        WHERE o.id = r.id AND o.claimed_by = p_worker
        RETURNING 1
    )
    SELECT count(*)::integer FROM back
$$;

-- At a worker's start: the receipts a previous run of it had taken go
-- back at once, instead of when their lease passes.
CREATE FUNCTION _release_outbox(p_worker text) RETURNS integer
LANGUAGE sql
AS $$
    WITH back AS (
        UPDATE smsbus.smpp_outbox o SET claimed_by = NULL, claimed_until = NULL
        WHERE o.claimed_by = p_worker
        RETURNING 1
    )
    SELECT count(*)::integer FROM back
$$;

-- Maintenance: receipts no bind of their account took in time.
CREATE FUNCTION _expire_outbox() RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM smsbus.smpp_outbox o WHERE o.expires_at <= now() RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

GRANT EXECUTE ON FUNCTION _queue_inbound(bigint), _claim_outbox(text, text, integer, interval),
    _outbox_acknowledged(bigint[]),
    _outbox_returned(text, bigint[], text[], real[]), _release_outbox(text), _expire_outbox()
    TO smsbus_worker;
