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
    RETURN NEW;
END
$$;

CREATE FUNCTION _account_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('smsbus_config', 'account');
    RETURN NULL;
END
$$;

CREATE TRIGGER account_check BEFORE INSERT OR UPDATE ON account
    FOR EACH ROW EXECUTE FUNCTION _account_check();
CREATE TRIGGER account_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON account
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
