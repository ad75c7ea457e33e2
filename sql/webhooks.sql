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
        SELECT w.id, m.id, e.event, smsbus._webhook_payload(w.style, e.event, m), now() + w.retry_horizon
        FROM smsbus.message m
        -- The account's webhooks, and the message's own callbacks.
        CROSS JOIN LATERAL (
            SELECT x.id, x.events, x.style, x.report_mask, x.retry_horizon FROM smsbus.webhook x
            WHERE x.account = m.account AND x.enabled AND x.message_id IS NULL
            UNION ALL
            SELECT x.id, x.events, x.style, x.report_mask, x.retry_horizon FROM smsbus.webhook x
            WHERE x.message_id = m.id AND x.enabled) w
        CROSS JOIN LATERAL (SELECT CASE WHEN m.status IN ('delivered', 'notdelivered') THEN 'message.report'
                                        ELSE 'message.status' END AS event) e
        WHERE m.id = ANY (p_ids) AND m.direction = 'out'
          -- Evaluated once: with no webhook at all, no message is read.
          AND EXISTS (SELECT FROM smsbus.webhook x WHERE x.enabled)
          AND CASE WHEN w.style = 'smsbus'
                   THEN 'status' = ANY (w.events)
                        OR ('report' = ANY (w.events) AND m.status IN ('delivered', 'notdelivered'))
                   ELSE smsbus._dlr_type(m.status) & w.report_mask <> 0 END
        ORDER BY m.id, w.id
        RETURNING 1
    )
    SELECT CASE WHEN EXISTS (SELECT FROM queued) THEN pg_notify('smsbus_webhooks', '') END
$$;

-- The report type a status is to Kannel's dlr-mask: 1 delivered, 2 not
-- delivered, 8 taken by the SMSC, 16 refused (failed, or never sent:
-- blocked); 0 for a status no report is about.
CREATE FUNCTION _dlr_type(s status) RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE s WHEN 'delivered' THEN 1 WHEN 'notdelivered' THEN 2 WHEN 'expired' THEN 2
                  WHEN 'sent' THEN 8 WHEN 'failed' THEN 16 WHEN 'blocked' THEN 16 ELSE 0 END
$$;

-- The body of an event: what smsbus-style webhooks are sent, and for a
-- Kannel or Jasmin callback also what its call is made of (the report
-- type, the SMSC's reference and report, parts, the first 20
-- characters, the Kannel billing fields given with the message).
CREATE FUNCTION _webhook_payload(style text, event text, m message) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT jsonb_build_object('event', event, 'at', now(), 'message', smsbus._webhook_message(m))
        || CASE WHEN style = 'smsbus' THEN '{}'::jsonb ELSE jsonb_build_object('callback', (
               SELECT jsonb_build_object(
                   'dlr', smsbus._dlr_type(m.status), 'at', extract(epoch FROM now())::bigint,
                   'at_text', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                   'subdate', to_char(coalesce(m.sent_at, m.created_at) AT TIME ZONE 'UTC', 'YYMMDDHH24MI'),
                   'donedate', to_char(coalesce(m.delivered_at, now()) AT TIME ZONE 'UTC', 'YYMMDDHH24MI'),
                   'text', left(m.body, 20), 'reference', p.reference, 'report', p.detail,
                   'parts', p.parts, 'delivered_parts', p.delivered, 'kannel', m.custom->'kannel')
               FROM (SELECT (array_agg(x.reference ORDER BY x.part))[1] AS reference,
                            (array_agg(x.detail ORDER BY x.reported_at DESC NULLS LAST))[1] AS detail,
                            count(*) AS parts, count(*) FILTER (WHERE x.status = 'delivered') AS delivered
                     FROM smsbus.message_part x WHERE x.message_id = m.id) p)) END
$$;

-- A Kannel or Jasmin send's dlr-url: a callback of message p_message
-- (of account p_account) for the reports of p_mask, called in p_style
-- with p_method. Its message's status now is queued for it at once if
-- the mask wants it (a blocked message's 16): the events of the INSERT
-- that made the message were written before the callback existed.
CREATE FUNCTION _add_callback(p_message bigint, p_account text, p_style text, p_url text, p_method text,
                              p_mask integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
DECLARE
    callback bigint;
    m smsbus.message;
BEGIN
    SELECT * INTO m FROM smsbus.message x WHERE x.id = p_message AND x.account = p_account;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % is not of account "%"', p_message, smsbus._excerpt(p_account)
            USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO smsbus.webhook (account, url, message_id, style, method, report_mask, events)
    VALUES (p_account, p_url, p_message, p_style, p_method, p_mask, '{status}')
    RETURNING id INTO callback;
    IF smsbus._dlr_type(m.status) & p_mask <> 0 THEN
        INSERT INTO smsbus.webhook_outbox (webhook_id, message_id, event, payload, expires_at)
        VALUES (callback, m.id, 'message.status', smsbus._webhook_payload(p_style, 'message.status', m),
                now() + interval '24 hours');
        PERFORM pg_notify('smsbus_webhooks', '');
    END IF;
    RETURN callback;
END
$$;

-- Drops the callbacks whose message is done (or archived) and whose
-- events are all taken; dead events keep theirs for retry_webhooks. A
-- message sent with a report requested is not done: its report, hours
-- later, is what a dlr-url waits for most.
CREATE FUNCTION _prune_callbacks() RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM smsbus.webhook w
        WHERE w.message_id IS NOT NULL
          AND NOT EXISTS (SELECT FROM smsbus.webhook_outbox o WHERE o.webhook_id = w.id)
          AND NOT EXISTS (SELECT FROM smsbus.message m
                          WHERE m.id = w.message_id
                            AND (NOT smsbus.status_is_permanent(m.status::text)
                                 OR (m.status = 'sent' AND m.request_report)))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
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
--
-- Workers woken by one notification claim at once. The lock makes them
-- take turns, and the claim below takes its snapshot after it, so each
-- sees what the one before took: no event goes to two workers, and no
-- webhook gets more than its concurrency in flight. (SKIP LOCKED alone
-- would let the second take a row the first had just claimed and
-- committed: the row is no longer locked, and `allowed` came from the
-- older snapshot.)
CREATE FUNCTION _claim_webhooks(p_worker text, p_limit integer, p_lease interval)
RETURNS TABLE (id bigint, webhook_id bigint, url text, secret text, timeout_s real, event text,
               payload text, attempts integer, style text, method text)
LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtext('smsbus._claim_webhooks'));
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
        FROM (SELECT l.id FROM smsbus.webhook_outbox l
              WHERE l.id IN (SELECT a.id FROM allowed a)
                AND NOT l.dead AND l.next_attempt_at <= now()
                AND (l.claimed_until IS NULL OR l.claimed_until < now())
              FOR UPDATE SKIP LOCKED) c
        WHERE o.id = c.id
        RETURNING o.id, o.webhook_id, o.event, o.payload, o.attempts
    )
    SELECT t.id, t.webhook_id, w.url, w.secret, w.timeout_s, t.event, t.payload::text, t.attempts, w.style,
           w.method
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

GRANT EXECUTE ON FUNCTION _add_callback(bigint, text, text, text, text, integer), _prune_callbacks()
    TO smsbus_worker;
GRANT EXECUTE ON FUNCTION _queue_inbound_webhooks(bigint), _claim_webhooks(text, integer, interval),
    _webhooks_delivered(bigint[]), _webhooks_failed(bigint[], text[]), _release_webhooks(text)
    TO smsbus_worker;
GRANT EXECUTE ON FUNCTION retry_webhooks(bigint) TO smsbus_admin;
