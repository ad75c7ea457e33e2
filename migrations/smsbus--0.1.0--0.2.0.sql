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

-- The compiled router evaluates runs of simple conditions as one CASE
-- expression instead of an IF statement each.
CREATE FUNCTION "_condition_is_simple"(
	"condition" TEXT /* & str */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_condition_is_simple_wrapper';

CREATE FUNCTION _block_run_code(ids bigint[], conditions text[], reasons text[]) RETURNS text
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
    RETURN format(E'    -- blocks %s\n    _r_hit := CASE\n', array_to_string(ids, ', '))
        || (SELECT string_agg(format(E'        WHEN (\n%s\n        ) THEN %s\n', c.condition, c.n), '' ORDER BY c.n)
            FROM unnest(conditions) WITH ORDINALITY AS c(condition, n))
        || format(E'    END;\n    IF _r_hit IS NOT NULL THEN\n' ||
                  E'        RETURN ROW(''blocked'', NULL, ''block '' || (%L::bigint[])[_r_hit], (%L::text[])[_r_hit])::smsbus._routing;\n' ||
                  E'    END IF;\n', ids, reasons);
END
$$;

CREATE FUNCTION _route_run_code(ids bigint[], conditions text[], channels text[]) RETURNS text
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
    unguarded text;
    guarded text;
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN '';
    ELSIF cardinality(ids) = 1 THEN
        RETURN format(E'    -- route %s\n    IF (\n%s\n    ) THEN\n        _r_channel := %L;\n',
                      ids[1], conditions[1], channels[1])
            || format(take, quote_literal('route ' || ids[1]), '        ')
            || E'    END IF;\n';
    END IF;
    SELECT string_agg(format(E'        WHEN (\n%s\n        ) THEN %s\n', c.condition, c.n), '' ORDER BY c.n),
           string_agg(format(E'            WHEN _r_from < %s AND (\n%s\n            ) THEN %s\n',
                             c.n, c.condition, c.n), '' ORDER BY c.n)
    INTO unguarded, guarded
    FROM unnest(conditions) WITH ORDINALITY AS c(condition, n);
    RETURN format(E'    -- routes %s\n    _r_hit := CASE\n', array_to_string(ids, ', '))
        || unguarded
        || E'    END;\n'
        || E'    WHILE _r_hit IS NOT NULL LOOP\n'
        || format(E'        _r_channel := (%L::text[])[_r_hit];\n', channels)
        || format(take, format('''route '' || (%L::bigint[])[_r_hit]', ids), '        ')
        || E'        _r_from := _r_hit;\n'
        || E'        _r_hit := CASE\n'
        || guarded
        || E'        END;\n'
        || E'    END LOOP;\n';
END
$$;

REVOKE ALL ON FUNCTION _condition_is_simple(text), _block_run_code(bigint[], text[], text[]),
    _route_run_code(bigint[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION _condition_is_simple(text), _block_run_code(bigint[], text[], text[]),
    _route_run_code(bigint[], text[], text[]) TO smsbus_admin;

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

    SELECT string_agg(lower(c.condition), ' ') INTO conditions
    FROM (SELECT condition FROM smsbus.block WHERE enabled
          UNION ALL SELECT condition FROM smsbus.route WHERE enabled) c;
    -- The columns the conditions may name become variables of the same
    -- name; copying all of them would cost every message.
    FOR col IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = 'smsbus.message'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    LOOP
        IF position(lower(col.attname) IN coalesce(conditions, '')) > 0 THEN
            declarations := declarations || format(E'    %I %s := $1.%I;\n', col.attname, col.type, col.attname);
        END IF;
    END LOOP;

    -- Runs of simple conditions become one CASE each (_block_run_code,
    -- _route_run_code); a rule with a subquery, a function route and
    -- routes sharing a position stand alone, in order.
    FOR b IN SELECT * FROM smsbus.block WHERE enabled ORDER BY id LOOP
        IF smsbus._condition_is_simple(b.condition) THEN
            run_ids := run_ids || b.id;
            run_conditions := run_conditions || b.condition;
            run_targets := run_targets || b.reason;
            CONTINUE;
        END IF;
        code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets);
        run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
        code := code || smsbus._block_run_code(ARRAY[b.id], ARRAY[b.condition], ARRAY[b.reason]);
    END LOOP;
    code := code || smsbus._block_run_code(run_ids, run_conditions, run_targets);
    run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
    blocks := code;

    FOR grp IN
        SELECT position, array_agg(id ORDER BY id) AS ids
        FROM smsbus.route WHERE enabled GROUP BY position ORDER BY position
    LOOP
        IF cardinality(grp.ids) = 1 THEN
            SELECT * INTO r FROM smsbus.route WHERE id = grp.ids[1];
            IF r.function IS NULL AND smsbus._condition_is_simple(r.condition) THEN
                run_ids := run_ids || r.id;
                run_conditions := run_conditions || r.condition;
                run_targets := run_targets || r.channel;
                CONTINUE;
            END IF;
        END IF;
        code := code || smsbus._route_run_code(run_ids, run_conditions, run_targets);
        run_ids := '{}'; run_conditions := '{}'; run_targets := '{}';
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
                        E'        _r_skipped := concat_ws(''; '', _r_skipped, _r_result.reason);\n' ||
                        E'    END IF;\n';
    END LOOP;
    code := code || smsbus._route_run_code(run_ids, run_conditions, run_targets);
    code := code || E'    IF _r_skipped IS NOT NULL THEN\n' ||
                    E'        RETURN ROW(CASE WHEN _r_over_limit THEN ''dailylimit'' ELSE ''nochannel'' END,\n' ||
                    E'                   NULL, NULL, _r_skipped)::smsbus._routing;\n' ||
                    E'    END IF;\n' ||
                    E'    _r_channel := smsbus._round_robin_take();\n' ||
                    E'    IF _r_channel IS NOT NULL THEN\n' ||
                    E'        RETURN ROW(''queued'', _r_channel, ''round robin'', NULL)::smsbus._routing;\n' ||
                    E'    END IF;\n' ||
                    E'    RETURN smsbus._round_robin_refusal();\n';

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
