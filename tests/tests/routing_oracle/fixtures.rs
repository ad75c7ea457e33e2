//! The oracle's materials: a seeded generator, the values messages and
//! rules are made of, and the SQL objects every run installs (user
//! functions the rules call, and the server-side loop that explains and
//! inserts each message).

/// SplitMix64: small, seeded, the same on every platform.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

pub(crate) const CHANNELS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];
pub(crate) const ADDRESSES: [&str; 9] = [
    "+31612345678",
    "+31612345679",
    "+31600000001",
    "+4412345678",
    "+447700900123",
    "+12025550123",
    "+32470123456",
    "+33612345678",
    "1234",
];
pub(crate) const FROMS: [Option<&str>; 6] = [
    None,
    None,
    Some("MyShop"),
    Some("Bank"),
    Some("+31699999999"),
    Some("4455"),
];
pub(crate) const BODIES: [&str; 9] = [
    "hello",
    "Your code is 123456",
    "casino night",
    "STOP",
    "stop",
    "boom",
    "Prijs: 5 €",
    "a much longer body that goes on and on",
    "",
];
pub(crate) const BATCHES: [Option<&str>; 5] = [None, None, Some("b1"), Some("b2"), Some("promo")];
pub(crate) const CUSTOMS: [Option<&str>; 10] = [
    None,
    None,
    Some(r#"{}"#),
    Some(r#"{"tenant": "acme"}"#),
    Some(r#"{"tenant": "acme", "vip": true}"#),
    Some(r#"{"tenant": "other", "n": 5}"#),
    Some(r#"{"n": 2}"#),
    Some(r#"{"route": "c3"}"#),
    Some(r#"{"route": "ghost", "n": 7}"#),
    Some(r#"{"route": "c0", "tenant": "acme"}"#),
];
pub(crate) const ROUTE_FUNCTIONS: [&str; 4] = [
    "oracle_fn_custom",
    "public.oracle_fn_prio",
    "oracle_fn_boom",
    "oracle_fn_custom",
];

/// A condition that raises for a message whose custom tenant is not a number.
pub(crate) const RAISES: &str = "(custom->>'tenant')::int > 0";

/// The user's objects rules read: tables, functions conditions call,
/// route functions.
pub(crate) const USER_OBJECTS: &str = r#"
CREATE TABLE public.oracle_optout (number text PRIMARY KEY);
INSERT INTO public.oracle_optout VALUES ('+31600000001'), ('+12025550123'), ('+447700900123');
CREATE TABLE public.oracle_vip (number text PRIMARY KEY);
INSERT INTO public.oracle_vip VALUES ('+31612345679'), ('+4412345678');
CREATE TABLE public.oracle_words (word text PRIMARY KEY);
INSERT INTO public.oracle_words VALUES ('STOP'), ('hello');
GRANT SELECT ON public.oracle_optout, public.oracle_vip, public.oracle_words TO smsbus_admin;
CREATE FUNCTION public.oracle_t(b boolean) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN RETURN b; END $$;
CREATE FUNCTION public.oracle_vip(number text) RETURNS boolean LANGUAGE sql STABLE
    AS $$ SELECT EXISTS (SELECT 1 FROM public.oracle_vip v WHERE v.number = $1) $$;
CREATE FUNCTION public.oracle_len(t text) RETURNS integer LANGUAGE plpgsql IMMUTABLE
    AS $$ BEGIN RETURN length(t); END $$;
CREATE FUNCTION public.oracle_fn_custom(m smsbus.message) RETURNS text LANGUAGE sql
    AS $$ SELECT m.custom->>'route' $$;
CREATE FUNCTION public.oracle_fn_prio(m smsbus.message) RETURNS text LANGUAGE sql
    AS $$ SELECT CASE WHEN m.priority >= 5 THEN 'c1' END $$;
CREATE FUNCTION public.oracle_fn_boom(m smsbus.message) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF m.body = 'boom' THEN
        RAISE EXCEPTION 'boom for %', m.to_address;
    END IF;
    RETURN CASE WHEN m.batch_id IS NOT NULL THEN 'c2' END;
END $$;
"#;

/// Explains, then inserts, each message of a JSON array, in order (so
/// explain sees the quota the INSERT will find), and runs
/// smsbus._first_match over `conditions` (the enabled built-in ones, named
/// by `rules`) on the row explain reads.
pub(crate) const DRIVER: &str = r#"
CREATE FUNCTION public.oracle_run(msgs jsonb, conditions text[], rules text[], run_key bigint)
RETURNS TABLE (o_explained text[], o_explain_error text, o_rust text[], o_status text,
               o_channel text, o_routed_by text, o_last_error text, o_insert_error text)
LANGUAGE plpgsql AS $$
DECLARE
    msg jsonb;
    m smsbus.message;
    p integer;
    after integer;
BEGIN
    FOR msg IN SELECT e.v FROM jsonb_array_elements(msgs) WITH ORDINALITY AS e(v, n) ORDER BY e.n LOOP
        o_explained := NULL; o_explain_error := NULL; o_rust := '{}';
        o_status := NULL; o_channel := NULL; o_routed_by := NULL; o_last_error := NULL;
        o_insert_error := NULL;
        BEGIN
            SELECT array_agg(x.rule || E'\t' || coalesce(x.matched::text, '') || E'\t'
                             || coalesce(x.outcome, '<null>') ORDER BY x.step)
            INTO o_explained FROM smsbus.explain_route(msg) x;
        EXCEPTION WHEN OTHERS THEN
            o_explain_error := SQLERRM;
        END;
        m := jsonb_populate_record(NULL::smsbus.message,
            jsonb_build_object('direction', 'out', 'priority', 0, 'request_report', true) || msg);
        IF cardinality(conditions) > 0 THEN
            BEGIN
                after := 0;
                LOOP
                    p := smsbus._first_match(run_key, conditions, after, m);
                    EXIT WHEN p IS NULL;
                    o_rust := o_rust || rules[p];
                    after := p;
                END LOOP;
            EXCEPTION WHEN OTHERS THEN
                o_rust := o_rust || ('error: ' || SQLERRM);
            END;
        END IF;
        BEGIN
            INSERT INTO smsbus.message (to_address, body, from_address, channel, priority, custom, batch_id)
            SELECT r.to_address, r.body, r.from_address, r.channel, coalesce(r.priority, 0), r.custom,
                   r.batch_id
            FROM jsonb_populate_record(NULL::smsbus.message, msg) r
            RETURNING status::text, channel, routed_by, last_error
            INTO o_status, o_channel, o_routed_by, o_last_error;
        EXCEPTION WHEN OTHERS THEN
            o_insert_error := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END $$;
"#;
