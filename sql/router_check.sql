-- smsbus rule checks: every row of smsbus.route and smsbus.block is
-- checked when written (_rule_check: the condition with PostgreSQL's
-- parser and analyser, under the search_path the rules run under; the
-- channel; the function's signature), so a bad rule is an error at its
-- INSERT, never at send time. sql/router_compile.sql compiles them.

-- Outside input as an error quotes it: whole when short, else its first
-- 64 characters, "…" and how long it was (core/src/excerpt.rs likewise).
CREATE FUNCTION _excerpt(input text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN length(input) <= 64 THEN input
                ELSE left(input, 64) || '… (' || length(input) || ' characters)' END
$$;

CREATE FUNCTION _rule_check() RETURNS trigger
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

CREATE TRIGGER route_check BEFORE INSERT OR UPDATE ON route
    FOR EACH ROW EXECUTE FUNCTION _rule_check();
CREATE TRIGGER block_check BEFORE INSERT OR UPDATE ON block
    FOR EACH ROW EXECUTE FUNCTION _rule_check();

GRANT EXECUTE ON FUNCTION _check_condition(text, text) TO smsbus_worker;
GRANT EXECUTE ON FUNCTION _excerpt(text) TO smsbus_admin, smsbus_worker;
GRANT EXECUTE ON FUNCTION _check_condition(text, text) TO smsbus_admin;
