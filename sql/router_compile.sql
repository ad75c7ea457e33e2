-- smsbus router: routing and blocking rules, compiled into functions.
--
-- Rules are rows of smsbus.route and smsbus.block (schema.sql). Each row is
-- checked when written (_rule_check: the condition with PostgreSQL's parser
-- and analyser, the channel, the function's signature); every statement
-- that changes rules recompiles smsbus._router(message) in the same
-- transaction, so routing a message never re-parses rule text and the next
-- message sees the new rules. The row triggers of smsbus.message call
-- _router for each outbound message that becomes due.
--
-- The compiled functions, for a message m:
--   1. blocking rules by id: the first match -> blocked, its reason
--      (_router_blocks holds these alone: a message that names its channel
--      meets only them, and the row trigger then queues it on that channel
--      if the channel can take it);
--   2. routes by position: the first matching route whose channel can take
--      the message wins; routes sharing a position split by weight; a
--      route whose channel is disabled, cannot send or is over its daily
--      limit is skipped (failover);
--   3. matches but all skipped -> dailylimit (any over the limit) or
--      nochannel; no match -> round robin over the channels that can send.
-- A function route that raises an error fails the message alone.
-- Rules are checked by sql/router_check.sql and explained by
-- sql/router_explain.sql.

---------------------------------------------------------------------------
-- Helpers the compiled router calls
---------------------------------------------------------------------------

-- Routes sharing a position: picks one of the matching routes at random in
-- proportion to its weight; one whose channel cannot take the message is
-- dropped and the pick repeated. Status null (nothing taken) or dailylimit
-- (some channel was over its limit) when none could.
CREATE FUNCTION _route_group(ids bigint[], channels text[], weights integer[]) RETURNS _routing
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

-- No route matched and round robin (_round_robin_take, in Rust) found no
-- channel that could take the message: why.
CREATE FUNCTION _round_robin_refusal() RETURNS _routing
LANGUAGE sql STABLE
SET search_path = pg_catalog, smsbus, pg_temp
AS $$
    SELECT CASE WHEN EXISTS (SELECT FROM smsbus.channel c WHERE c.enabled AND c.can_send)
        THEN ROW('dailylimit', NULL, NULL,
                 'no route matched and every channel that can send reached its daily limit')::smsbus._routing
        ELSE ROW('nochannel', NULL, NULL, 'no route matched and no channel can send')::smsbus._routing
    END
$$;

-- Whether a channel could take a message now, without taking quota: the
-- codes of _channel_take (0 yes, 1 missing, 2 disabled, 3 cannot send, 4
-- over its daily limit).
CREATE FUNCTION _channel_check(p_channel text) RETURNS integer
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

---------------------------------------------------------------------------
-- Compiling
---------------------------------------------------------------------------

-- The code that sets _r_channel for route r: its channel, or its
-- function's answer (an error in the function fails the message).
CREATE FUNCTION _route_target_code(r route) RETURNS text
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

-- What follows a matching route whose channel is in _r_channel: take it,
-- or note why not and go on.
CREATE FUNCTION _route_take_code(r route) RETURNS text
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
    SELECT format(E'    IF _r_result.status OPERATOR(pg_catalog.=) ANY (ARRAY[%s]) THEN\n' ||
                  E'        RETURN _r_result;\n    END IF;\n', decided)
        || E'    _r_over_limit := _r_over_limit OR _r_result.status OPERATOR(pg_catalog.=) ''dailylimit'';\n'
        || E'    _r_skipped := pg_catalog.concat_ws(''; '', _r_skipped, _r_result.reason);\n'
        || E'    IF _r_skipped OPERATOR(pg_catalog.=) '''' THEN\n        _r_skipped := NULL;\n    END IF;\n'
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
                  E'        RETURN ROW(''blocked'', NULL, ''block '' OPERATOR(pg_catalog.||) (%L::bigint[])[_r_hit],\n' ||
                  E'                   (%L::text[])[_r_hit])::smsbus._routing;\n' ||
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

-- The schemas a rule writer's search_path resolves to, in order, without
-- the system's (pg_catalog, smsbus, temporary schemas): "$user" becomes
-- the writer's schema when there is one.
CREATE FUNCTION _rules_schemas() RETURNS name[]
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(array_agg(s.name ORDER BY s.n), '{}')
    FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS s(name, n)
    WHERE s.name OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'smsbus']::name[])
      AND s.name::text NOT LIKE 'pg\_temp\_%' AND s.name::text NOT LIKE 'pg\_toast\_temp\_%'
$$;

-- The search_path rules are checked, compiled and run under: pg_catalog
-- and smsbus first, so nothing in the writer's schemas stands in for what
-- they hold, then the writer's schemas, and pg_temp last, so no temporary
-- table or type does either.
CREATE FUNCTION _rules_search_path(schemas name[]) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_to_string(ARRAY['pg_catalog', 'smsbus']
                           || ARRAY(SELECT quote_ident(s) FROM unnest(schemas) WITH ORDINALITY AS u(s, n) ORDER BY n)
                           || ARRAY['pg_temp'], ', ')
$$;

-- (Re)defines one compiled function, smsbus.<name>(message) for name
-- _router or _router_blocks, from its variable declarations and its code
-- (null code: a constant without verdict, for no blocking rules). The
-- functions belong to smsbus_rules, a role no one logs in as or is a
-- member of, so no admin can replace them with code that would run as
-- whoever inserts; they are SECURITY DEFINER and run with smsbus_admin's
-- rights (smsbus_rules is a member) under _rules_search_path(schemas).
-- This function runs as the extension's owner, the one that may give a
-- function to smsbus_rules: it only ever writes one of those two.
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

-- Writes smsbus._router(message) from the enabled rules. Runs after every
-- statement that changes rules, and once at CREATE EXTENSION.
CREATE FUNCTION _compile_router() RETURNS void
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

CREATE FUNCTION _rules_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM smsbus._compile_router();
    RETURN NULL;
END
$$;

CREATE TRIGGER route_compile AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON route
    FOR EACH STATEMENT EXECUTE FUNCTION _rules_changed();
CREATE TRIGGER block_compile AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON block
    FOR EACH STATEMENT EXECUTE FUNCTION _rules_changed();

-- The compiled router runs as smsbus_rules, a member of smsbus_admin, and
-- calls these; admins compile.
GRANT EXECUTE ON FUNCTION _channel_take(text), _channel_take_reason(text, integer),
    _route_group(bigint[], text[], integer[]), _round_robin_take(), _round_robin_refusal(),
    _channel_check(text)
    TO smsbus_admin;
GRANT EXECUTE ON FUNCTION _compile_router(), _route_target_code(route),
    _route_take_code(route), _block_run_code(bigint[], text[], text[], boolean),
    _route_run_code(bigint[], text[], text[], boolean), _first_match_code(text[], text), _condition_kind(text),
    _first_match(bigint, text[], integer, message), _route_first(bigint, text[], text[], bigint[], message),
    _block_route_first(bigint, text[], bigint[], text[], bigint, text[], text[], bigint[], message),
    _run_key(text[]), _block_route_run_code(bigint[], text[], text[], bigint[], text[], text[]),
    _route_run_append(text, text, bigint[], text[], text[], bigint[], text[], text[], boolean),
    _route_first_args(bigint[], text[], text[]), _route_result_code(text),
    _define_router(text, text, text, name[]), _rules_schemas(), _rules_search_path(name[])
    TO smsbus_admin;

SELECT _compile_router();
