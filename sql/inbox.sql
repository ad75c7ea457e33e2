-- smsbus inbox: what comes back from the outside world. Delivery reports
-- matched to the parts they report on, and inbound messages (whole, or
-- parts of a concatenated one) committed before the peer is told
-- (worker/src/channels/inbox.rs).

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
    -- Which parts' reports decide a long message (the channel's
    -- report_parts): all (any failed part fails it, all delivered deliver
    -- it), first, last, or any (the first final report), for providers
    -- that report only one part.
    policy text := coalesce((SELECT c.config->>'report_parts' FROM smsbus.channel c WHERE c.name = p_channel), 'all');
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
            -- The status test again here, where it is checked against the
            -- row as it is once locked: a report applied at the same time
            -- by another transaction (a worker's inbox, maintenance's
            -- parked reports) may have made the part final since this
            -- statement's snapshot, and a late ENROUTE must not undo its
            -- DELIVRD.
            UPDATE smsbus.message_part p
            SET status = t.status, detail = t.detail, reported_at = now()
            FROM target t
            WHERE p.message_id = t.message_id AND p.part = t.part AND p.status IN ('sent', 'enroute')
            RETURNING p.message_id, p.reference, p.status, p.detail
        ), intermediate AS (
            -- ENROUTE, ACCEPTD: the message stays sent; the trace says so.
            INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, session_role, detail)
            SELECT p.message_id, 'sent', 'sent', smsbus._actor(), smsbus._actor_login(),
                   'intermediate report: ' || coalesce(p.detail, p.status)
            FROM probed p WHERE p.status = 'enroute'
            ORDER BY p.ord
        )
        SELECT (SELECT count(*) FROM applied), (SELECT array_agg(DISTINCT a.message_id) FROM applied a),
               (SELECT coalesce(array_agg(DISTINCT p.ord), '{}') FROM probed p)
        INTO step, touched, found;
        matched := matched + step;

        IF touched IS NOT NULL THEN
            -- Two reports for two parts of one message, applied at once
            -- (two webhook calls, two binds): each transaction's snapshot
            -- misses the other's part, and neither would decide the
            -- message. Locking the message serialises them, and the
            -- statement below takes its snapshot after the lock, so the
            -- later one sees both parts. In id order, so two batches
            -- cannot deadlock on each other's messages. Only messages
            -- still to decide (archive() locks finished ones before their
            -- parts, the opposite order), and only those of several parts:
            -- one part's report decides its message alone, and most
            -- messages are one part (a lock is a WAL record).
            PERFORM 1 FROM smsbus.message m
            WHERE m.id = ANY (touched) AND m.status::text = 'sent'
              AND EXISTS (SELECT FROM smsbus.message_part o WHERE o.message_id = m.id AND o.part = 2)
            ORDER BY m.id FOR NO KEY UPDATE;
            UPDATE smsbus.message m
            SET status = d.outcome::smsbus.status,
                last_error = CASE WHEN d.outcome = 'notdelivered' THEN d.failed_detail END
            FROM (SELECT s.message_id, s.failed_detail,
                         CASE policy
                         WHEN 'first' THEN s.first_status
                         WHEN 'last' THEN s.last_status
                         WHEN 'any' THEN CASE WHEN s.any_failed THEN 'notdelivered'
                                              WHEN s.any_delivered THEN 'delivered' END
                         ELSE CASE WHEN s.any_failed THEN 'notdelivered'
                                   WHEN s.all_delivered THEN 'delivered' END
                         END AS outcome
                  FROM (SELECT p.message_id,
                               bool_or(p.status = 'notdelivered') AS any_failed,
                               bool_or(p.status = 'delivered') AS any_delivered,
                               bool_and(p.status = 'delivered') AS all_delivered,
                               (array_agg(p.status ORDER BY p.part))[1] AS first_status,
                               (array_agg(p.status ORDER BY p.part DESC))[1] AS last_status,
                               min(p.detail) FILTER (WHERE p.status = 'notdelivered') AS failed_detail
                        FROM smsbus.message_part p
                        WHERE p.message_id = ANY (touched)
                        GROUP BY p.message_id) s) d
            WHERE m.id = d.message_id AND m.status::text = 'sent'
              AND d.outcome IN ('delivered', 'notdelivered');
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
-- them to the peer only after this commits. A message with the provider's
-- id as its reference is stored once per channel: a provider that posts it
-- again (its webhook's answer was lost) gets the first row's id.
CREATE FUNCTION _record_inbound(
    p_channel text, p_from text[], p_to text[], p_bodies text[], p_references text[],
    p_received_at timestamptz[] DEFAULT NULL, p_custom jsonb[] DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    plain bigint[];
    ids bigint[];
    received_at timestamptz[] := coalesce(p_received_at,
                                          array_fill(NULL::timestamptz, ARRAY[cardinality(p_bodies)]));
    custom jsonb[] := coalesce(p_custom, array_fill(NULL::jsonb, ARRAY[cardinality(p_bodies)]));
BEGIN
    -- Without a reference: one row each, ids in the order given.
    WITH ins AS (
        INSERT INTO smsbus.message (direction, channel, from_address, to_address, body, reference,
                                    received_at, custom)
        SELECT 'in', p_channel, u.from_address, u.to_address, u.body, NULL, u.received_at, u.custom
        FROM unnest(p_from, p_to, p_bodies, p_references, received_at, custom) WITH ORDINALITY
             AS u(from_address, to_address, body, reference, received_at, custom, ord)
        WHERE u.reference IS NULL
        ORDER BY u.ord
        RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO plain FROM ins;
    IF NOT EXISTS (SELECT FROM unnest(p_references) AS r(reference) WHERE r.reference IS NOT NULL) THEN
        RETURN plain;
    END IF;

    -- With one: once per (channel, reference), whoever posted it first.
    INSERT INTO smsbus.message (direction, channel, from_address, to_address, body, reference,
                                received_at, custom)
    SELECT DISTINCT ON (u.reference) 'in', p_channel, u.from_address, u.to_address, u.body, u.reference,
           u.received_at, u.custom
    FROM unnest(p_from, p_to, p_bodies, p_references, received_at, custom) WITH ORDINALITY
         AS u(from_address, to_address, body, reference, received_at, custom, ord)
    WHERE u.reference IS NOT NULL
    ORDER BY u.reference, u.ord
    ON CONFLICT (channel, reference) WHERE direction = 'in' AND reference IS NOT NULL DO NOTHING;

    SELECT array_agg(CASE WHEN x.reference IS NULL THEN plain[x.nth::integer]
                          ELSE (SELECT m.id FROM smsbus.message m
                                WHERE m.channel = p_channel AND m.reference = x.reference
                                  AND m.direction = 'in')
                     END ORDER BY x.ord)
    INTO ids
    FROM (SELECT u.reference, u.ord,
                 count(*) FILTER (WHERE u.reference IS NULL) OVER (ORDER BY u.ord) AS nth
          FROM unnest(p_references) WITH ORDINALITY AS u(reference, ord)) x;
    RETURN ids;
END
$$;

-- The advisory lock key of one set of inbound parts. Whoever adds a part
-- to a set, assembles it or expires it holds the set's lock, and takes
-- several sets' locks in key order, so two writers cannot deadlock.
CREATE FUNCTION _inbound_set_key(p_channel text, p_source text, p_destination text, p_reference integer)
RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT hashtext(format('smsbus.inbound %s %s %s %s', p_channel, p_source, p_destination, p_reference))
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
    set_key integer;
BEGIN
    -- One set at a time: two sessions delivering its last parts at once,
    -- or one and maintenance expiring the set, must not both assemble it.
    FOR set_key IN
        SELECT DISTINCT smsbus._inbound_set_key(p_channel, u.source, u.destination, u.reference)
        FROM unnest(p_from, p_to, p_references) AS u(source, destination, reference)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(set_key);
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(p_bodies), 0) LOOP
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
-- in last_error and custom, so nothing received is lost. Each set under
-- its lock, and only if it is still stale then: a part that came in the
-- meantime may have completed it, or made it fresh again.
CREATE FUNCTION _expire_inbound_parts(p_timeout interval DEFAULT interval '1 hour') RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    stale record;
    done integer := 0;
    assembled integer;
BEGIN
    FOR stale IN
        SELECT DISTINCT channel, source, destination, reference,
               smsbus._inbound_set_key(channel, source, destination, reference) AS set_key
        FROM smsbus.inbound_part
        GROUP BY channel, source, destination, reference, total
        HAVING max(received_at) < now() - p_timeout
        ORDER BY set_key
    LOOP
        PERFORM pg_advisory_xact_lock(stale.set_key);
        WITH gone AS (
            DELETE FROM smsbus.inbound_part p
            WHERE p.channel = stale.channel AND p.source = stale.source
              AND p.destination = stale.destination AND p.reference = stale.reference
              AND NOT EXISTS (SELECT FROM smsbus.inbound_part q
                              WHERE q.channel = p.channel AND q.source = p.source
                                AND q.destination = p.destination AND q.reference = p.reference
                                AND q.total = p.total AND q.received_at >= now() - p_timeout)
            RETURNING p.*
        ), messages AS (
            INSERT INTO smsbus.message (direction, channel, from_address, to_address, body, custom,
                                        last_error)
            SELECT 'in', g.channel, g.source, g.destination, string_agg(g.body, '' ORDER BY g.seq),
                   coalesce((array_agg(g.custom ORDER BY g.seq))[1], '{}')
                       || jsonb_build_object('parts', g.total, 'incomplete', true,
                                             'parts_received', array_agg(g.seq ORDER BY g.seq)),
                   format('incomplete: parts %s of %s received',
                          string_agg(g.seq::text, ', ' ORDER BY g.seq), g.total)
            FROM gone g
            GROUP BY g.channel, g.source, g.destination, g.reference, g.total
            RETURNING id
        )
        SELECT count(*) INTO assembled FROM messages;
        done := done + assembled;
    END LOOP;
    RETURN done;
END
$$;

GRANT EXECUTE ON FUNCTION _apply_reports(text, text[], text[], text[], text[]), _apply_parked_reports(),
    _record_inbound(text, text[], text[], text[], text[], timestamptz[], jsonb[]),
    _record_inbound_parts(text, text[], text[], integer[], integer[], integer[], text[], jsonb[]),
    _expire_inbound_parts(interval), _inbound_set_key(text, text, text, integer)
    TO smsbus_worker, smsbus_admin;
