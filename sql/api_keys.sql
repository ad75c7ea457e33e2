-- smsbus API keys: how the HTTP API knows an account (schema.sql has the
-- table). smsbus.create_api_key makes a key and returns it once; the
-- database keeps only its SHA-256, which no smsbus role may read, and the
-- worker asks smsbus._verify_api_key whose a presented key is.

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
