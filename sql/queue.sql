-- smsbus queue: the triggers of smsbus.message and smsbus.channel.
--
-- The queue's triggers are Rust: extension/src/message_triggers.rs (rows:
-- validation, normalisation, routing, the state machine) and
-- extension/src/message_trace.rs (per statement: the trace and wake-ups).
CREATE TRIGGER message_before_insert BEFORE INSERT ON message
    FOR EACH ROW EXECUTE FUNCTION _message_before_insert();
CREATE TRIGGER message_after_insert AFTER INSERT ON message
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION _message_after_change();
CREATE TRIGGER message_before_update BEFORE UPDATE ON message
    FOR EACH ROW EXECUTE FUNCTION _message_before_update();
CREATE TRIGGER message_after_update AFTER UPDATE ON message
    REFERENCING NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION _message_after_change();

-- Channel rows carry their own updated_at, and every change wakes the
-- worker's supervisor.
CREATE FUNCTION _channel_touch() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE FUNCTION _channel_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('smsbus_config', 'channel');
    RETURN NULL;
END
$$;

CREATE TRIGGER channel_touch BEFORE UPDATE ON channel
    FOR EACH ROW EXECUTE FUNCTION _channel_touch();
CREATE TRIGGER channel_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON channel
    FOR EACH STATEMENT EXECUTE FUNCTION _channel_changed();

-- Who is behind an actor a session named itself (see extension/src/actor.rs);
-- set here, as the function comes after the schema.
ALTER TABLE message_event ALTER COLUMN session_role SET DEFAULT smsbus._actor_login();
