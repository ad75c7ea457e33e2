-- smsbus accounts: the outside clients of smsbus (schema.sql has the
-- table). A password is set with smsbus.set_password and kept only as a
-- salted argon2id hash (extension/src/passwords.rs); no smsbus role may
-- read it, and the worker asks smsbus._verify_password whether a password
-- given at a bind matches. The worker follows changes live.

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
-- The role an account's HTTP requests run as: admins set it, the worker
-- reads it with the key (_verify_api_key).
GRANT SELECT (db_role), INSERT (db_role), UPDATE (db_role) ON account TO smsbus_admin;
GRANT EXECUTE ON FUNCTION _check_account_role(text, text) TO smsbus_admin;
GRANT EXECUTE ON FUNCTION current_account(), _account_of_role(text) TO smsbus_sender, smsbus_admin, smsbus_worker;

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
