-- smsbus backups: what pg_dump carries (README: Backups).

-- pg_dump leaves an extension's tables out unless they are marked: these
-- hold what operators configure and every message with its trace, so a
-- dump carries them and their identity counters. Worker state
-- (channel_state, channel_wakeup) starts afresh. Restoring runs with
-- smsbus.restoring = on, under which the queue's triggers keep each row
-- as it was dumped (README: Backups). The archive's months are tables of
-- their own (sql/archive.sql), which pg_dump carries as any other.
-- One call per statement: each rewrites the pg_extension row.
DO $dump$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['channel', 'account', 'api_key', 'webhook', 'webhook_outbox', 'smpp_server', 'route', 'block', 'trigger', 'archiving', 'channel_usage',
                             'message',
                             'message_event', 'message_part', 'pending_report', 'inbound_part',
                             'smpp_outbox', 'account_usage'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('smsbus.' || t)::regclass, '');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['message', 'message_event', 'route', 'block', 'trigger', 'smpp_outbox', 'api_key', 'webhook', 'webhook_outbox'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('smsbus.' || t, 'id')::regclass, '');
    END LOOP;
END
$dump$;
