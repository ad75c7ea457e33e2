-- smsbus 0.1.0 -> 0.2.0 (ALTER EXTENSION smsbus UPDATE TO '0.2.0').
--
-- Every change to sql/ or to the extension's SQL functions made during
-- 0.2.0 goes here too, in the same commit; tests/tests/upgrade.rs checks
-- that an upgraded database has exactly the schema of a fresh install.

-- Rules compiled by an extension script (CREATE EXTENSION, or an upgrade
-- that recompiles) were bound to the extension's search_path instead of
-- the database's, and pg_temp could be named twice.
CREATE FUNCTION "_in_extension_script"() RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_in_extension_script_wrapper';
REVOKE ALL ON FUNCTION _in_extension_script() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _in_extension_script() TO PUBLIC;

-- The compiled router evaluates runs of conditions together: those that
-- use only built-in functions and operators in Rust (_first_match), other
-- ones without a subquery as one CASE expression, instead of an IF
-- statement each.
CREATE FUNCTION "_condition_kind"(
	"condition" TEXT /* & str */
) RETURNS TEXT /* & '_ str */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_condition_kind_wrapper';

-- The key that names a run in the backend's cache (rule_eval.rs): what
-- Rust keeps with the run, and the search_path its conditions are read
-- under.
CREATE FUNCTION _run_key(VARIADIC parts text[]) RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT hashtextextended(array_to_string(parts || current_setting('search_path'), E'\n;\n'), 0)
$$;

-- The arguments of _route_first for a run of routes after its key, and
-- the key, which covers the channels and ids too: Rust keeps them with the
-- run.
CREATE FUNCTION _route_first_args(ids bigint[], conditions text[], channels text[]) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT format('%s, %L::text[], %L::text[], %L::bigint[]',
                  smsbus._run_key(array_to_string(conditions, E'\n;\n'), array_to_string(channels, E'\n;\n'),
                                  array_to_string(ids, ',')),
                  conditions, channels, ids)
$$;

-- What follows a _route_first verdict in _r_result: return it when it
-- decided (`decided`: the statuses that do), else note why and go on.
CREATE FUNCTION _route_result_code(decided text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(E'    IF _r_result.status IN (%s) THEN\n        RETURN _r_result;\n    END IF;\n', decided)
        || E'    _r_over_limit := _r_over_limit OR _r_result.status = ''dailylimit'';\n'
        || E'    _r_skipped := nullif(concat_ws(''; '', _r_skipped, _r_result.reason), '''');\n'
$$;

-- The blocking rules, one run evaluated in Rust, and the first run of
-- routes, likewise, in one call (_block_route_first): one copy of the row
-- and two statements fewer for every message.
CREATE FUNCTION _block_route_run_code(block_ids bigint[], block_conditions text[], reasons text[],
                                      ids bigint[], conditions text[], channels text[]) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT format(E'    -- blocks %s, then routes %s\n', array_to_string(block_ids, ', '), array_to_string(ids, ', '))
        || format(E'    _r_result := smsbus._block_route_first(%s, %L::text[], %L::bigint[], %L::text[],\n' ||
                  E'                                           %s, $1);\n',
                  smsbus._run_key(array_to_string(block_conditions, E'\n;\n')), block_conditions, block_ids, reasons,
                  smsbus._route_first_args(ids, conditions, channels))
        || smsbus._route_result_code('''queued'', ''blocked''')
$$;

-- Appends a run of routes to the router's code. The first one joins the
-- blocking rules in one call when both are evaluated in Rust and nothing
-- came between them (block_ids is null unless the blocking rules are one
-- such run).
CREATE FUNCTION _route_run_append(code text, blocks text, block_ids bigint[], block_conditions text[],
                                  reasons text[], ids bigint[], conditions text[], channels text[],
                                  in_rust boolean) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN in_rust AND cardinality(ids) > 1 AND block_ids IS NOT NULL AND code = blocks
                THEN smsbus._block_route_run_code(block_ids, block_conditions, reasons, ids, conditions, channels)
                ELSE code || smsbus._route_run_code(ids, conditions, channels, in_rust) END
$$;

-- A run of blocking rules whose conditions have no subquery, in id order:
-- the first match blocks. Two or more are evaluated together: by
-- _first_match when they use only built-in functions and operators
-- (in_rust), else as one CASE, which PL/pgSQL evaluates without an
-- executor. Either costs a fraction of an IF statement per rule.
CREATE FUNCTION _block_run_code(ids bigint[], conditions text[], reasons text[], in_rust boolean) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN '';
    ELSIF cardinality(ids) = 1 THEN
        RETURN format(E'    -- block %s\n    IF (\n%s\n    ) THEN\n' ||
                      E'        RETURN ROW(''blocked'', NULL, %L, %L)::smsbus._routing;\n    END IF;\n',
                      ids[1], conditions[1], 'block ' || ids[1], reasons[1]);
    END IF;
    RETURN format(E'    -- blocks %s\n', array_to_string(ids, ', '))
        || CASE WHEN in_rust THEN format(E'    _r_hit := %s;\n', smsbus._first_match_code(conditions, '0'))
           ELSE E'    _r_hit := CASE\n'
                || (SELECT string_agg(format(E'        WHEN (\n%s\n        ) THEN %s\n', c.condition, c.n), '' ORDER BY c.n)
                    FROM unnest(conditions) WITH ORDINALITY AS c(condition, n))
                || E'    END;\n' END
        || format(E'    IF _r_hit IS NOT NULL THEN\n' ||
                  E'        RETURN ROW(''blocked'', NULL, ''block '' || (%L::bigint[])[_r_hit], (%L::text[])[_r_hit])::smsbus._routing;\n' ||
                  E'    END IF;\n', ids, reasons);
END
$$;

-- The call of _first_match for a run of conditions, looking after
-- position `after` (an expression). The key names the run in the
-- backend's cache (_run_key).
CREATE FUNCTION _first_match_code(conditions text[], after text) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT format('smsbus._first_match(%s, %L::text[], %s, $1)',
                  smsbus._run_key(array_to_string(conditions, E'\n;\n')), conditions, after)
$$;

-- A run of routes, each alone at its position, with a channel and a
-- condition without subquery, in position order. Two or more are
-- evaluated together: by _route_first, failover included, when they use
-- only built-in functions and operators (in_rust); else as one CASE for
-- the first match, then, only when its channel cannot take the message,
-- the same conditions again from the rule after it, so failover keeps
-- position order.
CREATE FUNCTION _route_run_code(ids bigint[], conditions text[], channels text[], in_rust boolean) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    -- %1$s: the route's name as an expression; %2$s: its indent.
    take text := E'%2$s_r_code := smsbus._channel_take(_r_channel);\n' ||
                 E'%2$sIF _r_code = 0 THEN\n' ||
                 E'%2$s    RETURN ROW(''queued'', _r_channel, %1$s, NULL)::smsbus._routing;\n' ||
                 E'%2$sEND IF;\n' ||
                 E'%2$s_r_over_limit := _r_over_limit OR _r_code = 4;\n' ||
                 E'%2$s_r_skipped := concat_ws(''; '', _r_skipped, %1$s || '': '' ||\n' ||
                 E'%2$s                        smsbus._channel_take_reason(_r_channel, _r_code));\n';
    first text;
    next text;
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN '';
    ELSIF cardinality(ids) = 1 THEN
        RETURN format(E'    -- route %s\n    IF (\n%s\n    ) THEN\n        _r_channel := %L;\n',
                      ids[1], conditions[1], channels[1])
            || format(take, quote_literal('route ' || ids[1]), '        ')
            || E'    END IF;\n';
    END IF;
    IF in_rust THEN
        -- The whole run, failover included, in one call.
        RETURN format(E'    -- routes %s\n', array_to_string(ids, ', '))
            || format(E'    _r_result := smsbus._route_first(%s, $1);\n',
                      smsbus._route_first_args(ids, conditions, channels))
            || smsbus._route_result_code('''queued''');
    END IF;
    -- The first pass, the common one, has no guard to evaluate.
    SELECT E'    _r_hit := CASE\n'
           || string_agg(format(E'        WHEN (\n%s\n        ) THEN %s\n', c.condition, c.n), '' ORDER BY c.n)
           || E'    END;\n',
           E'        _r_from := _r_hit;\n        _r_hit := CASE\n'
           || string_agg(format(E'            WHEN _r_from < %s AND (\n%s\n            ) THEN %s\n',
                                c.n, c.condition, c.n), '' ORDER BY c.n)
           || E'        END;\n'
    INTO first, next
    FROM unnest(conditions) WITH ORDINALITY AS c(condition, n);
    RETURN format(E'    -- routes %s\n', array_to_string(ids, ', '))
        || first
        || E'    WHILE _r_hit IS NOT NULL LOOP\n'
        || format(E'        _r_channel := (%L::text[])[_r_hit];\n', channels)
        || format(take, format('''route '' || (%L::bigint[])[_r_hit]', ids), '        ')
        || next
        || E'    END LOOP;\n';
END
$$;

-- Evaluates a run of conditions that use only built-in functions and
-- operators (extension/src/rule_eval.rs): the position of the first after
-- `after` that holds for the message, or null.
CREATE FUNCTION _first_match(key bigint, conditions text[], after integer, m message) RETURNS integer
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'smsbus_first_match';

-- A run of routes with such conditions, failover included: the verdict
-- of the first whose channel takes the message, else why each match was
-- skipped (extension/src/rule_eval.rs).
CREATE FUNCTION _route_first(key bigint, conditions text[], channels text[], ids bigint[], m message)
RETURNS _routing
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'smsbus_route_first';

-- The blocking rules and then the first routes, both such runs, in one call.
CREATE FUNCTION _block_route_first(block_key bigint, block_conditions text[], block_ids bigint[], reasons text[],
                                   key bigint, conditions text[], channels text[], ids bigint[], m message)
RETURNS _routing
LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'smsbus_block_route_first';

REVOKE ALL ON FUNCTION _condition_kind(text), _block_run_code(bigint[], text[], text[], boolean),
    _route_run_code(bigint[], text[], text[], boolean), _first_match_code(text[], text),
    _first_match(bigint, text[], integer, message), _route_first(bigint, text[], text[], bigint[], message),
    _block_route_first(bigint, text[], bigint[], text[], bigint, text[], text[], bigint[], message),
    _run_key(text[]), _block_route_run_code(bigint[], text[], text[], bigint[], text[], text[]),
    _route_run_append(text, text, bigint[], text[], text[], bigint[], text[], text[], boolean),
    _route_first_args(bigint[], text[], text[]), _route_result_code(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _condition_kind(text), _block_run_code(bigint[], text[], text[], boolean),
    _route_run_code(bigint[], text[], text[], boolean), _first_match_code(text[], text),
    _first_match(bigint, text[], integer, message), _route_first(bigint, text[], text[], bigint[], message),
    _block_route_first(bigint, text[], bigint[], text[], bigint, text[], text[], bigint[], message),
    _run_key(text[]), _block_route_run_code(bigint[], text[], text[], bigint[], text[], text[]),
    _route_run_append(text, text, bigint[], text[], text[], bigint[], text[], text[], boolean),
    _route_first_args(bigint[], text[], text[]), _route_result_code(text)
    TO smsbus_admin;

CREATE OR REPLACE FUNCTION _define_router(name text, declarations text, code text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    path text := current_setting('search_path');
    fn regprocedure;
BEGIN
    path := CASE WHEN path = '' THEN 'pg_temp'
                 WHEN path ~ '(^|,)\s*pg_temp\s*(,|$)' THEN path
                 ELSE path || ', pg_temp' END;
    EXECUTE format(
        E'CREATE OR REPLACE FUNCTION smsbus.%I(smsbus.message) RETURNS smsbus._routing\n' ||
        E'LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = %s\n' ||
        E'AS %L', name, path,
        E'-- Compiled by smsbus._compile_router() from smsbus.block and smsbus.route: do not edit.\n' ||
        E'#variable_conflict use_column\n<<message>>\nDECLARE\n' ||
        declarations ||
        E'    _r_code integer;\n    _r_channel text;\n    _r_skipped text;\n' ||
        E'    _r_over_limit boolean := false;\n    _r_ids bigint[];\n    _r_channels text[];\n' ||
        E'    _r_weights integer[];\n    _r_result smsbus._routing;\n    _r_hit integer;\n    _r_from integer;\nBEGIN\n' ||
        code || E'END\n');
    fn := format('smsbus.%I(smsbus.message)', name)::regprocedure;
    IF (SELECT p.proowner <> 'smsbus_admin'::regrole FROM pg_proc p WHERE p.oid = fn) THEN
        EXECUTE format('ALTER FUNCTION %s OWNER TO smsbus_admin', fn);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION _compile_router() RETURNS void
LANGUAGE plpgsql
AS $compile$
DECLARE
    conditions text;
    declarations text := '';
    code text := '';
    col record;
    r smsbus.route;
    b smsbus.block;
    grp record;
    blocks text;
    saved_path text;
    -- The run of simple conditions not written yet.
    run_ids bigint[] := '{}';
    run_conditions text[] := '{}';
    run_targets text[] := '{}';
    run_kind text;
    kind text;
    -- The blocking rules when they are one run evaluated in Rust.
    block_ids bigint[];
    block_conditions text[];
    reasons text[];
BEGIN
    IF smsbus._restoring() OR smsbus._in_extension_script() THEN
        -- pg_restore empties search_path and CREATE / ALTER EXTENSION set
        -- their own; the rules were written under the database's, and are
        -- compiled under it.
        saved_path := current_setting('search_path');
        PERFORM set_config('search_path', s.reset_val, true) FROM pg_settings s WHERE s.name = 'search_path';
    END IF;
    -- One compilation at a time: a second one waits here, then reads the
    -- rules the first committed (READ COMMITTED takes a new snapshot).
    PERFORM pg_advisory_xact_lock(hashtext('smsbus._compile_router'));

    -- Runs of conditions of one kind (_condition_kind) are evaluated
    -- together (_block_run_code, _route_run_code); a rule with a
    -- subquery, a function route and routes sharing a position stand
    -- alone, in order.
    FOR b IN SELECT * FROM smsbus.block WHERE enabled ORDER BY id LOOP
        kind := smsbus._condition_kind(b.condition);
        IF kind <> 'query' AND kind = coalesce(run_kind, kind) THEN
            run_kind := kind;
            run_ids := run_ids || b.id;
            run_conditions := run_conditions || b.condition;
            run_targets := run_targets || b.reason;
            CONTINUE;
        END IF;
        code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets, run_kind = 'builtin');
        run_kind := NULLIF(kind, 'query');
        run_ids := ARRAY[b.id]; run_conditions := ARRAY[b.condition]; run_targets := ARRAY[b.reason];
        IF kind = 'query' THEN
            code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets, false);
            run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
        END IF;
    END LOOP;
    IF code = '' AND run_kind = 'builtin' AND cardinality(run_ids) > 1 THEN
        -- Every blocking rule is in this one run: the first routes may join it.
        block_ids := run_ids; block_conditions := run_conditions; reasons := run_targets;
    END IF;
    code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets, run_kind = 'builtin');
    run_kind := NULL;
    run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
    blocks := code;

    FOR grp IN
        SELECT position, array_agg(id ORDER BY id) AS ids
        FROM smsbus.route WHERE enabled GROUP BY position ORDER BY position
    LOOP
        kind := 'query';
        IF cardinality(grp.ids) = 1 THEN
            SELECT * INTO r FROM smsbus.route WHERE id = grp.ids[1];
            IF r.function IS NULL THEN
                kind := smsbus._condition_kind(r.condition);
            END IF;
            IF kind <> 'query' AND kind = coalesce(run_kind, kind) THEN
                run_kind := kind;
                run_ids := run_ids || r.id;
                run_conditions := run_conditions || r.condition;
                run_targets := run_targets || r.channel;
                CONTINUE;
            END IF;
        END IF;
        code := smsbus._route_run_append(code, blocks, block_ids, block_conditions, reasons,
                                         run_ids, run_conditions, run_targets, run_kind = 'builtin');
        run_kind := NULL;
        run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
        IF kind <> 'query' THEN
            run_kind := kind;
            run_ids := ARRAY[r.id]; run_conditions := ARRAY[r.condition]; run_targets := ARRAY[r.channel];
            CONTINUE;
        END IF;
        IF cardinality(grp.ids) = 1 THEN
            code := code || format(E'    -- route %s (position %s)\n    IF (\n%s\n    ) THEN\n',
                                   r.id, r.position, r.condition)
                         || smsbus._route_target_code(r) || smsbus._route_take_code(r)
                         || E'    END IF;\n';
            CONTINUE;
        END IF;
        code := code || format(E'    -- position %s: routes share by weight\n', grp.position)
                     || E'    _r_ids := ''{}''; _r_channels := ''{}''; _r_weights := ''{}'';\n';
        FOR r IN SELECT * FROM smsbus.route WHERE id = ANY (grp.ids) ORDER BY id LOOP
            code := code || format(E'    -- route %s (weight %s)\n    IF (\n%s\n    ) THEN\n',
                                   r.id, r.weight, r.condition)
                         || smsbus._route_target_code(r)
                         || format(E'        IF _r_channel IS NOT NULL THEN\n' ||
                                   E'            _r_ids := _r_ids || %s::bigint;\n' ||
                                   E'            _r_channels := _r_channels || _r_channel;\n' ||
                                   E'            _r_weights := _r_weights || %s;\n' ||
                                   E'        END IF;\n    END IF;\n', r.id, r.weight);
        END LOOP;
        code := code || E'    IF cardinality(_r_ids) > 0 THEN\n' ||
                        E'        _r_result := smsbus._route_group(_r_ids, _r_channels, _r_weights);\n' ||
                        E'        IF _r_result.status = ''queued'' THEN\n            RETURN _r_result;\n        END IF;\n' ||
                        E'        _r_over_limit := _r_over_limit OR _r_result.status = ''dailylimit'';\n' ||
                        E'        _r_skipped := nullif(concat_ws(''; '', _r_skipped, _r_result.reason), '''');\n' ||
                        E'    END IF;\n';
    END LOOP;
    code := smsbus._route_run_append(code, blocks, block_ids, block_conditions, reasons,
                                     run_ids, run_conditions, run_targets, run_kind = 'builtin');
    code := code || E'    IF _r_skipped IS NOT NULL THEN\n' ||
                    E'        RETURN ROW(CASE WHEN _r_over_limit THEN ''dailylimit'' ELSE ''nochannel'' END,\n' ||
                    E'                   NULL, NULL, _r_skipped)::smsbus._routing;\n' ||
                    E'    END IF;\n' ||
                    E'    _r_channel := smsbus._round_robin_take();\n' ||
                    E'    IF _r_channel IS NOT NULL THEN\n' ||
                    E'        RETURN ROW(''queued'', _r_channel, ''round robin'', NULL)::smsbus._routing;\n' ||
                    E'    END IF;\n' ||
                    E'    RETURN smsbus._round_robin_refusal();\n';

    -- The columns that conditions PL/pgSQL evaluates may name become
    -- variables of the same name; copying all of them would cost every
    -- message. Runs evaluated in Rust read the row themselves: their lines,
    -- the router's own variables and string literals are left out.
    conditions := regexp_replace(code, '^.*smsbus\._(first_match|route_first|block_route_first)\(.*$', '', 'gn');
    conditions := regexp_replace(conditions, '\m_r_\w+(\.\w+)?|''[^'']*''', '', 'g');
    FOR col IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = 'smsbus.message'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    LOOP
        IF conditions ~* ('\m' || col.attname || '\M') THEN
            declarations := declarations || format(E'    %I %s := $1.%I;\n', col.attname, col.type, col.attname);
        END IF;
    END LOOP;

    PERFORM smsbus._define_router('_router', declarations, code);
    -- Messages that name their channel meet only the blocking rules; with
    -- none, the row trigger sees an IMMUTABLE constant and skips the call.
    IF blocks = '' THEN
        CREATE OR REPLACE FUNCTION smsbus._router_blocks(smsbus.message) RETURNS smsbus._routing
        LANGUAGE sql IMMUTABLE
        AS $none$ SELECT ROW(NULL, NULL, NULL, NULL)::smsbus._routing $none$;
        IF (SELECT p.proowner <> 'smsbus_admin'::regrole FROM pg_proc p
            WHERE p.oid = 'smsbus._router_blocks(smsbus.message)'::regprocedure) THEN
            ALTER FUNCTION smsbus._router_blocks(smsbus.message) OWNER TO smsbus_admin;
        END IF;
    ELSE
        PERFORM smsbus._define_router('_router_blocks', declarations,
                                      blocks || E'    RETURN ROW(NULL, NULL, NULL, NULL)::smsbus._routing;\n');
    END IF;
    IF saved_path IS NOT NULL THEN
        PERFORM set_config('search_path', saved_path, true);
    END IF;
END
$compile$;

SELECT _compile_router();

-- The row triggers check direction and to_address; as CHECK constraints
-- they were compiled again for every statement.
ALTER TABLE message DROP CONSTRAINT message_direction, DROP CONSTRAINT message_to_address_required;
ALTER TABLE message_archive DROP CONSTRAINT message_direction, DROP CONSTRAINT message_to_address_required;

-- Delivery reports parked for _mark_sent are looked for only when there are any.
CREATE OR REPLACE FUNCTION _mark_sent(p_channel text, p_ids bigint[], p_parts integer[], p_references text[])
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
            detail = NULL, submitted_at = now(), reported_at = NULL;

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

-- Trust boundaries (README: Security model).
-- No smsbus role may put a trigger on, truncate or reference smsbus's
-- tables: the system writes some of them with its owner's rights, where
-- such a trigger would run with those rights too.
-- Granted again as a fresh install grants them, in its order.
REVOKE ALL ON ALL TABLES IN SCHEMA smsbus FROM smsbus_sender, smsbus_admin, smsbus_worker;
-- Senders: write messages, read messages and their trace, see channels
-- without their config.
GRANT SELECT ON message TO smsbus_sender;
GRANT INSERT (to_address, body, from_address, channel, priority, scheduled_at, valid_until,
              request_report, encoding, custom, batch_id, idempotency_key)
    ON message TO smsbus_sender;
GRANT SELECT ON message_event, message_part, message_archive, message_part_archive, channel_state
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
GRANT SELECT, INSERT, UPDATE, DELETE ON channel, route, block, archiving, message TO smsbus_admin;
GRANT SELECT ON channel_state, message_event, message_part, pending_report, inbound_part, channel_wakeup
    TO smsbus_admin;
GRANT SELECT, UPDATE, DELETE ON channel_usage TO smsbus_admin;
GRANT SELECT, DELETE ON message_archive, message_part_archive TO smsbus_admin;

-- The worker: runs the queue.
GRANT SELECT ON channel TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE ON message TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON channel_state, message_part, pending_report, channel_wakeup,
    inbound_part TO smsbus_worker;
GRANT SELECT, DELETE ON channel_usage TO smsbus_worker;
GRANT SELECT, INSERT ON message_event TO smsbus_worker;
GRANT SELECT, INSERT, DELETE ON message_archive, message_part_archive TO smsbus_worker;
GRANT SELECT, UPDATE (last_run, last_moved) ON archiving TO smsbus_worker;
GRANT DELETE ON message TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON trigger TO smsbus_admin;
GRANT SELECT ON trigger TO smsbus_worker;
-- Views read with the rights of whoever queries them, row security included.
ALTER VIEW queue_depth SET (security_invoker = true);
ALTER VIEW channel_overview SET (security_invoker = true);
GRANT SELECT ON queue_depth, channel_overview TO smsbus_sender, smsbus_admin, smsbus_worker;

-- The compiled rules belong to smsbus_rules, which no one logs in as or
-- is a member of, and run with smsbus_admin's rights: no admin can replace
-- them with code that runs as whoever inserts. Nobody but the extension's
-- owner creates objects in schema smsbus.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'smsbus_rules') THEN
        CREATE ROLE smsbus_rules NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE smsbus_rules IS 'smsbus: owns the compiled routing rules, which run with smsbus_admin''s rights; grant it to no one.';
GRANT smsbus_admin TO smsbus_rules;
REVOKE CREATE ON SCHEMA smsbus FROM smsbus_admin;

-- Rules are checked, compiled and run under pg_catalog and smsbus first,
-- then the writer's schemas; what smsbus writes into the compiled code
-- names its functions and operators with their schema.
CREATE FUNCTION _rules_schemas() RETURNS name[]
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(array_agg(s.name ORDER BY s.n), '{}')
    FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS s(name, n)
    WHERE s.name OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'smsbus']::name[])
      AND s.name::text NOT LIKE 'pg\_temp\_%' AND s.name::text NOT LIKE 'pg\_toast\_temp\_%'
$$;

CREATE FUNCTION _rules_search_path(schemas name[]) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_to_string(ARRAY['pg_catalog', 'smsbus']
                           || ARRAY(SELECT quote_ident(s) FROM unnest(schemas) WITH ORDINALITY AS u(s, n) ORDER BY n)
                           || ARRAY['pg_temp'], ', ')
$$;

DROP FUNCTION _define_router(text, text, text);
CREATE FUNCTION _define_router(name text, declarations text, code text, schemas name[]) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
DECLARE
    path text := smsbus._rules_search_path(schemas);
    fn regprocedure;
BEGIN
    IF name IS NULL OR name NOT IN ('_router', '_router_blocks') THEN
        RAISE EXCEPTION 'smsbus._define_router writes smsbus._router and smsbus._router_blocks, not %', name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF code IS NULL THEN
        EXECUTE format(
            E'CREATE OR REPLACE FUNCTION smsbus.%I(smsbus.message) RETURNS smsbus._routing\n' ||
            E'LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, smsbus, pg_temp\n' ||
            E'AS $none$ SELECT ROW(NULL, NULL, NULL, NULL)::smsbus._routing $none$', name);
    ELSE
        EXECUTE format(
            E'CREATE OR REPLACE FUNCTION smsbus.%I(smsbus.message) RETURNS smsbus._routing\n' ||
            E'LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = %s\n' ||
            E'AS %L', name, path,
            E'-- Compiled by smsbus._compile_router() from smsbus.block and smsbus.route: do not edit.\n' ||
            E'#variable_conflict use_column\n<<message>>\nDECLARE\n' ||
            declarations ||
            E'    _r_code integer;\n    _r_channel text;\n    _r_skipped text;\n' ||
            E'    _r_over_limit boolean := false;\n    _r_ids bigint[];\n    _r_channels text[];\n' ||
            E'    _r_weights integer[];\n    _r_result smsbus._routing;\n    _r_hit integer;\n    _r_from integer;\nBEGIN\n' ||
            code || E'END\n');
    END IF;
    fn := format('smsbus.%I(smsbus.message)', name)::regprocedure;
    IF (SELECT p.proowner <> 'smsbus_rules'::regrole FROM pg_proc p WHERE p.oid = fn) THEN
        EXECUTE format('ALTER FUNCTION %s OWNER TO smsbus_rules', fn);
    END IF;
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
END
$$;


CREATE OR REPLACE FUNCTION _route_group(ids bigint[], channels text[], weights integer[]) RETURNS _routing
LANGUAGE plpgsql
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
DECLARE
    pick double precision;
    i integer;
    code integer;
    skipped text;
    over_limit boolean := false;
BEGIN
    WHILE cardinality(ids) > 0 LOOP
        pick := random() * (SELECT sum(w) FROM unnest(weights) w);
        i := 1;
        WHILE i < cardinality(ids) AND pick >= weights[i] LOOP
            pick := pick - weights[i];
            i := i + 1;
        END LOOP;
        code := smsbus._channel_take(channels[i]);
        IF code = 0 THEN
            RETURN ROW('queued', channels[i], 'route ' || ids[i], NULL)::smsbus._routing;
        END IF;
        over_limit := over_limit OR code = 4;
        skipped := concat_ws('; ', skipped,
                             'route ' || ids[i] || ': ' || smsbus._channel_take_reason(channels[i], code));
        ids := ids[:i - 1] || ids[i + 1:];
        channels := channels[:i - 1] || channels[i + 1:];
        weights := weights[:i - 1] || weights[i + 1:];
    END LOOP;
    RETURN ROW(CASE WHEN over_limit THEN 'dailylimit' END, NULL, NULL, skipped)::smsbus._routing;
END
$$;

CREATE OR REPLACE FUNCTION _round_robin_refusal() RETURNS _routing
LANGUAGE sql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT CASE WHEN EXISTS (SELECT FROM smsbus.channel c WHERE c.enabled AND c.can_send)
        THEN ROW('dailylimit', NULL, NULL,
                 'no route matched and every channel that can send reached its daily limit')::smsbus._routing
        ELSE ROW('nochannel', NULL, NULL, 'no route matched and no channel can send')::smsbus._routing
    END
$$;

CREATE OR REPLACE FUNCTION _channel_check(p_channel text) RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT CASE WHEN c.name IS NULL THEN 1
                WHEN NOT c.enabled THEN 2
                WHEN NOT c.can_send THEN 3
                WHEN c.daily_limit IS NOT NULL AND coalesce(u.routed, 0) >= c.daily_limit THEN 4
                ELSE 0 END
    FROM (SELECT p_channel AS name) n
    LEFT JOIN smsbus.channel c ON c.name = n.name
    LEFT JOIN smsbus.channel_usage u ON u.channel = c.name AND u.day = (now() AT TIME ZONE 'UTC')::date
$$;

CREATE OR REPLACE FUNCTION _route_target_code(r route) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    fn text;
BEGIN
    IF r.function IS NULL THEN
        RETURN format(E'        _r_channel := %L;\n', r.channel);
    END IF;
    SELECT format('%I.%I', n.nspname, p.proname) INTO fn
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.oid = to_regprocedure(r.function || '(smsbus.message)');
    IF fn IS NULL THEN
        RAISE EXCEPTION 'route %: function %(smsbus.message) does not exist', r.id, r.function
            USING ERRCODE = 'undefined_function';
    END IF;
    RETURN format(E'        BEGIN\n' ||
                  E'            _r_channel := %s($1);\n' ||
                  E'        EXCEPTION WHEN OTHERS THEN\n' ||
                  E'            RETURN ROW(''failed'', NULL, %L, %L OPERATOR(pg_catalog.||) SQLERRM)::smsbus._routing;\n' ||
                  E'        END;\n',
                  fn, 'route ' || r.id, 'route ' || r.id || ': ' || fn || ' failed: ');
END
$$;

CREATE OR REPLACE FUNCTION _route_take_code(r route) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(E'        IF _r_channel IS NOT NULL THEN\n' ||
                  E'            _r_code := smsbus._channel_take(_r_channel);\n' ||
                  E'            IF _r_code OPERATOR(pg_catalog.=) 0 THEN\n' ||
                  E'                RETURN ROW(''queued'', _r_channel, %L, NULL)::smsbus._routing;\n' ||
                  E'            END IF;\n' ||
                  E'            _r_over_limit := _r_over_limit OR _r_code OPERATOR(pg_catalog.=) 4;\n' ||
                  E'            _r_skipped := pg_catalog.concat_ws(''; '', _r_skipped,\n' ||
                  E'                %L OPERATOR(pg_catalog.||) smsbus._channel_take_reason(_r_channel, _r_code));\n' ||
                  E'        END IF;\n',
                  'route ' || r.id, 'route ' || r.id || ': ')
$$;

CREATE OR REPLACE FUNCTION _route_result_code(decided text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(E'    IF _r_result.status OPERATOR(pg_catalog.=) ANY (ARRAY[%s]) THEN\n' ||
                  E'        RETURN _r_result;\n    END IF;\n', decided)
        || E'    _r_over_limit := _r_over_limit OR _r_result.status OPERATOR(pg_catalog.=) ''dailylimit'';\n'
        || E'    _r_skipped := pg_catalog.concat_ws(''; '', _r_skipped, _r_result.reason);\n'
        || E'    IF _r_skipped OPERATOR(pg_catalog.=) '''' THEN\n        _r_skipped := NULL;\n    END IF;\n'
$$;

CREATE OR REPLACE FUNCTION _block_run_code(ids bigint[], conditions text[], reasons text[], in_rust boolean) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN '';
    ELSIF cardinality(ids) = 1 THEN
        RETURN format(E'    -- block %s\n    IF (\n%s\n    ) THEN\n' ||
                      E'        RETURN ROW(''blocked'', NULL, %L, %L)::smsbus._routing;\n    END IF;\n',
                      ids[1], conditions[1], 'block ' || ids[1], reasons[1]);
    END IF;
    RETURN format(E'    -- blocks %s\n', array_to_string(ids, ', '))
        || CASE WHEN in_rust THEN format(E'    _r_hit := %s;\n', smsbus._first_match_code(conditions, '0'))
           ELSE E'    _r_hit := CASE\n'
                || (SELECT string_agg(format(E'        WHEN (\n%s\n        ) THEN %s\n', c.condition, c.n), '' ORDER BY c.n)
                    FROM unnest(conditions) WITH ORDINALITY AS c(condition, n))
                || E'    END;\n' END
        || format(E'    IF _r_hit IS NOT NULL THEN\n' ||
                  E'        RETURN ROW(''blocked'', NULL, ''block '' OPERATOR(pg_catalog.||) (%L::bigint[])[_r_hit],\n' ||
                  E'                   (%L::text[])[_r_hit])::smsbus._routing;\n' ||
                  E'    END IF;\n', ids, reasons);
END
$$;

CREATE OR REPLACE FUNCTION _route_run_code(ids bigint[], conditions text[], channels text[], in_rust boolean) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    -- %1$s: the route's name as an expression; %2$s: its indent.
    take text := E'%2$s_r_code := smsbus._channel_take(_r_channel);\n' ||
                 E'%2$sIF _r_code OPERATOR(pg_catalog.=) 0 THEN\n' ||
                 E'%2$s    RETURN ROW(''queued'', _r_channel, %1$s, NULL)::smsbus._routing;\n' ||
                 E'%2$sEND IF;\n' ||
                 E'%2$s_r_over_limit := _r_over_limit OR _r_code OPERATOR(pg_catalog.=) 4;\n' ||
                 E'%2$s_r_skipped := pg_catalog.concat_ws(''; '', _r_skipped, %1$s OPERATOR(pg_catalog.||) '': ''\n' ||
                 E'%2$s    OPERATOR(pg_catalog.||) smsbus._channel_take_reason(_r_channel, _r_code));\n';
    first text;
    next text;
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN '';
    ELSIF cardinality(ids) = 1 THEN
        RETURN format(E'    -- route %s\n    IF (\n%s\n    ) THEN\n        _r_channel := %L;\n',
                      ids[1], conditions[1], channels[1])
            || format(take, quote_literal('route ' || ids[1]), '        ')
            || E'    END IF;\n';
    END IF;
    IF in_rust THEN
        -- The whole run, failover included, in one call.
        RETURN format(E'    -- routes %s\n', array_to_string(ids, ', '))
            || format(E'    _r_result := smsbus._route_first(%s, $1);\n',
                      smsbus._route_first_args(ids, conditions, channels))
            || smsbus._route_result_code('''queued''');
    END IF;
    -- The first pass, the common one, has no guard to evaluate.
    SELECT E'    _r_hit := CASE\n'
           || string_agg(format(E'        WHEN (\n%s\n        ) THEN %s\n', c.condition, c.n), '' ORDER BY c.n)
           || E'    END;\n',
           E'        _r_from := _r_hit;\n        _r_hit := CASE\n'
           || string_agg(format(E'            WHEN _r_from OPERATOR(pg_catalog.<) %s AND (\n%s\n            ) THEN %s\n',
                                c.n, c.condition, c.n), '' ORDER BY c.n)
           || E'        END;\n'
    INTO first, next
    FROM unnest(conditions) WITH ORDINALITY AS c(condition, n);
    RETURN format(E'    -- routes %s\n', array_to_string(ids, ', '))
        || first
        || E'    WHILE _r_hit IS NOT NULL LOOP\n'
        || format(E'        _r_channel := (%L::text[])[_r_hit];\n', channels)
        || format(take, format('''route '' OPERATOR(pg_catalog.||) (%L::bigint[])[_r_hit]', ids), '        ')
        || next
        || E'    END LOOP;\n';
END
$$;

CREATE OR REPLACE FUNCTION _compile_router() RETURNS void
LANGUAGE plpgsql
AS $compile$
DECLARE
    conditions text;
    declarations text := '';
    code text := '';
    col record;
    r smsbus.route;
    b smsbus.block;
    grp record;
    blocks text;
    saved_path text;
    -- The run of simple conditions not written yet.
    run_ids bigint[] := '{}';
    run_conditions text[] := '{}';
    run_targets text[] := '{}';
    run_kind text;
    kind text;
    -- The blocking rules when they are one run evaluated in Rust.
    block_ids bigint[];
    block_conditions text[];
    reasons text[];
    schemas name[];
BEGIN
    saved_path := current_setting('search_path');
    IF smsbus._restoring() OR smsbus._in_extension_script() THEN
        -- pg_restore empties search_path and CREATE / ALTER EXTENSION set
        -- their own; the rules were written under the database's, and are
        -- compiled under it.
        PERFORM set_config('search_path', s.reset_val, true) FROM pg_settings s WHERE s.name = 'search_path';
    END IF;
    -- Compiled under the search_path they were checked under and will run
    -- under (_rules_search_path).
    schemas := smsbus._rules_schemas();
    PERFORM set_config('search_path', smsbus._rules_search_path(schemas), true);
    -- One compilation at a time: a second one waits here, then reads the
    -- rules the first committed (READ COMMITTED takes a new snapshot).
    PERFORM pg_advisory_xact_lock(hashtext('smsbus._compile_router'));

    -- Runs of conditions of one kind (_condition_kind) are evaluated
    -- together (_block_run_code, _route_run_code); a rule with a
    -- subquery, a function route and routes sharing a position stand
    -- alone, in order.
    FOR b IN SELECT * FROM smsbus.block WHERE enabled ORDER BY id LOOP
        kind := smsbus._condition_kind(b.condition);
        IF kind <> 'query' AND kind = coalesce(run_kind, kind) THEN
            run_kind := kind;
            run_ids := run_ids || b.id;
            run_conditions := run_conditions || b.condition;
            run_targets := run_targets || b.reason;
            CONTINUE;
        END IF;
        code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets, run_kind = 'builtin');
        run_kind := NULLIF(kind, 'query');
        run_ids := ARRAY[b.id]; run_conditions := ARRAY[b.condition]; run_targets := ARRAY[b.reason];
        IF kind = 'query' THEN
            code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets, false);
            run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
        END IF;
    END LOOP;
    IF code = '' AND run_kind = 'builtin' AND cardinality(run_ids) > 1 THEN
        -- Every blocking rule is in this one run: the first routes may join it.
        block_ids := run_ids; block_conditions := run_conditions; reasons := run_targets;
    END IF;
    code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets, run_kind = 'builtin');
    run_kind := NULL;
    run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
    blocks := code;

    FOR grp IN
        SELECT position, array_agg(id ORDER BY id) AS ids
        FROM smsbus.route WHERE enabled GROUP BY position ORDER BY position
    LOOP
        kind := 'query';
        IF cardinality(grp.ids) = 1 THEN
            SELECT * INTO r FROM smsbus.route WHERE id = grp.ids[1];
            IF r.function IS NULL THEN
                kind := smsbus._condition_kind(r.condition);
            END IF;
            IF kind <> 'query' AND kind = coalesce(run_kind, kind) THEN
                run_kind := kind;
                run_ids := run_ids || r.id;
                run_conditions := run_conditions || r.condition;
                run_targets := run_targets || r.channel;
                CONTINUE;
            END IF;
        END IF;
        code := smsbus._route_run_append(code, blocks, block_ids, block_conditions, reasons,
                                         run_ids, run_conditions, run_targets, run_kind = 'builtin');
        run_kind := NULL;
        run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
        IF kind <> 'query' THEN
            run_kind := kind;
            run_ids := ARRAY[r.id]; run_conditions := ARRAY[r.condition]; run_targets := ARRAY[r.channel];
            CONTINUE;
        END IF;
        IF cardinality(grp.ids) = 1 THEN
            code := code || format(E'    -- route %s (position %s)\n    IF (\n%s\n    ) THEN\n',
                                   r.id, r.position, r.condition)
                         || smsbus._route_target_code(r) || smsbus._route_take_code(r)
                         || E'    END IF;\n';
            CONTINUE;
        END IF;
        code := code || format(E'    -- position %s: routes share by weight\n', grp.position)
                     || E'    _r_ids := ''{}''; _r_channels := ''{}''; _r_weights := ''{}'';\n';
        FOR r IN SELECT * FROM smsbus.route WHERE id = ANY (grp.ids) ORDER BY id LOOP
            code := code || format(E'    -- route %s (weight %s)\n    IF (\n%s\n    ) THEN\n',
                                   r.id, r.weight, r.condition)
                         || smsbus._route_target_code(r)
                         || format(E'        IF _r_channel IS NOT NULL THEN\n' ||
                                   E'            _r_ids := _r_ids OPERATOR(pg_catalog.||) %s::bigint;\n' ||
                                   E'            _r_channels := _r_channels OPERATOR(pg_catalog.||) _r_channel;\n' ||
                                   E'            _r_weights := _r_weights OPERATOR(pg_catalog.||) %s;\n' ||
                                   E'        END IF;\n    END IF;\n', r.id, r.weight);
        END LOOP;
        code := code || E'    IF pg_catalog.cardinality(_r_ids) OPERATOR(pg_catalog.>) 0 THEN\n' ||
                        E'        _r_result := smsbus._route_group(_r_ids, _r_channels, _r_weights);\n' ||
                        smsbus._route_result_code('''queued''') ||
                        E'    END IF;\n';
    END LOOP;
    code := smsbus._route_run_append(code, blocks, block_ids, block_conditions, reasons,
                                     run_ids, run_conditions, run_targets, run_kind = 'builtin');
    code := code || E'    IF _r_skipped IS NOT NULL THEN\n' ||
                    E'        RETURN ROW(CASE WHEN _r_over_limit THEN ''dailylimit'' ELSE ''nochannel'' END,\n' ||
                    E'                   NULL, NULL, _r_skipped)::smsbus._routing;\n' ||
                    E'    END IF;\n' ||
                    E'    _r_channel := smsbus._round_robin_take();\n' ||
                    E'    IF _r_channel IS NOT NULL THEN\n' ||
                    E'        RETURN ROW(''queued'', _r_channel, ''round robin'', NULL)::smsbus._routing;\n' ||
                    E'    END IF;\n' ||
                    E'    RETURN smsbus._round_robin_refusal();\n';

    -- The columns that conditions PL/pgSQL evaluates may name become
    -- variables of the same name; copying all of them would cost every
    -- message. Runs evaluated in Rust read the row themselves: their lines,
    -- the router's own variables and string literals are left out.
    conditions := regexp_replace(code, '^.*smsbus\._(first_match|route_first|block_route_first)\(.*$', '', 'gn');
    conditions := regexp_replace(conditions, '\m_r_\w+(\.\w+)?|''[^'']*''', '', 'g');
    FOR col IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = 'smsbus.message'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    LOOP
        IF conditions ~* ('\m' || col.attname || '\M') THEN
            declarations := declarations || format(E'    %I %s := $1.%I;\n', col.attname, col.type, col.attname);
        END IF;
    END LOOP;

    PERFORM smsbus._define_router('_router', declarations, code, schemas);
    -- Messages that name their channel meet only the blocking rules; with
    -- none, the row trigger sees an IMMUTABLE constant and skips the call.
    PERFORM smsbus._define_router('_router_blocks', declarations,
                                  CASE WHEN blocks <> ''
                                       THEN blocks || E'    RETURN ROW(NULL, NULL, NULL, NULL)::smsbus._routing;\n'
                                  END, schemas);
    PERFORM set_config('search_path', saved_path, true);
END
$compile$;

REVOKE ALL ON FUNCTION _rules_schemas(), _rules_search_path(name[]), _define_router(text, text, text, name[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _rules_schemas(), _rules_search_path(name[]), _define_router(text, text, text, name[])
    TO smsbus_admin;
SELECT _compile_router();

-- smsbus.actor and smsbus.max_segments are for superusers; the worker's
-- role may name itself in the trace.
GRANT SET ON PARAMETER smsbus.actor TO smsbus_worker;

-- Maintenance: each step in a subtransaction of its own; a message that
-- cannot be moved on is tried alone and set aside, never holding the
-- others. A repeated _mark_sent leaves parts already reported alone.
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

CREATE FUNCTION _set_aside_scheduled(id bigint, reason text) RETURNS void
LANGUAGE sql
AS $$
    UPDATE smsbus.message m
    SET scheduled_at = now() + interval '1 minute',
        last_error = 'not moved on when due, tried again in a minute: ' || left(reason, 500)
    WHERE m.id = _set_aside_scheduled.id
$$;

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

CREATE FUNCTION _set_aside_lease(id bigint, reason text) RETURNS void
LANGUAGE sql
AS $$
    UPDATE smsbus.message m
    SET claimed_until = now() + interval '1 minute',
        last_error = 'lease expired but not sent back, tried again in a minute: ' || left(reason, 500)
    WHERE m.id = _set_aside_lease.id
$$;

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

CREATE OR REPLACE FUNCTION _promote_scheduled(p_limit integer DEFAULT 10000) RETURNS integer
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

CREATE OR REPLACE FUNCTION _expire_leases(p_limit integer DEFAULT 10000) RETURNS integer
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

CREATE OR REPLACE FUNCTION _mark_noreport(p_default interval DEFAULT interval '48 hours', p_limit integer DEFAULT 10000)
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


CREATE OR REPLACE FUNCTION _mark_sent(p_channel text, p_ids bigint[], p_parts integer[], p_references text[])
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

REVOKE ALL ON FUNCTION _promote(bigint[]), _set_aside_scheduled(bigint, text), _requeue_expired(bigint[]), _set_aside_lease(bigint, text),
    _batch_or_each(text, bigint[], text), _noreport(bigint[]), _drop_old_reports(), _drop_old_usage() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _promote(bigint[]), _set_aside_scheduled(bigint, text), _requeue_expired(bigint[]), _set_aside_lease(bigint, text),
    _batch_or_each(text, bigint[], text), _noreport(bigint[]), _drop_old_reports(), _drop_old_usage() TO smsbus_worker, smsbus_admin;

-- Who made a change: smsbus.actor, or a worker named in its connection's
-- application_name (PgBouncer 1.18 takes no startup options, and keeps no
-- session setting across transactions in transaction pooling).
CREATE FUNCTION "_actor"() RETURNS TEXT /* alloc::string::String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_actor_wrapper';
CREATE FUNCTION "_actor_login"() RETURNS TEXT /* core::option::Option<alloc::string::String> */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_actor_login_wrapper';
REVOKE ALL ON FUNCTION _actor(), _actor_login() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _actor(), _actor_login() TO PUBLIC;

-- The trace names the login role behind an actor a session named itself.
ALTER TABLE message_event ADD COLUMN session_role text DEFAULT _actor_login();

-- Intermediate reports name their actor as the trace does everywhere, and
-- a channel's report_parts says which parts' reports decide a long message.
CREATE OR REPLACE FUNCTION _apply_reports(p_channel text, p_references text[], p_statuses text[], p_details text[],
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

-- The worker disables a trigger had to give up on (threads of its script
-- stuck outside Lua), the reason at the top of its description. The
-- worker's role may not write trigger rows otherwise.
CREATE FUNCTION _disable_trigger(p_id bigint, p_reason text) RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    WITH disabled AS (
        UPDATE smsbus.trigger t
        SET enabled = false,
            description = 'Disabled by smsbus-worker at ' || to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ') || ': '
                          || left(p_reason, 500) || '. Fix the script, then enable the trigger again.'
                          || coalesce(E'\n\n' || t.description, '')
        WHERE t.id = p_id AND t.enabled
        RETURNING 1)
    SELECT EXISTS (SELECT FROM disabled)
$$;
REVOKE ALL ON FUNCTION _disable_trigger(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _disable_trigger(bigint, text) TO smsbus_worker;

-- Errors quote outside input cut short.
CREATE FUNCTION _excerpt(input text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN length(input) <= 64 THEN input
                ELSE left(input, 64) || '… (' || length(input) || ' characters)' END
$$;

CREATE OR REPLACE FUNCTION _rule_check() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    rule text := TG_TABLE_NAME || ' ' || coalesce(NEW.id::text, '(new)');
    fn regprocedure;
    fn_kind "char";
    fn_returns regtype;
    fn_set boolean;
    saved_path text := current_setting('search_path');
    rules_path text;
BEGIN
    IF smsbus._restoring() THEN
        -- Checked when it was first written; kept as it was dumped.
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    -- What changed, or is switched on, is checked; so a rule broken by a
    -- later change elsewhere (a dropped table) can still be disabled.
    IF TG_OP = 'UPDATE' AND NOT (NEW.enabled AND NOT OLD.enabled)
       AND NEW.condition IS NOT DISTINCT FROM OLD.condition THEN
        IF TG_TABLE_NAME <> 'route' THEN
            RETURN NEW;
        END IF;
        -- Apart, so blocks (without these columns) never prepare it.
        IF NEW.channel IS NOT DISTINCT FROM OLD.channel AND NEW.function IS NOT DISTINCT FROM OLD.function THEN
            RETURN NEW;
        END IF;
    END IF;
    -- The condition and the function are looked up under the search_path
    -- the rules are compiled and run under (_rules_search_path), so what
    -- they name now is what they name when a message is routed.
    rules_path := smsbus._rules_search_path(smsbus._rules_schemas());
    PERFORM set_config('search_path', rules_path, true);
    PERFORM smsbus._check_condition(NEW.condition, rule);
    PERFORM set_config('search_path', saved_path, true);
    IF TG_TABLE_NAME <> 'route' THEN
        RETURN NEW;
    END IF;
    IF (NEW.channel IS NULL) = (NEW.function IS NULL) THEN
        RAISE EXCEPTION '% needs either a channel or a function, not %', rule,
            CASE WHEN NEW.channel IS NULL THEN 'neither' ELSE 'both' END
            USING ERRCODE = 'check_violation',
                  HINT = 'A route sends its matches to channel, or asks function which channel to use.';
    END IF;
    IF NEW.channel IS NOT NULL AND NOT EXISTS (SELECT FROM smsbus.channel c WHERE c.name = NEW.channel) THEN
        RAISE EXCEPTION '%: unknown channel "%"', rule, smsbus._excerpt(NEW.channel)
            USING ERRCODE = 'foreign_key_violation', HINT = 'Use a name from smsbus.channel.';
    END IF;
    IF NEW.function IS NOT NULL THEN
        PERFORM set_config('search_path', rules_path, true);
        fn := to_regprocedure(NEW.function || '(smsbus.message)');
        PERFORM set_config('search_path', saved_path, true);
        IF fn IS NULL THEN
            RAISE EXCEPTION '%: function %(smsbus.message) does not exist', rule, smsbus._excerpt(NEW.function)
                USING ERRCODE = 'undefined_function',
                      HINT = 'A route function takes smsbus.message and returns the channel name as text, or null for no match.';
        END IF;
        SELECT p.prokind, p.prorettype, p.proretset INTO fn_kind, fn_returns, fn_set
        FROM pg_proc p WHERE p.oid = fn;
        IF fn_kind <> 'f' OR fn_returns <> 'text'::regtype OR fn_set THEN
            RAISE EXCEPTION '%: % must be a function returning text, not %', rule, fn,
                CASE WHEN fn_kind <> 'f' THEN 'a procedure or aggregate'
                     WHEN fn_set THEN 'setof ' || fn_returns::text
                     ELSE fn_returns::text END
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'A route function takes smsbus.message and returns the channel name as text, or null for no match.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION _excerpt(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _excerpt(text) TO smsbus_admin, smsbus_worker;

-- explain_route reads conditions as the router reads them.


-- What psql's \d+ and \df+ say about the objects users touch.

COMMENT ON COLUMN message.id IS 'The message''s id (system).';
COMMENT ON COLUMN message.to_address IS 'Recipient: international (+31612345678), national or a short code; normalised at INSERT.';
COMMENT ON COLUMN message.body IS 'The text; cut into segments as its encoding needs (smsbus.max_segments at most).';
COMMENT ON COLUMN message.from_address IS 'Sender: a number or up to 11 GSM characters; null for the channel''s default.';
COMMENT ON COLUMN message.channel IS 'The channel to send through; null lets the router choose.';
COMMENT ON COLUMN message.priority IS 'Higher goes first within a channel''s queue.';
COMMENT ON COLUMN message.scheduled_at IS 'When to send (default now); a later time makes the message scheduled.';
COMMENT ON COLUMN message.valid_until IS 'After this the message expires instead of being sent.';
COMMENT ON COLUMN message.request_report IS 'Ask the provider for a delivery report (default true).';
COMMENT ON COLUMN message.encoding IS 'gsm7, ucs2, latin1, or binary (8-bit data, the body written in hexadecimal digits); null picks gsm7 when every character allows, else ucs2.';
COMMENT ON COLUMN message.custom IS 'Fields of the user''s own (jsonb), for rules, triggers and row security.';
COMMENT ON COLUMN message.batch_id IS 'Groups messages sent together (indexed).';
COMMENT ON COLUMN message.idempotency_key IS 'Unique: a repeated INSERT with the same key is refused (smsbus.send returns the first id).';
COMMENT ON COLUMN message.direction IS 'out (sent) or in (received); written by the system.';
COMMENT ON COLUMN message.status IS 'Where the message is in its life (smsbus.status); written by the system.';
COMMENT ON COLUMN message.previous_status IS 'The status before the last update (system).';
COMMENT ON COLUMN message.trigger_status IS 'Where the message is with its triggers (smsbus.trigger_status).';
COMMENT ON COLUMN message.segments IS 'How many SMS the body needs.';
COMMENT ON COLUMN message.reference IS 'The provider''s id for the message (its first part''s).';
COMMENT ON COLUMN message.attempts IS 'How many times a channel claimed it for sending.';
COMMENT ON COLUMN message.last_error IS 'Why the message is where it is when that is not plain: the reason it failed, was blocked, retried or expired.';
COMMENT ON COLUMN message.routed_by IS 'What chose its channel: route N, round robin, channel given, or the block N that stopped it.';
COMMENT ON COLUMN message.sent_at IS 'When the provider accepted it.';
COMMENT ON COLUMN message.delivered_at IS 'When its delivery report said delivered.';
COMMENT ON COLUMN message.received_at IS 'When an inbound message arrived.';
COMMENT ON COLUMN message.claimed_by IS 'The worker whose channel holds it while sending (system).';
COMMENT ON COLUMN message.claimed_until IS 'When that worker''s lease ends (system).';

COMMENT ON COLUMN channel.name IS 'The channel''s name: letters, digits, _ . - (63 at most).';
COMMENT ON COLUMN channel.enabled IS 'Off: the worker disconnects it and the router skips it.';
COMMENT ON COLUMN channel.can_send IS 'Off: it only receives.';
COMMENT ON COLUMN channel.can_receive IS 'Off: it only sends.';
COMMENT ON COLUMN channel.daily_limit IS 'Most messages routed to it per day (UTC); null for no limit.';
COMMENT ON COLUMN channel.config IS 'Driver settings, credentials included (README: SMPP channels, GSM modem channels); senders cannot read it.';

COMMENT ON COLUMN route.position IS 'Routes are tried in position order; the first match wins; routes at one position share by weight.';
COMMENT ON COLUMN route.enabled IS 'Off: the route is not compiled in.';
COMMENT ON COLUMN route.condition IS 'An SQL boolean expression over the message''s columns, checked when written.';
COMMENT ON COLUMN route.channel IS 'Where matching messages go (or function).';
COMMENT ON COLUMN route.function IS 'A function (smsbus.message) RETURNS text naming the channel, or null for no match (or channel).';
COMMENT ON COLUMN route.weight IS 'Its share among the routes at its position.';

COMMENT ON COLUMN block.enabled IS 'Off: the rule is not compiled in.';
COMMENT ON COLUMN block.condition IS 'An SQL boolean expression over the message''s columns, checked when written.';
COMMENT ON COLUMN block.reason IS 'What a blocked message''s last_error says.';

COMMENT ON COLUMN trigger.name IS 'The trigger''s name (unique).';
COMMENT ON COLUMN trigger.position IS 'Triggers run in position order.';
COMMENT ON COLUMN trigger.enabled IS 'Off: it arms and runs nothing (the worker turns it off when its script gets stuck).';
COMMENT ON COLUMN trigger.on_status IS 'The permanent statuses it runs for; null for all.';
COMMENT ON COLUMN trigger.direction IS 'out or in; null for both.';
COMMENT ON COLUMN trigger.condition IS 'An SQL boolean expression over the message, evaluated when its turn comes.';
COMMENT ON COLUMN trigger.language IS 'lua or sql.';
COMMENT ON COLUMN trigger.script IS 'Lua defining process(message), or SQL with the message id as $1.';
COMMENT ON COLUMN trigger.final IS 'Stop the chain after this trigger runs.';

COMMENT ON COLUMN archiving.enabled IS 'Off: the worker archives nothing.';
COMMENT ON COLUMN archiving.older_than IS 'Finished messages unchanged this long move to message_archive.';
COMMENT ON COLUMN archiving.batch_size IS 'How many move per transaction.';
COMMENT ON COLUMN archiving.every IS 'How often the worker looks; batch after batch while a backlog lasts.';

COMMENT ON COLUMN message_event.actor IS 'Who made the change: smsbus.actor, a worker by its application name (worker:<id>), or the role.';
COMMENT ON COLUMN message_event.session_role IS 'The login role behind an actor the session named itself.';

COMMENT ON FUNCTION send(text, text, text, text, smallint, timestamptz, timestamptz, boolean, text, jsonb, text, text)
    IS 'Queues one SMS and returns its id; with an idempotency_key used before, the first message''s id.';
COMMENT ON FUNCTION archive(interval, integer)
    IS 'Moves up to batch_size finished messages unchanged for older_than to message_archive; returns how many.';
COMMENT ON FUNCTION reroute(bigint[], status[])
    IS 'Routes resting messages (nochannel, dailylimit, or the given statuses; all or those in ids) again.';
COMMENT ON FUNCTION explain_route(bigint)
    IS 'How the router decides for a message, rule by rule, without changing anything.';
COMMENT ON FUNCTION explain_route(jsonb)
    IS 'How the router would decide for a message with these columns, rule by rule.';
COMMENT ON FUNCTION sms_encoding(text) IS 'The encoding a body gets: gsm7 when every character allows, else ucs2.';
COMMENT ON FUNCTION sms_segments(text, text) IS 'How many SMS a body needs in an encoding (null: the one it would get).';
COMMENT ON FUNCTION status_is_permanent(text) IS 'Whether triggers may run for a status.';
COMMENT ON VIEW queue_depth IS 'Messages waiting or in flight, per channel and status.';
COMMENT ON VIEW channel_overview IS 'Each channel with its link state and queue (no credentials).';

-- Accounts: the outside clients of smsbus (SMPP binds); messages carry
-- the account that submitted them.
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
ALTER TABLE message ADD COLUMN account text;
ALTER TABLE message_archive ADD COLUMN account text;
-- Accounts: everything but the password's hash, which only
-- smsbus.set_password writes and smsbus._verify_password reads.
GRANT SELECT (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, description, created_at, updated_at),
      INSERT (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, description),
      UPDATE (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, description),
      DELETE
    ON account TO smsbus_admin;
GRANT SELECT (name, enabled, bind_types, max_binds, allowed_ips, allowed_sources, default_source, throughput,
              deliver_window, credit, daily_limit, channel, message_id_format, updated_at)
    ON account TO smsbus_worker;
CREATE FUNCTION "_password_hash"(
	"password" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_password_hash_wrapper';
CREATE FUNCTION "_password_matches"(
	"hash" TEXT, /* & str */
	"password" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_password_matches_wrapper';
REVOKE ALL ON FUNCTION _password_hash(text), _password_matches(text, text) FROM PUBLIC;
-- Checks an account row when it is written, and keeps its updated_at.
CREATE FUNCTION _account_check() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF smsbus._restoring() THEN
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    IF NEW.allowed_sources IS NOT NULL THEN
        BEGIN
            PERFORM '' ~ NEW.allowed_sources;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'account %: allowed_sources is not a regular expression: %',
                smsbus._excerpt(NEW.name), SQLERRM
                USING ERRCODE = 'invalid_regular_expression',
                      HINT = 'For example ''^(ACME|\+3161234)'': the source addresses the account may use.';
        END;
    END IF;
    IF NEW.db_role IS NOT NULL AND NEW.db_role IS DISTINCT FROM (CASE WHEN TG_OP = 'UPDATE' THEN OLD.db_role END) THEN
        PERFORM smsbus._check_account_role(NEW.name, NEW.db_role);
    END IF;
    RETURN NEW;
END
$$;

-- Refuses a db_role that is not a plain sender: it must exist and be a
-- member of smsbus_sender, and neither a superuser, nor able to bypass
-- row security, nor a member of an admin, worker or rules role (an
-- account's requests would see everything).
CREATE FUNCTION _check_account_role(account text, role text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
DECLARE
    r pg_roles;
BEGIN
    SELECT * INTO r FROM pg_roles WHERE rolname = _check_account_role.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account %: db_role "%" does not exist', smsbus._excerpt(account), smsbus._excerpt(role)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_has_role(r.oid, 'smsbus_sender', 'MEMBER') THEN
        RAISE EXCEPTION 'account %: db_role "%" is not a member of smsbus_sender', smsbus._excerpt(account),
            smsbus._excerpt(role)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('GRANT smsbus_sender TO %I;', role);
    END IF;
    IF r.rolsuper OR r.rolbypassrls OR pg_has_role(r.oid, 'smsbus_admin', 'MEMBER')
       OR pg_has_role(r.oid, 'smsbus_worker', 'MEMBER') OR pg_has_role(r.oid, 'smsbus_rules', 'MEMBER') THEN
        RAISE EXCEPTION 'account %: db_role "%" may see more than its own messages', smsbus._excerpt(account),
            smsbus._excerpt(role)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a role that is only a sender: not a superuser, not BYPASSRLS, not an admin, worker or rules role.';
    END IF;
END
$$;

-- The account whose db_role the current role is (null: none). For row
-- security policies: USING (account = smsbus.current_account()). Only a
-- role the session may become can be asked about.
CREATE FUNCTION current_account() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT smsbus._account_of_role(current_user::text)
$$;

CREATE FUNCTION _account_of_role(role text) RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT a.name FROM smsbus.account a
    WHERE a.db_role = _account_of_role.role AND pg_has_role(session_user, _account_of_role.role, 'MEMBER')
$$;

CREATE FUNCTION _account_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('smsbus_config', 'account');
    RETURN NULL;
END
$$;

-- Every column but credit, which accepting a submission takes from in
-- the same transaction: that is no change an account's binds must follow
-- (a test keeps this list whole).
CREATE TRIGGER account_check BEFORE INSERT OR UPDATE OF
        name, enabled, password_hash, bind_types, max_binds, allowed_ips, allowed_sources,
        default_source, throughput, deliver_window, daily_limit, channel, message_id_format, report_keep,
        long_message, report_parts, keep_udh, db_role, description, created_at, updated_at
    ON account
    FOR EACH ROW EXECUTE FUNCTION _account_check();
CREATE TRIGGER account_changed AFTER INSERT OR UPDATE OF
        name, enabled, password_hash, bind_types, max_binds, allowed_ips, allowed_sources,
        default_source, throughput, deliver_window, daily_limit, channel, message_id_format, report_keep,
        long_message, report_parts, keep_udh, db_role, description, created_at, updated_at
    OR DELETE OR TRUNCATE ON account
    FOR EACH STATEMENT EXECUTE FUNCTION _account_changed();

-- Sets an account's password: hashed (argon2id, a salt of its own), or an
-- argon2id hash in PHC form as given (made by a client, so the password
-- itself never reaches the server or its log). Null removes it: the
-- account can no longer log in.
CREATE FUNCTION set_password(account text, password text) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
BEGIN
    UPDATE smsbus.account a
    SET password_hash = CASE WHEN set_password.password IS NOT NULL
                             THEN smsbus._password_hash(set_password.password) END,
        updated_at = now()
    WHERE a.name = set_password.account;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account "%" does not exist', smsbus._excerpt(set_password.account)
            USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

-- Whether `password` is account's password (false for an account that
-- does not exist or has none). For the worker, at an SMPP bind.
CREATE FUNCTION _verify_password(account text, password text) RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT coalesce((SELECT smsbus._password_matches(a.password_hash, _verify_password.password)
                     FROM smsbus.account a
                     WHERE a.name = _verify_password.account AND a.password_hash IS NOT NULL), false)
$$;

GRANT EXECUTE ON FUNCTION set_password(text, text) TO smsbus_admin;
GRANT EXECUTE ON FUNCTION _verify_password(text, text) TO smsbus_worker;
REVOKE ALL ON FUNCTION _account_check(), _account_changed(), set_password(text, text), _verify_password(text, text)
    FROM PUBLIC;
-- The role an account's HTTP requests run as: admins set it, the worker
-- reads it with the key (_verify_api_key).
GRANT SELECT (db_role), INSERT (db_role), UPDATE (db_role) ON account TO smsbus_admin;
GRANT EXECUTE ON FUNCTION _check_account_role(text, text) TO smsbus_admin;
GRANT EXECUTE ON FUNCTION current_account(), _account_of_role(text) TO smsbus_sender, smsbus_admin, smsbus_worker;
REVOKE ALL ON FUNCTION _check_account_role(text, text), current_account(), _account_of_role(text) FROM PUBLIC;
COMMENT ON COLUMN account.db_role IS 'The database role its HTTP API requests run as, so grants and row security apply (null: the worker''s role, every statement naming the account).';
COMMENT ON FUNCTION current_account() IS 'The account whose db_role the current role is: for row security policies.';
SELECT pg_catalog.pg_extension_config_dump('smsbus.account'::regclass, '');
COMMENT ON COLUMN message.account IS 'The account that submitted it (over SMPP); null for messages written in SQL.';
COMMENT ON COLUMN account.name IS 'The account''s name, its SMPP system_id: letters, digits, _ . - (15 at most).';
COMMENT ON COLUMN account.enabled IS 'Off: it cannot bind.';
COMMENT ON COLUMN account.password_hash IS 'Its password as a salted argon2id hash: written by smsbus.set_password, read by no role.';
COMMENT ON COLUMN account.bind_types IS 'The SMPP binds it may open: transmitter, receiver, transceiver.';
COMMENT ON COLUMN account.max_binds IS 'Most binds it may have open at once, across workers.';
COMMENT ON COLUMN account.allowed_ips IS 'The networks it may connect from; null for anywhere.';
COMMENT ON COLUMN account.allowed_sources IS 'A regular expression every source address it gives must match; null for any.';
COMMENT ON COLUMN account.default_source IS 'The source address of its messages that give none.';
COMMENT ON COLUMN account.throughput IS 'Submissions per second across its binds; null for no limit.';
COMMENT ON COLUMN account.deliver_window IS 'Unanswered deliver_sm (reports, inbound messages) per bind.';
COMMENT ON COLUMN account.credit IS 'Parts it may still send; null keeps no credit.';
COMMENT ON COLUMN account.daily_limit IS 'Most messages it may submit per day (UTC); null for no limit.';
COMMENT ON COLUMN account.channel IS 'The channel its messages go to; null lets the router choose.';
COMMENT ON COLUMN account.message_id_format IS 'How it is told message ids: dec or hex.';
COMMENT ON FUNCTION set_password(text, text)
    IS 'Sets an account''s password (kept as a salted argon2id hash), or an argon2id hash as given; null removes it.';
SELECT _compile_router();

-- explain_route agrees with the router: a refused unknown channel, a failing function beside a taken route, round robin over channels at their daily limits.


-- The compiled rules use generic plans from the first message on; explain_route reads conditions as they do, refuses an unknown channel before any rule, and lets a rule the router never reaches not fail.
CREATE OR REPLACE FUNCTION _define_router(name text, declarations text, code text, schemas name[]) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
DECLARE
    path text := smsbus._rules_search_path(schemas);
    fn regprocedure;
BEGIN
    IF name IS NULL OR name NOT IN ('_router', '_router_blocks') THEN
        RAISE EXCEPTION 'smsbus._define_router writes smsbus._router and smsbus._router_blocks, not %', name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF code IS NULL THEN
        EXECUTE format(
            E'CREATE OR REPLACE FUNCTION smsbus.%I(smsbus.message) RETURNS smsbus._routing\n' ||
            E'LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, smsbus, pg_temp\n' ||
            E'AS $none$ SELECT ROW(NULL, NULL, NULL, NULL)::smsbus._routing $none$', name);
    ELSE
        EXECUTE format(
            E'CREATE OR REPLACE FUNCTION smsbus.%I(smsbus.message) RETURNS smsbus._routing\n' ||
            E'LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = %s\n' ||
            -- Generic plans from the first message on: a plan made for one
            -- message folds its values in as constants, so a condition such
            -- as `(SELECT priority > 9) AND (custom->>'n')::int > 0` would
            -- raise for the first few messages of a session and route the
            -- rest; generic plans read it as explain_route does.
            E'SET plan_cache_mode = force_generic_plan\n' ||
            E'AS %L', name, path,
            E'-- Compiled by smsbus._compile_router() from smsbus.block and smsbus.route: do not edit.\n' ||
            E'#variable_conflict use_column\n<<message>>\nDECLARE\n' ||
            declarations ||
            E'    _r_code integer;\n    _r_channel text;\n    _r_skipped text;\n' ||
            E'    _r_over_limit boolean := false;\n    _r_ids bigint[];\n    _r_channels text[];\n' ||
            E'    _r_weights integer[];\n    _r_result smsbus._routing;\n    _r_hit integer;\n    _r_from integer;\nBEGIN\n' ||
            code || E'END\n');
    END IF;
    fn := format('smsbus.%I(smsbus.message)', name)::regprocedure;
    IF (SELECT p.proowner <> 'smsbus_rules'::regrole FROM pg_proc p WHERE p.oid = fn) THEN
        EXECUTE format('ALTER FUNCTION %s OWNER TO smsbus_rules', fn);
    END IF;
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
END
$$;


SELECT _compile_router();

-- explain_route reads each condition through one function.
CREATE FUNCTION _explain_condition(condition text, m message, reached boolean,
                                   OUT hit boolean, OUT unreached text)
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('SELECT (%s) FROM (SELECT ($1).* OFFSET 0) AS message', condition) INTO hit USING m;
EXCEPTION WHEN OTHERS THEN
    IF reached THEN
        RAISE;
    END IF;
    unreached := SQLERRM;
END
$$;

CREATE OR REPLACE FUNCTION _explain_route(m message)
RETURNS TABLE (step integer, rule text, matched boolean, outcome text)
LANGUAGE plpgsql
AS $$
DECLARE
    b smsbus.block;
    r smsbus.route;
    hit boolean;
    code integer;
    ch text;
    fn text;
    decided text;
    decided_position integer;
    skipped boolean := false;
    over_limit boolean := false;
    names text;
    saved_path text := current_setting('search_path');
    unreached text;
BEGIN
    step := 0;
    -- An INSERT naming a channel that does not exist is refused before
    -- any rule is read.
    IF m.channel IS NOT NULL AND smsbus._channel_check(m.channel) = 1 THEN
        step := 1;
        rule := 'decision';
        matched := NULL;
        outcome := 'refused: unknown channel "' || smsbus._excerpt(m.channel) || '"';
        RETURN NEXT;
        RETURN;
    END IF;
    -- Conditions read as the router reads them (_rules_search_path).
    PERFORM set_config('search_path', smsbus._rules_search_path(smsbus._rules_schemas()), true);
    FOR b IN SELECT * FROM smsbus.block WHERE enabled ORDER BY id LOOP
        -- The router reads blocks until one decides.
        SELECT e.hit, e.unreached INTO hit, unreached
        FROM smsbus._explain_condition(b.condition, m, decided IS NULL) e;
        step := step + 1;
        rule := 'block ' || b.id;
        matched := coalesce(hit, false);
        outcome := CASE WHEN unreached IS NOT NULL THEN 'not reached (it would raise: ' || unreached || ')'
                        WHEN matched THEN 'blocked: ' || b.reason ELSE 'no match' END;
        IF matched AND decided IS NULL THEN
            decided := 'blocked by block ' || b.id || ': ' || b.reason;
        END IF;
        RETURN NEXT;
    END LOOP;

    IF m.channel IS NOT NULL THEN
        code := smsbus._channel_check(m.channel);
        decided := coalesce(decided, CASE code
            WHEN 0 THEN 'queued on ' || m.channel || ' (channel given; routes are not consulted)'
            WHEN 4 THEN 'dailylimit: ' || smsbus._channel_take_reason(m.channel, code)
            ELSE 'nochannel: ' || smsbus._channel_take_reason(m.channel, code) END);
    ELSE
        FOR r IN SELECT * FROM smsbus.route WHERE enabled ORDER BY position, id LOOP
            -- The router reads routes until a position decides, and that
            -- whole position.
            SELECT e.hit, e.unreached INTO hit, unreached
            FROM smsbus._explain_condition(r.condition, m,
                                           decided IS NULL OR decided_position IS NOT DISTINCT FROM r.position) e;
            step := step + 1;
            rule := format('route %s (position %s%s)', r.id, r.position,
                           CASE WHEN r.weight <> 1 THEN ', weight ' || r.weight ELSE '' END);
            matched := coalesce(hit, false);
            ch := r.channel;
            outcome := NULL;
            IF matched AND r.function IS NOT NULL THEN
                SELECT format('%I.%I', n.nspname, p.proname) INTO fn
                FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE p.oid = to_regprocedure(r.function || '(smsbus.message)');
                BEGIN
                    EXECUTE format('SELECT %s($1)', fn) INTO ch USING m;
                    IF ch IS NULL THEN
                        matched := false;
                        outcome := fn || ' returned null: no match';
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    outcome := 'failed: ' || fn || ': ' || SQLERRM;
                    -- The router reads every route of a position before it
                    -- picks one: a failure there fails the message even
                    -- beside a route that could take it.
                    IF decided IS NULL OR decided_position = r.position THEN
                        decided := 'failed: route ' || r.id || ': ' || fn || ' failed: ' || SQLERRM;
                        decided_position := NULL;
                    END IF;
                    ch := NULL;
                END;
            END IF;
            IF unreached IS NOT NULL THEN
                outcome := 'not reached (it would raise: ' || unreached || ')';
            ELSIF NOT matched THEN
                outcome := coalesce(outcome, 'no match');
            ELSIF ch IS NOT NULL THEN
                code := smsbus._channel_check(ch);
                IF code = 0 THEN
                    outcome := 'match: ' || ch || ' can take it';
                    IF decided IS NULL THEN
                        decided := 'queued on ' || ch || ' (route ' || r.id || ')';
                        decided_position := r.position;
                    ELSIF decided_position = r.position THEN
                        decided := decided || ' or on ' || ch || ' (route ' || r.id || '), by weight';
                    END IF;
                ELSE
                    outcome := 'match, skipped: ' || smsbus._channel_take_reason(ch, code);
                    skipped := true;
                    over_limit := over_limit OR code = 4;
                END IF;
            END IF;
            RETURN NEXT;
        END LOOP;
        IF decided IS NULL AND skipped THEN
            decided := CASE WHEN over_limit THEN 'dailylimit' ELSE 'nochannel' END
                       || ': every matching route was skipped';
        END IF;
        IF decided IS NULL THEN
            SELECT string_agg(c.name, ', ' ORDER BY c.name) INTO names
            FROM smsbus.channel c WHERE c.enabled AND c.can_send AND smsbus._channel_check(c.name) = 0;
            decided := CASE
                WHEN names IS NOT NULL THEN 'round robin over ' || names || ' (no route matched)'
                WHEN EXISTS (SELECT FROM smsbus.channel c WHERE c.enabled AND c.can_send)
                    THEN 'dailylimit: no route matched and every channel that can send reached its daily limit'
                ELSE 'nochannel: no route matched and no channel can send' END;
        END IF;
    END IF;
    step := step + 1;
    rule := 'decision';
    matched := NULL;
    outcome := decided;
    RETURN NEXT;
    PERFORM set_config('search_path', saved_path, true);
END
$$;

REVOKE ALL ON FUNCTION _explain_condition(text, message, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _explain_condition(text, message, boolean) TO smsbus_admin;

-- Maintenance expires queued messages whose validity ended while they waited.
CREATE INDEX message_queued_validity ON message (valid_until)
    WHERE status = 'queued' AND valid_until IS NOT NULL;
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

CREATE OR REPLACE FUNCTION _maintain(p_report_timeout interval DEFAULT interval '48 hours', p_limit integer DEFAULT 10000,
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
                WHEN 'archived' THEN (SELECT jsonb_build_object('archived', a.moved, 'archive_more', a.more)
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

REVOKE ALL ON FUNCTION _expire_queued(integer), _expire_queued_ids(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _expire_queued(integer), _expire_queued_ids(bigint[]) TO smsbus_worker, smsbus_admin;

-- The SMPP server: the listeners every worker opens and the binds open on them.
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
GRANT SELECT, INSERT, UPDATE, DELETE ON smpp_server TO smsbus_admin;
GRANT SELECT ON smpp_bind TO smsbus_admin;
GRANT SELECT ON smpp_server TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON smpp_bind TO smsbus_worker;
-- smsbus SMPP server: the listeners (smpp_server) and the binds open on
-- them (smpp_bind); schema.sql has the tables. The worker opens every
-- enabled listener, follows changes live, and records each bind here so
-- max_binds holds across workers (worker/src/smpp_server/).

-- Checks a listener row when it is written, and keeps its updated_at.
CREATE FUNCTION _smpp_server_check() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    port integer;
BEGIN
    IF smsbus._restoring() THEN
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    IF NEW.listen !~ '^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$' THEN
        RAISE EXCEPTION 'smpp_server %: listen must be host:port, not "%"',
            smsbus._excerpt(NEW.name), smsbus._excerpt(NEW.listen)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''0.0.0.0:2775'', ''127.0.0.1:2775'' or ''[::]:2775''.';
    END IF;
    port := substring(NEW.listen FROM ':([0-9]+)$')::integer;
    IF port NOT BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION 'smpp_server %: port % is out of range (1-65535)', smsbus._excerpt(NEW.name), port
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION _smpp_server_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('smsbus_config', 'smpp_server');
    RETURN NULL;
END
$$;

CREATE TRIGGER smpp_server_check BEFORE INSERT OR UPDATE ON smpp_server
    FOR EACH ROW EXECUTE FUNCTION _smpp_server_check();
CREATE TRIGGER smpp_server_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON smpp_server
    FOR EACH STATEMENT EXECUTE FUNCTION _smpp_server_changed();

-- Records a bind the worker has authenticated, unless the account already
-- has max_binds open (then null: the bind is refused with ESME_RBINDFAIL).
-- Binds whose worker stopped renewing them (alive_until passed) do not
-- count. Concurrent binds of one account, on any worker, take turns.
CREATE FUNCTION _open_bind(p_account text, p_server text, p_worker text, p_bind_type text,
                           p_interface_version text, p_peer inet, p_peer_port integer, p_alive interval)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    allowed integer;
    opened bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('smsbus.smpp_bind'), hashtext(p_account));
    SELECT a.max_binds INTO allowed FROM smsbus.account a WHERE a.name = p_account;
    IF NOT FOUND OR allowed <= (SELECT count(*) FROM smsbus.smpp_bind b
                                WHERE b.account = p_account AND b.alive_until > now()) THEN
        RETURN NULL;
    END IF;
    INSERT INTO smsbus.smpp_bind (account, server, worker, bind_type, interface_version, peer, peer_port,
                                  alive_until)
    VALUES (p_account, p_server, p_worker, p_bind_type, p_interface_version, p_peer, p_peer_port,
            now() + p_alive)
    RETURNING id INTO opened;
    RETURN opened;
END
$$;

-- Keeps a worker's open binds alive and writes their counters; returns,
-- per account with a bind here, how many of its live binds are here and
-- how many there are in all (the worker's share of its throughput).
CREATE FUNCTION _keep_binds(p_worker text, p_ids bigint[], p_submitted bigint[], p_refused bigint[],
                            p_throttled bigint[], p_delivered bigint[], p_window integer[],
                            p_alive interval)
RETURNS TABLE (account text, here integer, total integer)
LANGUAGE sql
AS $$
    WITH kept AS (
        UPDATE smsbus.smpp_bind b
        SET alive_until = now() + p_alive,
            submitted = k.submitted, refused = k.refused, throttled = k.throttled,
            delivered = k.delivered, window_in_use = k.window_in_use
        FROM unnest(p_ids, p_submitted, p_refused, p_throttled, p_delivered, p_window)
             AS k(id, submitted, refused, throttled, delivered, window_in_use)
        WHERE b.id = k.id AND b.worker = p_worker
        RETURNING b.account
    )
    SELECT k.account, count(*)::integer,
           (SELECT count(*)::integer FROM smsbus.smpp_bind o
            WHERE o.account = k.account AND (o.alive_until > now() OR o.worker = p_worker))
    FROM kept k
    GROUP BY k.account
$$;

-- Forgets binds that closed: the given ids of this worker, or, with null
-- ids, all of this worker's (at its start, for binds of a run that died).
CREATE FUNCTION _close_binds(p_worker text, p_ids bigint[]) RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (
        DELETE FROM smsbus.smpp_bind b
        WHERE b.worker = p_worker AND (p_ids IS NULL OR b.id = ANY (p_ids))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- Maintenance: binds of workers that died (their alive_until passed a
-- while ago; a live worker renews it every few seconds).
CREATE FUNCTION _expire_binds() RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (
        DELETE FROM smsbus.smpp_bind b WHERE b.alive_until < now() - interval '1 minute' RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

GRANT EXECUTE ON FUNCTION _open_bind(text, text, text, text, text, inet, integer, interval),
    _keep_binds(text, bigint[], bigint[], bigint[], bigint[], bigint[], integer[], interval),
    _close_binds(text, bigint[]), _expire_binds()
    TO smsbus_worker;

REVOKE ALL ON FUNCTION _smpp_server_check(), _smpp_server_changed(),
    _open_bind(text, text, text, text, text, inet, integer, interval),
    _keep_binds(text, bigint[], bigint[], bigint[], bigint[], bigint[], integer[], interval),
    _close_binds(text, bigint[]), _expire_binds()
    FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('smsbus.smpp_server'::regclass, '');
COMMENT ON COLUMN smpp_server.name IS 'The listener''s name, as smpp_bind.server shows it.';
COMMENT ON COLUMN smpp_server.enabled IS 'Off: every worker closes the listener and its sessions.';
COMMENT ON COLUMN smpp_server.listen IS 'host:port every worker listens on (on one host they share it).';
COMMENT ON COLUMN smpp_server.tls_cert_file IS 'PEM certificate chain on the workers'' machines: the listener speaks TLS (with tls_key_file).';
COMMENT ON COLUMN smpp_server.tls_key_file IS 'PEM private key on the workers'' machines, with tls_cert_file.';
COMMENT ON COLUMN smpp_server.interface_versions IS 'The SMPP versions a bind may ask for: 3.3, 3.4, 5.0.';
COMMENT ON COLUMN smpp_server.bind_timeout_s IS 'Seconds a connection may take to bind before it is closed.';
COMMENT ON COLUMN smpp_server.enquire_link_s IS 'Seconds of silence after which the server asks the client enquire_link.';
COMMENT ON COLUMN smpp_server.inactivity_timeout_s IS 'Seconds without a PDU from the client after which the session ends.';
COMMENT ON COLUMN smpp_server.submit_window IS 'Submissions a bind may have waiting for their submit_sm_resp; beyond it ESME_RTHROTTLED.';
COMMENT ON COLUMN smpp_bind.account IS 'The bound account.';
COMMENT ON COLUMN smpp_bind.server IS 'The smpp_server it is bound to.';
COMMENT ON COLUMN smpp_bind.worker IS 'The worker that serves it.';
COMMENT ON COLUMN smpp_bind.bind_type IS 'transmitter, receiver or transceiver.';
COMMENT ON COLUMN smpp_bind.peer IS 'The client''s address.';
COMMENT ON COLUMN smpp_bind.alive_until IS 'Renewed by its worker while open; once passed, the bind no longer counts.';
COMMENT ON COLUMN smpp_bind.submitted IS 'Messages accepted on this bind.';
COMMENT ON COLUMN smpp_bind.refused IS 'Submissions refused (bad input, not allowed).';
COMMENT ON COLUMN smpp_bind.throttled IS 'Submissions refused with ESME_RTHROTTLED (over throughput or window).';
COMMENT ON COLUMN smpp_bind.delivered IS 'deliver_sm the client acknowledged.';
COMMENT ON COLUMN smpp_bind.window_in_use IS 'Submissions waiting for their submit_sm_resp when last written.';

-- Delivery receipts to accounts (sql/smpp_outbox.sql).
ALTER TABLE message ADD COLUMN receipts smallint;
ALTER TABLE message_archive ADD COLUMN receipts smallint;
ALTER TABLE message ADD COLUMN client_parts jsonb;
ALTER TABLE message_archive ADD COLUMN client_parts jsonb;
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

GRANT SELECT (report_keep, long_message, report_parts, keep_udh),
      INSERT (report_keep, long_message, report_parts, keep_udh),
      UPDATE (report_keep, long_message, report_parts, keep_udh)
    ON account TO smsbus_admin;
GRANT SELECT (report_keep, long_message, report_parts, keep_udh) ON account TO smsbus_worker;
GRANT SELECT, DELETE ON smpp_outbox TO smsbus_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON smpp_outbox TO smsbus_worker;
SELECT pg_catalog.pg_extension_config_dump('smsbus.smpp_outbox'::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('smsbus.smpp_outbox', 'id')::regclass, '');
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

REVOKE ALL ON FUNCTION _queue_receipts(bigint[]), _queue_inbound(bigint), _claim_outbox(text, text, integer, interval),
    _outbox_acknowledged(bigint[]), _outbox_returned(text, bigint[], text[], real[]),
    _release_outbox(text), _expire_outbox()
    FROM PUBLIC;
COMMENT ON COLUMN account.report_keep IS 'How long a delivery receipt waits in smsbus.smpp_outbox for a receiver bind of it.';
COMMENT ON COLUMN account.long_message IS 'How long inbound messages go to it: payload (whole, in message_payload), udh or sar (in parts).';
COMMENT ON COLUMN account.keep_udh IS 'Send its messages on in the parts it sent, each with its own user data header (message.client_parts), over SMPP channels.';
COMMENT ON COLUMN account.report_parts IS 'Receipts for a message sent in parts: message (one, for the whole) or each (one per part, with its own outcome).';
COMMENT ON COLUMN message.client_parts IS 'The parts its account sent it in, kept when the account passes them through (keep_udh): [{"udh": hex, "chars": n}], n characters of body each; null: the channel cuts its own.';
COMMENT ON COLUMN message.receipts IS 'The delivery receipts its account asked for (SMPP registered_delivery): 1 every final outcome, 2 failures, 3 successes, +16 an intermediate one when sent; null none.';

-- Credit and daily limits of accounts (sql/accounts.sql).
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

GRANT SELECT, UPDATE, DELETE ON account_usage TO smsbus_admin;
GRANT UPDATE (credit) ON account TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON account_usage TO smsbus_worker;
SELECT pg_catalog.pg_extension_config_dump('smsbus.account_usage'::regclass, '');
-- Takes what submissions p_parts (in order, by account p_accounts) use of
-- their accounts' credit (parts) and daily limit (messages, UTC day), in
-- the transaction that inserts them; returns those refused, by ordinal
-- (from 1), with the reason. Accounts are locked in name order, so
-- concurrent writers wait for each other instead of deadlocking; with
-- NO KEY UPDATE, which rows that refer to the account (a receipt queued
-- for it in smsbus.smpp_outbox) do not wait for.
CREATE FUNCTION _take_account_quota(p_accounts text[], p_parts integer[])
RETURNS TABLE (n integer, reason text)
LANGUAGE plpgsql
AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    a record;
    credit_left bigint;
    used bigint;
    i integer;
BEGIN
    FOR a IN SELECT x.name, x.credit, x.daily_limit FROM smsbus.account x
             WHERE x.name = ANY (p_accounts) AND (x.credit IS NOT NULL OR x.daily_limit IS NOT NULL)
             ORDER BY x.name
             FOR NO KEY UPDATE LOOP
        credit_left := a.credit;
        used := 0;
        IF a.daily_limit IS NOT NULL THEN
            INSERT INTO smsbus.account_usage AS u (account, day) VALUES (a.name, today)
            ON CONFLICT (account, day) DO UPDATE SET submitted = u.submitted
            RETURNING u.submitted INTO used;
        END IF;
        FOR i IN 1 .. cardinality(p_accounts) LOOP
            CONTINUE WHEN p_accounts[i] IS DISTINCT FROM a.name;
            IF a.daily_limit IS NOT NULL AND used >= a.daily_limit THEN
                n := i;
                reason := format('account %s submitted its daily limit of %s messages today (UTC)',
                                 a.name, a.daily_limit);
                RETURN NEXT;
            ELSIF a.credit IS NOT NULL AND credit_left < p_parts[i] THEN
                n := i;
                reason := format('account %s has credit for %s parts; the message needs %s',
                                 a.name, credit_left, p_parts[i]);
                RETURN NEXT;
            ELSE
                credit_left := credit_left - p_parts[i];
                used := used + 1;
            END IF;
        END LOOP;
        IF a.credit IS NOT NULL AND credit_left <> a.credit THEN
            UPDATE smsbus.account x SET credit = credit_left WHERE x.name = a.name;
        END IF;
        IF a.daily_limit IS NOT NULL THEN
            UPDATE smsbus.account_usage u SET submitted = used WHERE u.account = a.name AND u.day = today;
        END IF;
    END LOOP;
END
$$;

-- Maintenance: daily counts of accounts older than 31 days.
CREATE FUNCTION _drop_old_account_usage() RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM smsbus.account_usage WHERE day < (now() AT TIME ZONE 'UTC')::date - 31 RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

GRANT EXECUTE ON FUNCTION _take_account_quota(text[], integer[]), _drop_old_account_usage() TO smsbus_worker;
REVOKE ALL ON FUNCTION _take_account_quota(text[], integer[]), _drop_old_account_usage() FROM PUBLIC;

-- The HTTP API's keys (sql/api_keys.sql).
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
-- API keys: everything but the hash; new keys only by smsbus.create_api_key.
GRANT SELECT (id, account, prefix, scopes, allowed_ips, rate_limit, enabled, description, created_at),
      UPDATE (scopes, allowed_ips, rate_limit, enabled, description),
      DELETE
    ON api_key TO smsbus_admin;
SELECT pg_catalog.pg_extension_config_dump('smsbus.api_key'::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('smsbus.api_key', 'id')::regclass, '');

-- A new key for `account`: 'sbk_' and 64 hexadecimal digits (256 bits
-- drawn from PostgreSQL's strong random source), shown only now.
CREATE FUNCTION create_api_key(account text, scopes text[] DEFAULT '{send,read}',
                               allowed_ips cidr[] DEFAULT NULL, description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
DECLARE
    key text := 'sbk_' || encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                                                    || gen_random_uuid()::text, 'UTF8')), 'hex');
BEGIN
    IF NOT EXISTS (SELECT FROM smsbus.account a WHERE a.name = create_api_key.account) THEN
        RAISE EXCEPTION 'account "%" does not exist', smsbus._excerpt(create_api_key.account)
            USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO smsbus.api_key (account, key_hash, prefix, scopes, allowed_ips, description)
    VALUES (create_api_key.account, sha256(convert_to(key, 'UTF8')), left(key, 12),
            coalesce(create_api_key.scopes, '{send,read}'), create_api_key.allowed_ips,
            create_api_key.description);
    RETURN key;
END
$$;

-- Whose `key` is: the key's id, account, scopes and address ranges, for
-- an enabled key of an enabled account (no row otherwise). For the worker,
-- at every HTTP request.
CREATE FUNCTION _verify_api_key(key text)
RETURNS TABLE (key_id bigint, account text, scopes text[], allowed_ips cidr[], rate_limit real, db_role text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT k.id, k.account, k.scopes, k.allowed_ips, k.rate_limit, a.db_role
    FROM smsbus.api_key k
    JOIN smsbus.account a ON a.name = k.account
    WHERE k.key_hash = sha256(convert_to(_verify_api_key.key, 'UTF8')) AND k.enabled AND a.enabled
$$;

GRANT EXECUTE ON FUNCTION create_api_key(text, text[], cidr[], text) TO smsbus_admin;
GRANT EXECUTE ON FUNCTION _verify_api_key(text) TO smsbus_worker;
REVOKE ALL ON FUNCTION create_api_key(text, text[], cidr[], text), _verify_api_key(text) FROM PUBLIC;
COMMENT ON COLUMN api_key.account IS 'The account whose key it is: requests made with it act for that account.';
COMMENT ON COLUMN api_key.prefix IS 'The key''s first 12 characters, to tell keys apart (the key itself is not kept).';
COMMENT ON COLUMN api_key.scopes IS 'What it may do: send (create and cancel messages), read (messages, channels, queue), admin.';
COMMENT ON COLUMN api_key.allowed_ips IS 'Address ranges it may be used from; null: anywhere.';
COMMENT ON COLUMN api_key.rate_limit IS 'Requests per second it may make on each worker (429 with Retry-After beyond); null: no limit.';
COMMENT ON COLUMN api_key.enabled IS 'A disabled key is refused (401) like an unknown one.';
COMMENT ON FUNCTION create_api_key(text, text[], cidr[], text)
    IS 'Makes an HTTP API key for an account and returns it, the only time it is shown (only its SHA-256 is kept).';

-- Webhooks (sql/webhooks.sql).
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

-- Events by time, for the status page's last hour: a BRIN index, as the
-- rows come in time order, costs an insert next to nothing.
CREATE INDEX message_event_at ON message_event USING brin (at) WITH (autosummarize = on);
COMMENT ON TABLE webhook_outbox IS 'Webhook events waiting for their endpoint''s 2xx, in order per message; dead ones kept.';
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook TO smsbus_admin;
GRANT SELECT, DELETE ON webhook_outbox TO smsbus_admin;
GRANT SELECT ON webhook TO smsbus_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_outbox TO smsbus_worker;
SELECT pg_catalog.pg_extension_config_dump('smsbus.webhook'::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('smsbus.webhook_outbox'::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('smsbus.webhook', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('smsbus.webhook_outbox', 'id')::regclass, '');

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
REVOKE ALL ON FUNCTION _dlr_type(status), _webhook_payload(text, text, message),
    _add_callback(bigint, text, text, text, text, integer), _prune_callbacks() FROM PUBLIC;
REVOKE ALL ON FUNCTION _webhook_message(message), _queue_webhooks(bigint[]), _queue_inbound_webhooks(bigint),
    _claim_webhooks(text, integer, interval), _webhooks_delivered(bigint[]), _webhooks_failed(bigint[], text[]),
    _release_webhooks(text), retry_webhooks(bigint) FROM PUBLIC;
COMMENT ON COLUMN webhook.account IS 'The account whose events it gets.';
COMMENT ON COLUMN webhook.url IS 'Where events are POSTed (http or https).';
COMMENT ON COLUMN webhook.secret IS 'Signs every smsbus-style call (X-Smsbus-Signature: t=<unix>,v1=<HMAC-SHA256 of "<t>.<body>">); 16 characters at least; none for Kannel and Jasmin callbacks.';
COMMENT ON COLUMN webhook.events IS 'status (every status change), report (delivered and notdelivered only), inbound (messages given to the account).';
COMMENT ON COLUMN webhook.concurrency IS 'Calls in flight to it at once, across workers.';
COMMENT ON COLUMN webhook.timeout_s IS 'Seconds a call may take before it counts as unanswered.';
COMMENT ON COLUMN webhook.retry_horizon IS 'How long an event is tried (backoff from 1 s, doubling, at most an hour) before it is kept as dead.';
COMMENT ON COLUMN webhook.message_id IS 'A callback of this one message (a Kannel or Jasmin dlr-url) rather than of the account''s messages; null: the account''s.';
COMMENT ON COLUMN webhook.style IS 'smsbus (signed JSON POST), kannel (a GET of the url with its %-escapes filled in) or jasmin (form fields, answered ACK/Jasmin).';
COMMENT ON COLUMN webhook.method IS 'GET or POST (jasmin callbacks; kannel ones are always GET, smsbus ones POST).';
COMMENT ON COLUMN webhook.report_mask IS 'The reports a callback wants, as Kannel''s dlr-mask: 1 delivered, 2 not delivered, 8 taken by the SMSC, 16 refused.';
COMMENT ON COLUMN webhook_outbox.dead IS 'Past its retry horizon: kept with its last_error until smsbus.retry_webhooks or a DELETE.';
COMMENT ON FUNCTION retry_webhooks(bigint)
    IS 'Tries dead webhook events again from now (of one webhook, or all), with a new retry horizon; returns how many.';

-- A message its sender (SMPP cancel_sm) or an operator took back before it
-- was claimed. Nothing in this script uses the value: a new enum value may
-- not be used in the transaction that adds it.
ALTER TYPE status ADD VALUE 'cancelled';

-- The archive is partitioned by month, and takes the trace of its
-- messages along (sql/archive.sql). The archive of the release before
-- becomes one partition of the new one as it is, no row copied: its
-- rows up to the end of the month of its newest, dropped whole once that
-- month is past archiving.keep. Its tables leave the extension, as the
-- months do not belong to it either: pg_dump carries them with their rows.
ALTER EXTENSION smsbus DROP TABLE message_archive;
ALTER EXTENSION smsbus DROP TABLE message_part_archive;
ALTER TABLE message_archive RENAME TO message_archive_legacy;
ALTER INDEX message_archive_pkey RENAME TO message_archive_legacy_pkey;
ALTER INDEX message_archive_idempotency_key RENAME TO message_archive_legacy_idempotency_key;
ALTER INDEX message_archive_created RENAME TO message_archive_legacy_created;
ALTER TABLE message_part_archive RENAME TO message_part_archive_legacy;
ALTER INDEX message_part_archive_pkey RENAME TO message_part_archive_legacy_pkey;
-- Reached through the archive only, where row security applies.
REVOKE ALL ON message_archive_legacy, message_part_archive_legacy FROM smsbus_sender, smsbus_admin, smsbus_worker;

CREATE TABLE message_archive (LIKE message INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
CREATE TABLE message_part_archive (LIKE message_part INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (submitted_at);
CREATE TABLE message_event_archive (LIKE message_event INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (at);
GRANT SELECT ON message_archive, message_part_archive, message_event_archive TO smsbus_sender;
GRANT SELECT, DELETE ON message_archive, message_part_archive TO smsbus_admin;
GRANT SELECT ON message_event_archive TO smsbus_admin;
GRANT SELECT, INSERT, DELETE ON message_archive, message_part_archive TO smsbus_worker;
GRANT SELECT ON message_event_archive TO smsbus_worker;

DO $attach$
DECLARE
    newest timestamptz;
BEGIN
    SELECT max(created_at) INTO newest FROM smsbus.message_archive_legacy;
    IF newest IS NULL THEN
        DROP TABLE smsbus.message_archive_legacy;
    ELSE
        EXECUTE format('ALTER TABLE smsbus.message_archive ATTACH PARTITION smsbus.message_archive_legacy
                        FOR VALUES FROM (MINVALUE) TO (%L)',
                       (date_trunc('month', newest AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC');
    END IF;
    SELECT max(submitted_at) INTO newest FROM smsbus.message_part_archive_legacy;
    IF newest IS NULL THEN
        DROP TABLE smsbus.message_part_archive_legacy;
    ELSE
        EXECUTE format('ALTER TABLE smsbus.message_part_archive ATTACH PARTITION smsbus.message_part_archive_legacy
                        FOR VALUES FROM (MINVALUE) TO (%L)',
                       (date_trunc('month', newest AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC');
    END IF;
END
$attach$;

ALTER TABLE archiving ADD COLUMN keep interval CONSTRAINT archiving_keep CHECK (keep > interval '0');
COMMENT ON COLUMN archiving.keep IS 'How long the archive keeps a month (null: for ever); older months are dropped whole.';

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
CREATE OR REPLACE FUNCTION archive(older_than interval, batch_size integer DEFAULT 10000) RETURNS bigint
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


COMMENT ON FUNCTION archive(interval, integer)
    IS 'Moves up to batch_size finished messages unchanged for older_than, with their parts and trace, to the archive; returns how many.';

-- Archiving makes its months ahead and drops those past keep.
DROP FUNCTION _archive_scheduled();
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
REVOKE ALL ON FUNCTION _archive_scheduled() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _archive_scheduled() TO smsbus_worker, smsbus_admin;

-- One pass of the worker's maintenance; returns what each step did. Each
-- step runs in a subtransaction of its own: one that fails is logged and
-- named under "errors" (step: error), and the others still run.
CREATE OR REPLACE FUNCTION _maintain(p_report_timeout interval DEFAULT interval '48 hours', p_limit integer DEFAULT 10000,
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

-- HTTP channels (REST providers): a third kind of channel, and received
-- messages the provider names stored once however often it posts them.
ALTER TABLE channel DROP CONSTRAINT channel_kind,
    ADD CONSTRAINT channel_kind CHECK (kind IN ('smpp', 'gsm', 'http'));
CREATE UNIQUE INDEX message_inbound_reference ON message (channel, reference)
    WHERE direction = 'in' AND reference IS NOT NULL;

-- Records received messages (arrays of equal length, one element per
-- message) and returns their ids in the same order. The channel acknowledges
-- them to the peer only after this commits. A message with the provider's
-- id as its reference is stored once per channel: a provider that posts it
-- again (its webhook's answer was lost) gets the first row's id.
CREATE OR REPLACE FUNCTION _record_inbound(
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
COMMENT ON COLUMN channel.kind IS 'smpp, gsm or http (a REST provider).';

-- Inbound parts: one lock key per set, taken in key order by the writer
-- and by expiry (sql/inbox.sql).
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
CREATE OR REPLACE FUNCTION _record_inbound_parts(
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
CREATE OR REPLACE FUNCTION _expire_inbound_parts(p_timeout interval DEFAULT interval '1 hour') RETURNS integer
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
GRANT EXECUTE ON FUNCTION _inbound_set_key(text, text, text, integer) TO smsbus_worker, smsbus_admin;
REVOKE ALL ON FUNCTION _inbound_set_key(text, text, text, integer) FROM PUBLIC;
