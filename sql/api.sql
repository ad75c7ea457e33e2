-- smsbus API: the state machine's triggers, the user functions, the worker's
-- functions and the views. Runs after schema.sql and the Rust functions
-- (sms_encoding, the row triggers of smsbus.message, _channel_refusal, ...).
--
-- Naming: user functions are short verbs (send, archive); functions only the
-- extension and the worker call start with an underscore.

---------------------------------------------------------------------------
-- The queue's triggers
---------------------------------------------------------------------------

-- The triggers are Rust: extension/src/message_triggers.rs (rows) and
-- extension/src/message_trace.rs (the trace and wake-ups, per statement).
CREATE TRIGGER message_before_insert BEFORE INSERT ON message
    FOR EACH ROW EXECUTE FUNCTION _message_before_insert();
CREATE TRIGGER message_after_insert AFTER INSERT ON message
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION _message_after_change();
CREATE TRIGGER message_before_update BEFORE UPDATE ON message
    FOR EACH ROW EXECUTE FUNCTION _message_before_update();
CREATE TRIGGER message_after_update AFTER UPDATE ON message
    REFERENCING NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION _message_after_change();

-- Channel rows carry their own updated_at, and every change wakes the
-- worker's supervisor.
CREATE FUNCTION _channel_touch() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE FUNCTION _channel_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('smsbus_config', 'channel');
    RETURN NULL;
END
$$;

CREATE TRIGGER channel_touch BEFORE UPDATE ON channel
    FOR EACH ROW EXECUTE FUNCTION _channel_touch();
CREATE TRIGGER channel_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON channel
    FOR EACH STATEMENT EXECUTE FUNCTION _channel_changed();

---------------------------------------------------------------------------
-- User functions
---------------------------------------------------------------------------

-- Queues one SMS and returns its id. With an idempotency_key that was used
-- before, returns the first message's id and sends nothing.
CREATE FUNCTION send(
    to_address      text,
    body            text,
    from_address    text DEFAULT NULL,
    channel         text DEFAULT NULL,
    priority        smallint DEFAULT 0,
    scheduled_at    timestamptz DEFAULT now(),
    valid_until     timestamptz DEFAULT NULL,
    request_report  boolean DEFAULT true,
    encoding        text DEFAULT NULL,
    custom          jsonb DEFAULT NULL,
    batch_id        text DEFAULT NULL,
    idempotency_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF send.idempotency_key IS NULL THEN
        INSERT INTO smsbus.message (to_address, body, from_address, channel, priority, scheduled_at,
                                    valid_until, request_report, encoding, custom, batch_id)
        VALUES (send.to_address, send.body, send.from_address, send.channel, send.priority,
                coalesce(send.scheduled_at, now()), send.valid_until, coalesce(send.request_report, true),
                send.encoding, send.custom, send.batch_id)
        RETURNING id INTO new_id;
        RETURN new_id;
    END IF;
    SELECT m.id INTO new_id FROM smsbus.message m WHERE m.idempotency_key = send.idempotency_key;
    IF NOT FOUND THEN
        SELECT a.id INTO new_id FROM smsbus.message_archive a WHERE a.idempotency_key = send.idempotency_key;
    END IF;
    IF new_id IS NOT NULL THEN
        RETURN new_id;
    END IF;
    -- The exception block (a subtransaction) only where a race can happen.
    BEGIN
        INSERT INTO smsbus.message (to_address, body, from_address, channel, priority, scheduled_at,
                                    valid_until, request_report, encoding, custom, batch_id, idempotency_key)
        VALUES (send.to_address, send.body, send.from_address, send.channel, send.priority,
                coalesce(send.scheduled_at, now()), send.valid_until, coalesce(send.request_report, true),
                send.encoding, send.custom, send.batch_id, send.idempotency_key)
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        -- A concurrent send() with the same key committed first.
        SELECT m.id INTO new_id FROM smsbus.message m WHERE m.idempotency_key = send.idempotency_key;
        IF new_id IS NULL THEN
            RAISE;
        END IF;
    END;
    RETURN new_id;
END
$$;

-- Moves up to batch_size finished messages (and their parts) that have not
-- changed for older_than into smsbus.message_archive. Returns how many moved;
-- call it again until it returns 0.
CREATE FUNCTION archive(older_than interval, batch_size integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    moved bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a positive interval, not %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH victims AS (
        SELECT m.id FROM smsbus.message m
        WHERE (m.status NOT IN ('scheduled', 'queued', 'sending', 'sent')
               OR (m.status = 'sent' AND NOT m.request_report))
          AND m.trigger_status NOT IN ('pending', 'processing')
          AND m.updated_at < now() - older_than
        ORDER BY m.updated_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM smsbus.message m USING victims v WHERE m.id = v.id RETURNING m.*
    ), kept AS (
        INSERT INTO smsbus.message_archive SELECT * FROM gone RETURNING id
    ), gone_parts AS (
        DELETE FROM smsbus.message_part p USING victims v WHERE p.message_id = v.id RETURNING p.*
    ), kept_parts AS (
        INSERT INTO smsbus.message_part_archive SELECT * FROM gone_parts
    )
    SELECT count(*) INTO moved FROM kept;
    RETURN moved;
END
$$;

---------------------------------------------------------------------------
-- The worker's functions
---------------------------------------------------------------------------

-- Claims up to p_limit due queued messages of a channel for p_worker, with a
-- lease of p_lease: priority first, then age. Messages whose validity ended
-- while they waited are claimed and expired at once, never returned.
--
-- The batch functions plan each call with its real array sizes
-- (force_custom_plan): a generic plan guesses 10 rows per unnest() and
-- picks nested loops that grow with the square of the batch. In a queue
-- table the statistics of status are always stale (the counts per status
-- change by the second), so the batch functions join the batch's keys to
-- the table one primary-key probe per key, never through an active-status
-- partial index whose row estimate may be 1 while it holds 100,000: a
-- status test they only recheck is written `status::text = '...'`, which no
-- partial index predicate matches, and the part lookups run with
-- enable_seqscan off.
CREATE FUNCTION _claim(p_channel text, p_worker text, p_limit integer, p_lease interval)
RETURNS SETOF message
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    lease_end timestamptz := now() + p_lease;
    taken smsbus.message[];
    late integer;
    expired bigint := 0;
BEGIN
    WITH picked AS (
        SELECT m.id FROM smsbus.message m
        WHERE m.status = 'queued' AND m.channel = p_channel AND m.scheduled_at <= now()
        ORDER BY m.priority DESC, m.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE smsbus.message m
        SET status = 'sending', claimed_by = p_worker, claimed_until = lease_end
        FROM picked WHERE m.id = picked.id
        RETURNING m AS row
    )
    SELECT coalesce(array_agg(c.row ORDER BY (c.row).priority DESC, (c.row).id)
                        FILTER (WHERE (c.row).valid_until IS NULL OR (c.row).valid_until > now()), '{}'),
           count(*) FILTER (WHERE (c.row).valid_until <= now())
    INTO taken, late FROM claimed c;
    -- The late ones of this claim, if any (looking costs a pass over every
    -- claimed row): now() and lease_end are the same for every row this
    -- call claimed, and no other claim has this lease_end unless it ran in
    -- this transaction, where now() judged it the same.
    IF late > 0 THEN
        UPDATE smsbus.message SET status = 'expired', last_error = 'validity period ended before submission'
        WHERE status = 'sending' AND claimed_until = lease_end AND claimed_by = p_worker
          AND valid_until <= now();
        GET DIAGNOSTICS expired = ROW_COUNT;
    END IF;
    -- Less than asked for: the queue is drained, so the owner will wait for
    -- a wake-up; arm it (see smsbus.channel_wakeup).
    IF cardinality(taken) + expired < p_limit THEN
        INSERT INTO smsbus.channel_wakeup (channel) VALUES (p_channel) ON CONFLICT (channel) DO NOTHING;
    END IF;
    RETURN QUERY SELECT * FROM unnest(taken);
END
$$;

-- Records submitted messages: one (message, part, reference) triple per
-- segment. Each message becomes sent with its first part's reference;
-- delivery reports that arrived early are applied now.
CREATE FUNCTION _mark_sent(p_channel text, p_ids bigint[], p_parts integer[], p_references text[])
RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
SET enable_seqscan = off
AS $$
DECLARE
    done integer;
    early record;
BEGIN
    INSERT INTO smsbus.message_part (message_id, part, channel, reference)
    SELECT u.id, u.part, p_channel, u.reference
    FROM unnest(p_ids, p_parts, p_references) AS u(id, part, reference)
    ON CONFLICT (message_id, part) DO UPDATE
        SET channel = EXCLUDED.channel, reference = EXCLUDED.reference, status = 'sent',
            detail = NULL, submitted_at = now(), reported_at = NULL
        -- A part of a message submitted again; a repeated call (its first
        -- commit's answer was lost) leaves parts already reported alone.
        WHERE EXISTS (SELECT FROM smsbus.message m WHERE m.id = EXCLUDED.message_id AND m.status::text = 'sending');

    UPDATE smsbus.message m SET status = 'sent', reference = f.reference, last_error = NULL
    FROM (SELECT DISTINCT ON (u.id) u.id, u.reference
          FROM unnest(p_ids, p_parts, p_references) AS u(id, part, reference)
          ORDER BY u.id, u.part) f
    WHERE m.id = f.id AND m.status::text = 'sending';
    GET DIAGNOSTICS done = ROW_COUNT;

    -- Reports are parked only when they outrun this call; mostly there are
    -- none, and the probes below would cost a tenth of the call.
    IF NOT EXISTS (SELECT FROM smsbus.pending_report r WHERE r.channel = p_channel) THEN
        RETURN done;
    END IF;
    -- A parked report may name the part in the other base (its alternate).
    WITH taken AS (
        DELETE FROM smsbus.pending_report r
        USING unnest(p_references) AS u(reference)
        WHERE r.channel = p_channel
          -- Alternates are lower-case; both arms are index probes.
          AND (r.reference = u.reference OR r.alternate IN (u.reference, lower(u.reference)))
        RETURNING r.reference, r.alternate, r.status, r.detail, r.received_at
    )
    SELECT array_agg(t.reference ORDER BY t.received_at) AS refs,
           array_agg(t.status ORDER BY t.received_at) AS statuses,
           array_agg(t.detail ORDER BY t.received_at) AS details,
           array_agg(t.alternate ORDER BY t.received_at) AS alternates
    INTO early FROM taken t;
    IF early.refs IS NOT NULL THEN
        PERFORM smsbus._apply_reports(p_channel, early.refs, early.statuses, early.details, early.alternates);
    END IF;
    RETURN done;
END
$$;

-- Fails messages permanently, with the reason in last_error.
CREATE FUNCTION _mark_failed(p_ids bigint[], p_errors text[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m SET status = 'failed', last_error = u.error
    FROM unnest(p_ids, p_errors) AS u(id, error)
    WHERE m.id = u.id AND m.status::text = 'sending';
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Hands messages back to their queue, to be claimed again after a delay
-- (seconds); the reason is kept in last_error and the trace.
CREATE FUNCTION _mark_retry(p_ids bigint[], p_errors text[], p_delays double precision[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m
    SET status = 'queued', last_error = u.error,
        scheduled_at = now() + make_interval(secs => greatest(coalesce(u.delay, 0), 0))
    FROM unnest(p_ids, p_errors, p_delays) AS u(id, error, delay)
    WHERE m.id = u.id AND m.status::text = 'sending';
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Applies delivery reports by (channel, reference): each part takes its
-- report ('delivered', 'notdelivered' or 'enroute'); a message is
-- notdelivered as soon as one part is, delivered when all parts are.
-- A report may be matched by its reference or by an alternate spelling
-- (the id in the other base). Reports for references not recorded yet are
-- kept for _mark_sent. Returns how many reports matched a part.
--
-- A report that finds no part may race with the _mark_sent that is
-- recording it: neither transaction sees the other's rows, and the parked
-- report would wait forever. Rather than a lock on this hot path (receipts
-- often arrive before the submission is recorded), maintenance applies
-- parked reports whose part has appeared (_apply_parked_reports), so the
-- rare loser of that race is applied a maintenance pass later.
CREATE FUNCTION _apply_reports(p_channel text, p_references text[], p_statuses text[], p_details text[],
                               p_alternates text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
SET enable_seqscan = off
AS $$
DECLARE
    matched integer := 0;
    step integer;
    touched bigint[];
    found bigint[];
    refs text[] := p_references;
    statuses text[] := p_statuses;
    details text[] := p_details;
    alternates text[] := coalesce(p_alternates, array_fill(NULL::text, ARRAY[cardinality(p_references)]));
    missing record;
BEGIN
    FOR attempt IN 1..2 LOOP
        WITH report AS (
            SELECT * FROM unnest(refs, statuses, details, alternates) WITH ORDINALITY
                          AS r(reference, status, detail, alternate, ord)
        ), probed AS (
            -- One index probe per report, whatever the statistics say:
            -- OFFSET 0 keeps the planner from flattening the probe into a
            -- join that scans the channel's parts.
            -- Each spelling of the id is its own equality probe on
            -- (channel, reference): with `reference IN (...)` the planner
            -- may probe by channel alone and filter, which scans every part
            -- of the channel per report when the statistics are stale.
            -- A report applies to one part: the one its own spelling names;
            -- only if that names no part at all, one in the other base
            -- (dlr_id_format auto), which may be another message's id.
            -- Among parts sharing a reference (a modem's TP-MR wraps at
            -- 256), the latest submitted.
            SELECT DISTINCT ON (r.ord) t.message_id, t.part, r.status, r.detail, r.ord
            FROM report r
            CROSS JOIN LATERAL unnest(
                CASE WHEN r.alternate IS NULL
                          OR EXISTS (SELECT 1 FROM smsbus.message_part o
                                     WHERE o.channel = p_channel AND o.reference = r.reference OFFSET 0)
                     THEN ARRAY[r.reference]
                     ELSE ARRAY[r.reference, r.alternate, upper(r.alternate)] END)
                 WITH ORDINALITY AS c(ref, rank)
            CROSS JOIN LATERAL (
                SELECT x.message_id, x.part, x.submitted_at FROM smsbus.message_part x
                WHERE x.channel = p_channel AND x.reference = c.ref AND x.status IN ('sent', 'enroute')
                OFFSET 0
            ) t
            ORDER BY r.ord, c.rank, t.submitted_at DESC
        ), target AS (
            -- Several reports for one part in one batch (an early ENROUTE
            -- and DELIVRD picked up together): a final one wins, the latest.
            SELECT DISTINCT ON (p.message_id, p.part) p.message_id, p.part, p.status, p.detail
            FROM probed p
            ORDER BY p.message_id, p.part, p.status = 'enroute', p.ord DESC
        ), applied AS (
            UPDATE smsbus.message_part p
            SET status = t.status, detail = t.detail, reported_at = now()
            FROM target t
            WHERE p.message_id = t.message_id AND p.part = t.part
            RETURNING p.message_id, p.reference, p.status, p.detail
        ), intermediate AS (
            -- ENROUTE, ACCEPTD: the message stays sent; the trace says so.
            INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, detail)
            SELECT p.message_id, 'sent', 'sent',
                   coalesce(nullif(current_setting('smsbus.actor', true), ''), current_user),
                   'intermediate report: ' || coalesce(p.detail, p.status)
            FROM probed p WHERE p.status = 'enroute'
            ORDER BY p.ord
        )
        SELECT (SELECT count(*) FROM applied), (SELECT array_agg(DISTINCT a.message_id) FROM applied a),
               (SELECT coalesce(array_agg(DISTINCT p.ord), '{}') FROM probed p)
        INTO step, touched, found;
        matched := matched + step;

        IF touched IS NOT NULL THEN
            UPDATE smsbus.message m
            SET status = CASE WHEN s.any_failed THEN 'notdelivered'::smsbus.status
                              ELSE 'delivered'::smsbus.status END,
                last_error = CASE WHEN s.any_failed THEN s.failed_detail END
            FROM (SELECT p.message_id,
                         bool_or(p.status = 'notdelivered') AS any_failed,
                         bool_and(p.status = 'delivered') AS all_delivered,
                         min(p.detail) FILTER (WHERE p.status = 'notdelivered') AS failed_detail
                  FROM smsbus.message_part p
                  WHERE p.message_id = ANY (touched)
                  GROUP BY p.message_id) s
            WHERE m.id = s.message_id AND m.status::text = 'sent'
              AND (s.any_failed OR s.all_delivered);
        END IF;

        -- The reports that found no part to apply to. One whose own
        -- spelling names a final part is a repeat and is dropped (the other
        -- base may name another message). After the first attempt,
        -- one whose part has been committed since (not final yet) gets a
        -- second attempt; the rest are parked, and _apply_parked_reports
        -- applies them once their part is recorded. Probes as above: one
        -- equality probe per spelling, never a join the planner may turn
        -- into a scan of the channel's parts.
        SELECT array_agg(r.reference) AS refs, array_agg(r.status) AS statuses,
               array_agg(r.detail) AS details, array_agg(r.alternate) AS alternates,
               coalesce(bool_or(k.live), false) AS retry
        INTO missing
        FROM unnest(refs, statuses, details, alternates) WITH ORDINALITY
             AS r(reference, status, detail, alternate, ord)
        CROSS JOIN LATERAL (
            SELECT bool_or(x.status IN ('sent', 'enroute')) AS live,
                   bool_or(x.status IN ('delivered', 'notdelivered') AND c.rank = 1) AS final
            FROM unnest(ARRAY[r.reference, r.alternate, upper(r.alternate)]) WITH ORDINALITY AS c(ref, rank)
            CROSS JOIN LATERAL (
                SELECT p.status FROM smsbus.message_part p
                WHERE p.channel = p_channel AND p.reference = c.ref
                OFFSET 0
            ) x
        ) k
        WHERE r.ord <> ALL (found) AND NOT coalesce(k.final, false);
        EXIT WHEN missing.refs IS NULL;
        IF attempt = 1 AND missing.retry THEN
            refs := missing.refs;
            statuses := missing.statuses;
            details := missing.details;
            alternates := missing.alternates;
        ELSE
            INSERT INTO smsbus.pending_report (channel, reference, alternate, status, detail)
            SELECT p_channel, u.reference, u.alternate, u.status, u.detail
            FROM unnest(missing.refs, missing.alternates, missing.statuses, missing.details)
                 AS u(reference, alternate, status, detail);
            EXIT;
        END IF;
    END LOOP;
    RETURN matched;
END
$$;

-- Applies parked reports whose part has been recorded since and awaits its
-- report: the rare report that raced the _mark_sent of its part (see
-- _apply_reports). The others wait, and expire after a day (_maintain).
-- Returns how many were applied.
CREATE FUNCTION _apply_parked_reports() RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    ready record;
    done integer := 0;
BEGIN
    FOR ready IN
        WITH taken AS (
            -- One equality probe on (channel, reference) per spelling of
            -- the id. OFFSET 0 keeps each EXISTS a probe: pulled up into a
            -- join, with stale statistics, it became a merge join over
            -- every part of the channel (70 s in the full bench).
            DELETE FROM smsbus.pending_report r
            WHERE EXISTS (
                SELECT 1 FROM unnest(ARRAY[r.reference, r.alternate, upper(r.alternate)]) AS c(ref)
                WHERE EXISTS (SELECT 1 FROM smsbus.message_part p
                              WHERE p.channel = r.channel AND p.reference = c.ref
                                AND p.status IN ('sent', 'enroute')
                              OFFSET 0)
                OFFSET 0)
            RETURNING r.*
        )
        SELECT t.channel,
               array_agg(t.reference ORDER BY t.received_at) AS refs,
               array_agg(t.status ORDER BY t.received_at) AS statuses,
               array_agg(t.detail ORDER BY t.received_at) AS details,
               array_agg(t.alternate ORDER BY t.received_at) AS alternates
        FROM taken t GROUP BY t.channel
    LOOP
        done := done + smsbus._apply_reports(ready.channel, ready.refs, ready.statuses, ready.details,
                                              ready.alternates);
    END LOOP;
    RETURN done;
END
$$;

-- Records received messages (arrays of equal length, one element per
-- message) and returns their ids in the same order. The channel acknowledges
-- them to the peer only after this commits.
CREATE FUNCTION _record_inbound(
    p_channel text, p_from text[], p_to text[], p_bodies text[], p_references text[],
    p_received_at timestamptz[] DEFAULT NULL, p_custom jsonb[] DEFAULT NULL
) RETURNS bigint[]
LANGUAGE sql
AS $$
    WITH rows AS (
        SELECT u.*, row_number() OVER () AS ord
        FROM unnest(p_from, p_to, p_bodies, p_references,
                    coalesce(p_received_at, array_fill(NULL::timestamptz, ARRAY[cardinality(p_bodies)])),
                    coalesce(p_custom, array_fill(NULL::jsonb, ARRAY[cardinality(p_bodies)])))
             AS u(from_address, to_address, body, reference, received_at, custom)
    ), ins AS (
        INSERT INTO smsbus.message (direction, channel, from_address, to_address, body, reference,
                                    received_at, custom)
        SELECT 'in', p_channel, r.from_address, r.to_address, r.body, r.reference, r.received_at, r.custom
        FROM rows r ORDER BY r.ord
        RETURNING id
    )
    SELECT array_agg(id ORDER BY id) FROM ins
$$;

-- Records parts of concatenated inbound messages (arrays of equal length,
-- one element per part). Returns, per part, the id of the message it
-- completed, or null while its set is still incomplete. A part received
-- twice (the peer resent it) is stored once.
CREATE FUNCTION _record_inbound_parts(
    p_channel text, p_from text[], p_to text[], p_references integer[], p_totals integer[],
    p_seqs integer[], p_bodies text[], p_custom jsonb[] DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    result bigint[] := '{}';
    done bigint;
    stored integer;
    whole text;
    first_custom jsonb;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_bodies), 0) LOOP
        -- One set at a time: two sessions delivering its last parts at once
        -- must not both assemble it.
        PERFORM pg_advisory_xact_lock(hashtext(format('smsbus.inbound %s %s %s %s',
                                                      p_channel, p_from[i], p_to[i], p_references[i])));
        INSERT INTO smsbus.inbound_part (channel, source, destination, reference, total, seq, body, custom)
        VALUES (p_channel, p_from[i], p_to[i], p_references[i], p_totals[i], p_seqs[i], p_bodies[i],
                CASE WHEN p_custom IS NULL THEN NULL ELSE p_custom[i] END)
        ON CONFLICT DO NOTHING;
        SELECT count(*), string_agg(body, '' ORDER BY seq), (array_agg(custom ORDER BY seq))[1]
        INTO stored, whole, first_custom
        FROM smsbus.inbound_part
        WHERE channel = p_channel AND source = p_from[i] AND destination = p_to[i]
          AND reference = p_references[i] AND total = p_totals[i];
        done := NULL;
        IF stored = p_totals[i] THEN
            INSERT INTO smsbus.message (direction, channel, from_address, to_address, body, custom)
            VALUES ('in', p_channel, p_from[i], p_to[i], whole,
                    coalesce(first_custom, '{}') || jsonb_build_object('parts', p_totals[i]))
            RETURNING id INTO done;
            DELETE FROM smsbus.inbound_part
            WHERE channel = p_channel AND source = p_from[i] AND destination = p_to[i]
              AND reference = p_references[i] AND total = p_totals[i];
        END IF;
        result := result || done;
    END LOOP;
    RETURN result;
END
$$;

-- Turns sets of inbound parts that stayed incomplete for p_timeout into
-- received messages with the parts that came (in order), marked incomplete
-- in last_error and custom, so nothing received is lost.
CREATE FUNCTION _expire_inbound_parts(p_timeout interval DEFAULT interval '1 hour') RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    done integer;
BEGIN
    WITH stale AS (
        SELECT channel, source, destination, reference, total
        FROM smsbus.inbound_part
        GROUP BY channel, source, destination, reference, total
        HAVING max(received_at) < now() - p_timeout
    ), gone AS (
        DELETE FROM smsbus.inbound_part p USING stale s
        WHERE p.channel = s.channel AND p.source = s.source AND p.destination = s.destination
          AND p.reference = s.reference AND p.total = s.total
        RETURNING p.*
    ), assembled AS (
        INSERT INTO smsbus.message (direction, channel, from_address, to_address, body, custom, last_error)
        SELECT 'in', g.channel, g.source, g.destination, string_agg(g.body, '' ORDER BY g.seq),
               coalesce((array_agg(g.custom ORDER BY g.seq))[1], '{}')
                   || jsonb_build_object('parts', g.total, 'incomplete', true,
                                         'parts_received', array_agg(g.seq ORDER BY g.seq)),
               format('incomplete: parts %s of %s received', string_agg(g.seq::text, ', ' ORDER BY g.seq), g.total)
        FROM gone g
        GROUP BY g.channel, g.source, g.destination, g.reference, g.total
        RETURNING id
    )
    SELECT count(*) INTO done FROM assembled;
    RETURN done;
END
$$;

-- Sends messages whose lease ran out (their worker died or hung) back to
-- their queue. What that worker had handed to the SMSC may be sent twice:
-- the trace says the outcome is unknown. One that cannot be sent back
-- keeps its lease a minute longer, with the reason (_batch_or_each).
CREATE FUNCTION _expire_leases(p_limit integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    late bigint[];
BEGIN
    SELECT array_agg(x.id) INTO late
    FROM (SELECT id FROM smsbus.message
          WHERE status = 'sending' AND claimed_until < now()
          ORDER BY claimed_until LIMIT p_limit FOR UPDATE SKIP LOCKED) x;
    RETURN smsbus._batch_or_each('_requeue_expired', late, '_set_aside_lease');
END
$$;

-- Sends the messages `ids`, whose lease ran out, back to their queue.
CREATE FUNCTION _requeue_expired(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m
    SET status = 'queued',
        last_error = format('lease of %s expired: outcome of the submission unknown', m.claimed_by)
    FROM unnest(ids) AS u(id)
    WHERE m.id = u.id AND m.status::text = 'sending' AND m.claimed_until < now();
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- A message whose lease could not be ended keeps it a minute longer.
CREATE FUNCTION _set_aside_lease(id bigint, reason text) RETURNS void
LANGUAGE sql
AS $$
    UPDATE smsbus.message m
    SET claimed_until = now() + interval '1 minute',
        last_error = 'lease expired but not sent back, tried again in a minute: ' || left(reason, 500)
    WHERE m.id = _set_aside_lease.id
$$;

-- Runs smsbus.<step>(ids) (a function of ids bigint[] returning how many
-- it moved on). When the batch fails, each id is tried alone, so one
-- message that cannot be moved on never holds the others back; each that
-- fails alone is handed to smsbus.<set_aside>(id, reason) when there is
-- one, and logged should that fail too (or when there is none). Step
-- names are smsbus's own constants.
CREATE FUNCTION _batch_or_each(step text, ids bigint[], set_aside text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    one bigint;
    done integer := 0;
    moved integer;
    reason text;
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        EXECUTE format('SELECT smsbus.%I($1)', step) INTO moved USING ids;
        RETURN moved;
    EXCEPTION WHEN OTHERS THEN
        -- One at a time below.
    END;
    FOREACH one IN ARRAY ids LOOP
        BEGIN
            EXECUTE format('SELECT smsbus.%I($1)', step) INTO moved USING ARRAY[one];
            done := done + moved;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS reason = MESSAGE_TEXT;
            BEGIN
                IF set_aside IS NULL THEN
                    RAISE WARNING 'smsbus: % failed for message %: %', step, one, reason;
                ELSE
                    EXECUTE format('SELECT smsbus.%I($1, $2)', set_aside) USING one, reason;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'smsbus: % failed for message % and it could not be set aside: %', step, one, reason;
            END;
        END;
    END LOOP;
    RETURN done;
END
$$;

-- A channel's new owner sends back to the queue what earlier owners left
-- in sending. Only the channel's owner (who holds its advisory lock)
-- claims for it, so such rows are orphans: their worker died or lost its
-- database session, and nobody need wait for their lease to run out. What
-- that worker had handed to the SMSC may be sent twice: the trace says the
-- outcome is unknown.
CREATE FUNCTION _take_over(p_channel text, p_worker text) RETURNS integer
LANGUAGE sql
AS $$
    WITH orphans AS (
        UPDATE smsbus.message m
        SET status = 'queued',
            last_error = format('%s stopped owning channel %s: outcome of the submission unknown',
                                m.claimed_by, p_channel)
        WHERE m.status = 'sending' AND m.channel = p_channel AND m.claimed_by IS DISTINCT FROM p_worker
        RETURNING 1)
    SELECT count(*)::integer FROM orphans
$$;

-- Extends the leases a worker still holds (messages waiting out a
-- provider's throttling, or in a long window), so they are not handed to
-- another claim while this worker may still submit them.
CREATE FUNCTION _renew_leases(p_worker text, p_ids bigint[], p_lease interval) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m SET claimed_until = now() + p_lease
    FROM unnest(p_ids) AS u(id)
    WHERE m.id = u.id AND m.status::text = 'sending' AND m.claimed_by = p_worker;
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Hands back the messages a worker claimed but did not submit (on shutdown).
CREATE FUNCTION _release(p_worker text, p_ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message
    SET status = 'queued', last_error = format('handed back by %s before submission', p_worker)
    WHERE status = 'sending' AND claimed_by = p_worker AND (p_ids IS NULL OR id = ANY (p_ids));
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Routes scheduled messages that came due; those whose validity ended first
-- expire. One that cannot be moved on (a rule or the trace fails for it)
-- is set aside for a minute with the reason (_batch_or_each).
CREATE FUNCTION _promote_scheduled(p_limit integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    due bigint[];
BEGIN
    SELECT array_agg(x.id) INTO due
    FROM (SELECT id FROM smsbus.message
          WHERE status = 'scheduled' AND scheduled_at <= now()
          ORDER BY scheduled_at LIMIT p_limit FOR UPDATE SKIP LOCKED) x;
    RETURN smsbus._batch_or_each('_promote', due, '_set_aside_scheduled');
END
$$;

-- A scheduled message that could not be moved on when due waits a minute.
CREATE FUNCTION _set_aside_scheduled(id bigint, reason text) RETURNS void
LANGUAGE sql
AS $$
    UPDATE smsbus.message m
    SET scheduled_at = now() + interval '1 minute',
        last_error = 'not moved on when due, tried again in a minute: ' || left(reason, 500)
    WHERE m.id = _set_aside_scheduled.id
$$;

-- Moves the scheduled messages `ids` on: the row trigger routes each one
-- set to queued (see router.sql).
CREATE FUNCTION _promote(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m
    SET status = CASE WHEN m.valid_until <= now() THEN 'expired'::smsbus.status ELSE 'queued' END,
        last_error = CASE WHEN m.valid_until <= now() THEN 'validity period ended before the message was due' END
    FROM unnest(ids) AS u(id)
    WHERE m.id = u.id AND m.status::text = 'scheduled';
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Marks sent messages whose delivery report is overdue: the channel's
-- config.report_timeout_s, else p_default.
CREATE FUNCTION _mark_noreport(p_default interval DEFAULT interval '48 hours', p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    late bigint[];
    shortest interval;
BEGIN
    -- The shortest deadline of any channel bounds the index range: only
    -- messages sent before it are looked at, not every one awaiting its
    -- report (a busy queue has hundreds of thousands, and maintenance
    -- runs every second).
    SELECT least(p_default, min(CASE WHEN c.config->>'report_timeout_s' ~ '^[0-9]+(\.[0-9]+)?$'
                                     THEN make_interval(secs => (c.config->>'report_timeout_s')::double precision)
                                END))
    INTO shortest FROM smsbus.channel c;
    SELECT array_agg(l.id) INTO late
    FROM (SELECT x.id FROM smsbus.message x
          LEFT JOIN smsbus.channel c ON c.name = x.channel
          WHERE x.status = 'sent' AND x.request_report
            AND x.sent_at < now() - shortest
            AND x.sent_at < now() - CASE
                    WHEN c.config->>'report_timeout_s' ~ '^[0-9]+(\.[0-9]+)?$'
                    THEN make_interval(secs => (c.config->>'report_timeout_s')::double precision)
                    ELSE p_default END
          ORDER BY x.sent_at LIMIT p_limit FOR UPDATE OF x SKIP LOCKED) l;
    -- One that cannot be marked is logged and tried again next pass.
    RETURN smsbus._batch_or_each('_noreport', late);
END
$$;

-- Marks the sent messages `ids` noreport.
CREATE FUNCTION _noreport(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m
    SET status = 'noreport', last_error = 'no delivery report before the deadline'
    FROM unnest(ids) AS u(id)
    WHERE m.id = u.id AND m.status::text = 'sent';
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Takes messages armed for their triggers (pending -> processing), oldest
-- first; the worker runs their chains.
CREATE FUNCTION _claim_triggers(p_limit integer) RETURNS SETOF bigint
LANGUAGE sql
AS $$
    UPDATE smsbus.message m SET trigger_status = 'processing'
    FROM (SELECT x.id FROM smsbus.message x WHERE x.trigger_status = 'pending'
          ORDER BY x.id LIMIT p_limit FOR UPDATE OF x SKIP LOCKED) p
    WHERE m.id = p.id
    RETURNING m.id
$$;

-- Chains a worker took and never finished (it died): armed again.
CREATE FUNCTION _resume_triggers(p_after interval DEFAULT interval '5 minutes', p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m SET trigger_status = 'pending'
    FROM (SELECT x.id FROM smsbus.message x
          WHERE x.trigger_status = 'processing' AND x.updated_at < now() - p_after
          LIMIT p_limit FOR UPDATE OF x SKIP LOCKED) stale
    WHERE m.id = stale.id;
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- One pass of the worker's maintenance; returns what each step did. Each
-- step runs in a subtransaction of its own: one that fails is logged and
-- named under "errors" (step: error), and the others still run.
CREATE FUNCTION _maintain(p_report_timeout interval DEFAULT interval '48 hours', p_limit integer DEFAULT 10000,
                          p_part_timeout interval DEFAULT interval '1 hour')
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    result jsonb := '{}';
    errors jsonb := '{}';
    step text;
    done jsonb;
BEGIN
    FOREACH step IN ARRAY ARRAY['promoted', 'leases_expired', 'noreport', 'triggers_resumed', 'archived',
                                'reports_dropped', 'usage_dropped', 'inbound_incomplete',
                                'parked_reports_applied'] LOOP
        BEGIN
            done := CASE step
                WHEN 'promoted' THEN to_jsonb(smsbus._promote_scheduled(p_limit))
                WHEN 'leases_expired' THEN to_jsonb(smsbus._expire_leases(p_limit))
                WHEN 'noreport' THEN to_jsonb(smsbus._mark_noreport(p_report_timeout, p_limit))
                WHEN 'triggers_resumed' THEN to_jsonb(smsbus._resume_triggers(interval '5 minutes', p_limit))
                WHEN 'archived' THEN (SELECT jsonb_build_object('archived', a.moved, 'archive_more', a.more)
                                      FROM smsbus._archive_scheduled() a)
                -- Reports whose submission never got recorded are kept a day.
                WHEN 'reports_dropped' THEN to_jsonb(smsbus._drop_old_reports())
                -- Daily-limit counters are kept a month, for operators to look back.
                WHEN 'usage_dropped' THEN to_jsonb(smsbus._drop_old_usage())
                WHEN 'inbound_incomplete' THEN to_jsonb(smsbus._expire_inbound_parts(p_part_timeout))
                WHEN 'parked_reports_applied' THEN to_jsonb(smsbus._apply_parked_reports())
            END;
            result := result || CASE WHEN jsonb_typeof(done) = 'object' THEN done
                                     ELSE jsonb_build_object(step, done) END;
        EXCEPTION WHEN OTHERS THEN
            errors := errors || jsonb_build_object(step, SQLERRM);
            RAISE WARNING 'smsbus maintenance: step % failed: %', step, SQLERRM;
        END;
    END LOOP;
    IF errors <> '{}' THEN
        result := result || jsonb_build_object('errors', errors);
    END IF;
    RETURN result;
END
$$;

CREATE FUNCTION _drop_old_reports() RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM smsbus.pending_report WHERE received_at < now() - interval '1 day' RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

CREATE FUNCTION _drop_old_usage() RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM smsbus.channel_usage WHERE day < (now() AT TIME ZONE 'UTC')::date - 31 RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- Archiving as smsbus.archiving says: one batch when due, or while the
-- last batch was full. Returns how many moved and whether more wait.
CREATE FUNCTION _archive_scheduled(OUT moved bigint, OUT more boolean)
LANGUAGE plpgsql
AS $$
DECLARE
    policy smsbus.archiving;
BEGIN
    moved := 0;
    more := false;
    SELECT * INTO policy FROM smsbus.archiving FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT policy.enabled THEN
        RETURN; -- off, or another worker is at it
    END IF;
    IF policy.last_run IS NOT NULL AND policy.last_moved < policy.batch_size
       AND policy.last_run > now() - policy.every THEN
        RETURN;
    END IF;
    moved := smsbus.archive(policy.older_than, policy.batch_size);
    more := moved >= policy.batch_size;
    UPDATE smsbus.archiving SET last_run = now(), last_moved = moved;
END
$$;

---------------------------------------------------------------------------
-- Views
---------------------------------------------------------------------------

-- The views read with the rights of whoever queries them (row security
-- included), not their owner's.

-- Messages waiting or in flight, per channel and status.
CREATE VIEW queue_depth WITH (security_invoker = true) AS
SELECT channel, status, count(*) AS messages, min(created_at) AS oldest
FROM message
WHERE status IN ('scheduled', 'queued', 'sending')
GROUP BY channel, status;

-- Each channel with its link state and queue (no credentials).
CREATE VIEW channel_overview WITH (security_invoker = true) AS
SELECT c.name, c.kind, c.enabled, c.can_send, c.can_receive, c.daily_limit,
       coalesce(s.status, 'disconnected') AS link, s.owner, s.since, s.last_error,
       coalesce(q.queued, 0) AS queued, coalesce(q.sending, 0) AS sending
FROM channel c
LEFT JOIN channel_state s ON s.channel = c.name
LEFT JOIN (SELECT channel,
                  count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status = 'sending') AS sending
           FROM message WHERE status IN ('queued', 'sending') GROUP BY channel) q
       ON q.channel = c.name;

---------------------------------------------------------------------------
-- Privileges on functions and views
---------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsbus FROM PUBLIC;
-- Helpers anyone may call; the triggers call some as the inserting role.
GRANT EXECUTE ON FUNCTION sms_encoding(text), sms_segments(text, text), status_is_permanent(text), _restoring(),
    _in_extension_script()
    TO PUBLIC;
-- The compiled router runs as smsbus_admin and calls these.
GRANT EXECUTE ON FUNCTION _channel_take(text), _channel_take_reason(text, integer),
    _route_group(bigint[], text[], integer[]), _round_robin_take(), _round_robin_refusal(),
    _channel_check(text)
    TO smsbus_admin;
GRANT EXECUTE ON FUNCTION _check_condition(text, text) TO smsbus_worker;
GRANT EXECUTE ON FUNCTION _excerpt(text) TO smsbus_admin, smsbus_worker;
GRANT EXECUTE ON FUNCTION _check_condition(text, text), _compile_router(), _route_target_code(route),
    _route_take_code(route), _block_run_code(bigint[], text[], text[], boolean),
    _route_run_code(bigint[], text[], text[], boolean), _first_match_code(text[], text), _condition_kind(text),
    _first_match(bigint, text[], integer, message), _route_first(bigint, text[], text[], bigint[], message),
    _block_route_first(bigint, text[], bigint[], text[], bigint, text[], text[], bigint[], message),
    _run_key(text[]), _block_route_run_code(bigint[], text[], text[], bigint[], text[], text[]),
    _route_run_append(text, text, bigint[], text[], text[], bigint[], text[], text[], boolean),
    _route_first_args(bigint[], text[], text[]), _route_result_code(text),
    _define_router(text, text, text, name[]), _rules_schemas(), _rules_search_path(name[]), reroute(bigint[], status[]),
    _explain_route(message),
    explain_route(bigint), explain_route(jsonb)
    TO smsbus_admin;
GRANT EXECUTE ON FUNCTION send(text, text, text, text, smallint, timestamptz, timestamptz, boolean,
    text, jsonb, text, text) TO smsbus_sender, smsbus_admin;
GRANT EXECUTE ON FUNCTION archive(interval, integer) TO smsbus_admin, smsbus_worker;
-- Trigger rows are checked as the admin who writes them; every role that
-- writes messages arms them.
-- The worker's role checks them too (`smsbus-worker check`).
GRANT EXECUTE ON FUNCTION _check_sql_script(text, text), _check_lua_script(text, text)
    TO smsbus_admin, smsbus_worker;
GRANT EXECUTE ON FUNCTION _trigger_arming() TO smsbus_sender, smsbus_admin, smsbus_worker;
-- The worker disables a trigger whose script it had to give up on.
GRANT EXECUTE ON FUNCTION _disable_trigger(bigint, text) TO smsbus_worker;
GRANT EXECUTE ON FUNCTION _claim_triggers(integer), _resume_triggers(interval, integer), _split_sql_script(text)
    TO smsbus_worker, smsbus_admin;
GRANT EXECUTE ON FUNCTION _claim(text, text, integer, interval),
    _mark_sent(text, bigint[], integer[], text[]), _mark_failed(bigint[], text[]),
    _mark_retry(bigint[], text[], double precision[]), _apply_reports(text, text[], text[], text[], text[]), _apply_parked_reports(),
    _record_inbound(text, text[], text[], text[], text[], timestamptz[], jsonb[]),
    _expire_leases(integer), _take_over(text, text), _release(text, bigint[]), _renew_leases(text, bigint[], interval), _promote_scheduled(integer),
    _record_inbound_parts(text, text[], text[], integer[], integer[], integer[], text[], jsonb[]),
    _expire_inbound_parts(interval),
    _mark_noreport(interval, integer), _maintain(interval, integer, interval), _archive_scheduled(),
    _promote(bigint[]), _drop_old_reports(), _drop_old_usage(), _set_aside_scheduled(bigint, text),
    _requeue_expired(bigint[]), _set_aside_lease(bigint, text), _noreport(bigint[]),
    _batch_or_each(text, bigint[], text)
    TO smsbus_worker, smsbus_admin;
GRANT SELECT ON queue_depth, channel_overview TO smsbus_sender, smsbus_admin, smsbus_worker;
-- The worker names itself in the trace; no one else may claim a name.
GRANT SET ON PARAMETER smsbus.actor TO smsbus_worker;

---------------------------------------------------------------------------
-- Backups
---------------------------------------------------------------------------

-- pg_dump leaves an extension's tables out unless they are marked: these
-- hold what operators configure and every message with its trace, so a
-- dump carries them and their identity counters. Worker state
-- (channel_state, channel_wakeup) starts afresh. Restoring runs with
-- smsbus.restoring = on, under which the queue's triggers keep each row
-- as it was dumped (README: Backups).
-- One call per statement: each rewrites the pg_extension row.
DO $dump$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['channel', 'route', 'block', 'trigger', 'archiving', 'channel_usage', 'message',
                             'message_event', 'message_part', 'pending_report', 'inbound_part',
                             'message_archive', 'message_part_archive'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('smsbus.' || t)::regclass, '');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['message', 'message_event', 'route', 'block', 'trigger'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('smsbus.' || t, 'id')::regclass, '');
    END LOOP;
END
$dump$;
