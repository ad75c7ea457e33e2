//! A fresh database per test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// The template every test database is copied from (`scripts/cluster.sh template`).
pub const TEMPLATE: &str = "smsbus_template";

/// Connection settings of the test cluster, without a database name.
pub fn base_conninfo() -> String {
    std::env::var("SMSBUS_TEST_PG").unwrap_or_else(|_| {
        panic!("SMSBUS_TEST_PG is not set: run the tests with `make test`, which starts the test cluster")
    })
}

/// A database made for one test and dropped when this value is dropped.
pub struct TestDb {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new() -> TestDb {
        TestDb::from_template(TEMPLATE).await
    }

    /// A database without the extension (from template0), e.g. to restore
    /// a dump into.
    pub async fn empty() -> TestDb {
        TestDb::from_template("template0").await
    }

    async fn from_template(template: &str) -> TestDb {
        let name = format!(
            "t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = connect_to(&format!("{} dbname=postgres", base_conninfo())).await;
        // CREATE DATABASE from a template fails while another session is
        // copying it; retry a little.
        let mut attempt = 0;
        loop {
            match admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE {template}"))
                .await
            {
                Ok(()) => break,
                Err(e)
                    if attempt < 50
                        && e.to_string().contains("is being accessed by other users") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create test database {name}: {e}"),
            }
        }
        TestDb { name }
    }

    /// `key=value` connection string of this database.
    pub fn conninfo(&self) -> String {
        format!("{} dbname={}", base_conninfo(), self.name)
    }

    /// A new superuser connection.
    pub async fn connect(&self) -> Client {
        connect_to(&self.conninfo()).await
    }

    /// A new connection acting as `role` (e.g. smsbus_sender).
    pub async fn connect_as(&self, role: &str) -> Client {
        let client = self.connect().await;
        client
            .batch_execute(&format!("SET ROLE {role}"))
            .await
            .unwrap_or_else(|e| panic!("SET ROLE {role}: {e}"));
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; a plain thread with the blocking
        // client avoids nesting runtimes.
        let dropped = std::thread::spawn(move || -> Result<(), postgres::Error> {
            let mut admin = postgres::Client::connect(
                &format!("{} dbname=postgres", base_conninfo()),
                postgres::NoTls,
            )?;
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Connects and drives the connection on the current runtime.
pub async fn connect_to(conninfo: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {conninfo}: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test connection ended: {e}");
        }
    });
    client
}

/// Connects like [`connect_to`], keeping every notice and warning the
/// server sends ("SEVERITY: message"), for tests that must see none.
pub async fn connect_keeping_notices(
    conninfo: &str,
) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (client, mut connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {conninfo}: {e}"));
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = notices.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => kept
                    .lock()
                    .expect("notices lock")
                    .push(format!("{}: {}", notice.severity(), notice.message())),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("test connection ended: {e}");
                    break;
                }
            }
        }
    });
    (client, notices)
}

/// The SQLSTATE and message of a failed statement, for exact assertions.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a database error, got {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Runs `sql` expecting it to fail; returns (SQLSTATE, message).
pub async fn expect_error(client: &Client, sql: &str) -> (String, String) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => db_error(&e),
    }
}

/// Count of rows a query returns as its single bigint column.
pub async fn count(client: &Client, sql: &str) -> i64 {
    scalar(client, sql, &[]).await
}

/// The status of message `id`, as text.
pub async fn status_of(client: &Client, id: i64) -> String {
    scalar(
        client,
        "SELECT status::text FROM smsbus.message WHERE id = $1",
        &[&id],
    )
    .await
}

pub async fn trigger_status_of(client: &Client, id: i64) -> String {
    scalar(
        client,
        "SELECT trigger_status::text FROM smsbus.message WHERE id = $1",
        &[&id],
    )
    .await
}

/// Waits until the backend `pid` waits on a lock (a row or an advisory
/// lock another transaction holds), as seen from `observer`; panics after
/// 10 s. Tests of two transactions at once use it to know the second has
/// reached the point where it must wait for the first.
pub async fn wait_until_blocked(observer: &Client, pid: i32) {
    let blocked =
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'";
    for _ in 0..500 {
        let n: i64 = scalar(observer, blocked, &[&pid]).await;
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("backend {pid} did not wait for the other transaction");
}

/// The single value a query returns (first column of its one row).
pub async fn scalar<T>(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A connection that LISTENs on `channel`, and the notifications it gets
/// as (channel, payload).
pub async fn listen(
    db: &TestDb,
    channel: &str,
) -> (
    Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(&db.conninfo(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to listen: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap_or_else(|e| panic!("LISTEN {channel}: {e}"));
    (client, rx)
}

/// The first column of every row `sql` returns, as text.
pub async fn strings(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Runs `sql` expecting it to be refused; (SQLSTATE, message, position of
/// the mistake within the checked text, when the error has one).
pub async fn refused_at(client: &Client, sql: &str) -> (String, String, Option<u32>) {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("expected an error from: {sql}"));
    let db = e.as_db_error().expect("a database error");
    let position = match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Internal { position, .. }) => Some(*position),
        _ => None,
    };
    (
        db.code().code().to_owned(),
        db.message().to_owned(),
        position,
    )
}
