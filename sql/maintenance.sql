-- smsbus maintenance: what the worker does on a timer (worker/src/maintenance.rs
-- calls _maintain every --maintenance-interval): scheduled messages coming
-- due, expired leases, overdue delivery reports, resumed trigger chains,
-- archiving, and old bookkeeping. A step or a message that fails never
-- stops the others.
--
-- The worker passes the report deadline (--report-timeout-hours, else a
-- channel's config.report_timeout_s) and the wait for a concatenated
-- message's missing parts (--inbound-part-timeout). The rest are fixed:
--   5 minutes   a trigger chain left processing is armed again
--               (_resume_triggers: its worker died);
--   1 minute    a message that cannot be moved on is set aside
--               (_set_aside_scheduled, _set_aside_lease);
--   1 day       a delivery report whose submission was never recorded is
--               kept (_drop_old_reports);
--   31 days     daily-limit counts are kept (_drop_old_usage,
--               _drop_old_account_usage);
--   smsbus.archiving  when finished messages move to the archive.

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
    FOREACH step IN ARRAY ARRAY['promoted', 'leases_expired', 'queued_expired', 'noreport', 'triggers_resumed', 'archived',
                                'reports_dropped', 'usage_dropped', 'inbound_incomplete',
                                'parked_reports_applied', 'binds_expired', 'receipts_expired',
                                'account_usage_dropped'] LOOP
        BEGIN
            done := CASE step
                WHEN 'promoted' THEN to_jsonb(smsbus._promote_scheduled(p_limit))
                WHEN 'leases_expired' THEN to_jsonb(smsbus._expire_leases(p_limit))
                WHEN 'queued_expired' THEN to_jsonb(smsbus._expire_queued(p_limit))
                WHEN 'noreport' THEN to_jsonb(smsbus._mark_noreport(p_report_timeout, p_limit))
                WHEN 'triggers_resumed' THEN to_jsonb(smsbus._resume_triggers(interval '5 minutes', p_limit))
                WHEN 'archived' THEN (SELECT jsonb_build_object('archived', a.moved, 'archive_more', a.more,
                                                                'archive_months_dropped', a.dropped)
                                      FROM smsbus._archive_scheduled() a)
                -- Reports whose submission never got recorded are kept a day.
                WHEN 'reports_dropped' THEN to_jsonb(smsbus._drop_old_reports())
                -- Daily-limit counters are kept a month, for operators to look back.
                WHEN 'usage_dropped' THEN to_jsonb(smsbus._drop_old_usage())
                WHEN 'inbound_incomplete' THEN to_jsonb(smsbus._expire_inbound_parts(p_part_timeout))
                WHEN 'parked_reports_applied' THEN to_jsonb(smsbus._apply_parked_reports())
                -- SMPP binds of workers that died (sql/smpp_server.sql).
                WHEN 'binds_expired' THEN to_jsonb(smsbus._expire_binds())
                -- Delivery receipts no bind took in time (sql/smpp_outbox.sql).
                WHEN 'receipts_expired' THEN to_jsonb(smsbus._expire_outbox())
                -- Daily counts of accounts (sql/accounts.sql).
                WHEN 'account_usage_dropped' THEN to_jsonb(smsbus._drop_old_account_usage())
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
-- last batch was full; this month's and next month's partitions made
-- ahead; months past keep dropped. Returns how many moved, whether more
-- wait, and how many months were dropped.
CREATE FUNCTION _archive_scheduled(OUT moved bigint, OUT more boolean, OUT dropped integer)
LANGUAGE plpgsql
AS $$
DECLARE
    policy smsbus.archiving;
BEGIN
    moved := 0;
    more := false;
    dropped := 0;
    SELECT * INTO policy FROM smsbus.archiving FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR NOT policy.enabled THEN
        RETURN; -- off, or another worker is at it
    END IF;
    IF policy.last_run IS NOT NULL AND policy.last_moved < policy.batch_size
       AND policy.last_run > now() - policy.every THEN
        RETURN;
    END IF;
    PERFORM smsbus._archive_partitions(now(), now() + interval '1 month');
    moved := smsbus.archive(policy.older_than, policy.batch_size);
    more := moved >= policy.batch_size;
    IF policy.keep IS NOT NULL THEN
        dropped := smsbus._drop_expired_archive(policy.keep);
    END IF;
    UPDATE smsbus.archiving SET last_run = now(), last_moved = moved;
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
-- set to queued (see router_compile.sql).
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

-- Expires queued messages whose validity ended while they waited (their
-- channel's owner is away, or the queue is long); a claim expires the
-- ones it meets itself.
CREATE FUNCTION _expire_queued(p_limit integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    late bigint[];
BEGIN
    SELECT array_agg(x.id) INTO late
    FROM (SELECT id FROM smsbus.message
          WHERE status = 'queued' AND valid_until <= now()
          ORDER BY valid_until LIMIT p_limit FOR UPDATE SKIP LOCKED) x;
    -- One that cannot be expired is logged and tried again next pass.
    RETURN smsbus._batch_or_each('_expire_queued_ids', late);
END
$$;

-- Expires the queued messages `ids`.
CREATE FUNCTION _expire_queued_ids(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    done integer;
BEGIN
    UPDATE smsbus.message m
    SET status = 'expired', last_error = 'validity period ended while the message waited in the queue'
    FROM unnest(ids) AS u(id)
    WHERE m.id = u.id AND m.status::text = 'queued';
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

GRANT EXECUTE ON FUNCTION _expire_leases(integer), _promote_scheduled(integer),
    _mark_noreport(interval, integer), _maintain(interval, integer, interval), _archive_scheduled(),
    _promote(bigint[]), _drop_old_reports(), _drop_old_usage(), _set_aside_scheduled(bigint, text),
    _requeue_expired(bigint[]), _set_aside_lease(bigint, text), _noreport(bigint[]),
    _batch_or_each(text, bigint[], text), _expire_queued(integer), _expire_queued_ids(bigint[])
    TO smsbus_worker, smsbus_admin;
