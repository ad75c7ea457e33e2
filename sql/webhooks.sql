-- smsbus webhooks: an account's events over HTTP (schema.sql has the
-- tables). The statement that changes an account's messages writes their
-- events to smsbus.webhook_outbox in its own transaction
-- (_queue_webhooks, from the trace trigger in the owner context); the
-- trigger runner writes an inbound message's when its chain ends. The
-- worker takes due events under a lease, in order per message, posts
-- them signed, deletes each on a 2xx, and backs off otherwise until the
-- webhook's retry horizon, after which the event is kept as dead.

-- The message as a webhook shows it.
CREATE FUNCTION _webhook_message(m message) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'status', m.status, 'previous_status', m.previous_status, 'direction', m.direction,
        'to', m.to_address, 'from', m.from_address, 'channel', m.channel, 'segments', m.segments,
        'last_error', m.last_error, 'custom', m.custom, 'batch_id', m.batch_id,
        'created_at', m.created_at, 'updated_at', m.updated_at, 'sent_at', m.sent_at,
        'delivered_at', m.delivered_at, 'received_at', m.received_at,
        -- An inbound message's text is what its webhook is for.
        'body', CASE WHEN m.direction = 'in' THEN m.body END)
$$;

-- Writes the events that messages `p_ids` (outbound, of accounts, whose
-- status just changed) owe their accounts' webhooks, and wakes the
-- worker. A status change is message.status, a delivery report
-- message.report; a webhook with both gets one.
CREATE FUNCTION _queue_webhooks(p_ids bigint[]) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    WITH queued AS (
        INSERT INTO smsbus.webhook_outbox (webhook_id, message_id, event, payload, expires_at)
        SELECT w.id, m.id, e.event,
               jsonb_build_object('event', e.event, 'at', now(), 'message', smsbus._webhook_message(m)),
               now() + w.retry_horizon
        FROM smsbus.message m
        JOIN smsbus.webhook w ON w.account = m.account AND w.enabled
        CROSS JOIN LATERAL (SELECT CASE WHEN m.status IN ('delivered', 'notdelivered') THEN 'message.report'
                                        ELSE 'message.status' END AS event) e
        WHERE m.id = ANY (p_ids) AND m.direction = 'out'
          -- Evaluated once: with no webhook at all, no message is read.
          AND EXISTS (SELECT FROM smsbus.webhook x WHERE x.enabled)
          AND ('status' = ANY (w.events)
               OR ('report' = ANY (w.events) AND m.status IN ('delivered', 'notdelivered')))
        ORDER BY m.id, w.id
        RETURNING 1
    )
    SELECT CASE WHEN EXISTS (SELECT FROM queued) THEN pg_notify('smsbus_webhooks', '') END
$$;

-- Writes inbound message p_id's event for its account's webhooks (when a
-- trigger gave it an account); the trigger runner calls it when the
-- message's chain ends.
CREATE FUNCTION _queue_inbound_webhooks(p_id bigint) RETURNS void
LANGUAGE sql
AS $$
    WITH queued AS (
        INSERT INTO smsbus.webhook_outbox (webhook_id, message_id, event, payload, expires_at)
        SELECT w.id, m.id, 'message.inbound',
               jsonb_build_object('event', 'message.inbound', 'at', now(),
                                  'message', smsbus._webhook_message(m)),
               now() + w.retry_horizon
        FROM smsbus.message m
        JOIN smsbus.webhook w ON w.account = m.account AND w.enabled AND 'inbound' = ANY (w.events)
        WHERE m.id = p_id AND m.direction = 'in'
          AND NOT EXISTS (SELECT FROM smsbus.webhook_outbox o
                          WHERE o.webhook_id = w.id AND o.message_id = m.id AND o.event = 'message.inbound')
        RETURNING 1
    )
    SELECT CASE WHEN EXISTS (SELECT FROM queued) THEN pg_notify('smsbus_webhooks', '') END
$$;

-- Takes up to p_limit due events for p_lease, oldest first: for each
-- webhook and message only the oldest waiting one, so a message's events
-- arrive in order; and for each webhook no more than its concurrency less
-- what is in flight to it already, on any worker.
CREATE FUNCTION _claim_webhooks(p_worker text, p_limit integer, p_lease interval)
RETURNS TABLE (id bigint, webhook_id bigint, url text, secret text, timeout_s real, event text,
               payload text, attempts integer)
LANGUAGE sql
AS $$
    WITH busy AS (
        SELECT b.webhook_id, count(*) AS n FROM smsbus.webhook_outbox b
        WHERE b.claimed_by IS NOT NULL AND NOT b.dead AND b.claimed_until > now()
        GROUP BY b.webhook_id
    ), due AS (
        -- The oldest due events first (a few times what is asked, so a
        -- long backlog is not read whole at every claim), then each
        -- webhook's share of them.
        SELECT x.id, x.webhook_id, row_number() OVER (PARTITION BY x.webhook_id ORDER BY x.id) AS k
        FROM (SELECT z.id, z.webhook_id FROM smsbus.webhook_outbox z
              WHERE NOT z.dead AND z.next_attempt_at <= now()
                AND (z.claimed_until IS NULL OR z.claimed_until < now())
                AND NOT EXISTS (SELECT FROM smsbus.webhook_outbox y
                                WHERE y.webhook_id = z.webhook_id AND y.message_id = z.message_id
                                  AND y.id < z.id AND NOT y.dead)
              ORDER BY z.id
              LIMIT greatest(p_limit * 4, 256)) x
    ), allowed AS (
        SELECT d.id FROM due d
        JOIN smsbus.webhook w ON w.id = d.webhook_id AND w.enabled
        LEFT JOIN busy b ON b.webhook_id = d.webhook_id
        WHERE d.k <= w.concurrency - coalesce(b.n, 0)
        ORDER BY d.id
        LIMIT p_limit
    ), taken AS (
        UPDATE smsbus.webhook_outbox o
        SET claimed_by = p_worker, claimed_until = now() + p_lease, attempts = o.attempts + 1
        FROM (SELECT l.id FROM smsbus.webhook_outbox l WHERE l.id IN (SELECT a.id FROM allowed a)
              FOR UPDATE SKIP LOCKED) c
        WHERE o.id = c.id
        RETURNING o.id, o.webhook_id, o.event, o.payload, o.attempts
    )
    SELECT t.id, t.webhook_id, w.url, w.secret, w.timeout_s, t.event, t.payload::text, t.attempts
    FROM taken t
    JOIN smsbus.webhook w ON w.id = t.webhook_id
    ORDER BY t.id
$$;

-- Events their endpoint took (2xx): done.
CREATE FUNCTION _webhooks_delivered(p_ids bigint[]) RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM smsbus.webhook_outbox o WHERE o.id = ANY (p_ids) RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- Events their endpoint refused or did not answer: tried again after an
-- exponential backoff with jitter (1 s doubling, at most an hour), or
-- kept as dead once their retry horizon passed.
CREATE FUNCTION _webhooks_failed(p_ids bigint[], p_errors text[]) RETURNS integer
LANGUAGE sql
AS $$
    WITH failed AS (
        UPDATE smsbus.webhook_outbox o
        SET last_error = left(f.error, 500), claimed_by = NULL, claimed_until = NULL,
            dead = now() >= o.expires_at,
            next_attempt_at = now() + least(power(2, least(o.attempts - 1, 12)), 3600)
                                      * (0.5 + random()) * interval '1 second'
        FROM unnest(p_ids, p_errors) AS f(id, error)
        WHERE o.id = f.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM failed
$$;

-- Gives back the events this worker holds (at its start: those of a run
-- that died; at its stop: those it did not finish).
CREATE FUNCTION _release_webhooks(p_worker text) RETURNS integer
LANGUAGE sql
AS $$
    WITH released AS (
        UPDATE smsbus.webhook_outbox o SET claimed_by = NULL, claimed_until = NULL, attempts = greatest(o.attempts - 1, 0)
        WHERE o.claimed_by = p_worker
        RETURNING 1
    )
    SELECT count(*)::integer FROM released
$$;

-- Dead events (of one webhook, or all) tried again from now, with a new
-- retry horizon; returns how many.
CREATE FUNCTION retry_webhooks(webhook bigint DEFAULT NULL) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    WITH revived AS (
        UPDATE smsbus.webhook_outbox o
        SET dead = false, attempts = 0, next_attempt_at = now(), expires_at = now() + w.retry_horizon
        FROM smsbus.webhook w
        WHERE w.id = o.webhook_id AND o.dead AND (retry_webhooks.webhook IS NULL OR o.webhook_id = retry_webhooks.webhook)
        RETURNING 1
    )
    SELECT count(*) FROM revived
$$;

GRANT EXECUTE ON FUNCTION _queue_inbound_webhooks(bigint), _claim_webhooks(text, integer, interval),
    _webhooks_delivered(bigint[]), _webhooks_failed(bigint[], text[]), _release_webhooks(text)
    TO smsbus_worker;
GRANT EXECUTE ON FUNCTION retry_webhooks(bigint) TO smsbus_admin;
