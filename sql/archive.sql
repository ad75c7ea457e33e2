-- smsbus archive: finished messages leave the queue with their parts and
-- trace (smsbus.archive), into monthly partitions made as needed; whole
-- months past archiving.keep are dropped (docs/operations.md: Retention).
--
-- The partitions are made and dropped in the owner context (a partition
-- can only be made by the owner of its table): SECURITY DEFINER under a
-- fixed search_path, every name qualified, nothing taken from the caller
-- but times.

-- Each partition of an archive table with its range; MINVALUE and
-- MAXVALUE as -infinity and infinity.
CREATE FUNCTION _archive_bounds(p_table regclass)
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT b.partition,
           CASE WHEN b.bounds[1] = 'MINVALUE' THEN '-infinity' ELSE btrim(b.bounds[1], '''') END::timestamptz,
           CASE WHEN b.bounds[2] = 'MAXVALUE' THEN 'infinity' ELSE btrim(b.bounds[2], '''') END::timestamptz
    FROM (
        SELECT i.inhrelid::regclass AS partition,
               regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                            '^FOR VALUES FROM \((MINVALUE|''[^'']*'')\) TO \((MAXVALUE|''[^'']*'')\)$') AS bounds
        FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = p_table
    ) b
    WHERE b.bounds IS NOT NULL
$$;

-- Makes the months from p_from to p_to (UTC) in every archive table that
-- no partition covers yet, each with its indexes; returns how many it
-- made. Months more than a year ahead or 25 years back are refused:
-- whoever may call this makes a bounded number of tables.
CREATE FUNCTION _archive_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    month timestamp;
    last_month timestamp;
    month_start timestamptz;
    month_end timestamptz;
    archive record;
    name text;
    definition text;
    made integer := 0;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to > now() + interval '1 year'
       OR p_from < now() - interval '25 years' THEN
        RAISE EXCEPTION 'archive months are made from 25 years back up to a year ahead, not % to %', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    month := date_trunc('month', p_from AT TIME ZONE 'UTC');
    last_month := date_trunc('month', p_to AT TIME ZONE 'UTC');
    -- Workers making the same month at once: one at a time.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('smsbus archive partitions'));
    WHILE month <= last_month LOOP
        month_start := month AT TIME ZONE 'UTC';
        month_end := (month + interval '1 month') AT TIME ZONE 'UTC';
        FOR archive IN
            SELECT * FROM (VALUES
                ('message_archive', ARRAY['PRIMARY KEY (id)'],
                 ARRAY['(idempotency_key) WHERE idempotency_key IS NOT NULL', 'USING brin (created_at)']),
                ('message_part_archive', ARRAY['PRIMARY KEY (message_id, part)'], ARRAY['(channel, reference)']),
                ('message_event_archive', ARRAY[]::text[], ARRAY['(message_id, id)'])
            ) AS a (parent, constraints, indexes)
        LOOP
            CONTINUE WHEN EXISTS (
                SELECT FROM smsbus._archive_bounds(('smsbus.' || archive.parent)::regclass) b
                WHERE b.lower_bound < month_end AND b.upper_bound > month_start);
            name := archive.parent || to_char(month, '"_y"YYYY"m"MM');
            EXECUTE format('CREATE TABLE smsbus.%I PARTITION OF smsbus.%I FOR VALUES FROM (%L) TO (%L)',
                           name, archive.parent, month_start, month_end);
            FOREACH definition IN ARRAY archive.constraints LOOP
                EXECUTE format('ALTER TABLE smsbus.%I ADD %s', name, definition);
            END LOOP;
            FOREACH definition IN ARRAY archive.indexes LOOP
                EXECUTE format('CREATE INDEX ON smsbus.%I %s', name, definition);
            END LOOP;
            made := made + 1;
        END LOOP;
        month := month + interval '1 month';
    END LOOP;
    RETURN made;
END
$$;

-- Drops every archive partition whose range ended more than p_keep ago;
-- returns how many.
CREATE FUNCTION _drop_expired_archive(p_keep interval) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expired regclass;
    dropped integer := 0;
BEGIN
    IF p_keep IS NULL OR p_keep <= interval '0' THEN
        RAISE EXCEPTION 'keep must be a positive interval, not %', p_keep USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR expired IN
        SELECT b.partition
        FROM unnest(ARRAY['smsbus.message_archive', 'smsbus.message_part_archive',
                          'smsbus.message_event_archive']::regclass[]) t,
             smsbus._archive_bounds(t) b
        WHERE b.upper_bound <= now() - p_keep
        ORDER BY b.upper_bound
    LOOP
        EXECUTE format('DROP TABLE %s', expired);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- The trace of messages just archived (p_ids, in message_archive and no
-- longer in the queue) follows them; returns how many events moved. Only
-- this moves or removes events: no role may delete from the trace.
CREATE FUNCTION _archive_events(p_ids bigint[]) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH archived AS (
        SELECT a.id FROM smsbus.message_archive a
        WHERE a.id = ANY (p_ids) AND NOT EXISTS (SELECT FROM smsbus.message m WHERE m.id = a.id)
    ), gone AS (
        DELETE FROM smsbus.message_event e USING archived a WHERE e.message_id = a.id RETURNING e.*
    ), kept AS (
        INSERT INTO smsbus.message_event_archive SELECT * FROM gone RETURNING 1
    )
    SELECT count(*) FROM kept
$$;

-- Moves up to batch_size finished messages (permanent statuses, or sent
-- without a report requested) that have not changed for older_than into
-- smsbus.message_archive, with their parts and trace. Returns how many
-- moved; call again while it returns batch_size.
CREATE FUNCTION archive(older_than interval, batch_size integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    moved bigint;
    ids bigint[];
    oldest timestamptz;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a positive interval, not %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The batch, locked; the months it needs made; then the move.
    SELECT array_agg(v.id), min(v.created_at) INTO ids, oldest FROM (
        SELECT m.id, m.created_at FROM smsbus.message m
        WHERE (m.status NOT IN ('scheduled', 'queued', 'sending', 'sent')
               OR (m.status = 'sent' AND NOT m.request_report))
          AND m.trigger_status NOT IN ('pending', 'processing')
          AND m.updated_at < now() - older_than
        ORDER BY m.updated_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ) v;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM smsbus._archive_partitions(least(oldest, now()), now());
    WITH gone AS (
        DELETE FROM smsbus.message m WHERE m.id = ANY (ids) RETURNING m.*
    ), kept AS (
        INSERT INTO smsbus.message_archive SELECT * FROM gone RETURNING id
    ), gone_parts AS (
        DELETE FROM smsbus.message_part p WHERE p.message_id = ANY (ids) RETURNING p.*
    ), kept_parts AS (
        INSERT INTO smsbus.message_part_archive SELECT * FROM gone_parts
    )
    SELECT count(*) INTO moved FROM kept;
    PERFORM smsbus._archive_events(ids);
    RETURN moved;
END
$$;

REVOKE ALL ON FUNCTION _archive_bounds(regclass), _archive_partitions(timestamptz, timestamptz),
    _drop_expired_archive(interval), _archive_events(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _archive_bounds(regclass), _archive_partitions(timestamptz, timestamptz),
    _drop_expired_archive(interval), _archive_events(bigint[]) TO smsbus_worker, smsbus_admin;
GRANT EXECUTE ON FUNCTION archive(interval, integer) TO smsbus_admin, smsbus_worker;
