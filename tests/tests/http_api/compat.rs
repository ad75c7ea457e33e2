//! Kannel's `/cgi-bin/sendsms` and Jasmin's `/send`: the request lines of
//! their documentation answered in their words, every refusal with its
//! text and nothing stored, and each `dlr-url` called as that gateway
//! calls it when the SMSC simulator's receipt arrives: Kannel's escapes
//! filled in, Jasmin's levels posted until the receiver says `ACK/Jasmin`.

use std::time::Duration;

use serde_json::json;
use smsbus_tests::api_client::{request, Answer};
use smsbus_tests::db::{count, scalar, TestDb};
use smsbus_tests::http::{HttpServer, Seen};
use smsbus_tests::scenario::{add_channel, smpp_config, smsc, wait_for, wait_link};
use smsbus_tests::smsc::{Behaviour, Smsc};
use smsbus_tests::worker::{eventually, Worker};

use super::free_port;

/// A worker serving the API, an SMPP channel `provider` to the SMSC
/// simulator, and account `acme` (password `secret1`) sending through it.
struct Gateway {
    c: tokio_postgres::Client,
    base: String,
    worker: Worker,
    _sim: Smsc,
    _db: TestDb,
}

async fn gateway(behaviour: Behaviour) -> Gateway {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let sim = smsc(behaviour).await;
    add_channel(&c, "provider", &smpp_config(&sim, json!({}))).await;
    c.batch_execute(
        "INSERT INTO smsbus.account (name, channel) VALUES ('acme', 'provider');
         SELECT smsbus.set_password('acme', 'secret1');
         INSERT INTO smsbus.block (condition, reason) VALUES ('to_address LIKE ''+999%''', 'test numbers');",
    )
    .await
    .unwrap();
    let port = free_port();
    let worker = Worker::start(
        &db.conninfo(),
        &[
            "--worker-id",
            "w1",
            "--maintenance-interval",
            "0.2",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            request("GET", &format!("{base}/healthz"), &[], None)
                .await
                .is_some()
        })
        .await,
        "no API:\n{}",
        worker.log()
    );
    wait_link(&c, "provider", "connected", &worker).await;
    Gateway {
        c,
        base,
        worker,
        _sim: sim,
        _db: db,
    }
}

impl Gateway {
    async fn get(&self, path_and_query: &str) -> Answer {
        request("GET", &format!("{}{path_and_query}", self.base), &[], None)
            .await
            .expect("an answer")
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        request("POST", &format!("{}{path}", self.base), headers, Some(body))
            .await
            .expect("an answer")
    }

    async fn messages(&self) -> i64 {
        count(&self.c, "SELECT count(*) FROM smsbus.message").await
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query fields of a request the receiver saw (or of its form body).
fn fields_of(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace('+', " ");
            let mut bytes = Vec::new();
            let raw = value.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let (b'%', Some(Ok(b))) = (raw[i], hex.map(|h| u8::from_str_radix(h, 16))) {
                    bytes.push(b);
                    i += 3;
                    continue;
                }
                bytes.push(raw[i]);
                i += 1;
            }
            (
                name.to_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
}

async fn calls(receiver: &HttpServer, path: &str, n: usize, worker: &Worker) -> Vec<Seen> {
    let arrived = eventually(Duration::from_secs(20), || async {
        receiver
            .seen()
            .iter()
            .filter(|s| s.url.starts_with(path))
            .count()
            >= n
    })
    .await;
    let seen: Vec<Seen> = receiver
        .seen()
        .into_iter()
        .filter(|s| s.url.starts_with(path))
        .collect();
    assert!(
        arrived,
        "{n} calls of {path} expected: {seen:#?}\n{}",
        worker.log()
    );
    seen
}

#[tokio::test]
async fn kannel_sendsms_answers_as_kannel_and_calls_its_dlr_url() {
    let g = gateway(Behaviour::default()).await;
    let receiver = HttpServer::start();
    receiver.answer_with(200);
    let dlr_url = format!(
        "{}/kannel?type=%d&to=%p&from=%P&ts=%T&reply=%A&smsc=%i&id=%I&fid=%F&acct=%o",
        receiver.url
    );
    // The user guide's request line, with a dlr-url asking for the
    // SMSC's acceptance (8) and the handset's receipt (1).
    let answer = g
        .get(&format!(
            "/cgi-bin/sendsms?username=acme&password=secret1&to=%2B31612345678&text=Hello+Kannel\
             &from=ACME&dlr-mask=9&account=billing7&dlr-url={}",
            encode(&dlr_url)
        ))
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (202, "0: Accepted for delivery")
    );
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let id: i64 = scalar(&g.c, "SELECT max(id) FROM smsbus.message", &[]).await;
    let (body, account, custom): (String, String, serde_json::Value) = {
        let row =
            g.c.query_one(
                "SELECT body, account, custom FROM smsbus.message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((body.as_str(), account.as_str()), ("Hello Kannel", "acme"));
    assert_eq!(custom["kannel"]["account"], "billing7");
    wait_for(
        &g.c,
        &[id],
        &["delivered"],
        Duration::from_secs(20),
        &g.worker,
    )
    .await;
    let seen = calls(&receiver, "/kannel", 2, &g.worker).await;
    let reference: String = scalar(
        &g.c,
        "SELECT reference FROM smsbus.message_part WHERE message_id = $1",
        &[&id],
    )
    .await;
    let accepted = fields_of(seen[0].url.split_once('?').unwrap().1);
    let delivered = fields_of(seen[1].url.split_once('?').unwrap().1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        field(&accepted, "type"),
        "8",
        "in order: accepted, then delivered"
    );
    assert_eq!(field(&accepted, "reply"), "ACK/");
    assert_eq!(field(&delivered, "type"), "1");
    for f in [&accepted, &delivered] {
        assert_eq!(field(f, "to"), "+31612345678");
        assert_eq!(field(f, "from"), "ACME");
        assert_eq!(field(f, "smsc"), "provider");
        assert_eq!(field(f, "id"), id.to_string());
        assert_eq!(field(f, "fid"), reference);
        assert_eq!(field(f, "acct"), "billing7");
        assert!(field(f, "ts").parse::<i64>().unwrap() > 1_700_000_000);
    }
    assert!(
        field(&delivered, "reply").contains("DELIVRD"),
        "{delivered:?}"
    );
    // Delivered: the callback goes once its events are taken (the worker
    // records a call's outcome just after the receiver answered it).
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&g.c, "SELECT count(*) FROM smsbus.webhook_outbox").await == 0
        })
        .await,
        "the callback's events were never recorded as taken"
    );
    let pruned: i32 = scalar(&g.c, "SELECT smsbus._prune_callbacks()", &[]).await;
    assert_eq!(pruned, 1);
    assert_eq!(count(&g.c, "SELECT count(*) FROM smsbus.webhook").await, 0);

    // Several receivers, separated by spaces.
    let answer = g
        .get("/cgi-bin/sendsms?user=acme&pass=secret1&to=%2B31611111111+%2B31622222222&text=Two")
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (202, "0: Accepted for delivery")
    );
    assert_eq!(
        count(
            &g.c,
            "SELECT count(*) FROM smsbus.message WHERE body = 'Two' AND account = 'acme'"
        )
        .await,
        2
    );
    // Latin-1 text, deferred and valid for minutes, a priority.
    let answer = g
        .get(
            "/cgi-bin/sendsms?username=acme&password=secret1&to=%2B31633333333&text=caf%E9\
              &charset=ISO-8859-1&deferred=10&validity=60&priority=2",
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let row =
        g.c.query_one(
            "SELECT body, status::text, round(extract(epoch FROM scheduled_at - now()) / 60)::int,
                    round(extract(epoch FROM valid_until - now()) / 60)::int, priority
             FROM smsbus.message WHERE to_address = '+31633333333'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "café");
    assert_eq!(row.get::<_, String>(1), "scheduled");
    assert_eq!((row.get::<_, i32>(2), row.get::<_, i32>(3)), (10, 60));
    assert_eq!(row.get::<_, i16>(4), 2);
    // POST: the body is the text, the rest X-Kannel-* headers.
    let answer = g
        .post(
            "/cgi-bin/sendsms",
            &[
                ("content-type", "text/plain; charset=UTF-8"),
                ("x-kannel-username", "acme"),
                ("x-kannel-password", "secret1"),
                ("x-kannel-to", "+31644444444"),
                ("x-kannel-from", "ACME"),
            ],
            "Posted: ünïcode",
        )
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (202, "0: Accepted for delivery")
    );
    let posted: String = scalar(
        &g.c,
        "SELECT body FROM smsbus.message WHERE to_address = '+31644444444'",
        &[],
    )
    .await;
    assert_eq!(posted, "Posted: ünïcode");

    // A number a rule blocks: Kannel's answer, the message kept as
    // blocked, and its 16 (refused) reported at once.
    let answer = g
        .get(&format!(
            "/cgi-bin/sendsms?username=acme&password=secret1&to=%2B99912345&text=x&dlr-mask=16&dlr-url={}",
            encode(&format!("{}/blocked?type=%d&reply=%A", receiver.url))
        ))
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (403, "Not routable. Do not try again.")
    );
    let seen = calls(&receiver, "/blocked", 1, &g.worker).await;
    let blocked = fields_of(seen[0].url.split_once('?').unwrap().1);
    assert_eq!(field(&blocked, "type"), "16");
    assert!(field(&blocked, "reply").starts_with("NACK/"), "{blocked:?}");
}

#[tokio::test]
async fn kannel_refusals_use_its_words_and_store_nothing() {
    let g = gateway(Behaviour::default()).await;
    g.c.batch_execute(
        "INSERT INTO smsbus.account (name, channel, enabled) VALUES ('off', 'provider', false);
         SELECT smsbus.set_password('off', 'secret2');
         INSERT INTO smsbus.account (name, channel, allowed_ips) VALUES ('far', 'provider', '{10.0.0.0/8}');
         SELECT smsbus.set_password('far', 'secret3');",
    )
    .await
    .unwrap();
    let ok = "username=acme&password=secret1";
    for (query, status, text) in [
        (
            "username=acme&password=wrong&to=1&text=x",
            403,
            "Authorization failed for sendsms",
        ),
        (
            "username=nobody&password=secret1&to=1&text=x",
            403,
            "Authorization failed for sendsms",
        ),
        (
            "username=off&password=secret2&to=1&text=x",
            403,
            "Authorization failed for sendsms",
        ),
        (
            "username=far&password=secret3&to=1&text=x",
            403,
            "Authorization failed for sendsms",
        ),
        ("to=1&text=x", 403, "Authorization failed for sendsms"),
        (
            &format!("{ok}&text=x"),
            400,
            "Missing receiver number, rejected",
        ),
        (
            &format!("{ok}&to=&text=x"),
            400,
            "Empty receiver number not allowed, rejected",
        ),
        (
            &format!("{ok}&to=%2B3161234abc&text=x"),
            400,
            "Number(s) has/have been denied by white- and/or black-lists.",
        ),
        (
            &format!("{ok}&to=1&text=x&dlr-mask=99&dlr-url=http%3A%2F%2Fx"),
            400,
            "DLR-Mask field misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&dlr-mask=1&dlr-url=ftp%3A%2F%2Fx"),
            400,
            "DLR-URL field misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&coding=5"),
            400,
            "Coding field misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&priority=9"),
            400,
            "Priority field misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&validity=-5"),
            400,
            "Validity field misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&mclass=0"),
            400,
            "MClass field is not supported by smsbus, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&mclass=7"),
            400,
            "MClass field misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&udh=%06%05%04%0B%84%23%F0"),
            400,
            "UDH field is not supported by smsbus, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&pid=64"),
            400,
            "PID field is not supported by smsbus, rejected",
        ),
        (
            &format!("{ok}&to=1&text=%FF%FE"),
            400,
            "Charset or body misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&charset=KOI8-R"),
            400,
            "Charset or body misformed, rejected",
        ),
        (
            &format!("{ok}&to=1&text=x&account=a%0Ab"),
            400,
            "Account field misformed or too long, rejected",
        ),
    ] {
        let answer = g.get(&format!("/cgi-bin/sendsms?{query}")).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (status, text),
            "{query}"
        );
    }
    // A number smsbus cannot send to.
    let answer = g.get(&format!("/cgi-bin/sendsms?{ok}&to=1&text=x")).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (
            400,
            "Number(s) has/have been denied by white- and/or black-lists."
        )
    );
    // A POST of a form is not one Kannel takes.
    let answer = g
        .post(
            "/cgi-bin/sendsms",
            &[("content-type", "application/x-www-form-urlencoded")],
            "username=acme&password=secret1&to=1&text=x",
        )
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (400, "Invalid content-type")
    );
    // Unknown CGI variables are ignored, as Kannel ignores them.
    let answer = g
        .get("/cgi-bin/sendsms?username=acme&password=secret1&to=%2B31612345678&text=x&coding=0&charset=UTF-8&extra=y")
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    // What the extension refuses (not GSM 7-bit): Kannel's form of its words.
    let answer = g
        .get("/cgi-bin/sendsms?username=acme&password=secret1&to=%2B31612345678&text=%E2%82%AC%F0%9F%98%80&coding=0")
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.ends_with(", rejected"), "{}", answer.body);
    assert_eq!(
        g.messages().await,
        1,
        "only the good request stored a message"
    );
}

#[tokio::test]
async fn jasmin_send_answers_as_jasmin_and_posts_dlrs_until_acknowledged() {
    let g = gateway(Behaviour {
        reject_destination: Some("31600000000".to_owned()),
        ..Behaviour::default()
    })
    .await;
    let receiver = HttpServer::start();
    // A receiver that answers 200 but not ACK/Jasmin is called again.
    receiver.answer_with(200);
    receiver.reply_with("OK");
    let answer = g
        .get(&format!(
            "/send?username=acme&password=secret1&to=%2B31612345678&content=Hello+Jasmin&from=ACME\
             &dlr=yes&dlr-url={}&dlr-level=3&dlr-method=POST",
            encode(&format!("{}/jasmin", receiver.url))
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    let id: i64 = scalar(&g.c, "SELECT max(id) FROM smsbus.message", &[]).await;
    assert_eq!(answer.body, format!("Success \"{id}\""));
    wait_for(
        &g.c,
        &[id],
        &["delivered"],
        Duration::from_secs(20),
        &g.worker,
    )
    .await;
    let unacknowledged = calls(&receiver, "/jasmin", 1, &g.worker).await;
    assert_eq!(unacknowledged[0].method, "POST");
    assert_eq!(
        unacknowledged[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // Not taken: still waiting in the outbox, with why (recorded just
    // after the receiver answered).
    let why = "SELECT count(*) FROM smsbus.webhook_outbox WHERE last_error LIKE 'HTTP 200: OK%'";
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&g.c, why).await > 0
        })
        .await,
        "an answer other than ACK/Jasmin was not kept as the event's last error"
    );
    receiver.reply_with("ACK/Jasmin");
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(&g.c, "SELECT count(*) FROM smsbus.webhook_outbox").await == 0
        })
        .await,
        "the events were never taken:\n{}",
        g.worker.log()
    );
    let acknowledged: Vec<Vec<(String, String)>> = receiver
        .seen()
        .iter()
        .filter(|s| s.url == "/jasmin" && s.body.contains("level="))
        .map(|s| fields_of(&s.body))
        .collect();
    // Level 1 (the SMSC took it) before level 2 (the handset's receipt),
    // each until the receiver acknowledged it.
    let levels: Vec<&str> = acknowledged.iter().map(|f| field(f, "level")).collect();
    let first_two = levels.iter().position(|&l| l == "2").unwrap();
    assert!(levels[..first_two].iter().all(|&l| l == "1"), "{levels:?}");
    assert!(
        first_two >= 2,
        "level 1 was called again until acknowledged: {levels:?}"
    );
    let level1 = &acknowledged[0];
    assert_eq!(field(level1, "id"), id.to_string());
    assert_eq!(field(level1, "message_status"), "ESME_ROK");
    let level2 = acknowledged.last().unwrap();
    let reference: String = scalar(
        &g.c,
        "SELECT reference FROM smsbus.message_part WHERE message_id = $1",
        &[&id],
    )
    .await;
    assert_eq!(field(level2, "message_status"), "DELIVRD");
    assert_eq!(field(level2, "id_smsc"), reference);
    assert_eq!(
        (field(level2, "sub"), field(level2, "dlvrd")),
        ("001", "001")
    );
    assert_eq!(field(level2, "err"), "000");
    assert_eq!(field(level2, "text"), "Hello Jasmin");
    assert_eq!(field(level2, "subdate").len(), 10);

    // A submission the SMSC refuses: level 1 with its command status, by GET.
    let answer = g
        .get(&format!(
            "/send?username=acme&password=secret1&to=%2B31600000000&content=refused\
             &dlr-url={}&dlr-level=1&dlr-method=GET",
            encode(&format!("{}/refused", receiver.url))
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = calls(&receiver, "/refused", 1, &g.worker).await;
    assert_eq!(seen[0].method, "GET");
    let refused = fields_of(seen[0].url.split_once('?').unwrap().1);
    assert_eq!(field(&refused, "level"), "1");
    assert_eq!(
        field(&refused, "message_status"),
        "ESME_RINVDSTADR",
        "{refused:?}"
    );

    // A JSON body, and hex content in UCS-2.
    let answer = g
        .post(
            "/send",
            &[("content-type", "application/json")],
            &json!({"username": "acme", "password": "secret1", "to": "+31655555555",
                    "hex-content": "041f04400438043204350442", "coding": "8", "priority": "3",
                    "validity-period": "30", "tags": "promo,nl"})
            .to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let row = g
        .c
        .query_one(
            "SELECT body, encoding, priority, custom FROM smsbus.message WHERE to_address = '+31655555555'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Привет");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("ucs2"));
    assert_eq!(row.get::<_, i16>(2), 3);
    assert_eq!(
        row.get::<_, serde_json::Value>(3),
        json!({"jasmin": {"tags": ["promo", "nl"]}})
    );
    // A form body, scheduled with an SMPP time.
    let answer = g
        .post(
            "/send",
            &[("content-type", "application/x-www-form-urlencoded")],
            "username=acme&password=secret1&to=%2B31666666666&content=later&sdt=000000010000000R",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let minutes: f64 = scalar(
        &g.c,
        "SELECT extract(epoch FROM scheduled_at - now())::float8 / 60 FROM smsbus.message
         WHERE to_address = '+31666666666'",
        &[],
    )
    .await;
    assert!((50.0..=61.0).contains(&minutes), "{minutes}");
}

#[tokio::test]
async fn jasmin_refusals_use_its_words_and_store_nothing() {
    let g = gateway(Behaviour::default()).await;
    let ok = "username=acme&password=secret1&to=%2B31612345678";
    for (query, status, text) in [
        (
            "",
            400,
            "Mandatory arguments not found, please refer to the HTTPAPI specifications.",
        ),
        (
            &format!("{ok}&content=x&foo=1"),
            400,
            "Argument [foo] is unknown.",
        ),
        (
            &format!("{ok}&content=x&priority=5"),
            400,
            "Argument [priority] has an invalid value: [5].",
        ),
        (
            &format!("{ok}&content=x&coding=11"),
            400,
            "Argument [coding] has an invalid value: [11].",
        ),
        (
            &format!("{ok}&content=x&coding=6"),
            400,
            "Argument [coding] has an invalid value: [6].",
        ),
        (
            &format!("{ok}&content=x&dlr=maybe"),
            400,
            "Argument [dlr] has an invalid value: [maybe].",
        ),
        (
            &format!("{ok}&content=x&dlr-url=ftp%3A%2F%2Fx"),
            400,
            "Argument [dlr-url] has an invalid value: [ftp://x].",
        ),
        (
            &format!("{ok}&content=x&dlr=yes"),
            400,
            "Mandatory argument [dlr-url] is not found.",
        ),
        (
            &format!("{ok}&content=x&sdt=tomorrow"),
            400,
            "Argument [sdt] has an invalid value: [tomorrow].",
        ),
        (
            "username=acme&password=secret1&content=x",
            400,
            "Mandatory argument [to] is not found.",
        ),
        (
            "username=acme&password=secret1&to=abc&content=x",
            400,
            "Argument [to] has an invalid value: [abc].",
        ),
        (ok, 400, "content or hex-content not present."),
        (
            &format!("{ok}&content=x&hex-content=41"),
            400,
            "content and hex-content cannot be used both in same request.",
        ),
        (
            &format!("{ok}&hex-content=zz"),
            400,
            "Invalid hex-content data: 'zz'",
        ),
        (
            "username=acme&password=wrong&to=%2B31612345678&content=x",
            403,
            "Authentication failure for username:acme",
        ),
        (
            "username=acme&password=01234567890123456&to=1&content=x",
            400,
            "Argument [password] has an invalid value: [(not shown)].",
        ),
        (
            "username=acme&password=secret1&to=%2B99912345&content=blocked",
            412,
            "No route found",
        ),
    ] {
        let answer = g.get(&format!("/send?{query}")).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (status, format!("Error \"{text}\"").as_str()),
            "{query}"
        );
    }
    // Only the blocked message exists: it was routed, and refused.
    assert_eq!(g.messages().await, 1);
    let status: String = scalar(&g.c, "SELECT status::text FROM smsbus.message", &[]).await;
    assert_eq!(status, "blocked");
}

#[tokio::test]
async fn only_the_worker_adds_or_drops_callbacks_and_senders_never_read_them() {
    let g = gateway(Behaviour::default()).await;
    let answer = g
        .get(&format!(
            "/cgi-bin/sendsms?username=acme&password=secret1&to=%2B31612345678&text=x&dlr-mask=1&dlr-url={}",
            encode("http://127.0.0.1:9/dlr?token=PRIVATE")
        ))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id: i64 = scalar(&g.c, "SELECT max(id) FROM smsbus.message", &[]).await;
    let mut roles = smsbus_tests::roles::LoginRoles::default();
    let (_, sender) = roles.login(&g._db, "sender", "smsbus_sender").await;
    let (_, admin) = roles.login(&g._db, "admin", "smsbus_admin").await;
    for (who, client) in [("sender", &sender), ("admin", &admin)] {
        for sql in [
            format!("SELECT smsbus._add_callback({id}, 'acme', 'kannel', 'http://evil.example/', 'GET', 31)"),
            "SELECT smsbus._prune_callbacks()".to_owned(),
        ] {
            let (code, _) = smsbus_tests::db::expect_error(client, &sql).await;
            assert_eq!(code, "42501", "{who}: {sql}");
        }
    }
    // The dlr-url (and what it carries) is the admins' and the worker's.
    let (code, _) = smsbus_tests::db::expect_error(&sender, "SELECT url FROM smsbus.webhook").await;
    assert_eq!(code, "42501");
    let seen: String = scalar(&admin, "SELECT url FROM smsbus.webhook", &[]).await;
    assert!(seen.contains("PRIVATE"));
    // Another account's message cannot be given a callback, even by the worker's function.
    let (code, message) = smsbus_tests::db::expect_error(
        &g.c,
        &format!("SELECT smsbus._add_callback({id}, 'nobody', 'kannel', 'http://x/', 'GET', 1)"),
    )
    .await;
    assert_eq!(code, "P0002", "{message}");
    drop((sender, admin));
    let Gateway { _db, worker, .. } = g;
    drop(worker);
    roles.remove(_db).await;
}
