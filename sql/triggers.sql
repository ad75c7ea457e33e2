-- smsbus triggers: scripts that run when a message reaches a permanent
-- status (docs/ARCHITECTURE.md#the-trigger-runner).
--
-- A trigger is a row: which statuses and direction it is for, an SQL
-- condition over the message, and a script in Lua or SQL. Each row is
-- checked when written: the condition with PostgreSQL's parser and
-- analyser (as routing conditions are), an SQL script parsed and analysed
-- with the message id as $1, a Lua script compiled (not run).
--
-- When a message reaches a permanent status, the row trigger of
-- smsbus.message arms it (trigger_status 'pending') if an enabled trigger
-- is for that status and direction, else marks it 'notriggers'; a
-- statement that armed any sends one NOTIFY smsbus_triggers, and the
-- worker runs the chains.

CREATE TABLE trigger (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CONSTRAINT trigger_name CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    position    integer NOT NULL DEFAULT 0,
    enabled     boolean NOT NULL DEFAULT true,
    -- Null: every permanent status.
    on_status   status[] CONSTRAINT trigger_on_status CHECK (
                    on_status IS NULL OR (cardinality(on_status) > 0
                                          AND on_status <@ ARRAY['sent', 'failed', 'nochannel', 'blocked',
                                                                 'dailylimit', 'expired', 'received', 'delivered',
                                                                 'notdelivered', 'noreport']::status[])),
    -- Null: both.
    direction   text CONSTRAINT trigger_direction CHECK (direction IN ('out', 'in')),
    condition   text NOT NULL DEFAULT 'true',
    language    text NOT NULL CONSTRAINT trigger_language CHECK (language IN ('lua', 'sql')),
    script      text NOT NULL,
    final       boolean NOT NULL DEFAULT false,
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_order ON trigger (position, id) WHERE enabled;

COMMENT ON TABLE trigger IS 'smsbus: scripts run, in position order, when a message reaches a permanent status.';

GRANT SELECT, INSERT, UPDATE, DELETE ON trigger TO smsbus_admin;
GRANT SELECT ON trigger TO smsbus_worker;

CREATE FUNCTION _trigger_check() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF smsbus._restoring() THEN
        -- Checked when it was first written; kept as it was dumped.
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    -- What changed, or is switched on, is checked; so a trigger broken by
    -- a later change elsewhere (a dropped table) can still be disabled.
    IF TG_OP = 'UPDATE' AND NOT (NEW.enabled AND NOT OLD.enabled) THEN
        IF NEW.condition IS NOT DISTINCT FROM OLD.condition
           AND NEW.script IS NOT DISTINCT FROM OLD.script
           AND NEW.language IS NOT DISTINCT FROM OLD.language THEN
            RETURN NEW;
        END IF;
    END IF;
    PERFORM smsbus._check_condition(NEW.condition, 'trigger ' || NEW.name);
    IF NEW.language = 'sql' THEN
        PERFORM smsbus._check_sql_script(NEW.script, NEW.name);
    ELSIF NEW.language = 'lua' THEN
        PERFORM smsbus._check_lua_script(NEW.script, NEW.name);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER trigger_check BEFORE INSERT OR UPDATE ON trigger
    FOR EACH ROW EXECUTE FUNCTION _trigger_check();

-- The worker reloads its triggers when they change.
CREATE FUNCTION _triggers_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('smsbus_config', 'trigger');
    RETURN NULL;
END
$$;

CREATE TRIGGER trigger_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON trigger
    FOR EACH STATEMENT EXECUTE FUNCTION _triggers_changed();

-- What the row triggers of smsbus.message need to arm a message: the
-- statuses and direction of each enabled trigger. Security definer, as
-- senders may not read smsbus.trigger (scripts are code).
-- PL/pgSQL so its plan is kept for the session: it runs once per statement
-- that brings messages to a permanent status.
CREATE FUNCTION _trigger_arming(OUT on_status text[], OUT direction text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT t.on_status::text[], t.direction FROM smsbus.trigger t WHERE t.enabled;
END
$$;

-- Disables a trigger the worker had to give up on (threads of its script
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

-- Trigger rows are checked as the admin who writes them, and by the
-- worker's role (`smsbus-worker check`); every role that writes messages
-- arms them.
GRANT EXECUTE ON FUNCTION _check_sql_script(text, text), _check_lua_script(text, text)
    TO smsbus_admin, smsbus_worker;
GRANT EXECUTE ON FUNCTION _trigger_arming() TO smsbus_sender, smsbus_admin, smsbus_worker;
-- The worker disables a trigger whose script it had to give up on.
GRANT EXECUTE ON FUNCTION _disable_trigger(bigint, text) TO smsbus_worker;
GRANT EXECUTE ON FUNCTION _claim_triggers(integer), _resume_triggers(interval, integer), _split_sql_script(text)
    TO smsbus_worker, smsbus_admin;
