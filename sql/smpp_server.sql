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
