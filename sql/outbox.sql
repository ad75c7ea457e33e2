-- smsbus outbox: the worker's side of sending. A channel's owner claims
-- queued messages with a lease, submits them, and records their outcomes
-- in batches (worker/src/channels/outbox.rs).
--
-- The batch functions plan each call with its real array sizes
-- (force_custom_plan); see _claim for why they probe the queue by key.

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

GRANT EXECUTE ON FUNCTION _claim(text, text, integer, interval),
    _mark_sent(text, bigint[], integer[], text[]), _mark_failed(bigint[], text[]),
    _mark_retry(bigint[], text[], double precision[]), _take_over(text, text), _release(text, bigint[]),
    _renew_leases(text, bigint[], interval)
    TO smsbus_worker, smsbus_admin;
