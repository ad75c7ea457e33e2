-- Keyword service: STOP puts the sender on an opt-out list and confirms,
-- START takes them off it; a blocking rule keeps messages from reaching
-- anyone on the list. SQL triggers run with the message id as $1, in the
-- transaction that records their outcome; they run as the worker's role.

CREATE TABLE IF NOT EXISTS opt_out (number text PRIMARY KEY, since timestamptz NOT NULL DEFAULT now());
GRANT SELECT, INSERT, DELETE ON opt_out TO smsbus_worker;
GRANT SELECT ON opt_out TO smsbus_admin;

INSERT INTO smsbus.trigger (name, position, on_status, direction, condition, language, script, final, description)
VALUES
    ('keyword-stop', 10, '{received}', 'in', $$upper(trim(body)) IN ('STOP', 'STOP ALL', 'UNSUBSCRIBE')$$, 'sql',
     -- The confirmation goes first: once listed, the number is blocked.
     $$INSERT INTO smsbus.message (to_address, from_address, body, channel)
       SELECT from_address, to_address, 'You will get no more messages from us. Reply START to undo.', channel
       FROM smsbus.message WHERE id = $1;
       INSERT INTO opt_out (number) SELECT from_address FROM smsbus.message WHERE id = $1
       ON CONFLICT (number) DO NOTHING$$,
     true, 'opt-out by keyword'),
    ('keyword-start', 11, '{received}', 'in', $$upper(trim(body)) = 'START'$$, 'sql',
     $$DELETE FROM opt_out WHERE number = (SELECT from_address FROM smsbus.message WHERE id = $1);
       INSERT INTO smsbus.message (to_address, from_address, body, channel)
       SELECT from_address, to_address, 'Welcome back.', channel FROM smsbus.message WHERE id = $1$$,
     true, 'opt back in by keyword');

INSERT INTO smsbus.block (condition, reason, description)
VALUES ('EXISTS (SELECT 1 FROM opt_out o WHERE o.number = to_address)', 'recipient opted out', 'the opt-out list');
