-- smsbus router, for operators: why a message went where it went
-- (explain_route), and routing resting messages again (reroute).

-- Sends messages resting in nochannel or dailylimit (or the given statuses)
-- through the router again, e.g. after a channel was added or a limit
-- raised; all of them, or those in ids. Each goes to scheduled (the trace
-- says "rerouted") and straight on through the router. Returns how many.
CREATE FUNCTION reroute(ids bigint[] DEFAULT NULL,
                        statuses status[] DEFAULT '{nochannel,dailylimit}')
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    moved bigint[];
BEGIN
    IF statuses IS NULL OR cardinality(statuses) = 0 THEN
        RAISE EXCEPTION 'statuses must name at least one status'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH picked AS (
        UPDATE smsbus.message m
        SET status = 'scheduled', scheduled_at = now(), last_error = 'rerouted'
        WHERE m.status = ANY (reroute.statuses) AND m.direction = 'out'
          AND (reroute.ids IS NULL OR m.id = ANY (reroute.ids))
        RETURNING m.id)
    SELECT array_agg(id) INTO moved FROM picked;
    UPDATE smsbus.message m
    SET status = CASE WHEN m.valid_until <= now() THEN 'expired'::smsbus.status ELSE 'queued' END,
        last_error = CASE WHEN m.valid_until <= now() THEN 'validity period ended before the message was rerouted' END
    WHERE m.id = ANY (moved) AND m.status = 'scheduled';
    RETURN coalesce(cardinality(moved), 0);
END
$$;

-- Explains the routing of message m rule by rule, without changing
-- anything or taking daily quota: each enabled rule in the order the
-- router tries it, whether it matched and what came of it, and a last row
-- with the decision.
CREATE FUNCTION _explain_route(m message)
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

-- One rule's condition for explain_route, read as the router reads it:
-- its columns are the message's values at run time, never constants the
-- planner folds in (OFFSET 0), as in the router's generic plans. A rule
-- the router reaches and that raises fails explain_route as it fails the
-- INSERT; one it never reaches cannot, and its error comes back as
-- `unreached`.
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

-- explain_route(42): how the router decides for message 42, as it is now.
CREATE FUNCTION explain_route(message_id bigint)
RETURNS TABLE (step integer, rule text, matched boolean, outcome text)
LANGUAGE plpgsql
AS $$
DECLARE
    m smsbus.message;
BEGIN
    SELECT * INTO m FROM smsbus.message WHERE id = message_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message % does not exist', message_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT * FROM smsbus._explain_route(m);
END
$$;

-- explain_route('{"to_address": "+31612345678", "priority": 1}'::jsonb):
-- how the router would decide for a message with these columns.
CREATE FUNCTION explain_route(message jsonb)
RETURNS TABLE (step integer, rule text, matched boolean, outcome text)
LANGUAGE sql
AS $$
    SELECT * FROM smsbus._explain_route(jsonb_populate_record(NULL::smsbus.message,
        jsonb_build_object('direction', 'out', 'priority', 0, 'request_report', true) || message))
$$;

GRANT EXECUTE ON FUNCTION reroute(bigint[], status[]), _explain_route(message), _explain_condition(text, message, boolean),
    explain_route(bigint), explain_route(jsonb)
    TO smsbus_admin;
