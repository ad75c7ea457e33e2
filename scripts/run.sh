#!/usr/bin/env bash
# `make run`: a local smsbus to look at. Sets up, starts the dev cluster,
# (re)creates database `smsbus` with the extension, starts the worker,
# queues a few messages and shows their rows and trace as they change.
# Runs until Ctrl-C, which stops the worker and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
export SMSBUS_CLUSTER=dev
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

scripts/setup.sh
echo "== building and installing the extension and the worker"
scripts/install.sh
cargo build --quiet -p smsbus-worker
scripts/cluster.sh start
scripts/cluster.sh template >/dev/null
scripts/cluster.sh createdb smsbus >/dev/null

CONN="$(scripts/cluster.sh env) dbname=smsbus"
HOST=$(sed -E 's/.*host=([^ ]+).*/\1/' <<<"$CONN")
PORT=$(sed -E 's/.*port=([^ ]+).*/\1/' <<<"$CONN")
sql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U postgres -d smsbus "$@"; }

LOG=.cluster/dev/worker.log
DATABASE_URL="$CONN" target/debug/smsbus-worker --worker-id demo-worker >"$LOG" 2>&1 &
WORKER=$!
cleanup() {
    kill -TERM "$WORKER" 2>/dev/null && wait "$WORKER" 2>/dev/null || true
    scripts/cluster.sh stop
    echo "stopped the worker and the dev cluster"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "== a channel and a few messages"
sql <<'SQL'
INSERT INTO smsbus.channel (name, kind, config, description)
VALUES ('demo', 'smpp', '{"host": "127.0.0.1", "port": 2775, "system_id": "demo", "password": "demo"}',
        'an SMPP provider (the driver arrives with the SMPP channel issue)');
INSERT INTO smsbus.message (to_address, from_address, body, channel) VALUES
    ('+31 6 1234 5678', 'smsbus', 'Hello from smsbus!', 'demo'),
    ('06-12345679', 'smsbus', 'Prijs: 5 € — bedankt!', 'demo'),
    ('+44 7700 900123', NULL, 'Привет из smsbus', 'demo');
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
                   segments AS seg, left(body, 28) AS body, coalesce(last_error, '') AS last_error
            FROM smsbus.message ORDER BY id"
}
show
echo "== the worker moves the scheduled message on when it is due"
sleep 6
show

# The SMPP channel is not built yet; stand in for it with the functions a
# channel driver calls, so the whole life of a message shows in the trace.
echo "== a stand-in for the channel driver: claim, submit, delivery report"
sql <<'SQL'
SET smsbus.actor = 'demo-driver';
WITH claimed AS (SELECT id FROM smsbus._claim('demo', 'demo-driver', 10, interval '1 minute'))
SELECT smsbus._mark_sent('demo', array_agg(id), array_agg(1), array_agg('ref-' || id))
FROM claimed;
SELECT smsbus._apply_reports('demo', array_agg('ref-' || id), array_agg('delivered'::text), array_agg('stat:DELIVRD'::text))
FROM smsbus.message WHERE status = 'sent';
SQL
show
echo "== the trace (smsbus.message_event)"
sql -c "SELECT message_id AS msg, to_char(at, 'HH24:MI:SS.MS') AS at, from_status, to_status, actor,
               coalesce(detail, '') AS detail
        FROM smsbus.message_event ORDER BY id"

cat <<INFO

smsbus is running: database 'smsbus' on port $PORT, worker log in $LOG.
Connect with:
    psql -h $HOST -p $PORT -U postgres smsbus
Try:
    SELECT smsbus.send('+31612345678', 'hi', channel => 'demo');
    SELECT * FROM smsbus.queue_depth;
    SELECT * FROM smsbus.explain_route('{"to_address": "+32470000000"}'::jsonb);
Press Ctrl-C to stop the worker and the cluster.
INFO
wait "$WORKER"
