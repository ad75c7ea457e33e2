-- Every final outcome of an outbound message written to a table of your
-- own, for your application to read (or to feed a billing system).

CREATE TABLE IF NOT EXISTS delivery_log (
    message_id bigint PRIMARY KEY,
    status     text NOT NULL,
    reference  text,
    error      text,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON delivery_log TO smsbus_worker;

INSERT INTO smsbus.trigger (name, position, on_status, direction, language, script, description)
VALUES ('delivery-log', 100, '{delivered,notdelivered,noreport,failed,expired,blocked,nochannel}', 'out', 'sql',
        $$INSERT INTO delivery_log (message_id, status, reference, error)
          SELECT id, status::text, reference, last_error FROM smsbus.message WHERE id = $1
          ON CONFLICT (message_id) DO UPDATE
              SET status = EXCLUDED.status, error = EXCLUDED.error, logged_at = now()$$,
        'final outcomes into delivery_log');
