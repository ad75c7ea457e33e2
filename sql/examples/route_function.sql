-- A routing rule written as an SQL function.
--
-- A route may name a function taking smsbus.message and returning the
-- channel's name as text, or null for "no match" (the router then tries
-- the next route). The function runs with the rights of smsbus_admin.
-- If it raises an error, that message alone becomes 'failed' with the error
-- in last_error.
--
-- Assumes channels 'fast', 'kpn' and 'vodafone' exist in smsbus.channel.

-- Customers who pay for the fast lane, by the batch_id their messages carry,
-- and numbers ported between networks.
CREATE TABLE IF NOT EXISTS premium_customer (batch_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS ported_number (number text PRIMARY KEY, channel text NOT NULL);
GRANT SELECT ON premium_customer, ported_number TO smsbus_admin;

CREATE OR REPLACE FUNCTION route_by_customer(m smsbus.message) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM premium_customer p WHERE p.batch_id = m.batch_id) THEN 'fast'
        ELSE (SELECT n.channel FROM ported_number n WHERE n.number = m.to_address)
    END
$$;

INSERT INTO smsbus.route (position, function, description)
VALUES (5, 'route_by_customer', 'premium customers, then ported numbers');
