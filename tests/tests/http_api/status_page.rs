//! The status page over HTTP: who may see it (admin keys, as Bearer or as
//! Basic's password; loopback peers only with `--status-page-local`), the
//! headers that keep a page full of outside text safe, and that outside
//! text shows escaped. The browser test (`browser`) shows it at work.

use smsbus_tests::api_client::Answer;
use smsbus_tests::db::scalar;

use super::{key, serve, serve_with, Served};

async fn get(s: &Served, path: &str, authorization: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    s.call_with("GET", path, None, &headers, None).await
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn only_admin_keys_see_the_status_page() {
    let s = serve().await;
    let admin = key(&s.c, "acme", &["admin"]).await;
    let sender = key(&s.c, "acme", &["send", "read"]).await;

    // No key, even from loopback: the browser is asked for one.
    let answer = get(&s, "/", None).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic realm=")),
        "{:?}",
        answer.headers
    );
    assert_eq!(answer.json()["error"]["code"], "unauthorized");
    for path in ["/status/sections"] {
        assert_eq!(get(&s, path, None).await.status, 401, "{path}");
    }
    // Wrong keys, as Bearer and as Basic.
    let wrong = format!("sbk_{}", "0".repeat(64));
    assert_eq!(
        get(&s, "/", Some(&format!("Bearer {wrong}"))).await.status,
        401
    );
    assert_eq!(
        get(&s, "/", Some(&basic("admin", &wrong))).await.status,
        401
    );
    assert_eq!(get(&s, "/", Some("Basic !!!")).await.status, 401);
    // A key without the admin scope: refused, and not asked again.
    let answer = get(&s, "/", Some(&format!("Bearer {sender}"))).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.header("www-authenticate").is_none());
    assert_eq!(
        get(&s, "/status/sections", Some(&basic("x", &sender)))
            .await
            .status,
        403
    );

    // An admin key, either way: the page, with headers that allow no
    // inline script and no framing.
    for authorization in [format!("Bearer {admin}"), basic("anyone", &admin)] {
        let answer = get(&s, "/", Some(&authorization)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")));
        let policy = answer.header("content-security-policy").unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        for section in [
            "throughput",
            "channels",
            "queue",
            "messages",
            "webhooks",
            "binds",
        ] {
            assert!(
                answer.body.contains(&format!("<section id=\"{section}\"")),
                "no {section}: {}",
                answer.body
            );
        }
        assert!(
            answer.body.contains("data-channel=\"kpn\""),
            "{}",
            answer.body
        );
        assert!(answer.body.contains("<script src=\"/status/status.js\""));
        assert!(!answer.body.contains("<script>"), "no inline script");
    }
    // The sections alone, as the page's script fetches them.
    let sections = get(&s, "/status/sections", Some(&format!("Bearer {admin}"))).await;
    assert_eq!(sections.status, 200);
    assert!(!sections.body.contains("<html"));
    assert!(sections.body.contains("<section id=\"channels\""));
    // The script and the style need no key: they hold nothing of the
    // gateway.
    let script = get(&s, "/status/status.js", None).await;
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/javascript")));
    assert!(script.body.contains("/status/sections"));
    assert_eq!(get(&s, "/status/status.css", None).await.status, 200);
}

#[tokio::test]
async fn loopback_peers_see_it_without_a_key_only_when_the_worker_allows() {
    let s = serve_with(&["--status-page-local"]).await;
    let answer = get(&s, "/", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("<section id=\"channels\""));
    // A key given is still checked: a wrong one is refused.
    let wrong = format!("Bearer sbk_{}", "0".repeat(64));
    assert_eq!(get(&s, "/", Some(&wrong)).await.status, 401);
}

#[tokio::test]
async fn what_outsiders_wrote_shows_as_text() {
    let s = serve().await;
    let admin = key(&s.c, "acme", &["admin"]).await;
    let id: i64 = scalar(
        &s.c,
        "INSERT INTO smsbus.message (to_address, body, account) VALUES ('+31612345678', 'hi', 'acme')
         RETURNING id",
        &[],
    )
    .await;
    // What a provider or a client could have put in an error text, the
    // trace, an endpoint's address.
    s.c.execute(
        "INSERT INTO smsbus.message_event (message_id, from_status, to_status, actor, detail)
         VALUES ($1, 'queued', 'failed', '<b>actor</b>', '<img src=x onerror=alert(1)>')",
        &[&id],
    )
    .await
    .unwrap();
    s.c.batch_execute(
        "INSERT INTO smsbus.channel_state (channel, status, last_error)
         VALUES ('kpn', 'error', '<script>alert(\"channel\")</script>')
         ON CONFLICT (channel) DO UPDATE SET status = 'error', last_error = excluded.last_error;
         INSERT INTO smsbus.webhook (account, url, secret)
         VALUES ('acme', 'https://user:pass@hooks.example/events?token=SECRET-TOKEN', 'a long shared secret');",
    )
    .await
    .unwrap();
    // A Kannel dlr-url: counted with the others, its address not shown.
    s.c.execute(
        "SELECT smsbus._add_callback($1, 'acme', 'kannel', 'http://hooks.example/dlr?secret=CALLBACK-TOKEN', 'GET', 1)",
        &[&id],
    )
    .await
    .unwrap();
    let page = get(&s, "/", Some(&format!("Bearer {admin}"))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("dlr-url callbacks of 1 messages"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("CALLBACK-TOKEN"));
    assert!(
        page.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<img src=x"));
    assert!(page.body.contains("&lt;b&gt;actor&lt;/b&gt;"));
    assert!(page
        .body
        .contains("&lt;script&gt;alert(&quot;channel&quot;)&lt;/script&gt;"));
    assert!(!page.body.contains("<script>alert"));
    // The endpoint without its credentials or query.
    assert!(
        page.body.contains("https://hooks.example/events"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("SECRET-TOKEN"));
    assert!(!page.body.contains("pass@"));
    assert!(!page.body.contains("a long shared secret"));
    // The message and its trace are there.
    assert!(page.body.contains(&format!("data-message=\"{id}\"")));
}
