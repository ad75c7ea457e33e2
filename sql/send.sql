-- smsbus user functions: sending and archiving.
--
-- Naming: user functions are short verbs (send, archive); functions only the
-- extension and the worker call start with an underscore. Each file grants
-- its own functions; sql/privileges.sql, last, takes EXECUTE away from
-- PUBLIC for every function but the few meant for everyone.

-- Queues one SMS and returns its id. With an idempotency_key that was used
-- before, returns the first message's id and sends nothing.
CREATE FUNCTION send(
    to_address      text,
    body            text,
    from_address    text DEFAULT NULL,
    channel         text DEFAULT NULL,
    priority        smallint DEFAULT 0,
    scheduled_at    timestamptz DEFAULT now(),
    valid_until     timestamptz DEFAULT NULL,
    request_report  boolean DEFAULT true,
    encoding        text DEFAULT NULL,
    custom          jsonb DEFAULT NULL,
    batch_id        text DEFAULT NULL,
    idempotency_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    new_id bigint;
BEGIN
    IF send.idempotency_key IS NULL THEN
        INSERT INTO smsbus.message (to_address, body, from_address, channel, priority, scheduled_at,
                                    valid_until, request_report, encoding, custom, batch_id)
        VALUES (send.to_address, send.body, send.from_address, send.channel, send.priority,
                coalesce(send.scheduled_at, now()), send.valid_until, coalesce(send.request_report, true),
                send.encoding, send.custom, send.batch_id)
        RETURNING id INTO new_id;
        RETURN new_id;
    END IF;
    SELECT m.id INTO new_id FROM smsbus.message m WHERE m.idempotency_key = send.idempotency_key;
    IF NOT FOUND THEN
        SELECT a.id INTO new_id FROM smsbus.message_archive a WHERE a.idempotency_key = send.idempotency_key;
    END IF;
    IF new_id IS NOT NULL THEN
        RETURN new_id;
    END IF;
    -- The exception block (a subtransaction) only where a race can happen.
    BEGIN
        INSERT INTO smsbus.message (to_address, body, from_address, channel, priority, scheduled_at,
                                    valid_until, request_report, encoding, custom, batch_id, idempotency_key)
        VALUES (send.to_address, send.body, send.from_address, send.channel, send.priority,
                coalesce(send.scheduled_at, now()), send.valid_until, coalesce(send.request_report, true),
                send.encoding, send.custom, send.batch_id, send.idempotency_key)
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        -- A concurrent send() with the same key committed first.
        SELECT m.id INTO new_id FROM smsbus.message m WHERE m.idempotency_key = send.idempotency_key;
        IF new_id IS NULL THEN
            RAISE;
        END IF;
    END;
    RETURN new_id;
END
$$;

GRANT EXECUTE ON FUNCTION send(text, text, text, text, smallint, timestamptz, timestamptz, boolean,
    text, jsonb, text, text) TO smsbus_sender, smsbus_admin;
