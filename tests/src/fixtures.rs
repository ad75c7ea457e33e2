//! Databases filled with everything smsbus holds, and their contents and
//! schema as comparable text: what backup and upgrade tests share.

use tokio_postgres::Client;

use crate::db::scalar;

/// Every table a dump must carry, compared row for row.
pub const TABLES: [&str; 13] = [
    "channel",
    "route",
    "block",
    "trigger",
    "archiving",
    "channel_usage",
    "message",
    "message_event",
    "message_part",
    "pending_report",
    "inbound_part",
    "message_archive",
    "message_part_archive",
];

pub const SEQUENCES: [&str; 5] = [
    "message_id_seq",
    "message_event_id_seq",
    "route_id_seq",
    "block_id_seq",
    "trigger_id_seq",
];

/// A database with configuration, messages in every stage, an inbound
/// message, an archived one and rules that read a table of the user's.
pub async fn fill(c: &Client) {
    c.batch_execute(
        "CREATE TABLE public.optout (number text PRIMARY KEY);
         INSERT INTO public.optout VALUES ('+31600000666');
         GRANT SELECT ON public.optout TO smsbus_admin;
         CREATE FUNCTION public.premium(m smsbus.message) RETURNS text
         LANGUAGE sql AS $$ SELECT CASE WHEN m.priority > 5 THEN 'fast' END $$;
         INSERT INTO smsbus.channel (name, kind, config, daily_limit) VALUES
             ('kpn', 'smpp', '{\"host\": \"127.0.0.1\", \"port\": 2775, \"password\": \"secret\"}', NULL),
             ('fast', 'smpp', '{}', 1000);
         INSERT INTO smsbus.block (condition, reason)
             VALUES ('EXISTS (SELECT 1 FROM optout o WHERE o.number = to_address)', 'opted out');
         INSERT INTO smsbus.route (position, function) VALUES (1, 'premium');
         INSERT INTO smsbus.route (position, condition, channel) VALUES (2, 'to_address LIKE ''+31%''', 'kpn');
         UPDATE smsbus.archiving SET older_than = interval '7 days', batch_size = 500;

         INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345600', 'delivered, archived');
         SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[max(id)], ARRAY[1], ARRAY['r0']) FROM smsbus.message;
         SELECT smsbus._apply_reports('kpn', ARRAY['r0'], ARRAY['delivered'], ARRAY['stat:DELIVRD']);",
    )
    .await
    .unwrap();
    // Its own transaction: archive() takes what finished before now().
    c.batch_execute("SELECT smsbus.archive(interval '0', 100)")
        .await
        .unwrap();
    c.batch_execute(
        "INSERT INTO smsbus.trigger (name, on_status, language, script)
             VALUES ('seen', '{delivered}', 'sql',
                     'UPDATE smsbus.message SET custom = ''{\"seen\": true}'' WHERE id = $1');
         INSERT INTO smsbus.message (to_address, body, idempotency_key)
             SELECT '+3161234567' || g, 'message ' || g, 'key-' || g FROM generate_series(1, 3) g;
         INSERT INTO smsbus.message (to_address, body, priority) VALUES ('+31612340000', 'premium', 9);
         INSERT INTO smsbus.message (to_address, body) VALUES ('+31600000666', 'blocked');
         INSERT INTO smsbus.message (to_address, body, scheduled_at)
             VALUES ('+31612349999', 'tomorrow', now() + interval '1 day');
         SELECT count(*) FROM smsbus._claim('kpn', 'w', 10, interval '1 hour');
         SELECT smsbus._mark_sent('kpn', ARRAY[m.ids[1], m.ids[2]], ARRAY[1, 1], ARRAY['r1', 'r2'])
             FROM (SELECT array_agg(id ORDER BY id) AS ids FROM smsbus.message WHERE channel = 'kpn') m;
         SELECT smsbus._apply_reports('kpn', ARRAY['r1', 'early'], ARRAY['delivered', 'delivered'],
                                      ARRAY['stat:DELIVRD', 'stat:DELIVRD']);
         SELECT smsbus._record_inbound('kpn', ARRAY['+31612345678'], ARRAY['4455'], ARRAY['STOP'],
                                       ARRAY['in-1'], NULL, ARRAY[NULL::jsonb]);
         SELECT smsbus._record_inbound_parts('kpn', ARRAY['+31612345678'], ARRAY['4455'], ARRAY[7],
                                             ARRAY[2], ARRAY[1], ARRAY['first half'], ARRAY[NULL::jsonb]);",
    )
    .await
    .unwrap();
}

/// Every row of every smsbus table, as text, and the identity counters.
pub async fn contents(c: &Client) -> Vec<(String, String)> {
    contents_of(c, None).await
}

/// The columns of each table of [`TABLES`], in order.
pub async fn columns(c: &Client) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for table in TABLES {
        let names: Vec<String> = scalar(
            c,
            "SELECT array_agg(quote_ident(a.attname::text) ORDER BY a.attnum) FROM pg_attribute a
             WHERE a.attrelid = ('smsbus.' || $1)::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await;
        all.push(names);
    }
    all
}

/// Like [`contents`], reading only `columns` of each table (those an
/// older release had, to compare its rows after an upgrade added some).
pub async fn contents_of(c: &Client, columns: Option<&[Vec<String>]>) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (i, table) in TABLES.iter().enumerate() {
        let row = match columns {
            Some(columns) => format!("ROW({})", columns[i].join(", ")),
            None => "t".to_string(),
        };
        let rows: Option<String> = scalar(
            c,
            &format!(
                "SELECT string_agg(r::text, E'\\n' ORDER BY r::text) FROM (SELECT {row} AS r FROM smsbus.{table} t) x"
            ),
            &[],
        )
        .await;
        all.push((table.to_string(), rows.unwrap_or_default()));
    }
    for sequence in SEQUENCES {
        let value: String = scalar(
            c,
            &format!("SELECT last_value || ' ' || is_called FROM smsbus.{sequence}"),
            &[],
        )
        .await;
        all.push((sequence.to_string(), value));
    }
    all
}

/// Every object of the extension with its definition, one sorted line
/// each (and one per column, constraint, index, trigger and comment):
/// two databases with equal lines have the same smsbus schema. The
/// compiled router functions are named but not compared (they are made
/// from the rules); column order is compared, since `INSERT ... SELECT *`
/// between the queue and its archive depends on it.
pub async fn schema(c: &Client) -> Vec<String> {
    let rows = c
        .query(
            "WITH member AS (
                 SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                 WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'smsbus' AND d.deptype = 'e'
             ), relation AS (
                 SELECT r.* FROM member m JOIN pg_class r ON r.oid = m.objid
                 WHERE m.classid = 'pg_class'::regclass
             )
             SELECT pg_describe_object(m.classid, m.objid, 0) || ': ' || coalesce(
                 CASE m.classid
                 WHEN 'pg_proc'::regclass THEN (
                     SELECT CASE WHEN p.proname IN ('_router', '_router_blocks')
                                 THEN 'compiled from the rules'
                                 ELSE concat_ws(' | ', pg_get_function_identity_arguments(p.oid),
                                                pg_get_function_result(p.oid), p.prokind, p.provolatile,
                                                p.prosecdef, p.proconfig::text, p.proacl::text,
                                                p.proowner::regrole::text, md5(p.prosrc)) END
                     FROM pg_proc p WHERE p.oid = m.objid)
                 WHEN 'pg_class'::regclass THEN (
                     SELECT concat_ws(' | ', r.relkind, r.relacl::text, r.relowner::regrole::text,
                                      r.reloptions::text, r.relreplident,
                                      CASE WHEN r.relkind = 'v' THEN pg_get_viewdef(r.oid) END)
                     FROM pg_class r WHERE r.oid = m.objid)
                 WHEN 'pg_type'::regclass THEN (
                     SELECT concat_ws(' | ', t.typtype,
                         (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) FROM pg_enum e
                          WHERE e.enumtypid = t.oid),
                         (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                            ORDER BY a.attnum)
                          FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
                     FROM pg_type t WHERE t.oid = m.objid)
                 WHEN 'pg_namespace'::regclass THEN (
                     SELECT n.nspacl::text FROM pg_namespace n WHERE n.oid = m.objid)
                 END, '')
             FROM member m
             UNION ALL
             SELECT format('column %s #%s: %s', r.oid::regclass,
                           row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum),
                           concat_ws(' ', a.attname, format_type(a.atttypid, a.atttypmod),
                                     CASE WHEN a.attnotnull THEN 'not null' END,
                                     nullif(a.attidentity, ''), nullif(a.attgenerated, ''),
                                     pg_get_expr(ad.adbin, ad.adrelid), a.attacl::text))
             FROM relation r JOIN pg_attribute a ON a.attrelid = r.oid
             LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
             WHERE r.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped
             UNION ALL
             SELECT format('constraint %s.%s: %s', r.oid::regclass, co.conname, pg_get_constraintdef(co.oid))
             FROM relation r JOIN pg_constraint co ON co.conrelid = r.oid
             UNION ALL
             SELECT 'index: ' || pg_get_indexdef(i.indexrelid)
             FROM relation r JOIN pg_index i ON i.indrelid = r.oid
             UNION ALL
             SELECT 'trigger: ' || pg_get_triggerdef(t.oid)
             FROM relation r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
             UNION ALL
             SELECT 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
             FROM member m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid
             UNION ALL
             SELECT 'dumped with the data: ' || string_agg(c::regclass::text, ', ' ORDER BY c::regclass::text)
             FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'smsbus'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("describing the smsbus schema");
    rows.iter().map(|r| r.get(0)).collect()
}
