-- A message the primary channel could not deliver is tried again on a
-- backup channel, up to three attempts in all, 30 seconds later.
-- Assumes channels 'primary' and 'backup' exist in smsbus.channel.

INSERT INTO smsbus.trigger (name, position, on_status, direction, condition, language, script, description)
VALUES ('retry-on-backup', 50, '{failed,notdelivered}', 'out', $$channel = 'primary' AND attempts < 3$$, 'sql',
        $$UPDATE smsbus.message
          SET status = 'scheduled', channel = 'backup', scheduled_at = now() + interval '30 seconds'
          WHERE id = $1$$,
        'fail over to the backup channel');
