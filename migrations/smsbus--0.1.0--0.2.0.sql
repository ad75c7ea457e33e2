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
