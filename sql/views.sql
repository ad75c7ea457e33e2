-- smsbus views. They read with the rights of whoever queries them (row
-- security included), not their owner's.

-- Messages waiting or in flight, per channel and status.
CREATE VIEW queue_depth WITH (security_invoker = true) AS
SELECT channel, status, count(*) AS messages, min(created_at) AS oldest
FROM message
WHERE status IN ('scheduled', 'queued', 'sending')
GROUP BY channel, status;

-- Each channel with its link state and queue (no credentials).
CREATE VIEW channel_overview WITH (security_invoker = true) AS
SELECT c.name, c.kind, c.enabled, c.can_send, c.can_receive, c.daily_limit,
       coalesce(s.status, 'disconnected') AS link, s.owner, s.since, s.last_error,
       coalesce(q.queued, 0) AS queued, coalesce(q.sending, 0) AS sending
FROM channel c
LEFT JOIN channel_state s ON s.channel = c.name
LEFT JOIN (SELECT channel,
                  count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status = 'sending') AS sending
           FROM message WHERE status IN ('queued', 'sending') GROUP BY channel) q
       ON q.channel = c.name;

GRANT SELECT ON queue_depth, channel_overview TO smsbus_sender, smsbus_admin, smsbus_worker;
