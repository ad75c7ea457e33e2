//! The status page in a real browser: Debian's Chromium, headless, driven
//! over the DevTools protocol. The page of a worker with an SMPP channel
//! (the SMSC simulator) and a GSM channel (the modem simulator) loads
//! without a console error, shows both connected, and its chart and
//! sections move as messages flow, refreshed by the page's own script.
//! A screenshot is left in `target/tmp/status-page.png`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EnableParams as LogEnable, EventEntryAdded};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;
use smsbus_tests::api_client::request;
use smsbus_tests::db::TestDb;
use smsbus_tests::modem::{Modem, ModemBehaviour};
use smsbus_tests::scenario::{
    add_channel, add_channel_of_kind, gsm_config, send, smpp_config, smsc, wait_for, wait_link,
};
use smsbus_tests::smsc::Behaviour;
use smsbus_tests::worker::{eventually, Worker};

use super::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium, as root (no sandbox), with nothing that reaches
/// for the network on its own.
async fn launch(profile: &std::path::Path) -> (Browser, tokio::task::JoinHandle<()>) {
    let config = BrowserConfig::builder()
        .chrome_executable(CHROMIUM)
        .no_sandbox()
        .user_data_dir(profile)
        .window_size(1280, 1400)
        .args([
            "disable-gpu",
            "disable-quic",
            "disable-component-update",
            "no-default-browser-check",
        ])
        .build()
        .expect("a browser config");
    let (browser, mut handler) = Browser::launch(config)
        .await
        .expect("Chromium starts (make setup installs it)");
    let events = tokio::spawn(async move {
        while let Some(event) = handler.next().await {
            if event.is_err() {
                // The connection to the browser closed: it exited.
                break;
            }
        }
    });
    (browser, events)
}

/// Collects what the page reports as an error: console.error calls,
/// uncaught exceptions, and the browser's own error entries (a failed
/// load, a blocked script).
async fn collect_errors(page: &Page) -> Arc<Mutex<Vec<String>>> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    page.execute(LogEnable::default()).await.unwrap();
    let mut console = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .unwrap();
    let mut exceptions = page.event_listener::<EventExceptionThrown>().await.unwrap();
    let mut entries = page.event_listener::<EventEntryAdded>().await.unwrap();
    let sink = errors.clone();
    tokio::spawn(async move {
        loop {
            let error = tokio::select! {
                Some(e) = console.next() => (e.r#type == ConsoleApiCalledType::Error)
                    .then(|| format!("console.error: {:?}", e.args)),
                Some(e) = exceptions.next() => Some(format!("exception: {:?}", e.exception_details)),
                Some(e) = entries.next() => (format!("{:?}", e.entry.level) == "Error")
                    .then(|| format!("{}: {}", e.entry.url.clone().unwrap_or_default(), e.entry.text)),
                else => break,
            };
            if let Some(error) = error {
                sink.lock().unwrap().push(error);
            }
        }
    });
    errors
}

async fn eval<T: DeserializeOwned>(page: &Page, expression: &str) -> T {
    page.evaluate(expression)
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
}

#[tokio::test]
async fn the_status_page_shows_the_gateway_at_work() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let sim = smsc(Behaviour::default()).await;
    add_channel(&c, "provider", &smpp_config(&sim, json!({}))).await;
    let modem = Modem::start(ModemBehaviour::default(), &[]).expect("modem simulator");
    add_channel_of_kind(&c, "modem", "gsm", &gsm_config(modem.path(), json!({}))).await;
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
            "--status-page-local",
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
        "the API never answered:\n{}",
        worker.log()
    );
    wait_link(&c, "provider", "connected", &worker).await;
    wait_link(&c, "modem", "connected", &worker).await;
    let mut ids = Vec::new();
    for (i, channel) in ["provider", "modem", "provider"].iter().enumerate() {
        ids.push(send(&c, channel, &format!("+3161234567{i}"), "before the page").await);
    }
    wait_for(
        &c,
        &ids,
        &["sent", "delivered"],
        Duration::from_secs(20),
        &worker,
    )
    .await;

    let profile = std::env::temp_dir().join(format!("smsbus-chromium-{}", std::process::id()));
    let (mut browser, events) = launch(&profile).await;
    let page = browser.new_page("about:blank").await.unwrap();
    let errors = collect_errors(&page).await;
    page.goto(format!("{base}/")).await.unwrap();
    page.wait_for_navigation().await.unwrap();

    let title: String = eval(&page, "document.title").await;
    assert_eq!(title, "smsbus status");
    let links: Vec<(String, String)> = eval(
        &page,
        "[...document.querySelectorAll('#channels tr[data-channel]')]
            .map(r => [r.dataset.channel, r.querySelector('[data-link]').dataset.link])",
    )
    .await;
    assert_eq!(
        links,
        [
            ("modem".to_owned(), "connected".to_owned()),
            ("provider".to_owned(), "connected".to_owned())
        ]
    );
    let shown: Vec<i64> = eval(
        &page,
        "[...document.querySelectorAll('#messages tr[data-message]')].map(r => Number(r.dataset.message))",
    )
    .await;
    for id in &ids {
        assert!(shown.contains(id), "message {id} not shown: {shown:?}");
    }
    let chart = "document.getElementById('series-submitted').getAttribute('points')";
    let taken = "document.getElementById('updated').dataset.taken";
    let first_chart: String = eval(&page, chart).await;
    let first_taken: String = eval(&page, taken).await;

    // Messages flow; the page refreshes itself, without a reload.
    let mut more = Vec::new();
    for i in 0..20 {
        let channel = if i % 2 == 0 { "provider" } else { "modem" };
        more.push(send(&c, channel, &format!("+316987654{i:02}"), "while watching").await);
    }
    let moved = eventually(Duration::from_secs(30), || async {
        let chart_now: String = eval(&page, chart).await;
        let taken_now: String = eval(&page, taken).await;
        chart_now != first_chart && taken_now != first_taken
    })
    .await;
    assert!(moved, "the chart never moved:\n{first_chart}");
    let newest = *more.last().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            let shown: Vec<i64> = eval(
                &page,
                "[...document.querySelectorAll('#messages tr[data-message]')].map(r => Number(r.dataset.message))",
            )
            .await;
            shown.contains(&newest)
        })
        .await,
        "the newest message never showed"
    );
    let stale: String = eval(&page, "document.getElementById('connection').textContent").await;
    assert_eq!(stale, "", "the page says it is stale");

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    page.save_screenshot(
        ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .full_page(true)
            .build(),
        &screenshot,
    )
    .await
    .unwrap();
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    browser.close().await.unwrap();
    // The event loop ends when the browser has gone; a browser slow to go
    // is no failure of the page.
    if tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .is_err()
    {
        eprintln!("chromium took over 10 s to exit");
    }
    std::fs::remove_dir_all(&profile).ok();
    drop(sim);
}
