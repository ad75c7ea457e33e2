#!/usr/bin/env bash
# `make run`: a local smsbus to look at. Sets up, starts the dev cluster,
# (re)creates database `smsbus` with the extension, starts the SMSC and
# modem simulators and the worker, configures an SMPP and a GSM channel and
# a trigger, queues a few messages and shows them go out, come back
# delivered, and inbound messages arrive and get answered, with the trace
# and the channels' state; then an application binds to smsbus's own SMPP
# server (smsbus-smpp-client), sends, and gets its delivery receipts, and
# sends over the HTTP API with an API key while a local webhook endpoint
# (smsbus-webhook-sink) hears the message's events; then a message goes
# through an HTTP channel (the Twilio preset) to the REST provider simulator
# (smsbus-provider), delivered by the report it posts back.
# Runs until Ctrl-C, which stops the worker and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
export SMSBUS_CLUSTER=dev
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

scripts/setup.sh
echo "== building and installing the extension and the worker"
scripts/install.sh
cargo build --quiet -p smsbus-worker -p smsbus-tests --bin smsbus-worker --bin smsbus-smsc --bin smsbus-modem \
    --bin smsbus-smpp-client --bin smsbus-webhook-sink --bin smsbus-provider
scripts/cluster.sh start
scripts/cluster.sh template >/dev/null
scripts/cluster.sh createdb smsbus >/dev/null

CONN="$(scripts/cluster.sh env) dbname=smsbus"
HOST=$(sed -E 's/.*host=([^ ]+).*/\1/' <<<"$CONN")
PORT=$(sed -E 's/.*port=([^ ]+).*/\1/' <<<"$CONN")
sql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U postgres -d smsbus "$@"; }

SMSC_PORT=${SMSC_PORT:-2775}
SERVER_PORT=${SERVER_PORT:-2776}
SMSC_LOG=.cluster/dev/smsc.log
target/debug/smsbus-smsc --listen "127.0.0.1:$SMSC_PORT" --system-id demo --password demo \
    --undeliverable-every 4 --inbound "+31687654321 1234 STOP ads, thanks" >"$SMSC_LOG" 2>&1 &
SMSC=$!
MODEM_DIR=$PWD/.cluster/dev/modem
MODEM_LOG=.cluster/dev/modem.log
target/debug/smsbus-modem --dir "$MODEM_DIR" --inbound "+31611122233 Hallo via de modem" >"$MODEM_LOG" 2>&1 &
MODEM=$!
API_PORT=${API_PORT:-8080}
SINK_PORT=${SINK_PORT:-8081}
SINK_LOG=.cluster/dev/webhooks.log
WEBHOOK_SECRET=demo-webhook-secret-0123
target/debug/smsbus-webhook-sink --listen "127.0.0.1:$SINK_PORT" --secret "$WEBHOOK_SECRET" >"$SINK_LOG" 2>&1 &
SINK=$!
PROVIDER_PORT=${PROVIDER_PORT:-8082}
PROVIDER_LOG=.cluster/dev/provider.log
target/debug/smsbus-provider --preset twilio --listen "127.0.0.1:$PROVIDER_PORT" \
    --webhook-url "http://127.0.0.1:$API_PORT" --print-config >"$PROVIDER_LOG" 2>&1 &
PROVIDER=$!
LOG=.cluster/dev/worker.log
DATABASE_URL="$CONN" target/debug/smsbus-worker --worker-id demo-worker \
    --http-addr "127.0.0.1:$API_PORT" --status-page-local >"$LOG" 2>&1 &
WORKER=$!
cleanup() {
    kill -TERM "$WORKER" 2>/dev/null && wait "$WORKER" 2>/dev/null || true
    kill -TERM "$SMSC" "$MODEM" "$SINK" "$PROVIDER" 2>/dev/null || true
    scripts/cluster.sh stop
    echo "stopped the worker, the simulators and the dev cluster"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "== an SMPP channel (the simulator on port $SMSC_PORT), a GSM modem channel, and a few messages"
sql -v smsc_port="$SMSC_PORT" -v modem="$MODEM_DIR/ttyGSM0" <<'SQL'
INSERT INTO smsbus.channel (name, kind, config, description)
VALUES ('demo', 'smpp', jsonb_build_object('host', '127.0.0.1', 'port', :smsc_port, 'system_id', 'demo',
                                           'password', 'demo', 'window', 10),
        'the SMSC simulator (smsbus-smsc)'),
       ('modem', 'gsm', jsonb_build_object('device', :'modem', 'number', '+31600000001', 'poll_interval_s', 5),
        'the modem simulator (smsbus-modem) on a pseudo-terminal');
INSERT INTO smsbus.message (to_address, from_address, body, channel) VALUES
    ('+31 6 1234 5678', 'smsbus', 'Hello from smsbus!', 'demo'),
    ('06-12345679', 'smsbus', 'Prijs: 5 € — bedankt!', 'demo'),
    ('+44 7700 900123', NULL, 'Привет из smsbus', 'demo'),
    ('+31612345672', 'smsbus', repeat('A long message, sent in parts. ', 8), 'demo'),
    ('+31612345673', NULL, 'Through the GSM modem: €5 {ok}', 'modem');
-- A Lua trigger: every inbound message gets an answer, sent by the worker.
INSERT INTO smsbus.trigger (name, on_status, direction, language, script, description)
VALUES ('auto-reply', '{received}', 'in', 'lua', $lua$
answered = 0  -- a global: it lives on between messages
function process(message)
    answered = answered + 1
    smsbus.send{to = message.from_address, from = message.to_address, channel = message.channel,
                body = ("Thanks, we got: %s (answer %d)"):format(message.body:sub(1, 40), answered)}
end
$lua$, 'answers every inbound message');
-- Routing rules: SQL conditions over the message, checked when written.
INSERT INTO smsbus.block (condition, reason) VALUES ('to_address = ''+31612345670''', 'on the demo opt-out list');
INSERT INTO smsbus.route (position, condition, channel) VALUES (10, 'to_address LIKE ''+32%''', 'demo');
INSERT INTO smsbus.message (to_address, body) VALUES
    ('+31612345670', 'blocked by a rule'),
    ('+32470123456', 'routed by a rule');
INSERT INTO smsbus.message (to_address, body, channel, scheduled_at)
VALUES ('+31612345671', 'scheduled five seconds ahead', 'demo', now() + interval '5 seconds');
SQL

show() {
    sql -c "SELECT id, to_address, status, channel, coalesce(routed_by, '') AS routed_by, encoding AS enc,
                   segments AS seg, left(body, 28) AS body, trigger_status AS triggers,
                   coalesce(last_error, '') AS last_error
            FROM smsbus.message ORDER BY id"
}
show
echo "== the worker moves the scheduled message on when it is due"
sleep 6
show

echo "== sent over SMPP and the modem, reports back (every 4th SMPP one undeliverable), inbound messages answered by a trigger"
sleep 4
show
sql -c "SELECT id, from_address, to_address, body, status FROM smsbus.message WHERE direction = 'in'"
echo "== the channel (smsbus.channel_state)"
sql -c "SELECT channel, status, owner, submitted, sent, failed, reports, inbound, coalesce(last_error, '') AS last_error,
               detail FROM smsbus.channel_state"
echo "== the trace (smsbus.message_event)"
sql -c "SELECT message_id AS msg, to_char(at, 'HH24:MI:SS.MS') AS at, from_status, to_status, actor,
               coalesce(detail, '') AS detail
        FROM smsbus.message_event ORDER BY id"

echo "== an application binds to smsbus's SMPP server (port $SERVER_PORT) as account 'acme' and sends"
sql -v server_port="$SERVER_PORT" <<'SQL'
INSERT INTO smsbus.account (name, channel, description) VALUES ('acme', 'demo', 'an application of the demo');
SELECT smsbus.set_password('acme', 'secret1');
INSERT INTO smsbus.smpp_server (name, listen) VALUES ('demo', '127.0.0.1:' || :server_port);
SQL
sleep 3
target/debug/smsbus-smpp-client --addr "127.0.0.1:$SERVER_PORT" --system-id acme --password secret1 \
    --from ACME --to +31612345699 --text "Sent over SMPP to smsbus" --count 3 --receipts
sql -c "SELECT id, account, to_address, status, channel, left(body, 28) AS body FROM smsbus.message
        WHERE account IS NOT NULL ORDER BY id"

echo "== an application sends over the HTTP API (port $API_PORT); its webhook (port $SINK_PORT) hears the report"
KEY=$(sql -t -A -v sink_port="$SINK_PORT" -v secret="$WEBHOOK_SECRET" <<'SQL'
INSERT INTO smsbus.webhook (account, url, secret, events)
VALUES ('acme', 'http://127.0.0.1:' || :sink_port || '/events', :'secret', '{status,report}');
SELECT smsbus.create_api_key('acme', '{send,read}', description => 'the demo');
SQL
)
CURL=(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json')
echo "\$ curl -s -H 'Authorization: Bearer $KEY' -d '{\"to\": \"+31612345698\", \"body\": \"Sent over HTTP\"}' http://127.0.0.1:$API_PORT/v1/messages"
"${CURL[@]}" -d '{"to": "+31612345698", "body": "Sent over HTTP"}' "http://127.0.0.1:$API_PORT/v1/messages"
echo
sleep 3
echo "-- what the webhook heard:"
cat "$SINK_LOG"

echo "== an HTTP channel: the Twilio preset against the REST provider simulator (port $PROVIDER_PORT), reports by webhook"
for _ in $(seq 50); do [ -s "$PROVIDER_LOG" ] && break; sleep 0.1; done
PROVIDER_CONFIG=$(head -1 "$PROVIDER_LOG")
sql -v config="$PROVIDER_CONFIG" <<'SQL'
INSERT INTO smsbus.channel (name, kind, config, description)
VALUES ('rest', 'http', :'config'::jsonb, 'the REST provider simulator (smsbus-provider), Twilio''s API');
INSERT INTO smsbus.message (to_address, from_address, body, channel) VALUES
    ('+31612345697', '+15017122661', 'Through a REST provider', 'rest');
SQL
sleep 3
sql -c "SELECT m.id, m.to_address, m.status, m.channel, p.reference, p.status AS part
        FROM smsbus.message m JOIN smsbus.message_part p ON p.message_id = m.id WHERE m.channel = 'rest'"

cat <<INFO

smsbus is running: database 'smsbus' on port $PORT, worker log in $LOG,
the SMSC simulator on port $SMSC_PORT (log in $SMSC_LOG),
the modem simulator at $MODEM_DIR/ttyGSM0 (log in $MODEM_LOG),
smsbus's SMPP server on port $SERVER_PORT (account acme, password secret1),
the HTTP API on port $API_PORT (key $KEY), whose webhook events land in $SINK_LOG,
the REST provider simulator on port $PROVIDER_PORT (channel 'rest', log in $PROVIDER_LOG).
The status page: http://127.0.0.1:$API_PORT/ (open to this machine; elsewhere
it asks for an admin key as the password).
Connect with:
    psql -h $HOST -p $PORT -U postgres smsbus
Try:
    SELECT smsbus.send('+31612345678', 'hi', channel => 'demo');
    SELECT * FROM smsbus.queue_depth;
    SELECT * FROM smsbus.explain_route('{"to_address": "+32470000000"}'::jsonb);
send over HTTP:
    curl -s -H 'Authorization: Bearer $KEY' -d '{"to": "+31612345678", "body": "hi"}' \\
        http://127.0.0.1:$API_PORT/v1/messages
and over SMPP:
    target/debug/smsbus-smpp-client --addr 127.0.0.1:$SERVER_PORT --system-id acme --password secret1 \\
        --to +31612345678 --receipts
Press Ctrl-C to stop the worker and the cluster.
INFO
wait "$WORKER"
