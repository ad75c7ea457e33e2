-- Routing and blocking rules written as SQL conditions.
--
-- Assumes channels 'kpn', 'vodafone' and 'fast' exist in smsbus.channel.
-- Conditions name the message's columns unqualified; they run with the
-- rights of smsbus_admin, so tables they read must be readable by it.

-- Never text a number on the opt-out list, nor anything at night
-- (UTC; adjust to your customers' time zone).
CREATE TABLE IF NOT EXISTS opt_out (number text PRIMARY KEY, since timestamptz NOT NULL DEFAULT now());
GRANT SELECT ON opt_out TO smsbus_admin;

INSERT INTO smsbus.block (condition, reason, description) VALUES
    ('EXISTS (SELECT 1 FROM opt_out o WHERE o.number = to_address)',
     'recipient opted out', 'the opt-out list'),
    ('custom->>''kind'' = ''marketing'' AND extract(hour FROM now() AT TIME ZONE ''UTC'') NOT BETWEEN 8 AND 20',
     'no marketing at night', 'quiet hours');

-- Urgent messages take the fast channel; Dutch numbers go to KPN; other
-- European numbers are split 3:1 between Vodafone and KPN. Everything else
-- falls through to round robin over the channels that can send.
INSERT INTO smsbus.route (position, condition, channel, description) VALUES
    (10, 'priority > 0', 'fast', 'urgent messages'),
    (20, 'to_address LIKE ''+31%''', 'kpn', 'Dutch numbers');
INSERT INTO smsbus.route (position, condition, channel, weight, description) VALUES
    (30, 'to_address ~ ''^\+(32|33|34|39|41|43|44|45|46|47|48|49)''', 'vodafone', 3, 'Europe, 3 of 4'),
    (30, 'to_address ~ ''^\+(32|33|34|39|41|43|44|45|46|47|48|49)''', 'kpn', 1, 'Europe, 1 of 4');
