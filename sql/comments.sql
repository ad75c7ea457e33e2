-- smsbus comments: what psql's \d+ and \df+ say about the objects users
-- touch (the tables' own comments stand beside them).

COMMENT ON COLUMN message.id IS 'The message''s id (system).';
COMMENT ON COLUMN message.to_address IS 'Recipient: international (+31612345678), national or a short code; normalised at INSERT.';
COMMENT ON COLUMN message.body IS 'The text; cut into segments as its encoding needs (smsbus.max_segments at most).';
COMMENT ON COLUMN message.from_address IS 'Sender: a number or up to 11 GSM characters; null for the channel''s default.';
COMMENT ON COLUMN message.channel IS 'The channel to send through; null lets the router choose.';
COMMENT ON COLUMN message.priority IS 'Higher goes first within a channel''s queue.';
COMMENT ON COLUMN message.scheduled_at IS 'When to send (default now); a later time makes the message scheduled.';
COMMENT ON COLUMN message.valid_until IS 'After this the message expires instead of being sent.';
COMMENT ON COLUMN message.request_report IS 'Ask the provider for a delivery report (default true).';
COMMENT ON COLUMN message.encoding IS 'gsm7, ucs2, latin1, or binary (8-bit data, the body written in hexadecimal digits); null picks gsm7 when every character allows, else ucs2.';
COMMENT ON COLUMN message.custom IS 'Fields of the user''s own (jsonb), for rules, triggers and row security.';
COMMENT ON COLUMN message.batch_id IS 'Groups messages sent together (indexed).';
COMMENT ON COLUMN message.idempotency_key IS 'Unique: a repeated INSERT with the same key is refused (smsbus.send returns the first id).';
COMMENT ON COLUMN message.direction IS 'out (sent) or in (received); written by the system.';
COMMENT ON COLUMN message.status IS 'Where the message is in its life (smsbus.status); written by the system.';
COMMENT ON COLUMN message.previous_status IS 'The status before the last update (system).';
COMMENT ON COLUMN message.trigger_status IS 'Where the message is with its triggers (smsbus.trigger_status).';
COMMENT ON COLUMN message.segments IS 'How many SMS the body needs.';
COMMENT ON COLUMN message.reference IS 'The provider''s id for the message (its first part''s).';
COMMENT ON COLUMN message.attempts IS 'How many times a channel claimed it for sending.';
COMMENT ON COLUMN message.last_error IS 'Why the message is where it is when that is not plain: the reason it failed, was blocked, retried or expired.';
COMMENT ON COLUMN message.routed_by IS 'What chose its channel: route N, round robin, channel given, or the block N that stopped it.';
COMMENT ON COLUMN message.sent_at IS 'When the provider accepted it.';
COMMENT ON COLUMN message.delivered_at IS 'When its delivery report said delivered.';
COMMENT ON COLUMN message.received_at IS 'When an inbound message arrived.';
COMMENT ON COLUMN message.claimed_by IS 'The worker whose channel holds it while sending (system).';
COMMENT ON COLUMN message.claimed_until IS 'When that worker''s lease ends (system).';
COMMENT ON COLUMN message.client_parts IS 'The parts its account sent it in, kept when the account passes them through (keep_udh): [{"udh": hex, "chars": n}], n characters of body each; null: the channel cuts its own.';
COMMENT ON COLUMN message.receipts IS 'The delivery receipts its account asked for (SMPP registered_delivery): 1 every final outcome, 2 failures, 3 successes, +16 an intermediate one when sent; null none.';
COMMENT ON COLUMN message.account IS 'The account that submitted it (over SMPP); null for messages written in SQL.';

COMMENT ON COLUMN webhook.account IS 'The account whose events it gets.';
COMMENT ON COLUMN webhook.url IS 'Where events are POSTed (http or https).';
COMMENT ON COLUMN webhook.secret IS 'Signs every smsbus-style call (X-Smsbus-Signature: t=<unix>,v1=<HMAC-SHA256 of "<t>.<body>">); 16 characters at least; none for Kannel and Jasmin callbacks.';
COMMENT ON COLUMN webhook.events IS 'status (every status change), report (delivered and notdelivered only), inbound (messages given to the account).';
COMMENT ON COLUMN webhook.concurrency IS 'Calls in flight to it at once, across workers.';
COMMENT ON COLUMN webhook.timeout_s IS 'Seconds a call may take before it counts as unanswered.';
COMMENT ON COLUMN webhook.retry_horizon IS 'How long an event is tried (backoff from 1 s, doubling, at most an hour) before it is kept as dead.';
COMMENT ON COLUMN webhook.message_id IS 'A callback of this one message (a Kannel or Jasmin dlr-url) rather than of the account''s messages; null: the account''s.';
COMMENT ON COLUMN webhook.style IS 'smsbus (signed JSON POST), kannel (a GET of the url with its %-escapes filled in) or jasmin (form fields, answered ACK/Jasmin).';
COMMENT ON COLUMN webhook.method IS 'GET or POST (jasmin callbacks; kannel ones are always GET, smsbus ones POST).';
COMMENT ON COLUMN webhook.report_mask IS 'The reports a callback wants, as Kannel''s dlr-mask: 1 delivered, 2 not delivered, 8 taken by the SMSC, 16 refused.';
COMMENT ON COLUMN webhook_outbox.dead IS 'Past its retry horizon: kept with its last_error until smsbus.retry_webhooks or a DELETE.';
COMMENT ON COLUMN api_key.account IS 'The account whose key it is: requests made with it act for that account.';
COMMENT ON COLUMN api_key.prefix IS 'The key''s first 12 characters, to tell keys apart (the key itself is not kept).';
COMMENT ON COLUMN api_key.scopes IS 'What it may do: send (create and cancel messages), read (messages, channels, queue), admin.';
COMMENT ON COLUMN api_key.allowed_ips IS 'Address ranges it may be used from; null: anywhere.';
COMMENT ON COLUMN api_key.rate_limit IS 'Requests per second it may make on each worker (429 with Retry-After beyond); null: no limit.';
COMMENT ON COLUMN api_key.enabled IS 'A disabled key is refused (401) like an unknown one.';
COMMENT ON COLUMN account.name IS 'The account''s name, its SMPP system_id: letters, digits, _ . - (15 at most).';
COMMENT ON COLUMN account.enabled IS 'Off: it cannot bind.';
COMMENT ON COLUMN account.password_hash IS 'Its password as a salted argon2id hash: written by smsbus.set_password, read by no role.';
COMMENT ON COLUMN account.bind_types IS 'The SMPP binds it may open: transmitter, receiver, transceiver.';
COMMENT ON COLUMN account.max_binds IS 'Most binds it may have open at once, across workers.';
COMMENT ON COLUMN account.allowed_ips IS 'The networks it may connect from; null for anywhere.';
COMMENT ON COLUMN account.allowed_sources IS 'A regular expression every source address it gives must match; null for any.';
COMMENT ON COLUMN account.default_source IS 'The source address of its messages that give none.';
COMMENT ON COLUMN account.throughput IS 'Submissions per second across its binds; null for no limit.';
COMMENT ON COLUMN account.deliver_window IS 'Unanswered deliver_sm (reports, inbound messages) per bind.';
COMMENT ON COLUMN account.credit IS 'Parts it may still send; null keeps no credit.';
COMMENT ON COLUMN account.daily_limit IS 'Most messages it may submit per day (UTC); null for no limit.';
COMMENT ON COLUMN account.channel IS 'The channel its messages go to; null lets the router choose.';
COMMENT ON COLUMN account.message_id_format IS 'How it is told message ids: dec or hex.';
COMMENT ON COLUMN account.report_keep IS 'How long a delivery receipt waits in smsbus.smpp_outbox for a receiver bind of it.';
COMMENT ON COLUMN account.long_message IS 'How long inbound messages go to it: payload (whole, in message_payload), udh or sar (in parts).';
COMMENT ON COLUMN account.keep_udh IS 'Send its messages on in the parts it sent, each with its own user data header (message.client_parts), over SMPP channels.';
COMMENT ON COLUMN account.db_role IS 'The database role its HTTP API requests run as, so grants and row security apply (null: the worker''s role, every statement naming the account).';
COMMENT ON FUNCTION current_account() IS 'The account whose db_role the current role is: for row security policies.';
COMMENT ON COLUMN account.report_parts IS 'Receipts for a message sent in parts: message (one, for the whole) or each (one per part, with its own outcome).';

COMMENT ON COLUMN smpp_server.name IS 'The listener''s name, as smpp_bind.server shows it.';
COMMENT ON COLUMN smpp_server.enabled IS 'Off: every worker closes the listener and its sessions.';
COMMENT ON COLUMN smpp_server.listen IS 'host:port every worker listens on (on one host they share it).';
COMMENT ON COLUMN smpp_server.tls_cert_file IS 'PEM certificate chain on the workers'' machines: the listener speaks TLS (with tls_key_file).';
COMMENT ON COLUMN smpp_server.tls_key_file IS 'PEM private key on the workers'' machines, with tls_cert_file.';
COMMENT ON COLUMN smpp_server.interface_versions IS 'The SMPP versions a bind may ask for: 3.3, 3.4, 5.0.';
COMMENT ON COLUMN smpp_server.bind_timeout_s IS 'Seconds a connection may take to bind before it is closed.';
COMMENT ON COLUMN smpp_server.enquire_link_s IS 'Seconds of silence after which the server asks the client enquire_link.';
COMMENT ON COLUMN smpp_server.inactivity_timeout_s IS 'Seconds without a PDU from the client after which the session ends.';
COMMENT ON COLUMN smpp_server.submit_window IS 'Submissions a bind may have waiting for their submit_sm_resp; beyond it ESME_RTHROTTLED.';

COMMENT ON COLUMN smpp_bind.account IS 'The bound account.';
COMMENT ON COLUMN smpp_bind.server IS 'The smpp_server it is bound to.';
COMMENT ON COLUMN smpp_bind.worker IS 'The worker that serves it.';
COMMENT ON COLUMN smpp_bind.bind_type IS 'transmitter, receiver or transceiver.';
COMMENT ON COLUMN smpp_bind.peer IS 'The client''s address.';
COMMENT ON COLUMN smpp_bind.alive_until IS 'Renewed by its worker while open; once passed, the bind no longer counts.';
COMMENT ON COLUMN smpp_bind.submitted IS 'Messages accepted on this bind.';
COMMENT ON COLUMN smpp_bind.refused IS 'Submissions refused (bad input, not allowed).';
COMMENT ON COLUMN smpp_bind.throttled IS 'Submissions refused with ESME_RTHROTTLED (over throughput or window).';
COMMENT ON COLUMN smpp_bind.delivered IS 'deliver_sm the client acknowledged.';
COMMENT ON COLUMN smpp_bind.window_in_use IS 'Submissions waiting for their submit_sm_resp when last written.';

COMMENT ON COLUMN channel.name IS 'The channel''s name: letters, digits, _ . - (63 at most).';
COMMENT ON COLUMN channel.kind IS 'smpp, gsm or http (a REST provider).';
COMMENT ON COLUMN channel.enabled IS 'Off: the worker disconnects it and the router skips it.';
COMMENT ON COLUMN channel.can_send IS 'Off: it only receives.';
COMMENT ON COLUMN channel.can_receive IS 'Off: it only sends.';
COMMENT ON COLUMN channel.daily_limit IS 'Most messages routed to it per day (UTC); null for no limit.';
COMMENT ON COLUMN channel.config IS 'Driver settings, credentials included (README: SMPP channels, GSM modem channels); senders cannot read it.';

COMMENT ON COLUMN route.position IS 'Routes are tried in position order; the first match wins; routes at one position share by weight.';
COMMENT ON COLUMN route.enabled IS 'Off: the route is not compiled in.';
COMMENT ON COLUMN route.condition IS 'An SQL boolean expression over the message''s columns, checked when written.';
COMMENT ON COLUMN route.channel IS 'Where matching messages go (or function).';
COMMENT ON COLUMN route.function IS 'A function (smsbus.message) RETURNS text naming the channel, or null for no match (or channel).';
COMMENT ON COLUMN route.weight IS 'Its share among the routes at its position.';

COMMENT ON COLUMN block.enabled IS 'Off: the rule is not compiled in.';
COMMENT ON COLUMN block.condition IS 'An SQL boolean expression over the message''s columns, checked when written.';
COMMENT ON COLUMN block.reason IS 'What a blocked message''s last_error says.';

COMMENT ON COLUMN trigger.name IS 'The trigger''s name (unique).';
COMMENT ON COLUMN trigger.position IS 'Triggers run in position order.';
COMMENT ON COLUMN trigger.enabled IS 'Off: it arms and runs nothing (the worker turns it off when its script gets stuck).';
COMMENT ON COLUMN trigger.on_status IS 'The permanent statuses it runs for; null for all.';
COMMENT ON COLUMN trigger.direction IS 'out or in; null for both.';
COMMENT ON COLUMN trigger.condition IS 'An SQL boolean expression over the message, evaluated when its turn comes.';
COMMENT ON COLUMN trigger.language IS 'lua or sql.';
COMMENT ON COLUMN trigger.script IS 'Lua defining process(message), or SQL with the message id as $1.';
COMMENT ON COLUMN trigger.final IS 'Stop the chain after this trigger runs.';

COMMENT ON COLUMN archiving.enabled IS 'Off: the worker archives nothing.';
COMMENT ON COLUMN archiving.older_than IS 'Finished messages unchanged this long move to message_archive.';
COMMENT ON COLUMN archiving.batch_size IS 'How many move per transaction.';
COMMENT ON COLUMN archiving.every IS 'How often the worker looks; batch after batch while a backlog lasts.';
COMMENT ON COLUMN archiving.keep IS 'How long the archive keeps a month (null: for ever); older months are dropped whole.';

COMMENT ON COLUMN message_event.actor IS 'Who made the change: smsbus.actor, a worker by its application name (worker:<id>), or the role.';
COMMENT ON COLUMN message_event.session_role IS 'The login role behind an actor the session named itself.';

COMMENT ON FUNCTION send(text, text, text, text, smallint, timestamptz, timestamptz, boolean, text, jsonb, text, text)
    IS 'Queues one SMS and returns its id; with an idempotency_key used before, the first message''s id.';
COMMENT ON FUNCTION archive(interval, integer)
    IS 'Moves up to batch_size finished messages unchanged for older_than, with their parts and trace, to the archive; returns how many.';
COMMENT ON FUNCTION set_password(text, text)
    IS 'Sets an account''s password (kept as a salted argon2id hash), or an argon2id hash as given; null removes it.';
COMMENT ON FUNCTION retry_webhooks(bigint)
    IS 'Tries dead webhook events again from now (of one webhook, or all), with a new retry horizon; returns how many.';
COMMENT ON FUNCTION create_api_key(text, text[], cidr[], text)
    IS 'Makes an HTTP API key for an account and returns it, the only time it is shown (only its SHA-256 is kept).';
COMMENT ON FUNCTION reroute(bigint[], status[])
    IS 'Routes resting messages (nochannel, dailylimit, or the given statuses; all or those in ids) again.';
COMMENT ON FUNCTION explain_route(bigint)
    IS 'How the router decides for a message, rule by rule, without changing anything.';
COMMENT ON FUNCTION explain_route(jsonb)
    IS 'How the router would decide for a message with these columns, rule by rule.';
COMMENT ON FUNCTION sms_encoding(text) IS 'The encoding a body gets: gsm7 when every character allows, else ucs2.';
COMMENT ON FUNCTION sms_segments(text, text) IS 'How many SMS a body needs in an encoding (null: the one it would get).';
COMMENT ON FUNCTION status_is_permanent(text) IS 'Whether triggers may run for a status.';
COMMENT ON VIEW queue_depth IS 'Messages waiting or in flight, per channel and status.';
COMMENT ON VIEW channel_overview IS 'Each channel with its link state and queue (no credentials).';
