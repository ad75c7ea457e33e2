//! Upgrades: a database made by every released version (the install
//! scripts kept in `migrations/`), filled with data and brought up with
//! `ALTER EXTENSION smsbus UPDATE`, has exactly the schema of a fresh
//! install, keeps every row, and goes on working.

use std::collections::BTreeSet;
use std::path::Path;

use smsbus_tests::db::{scalar, status_of, TestDb};
use smsbus_tests::fixtures::{columns, contents_of, fill, schema};
use tokio_postgres::Client;

/// The released versions: `migrations/smsbus--<version>.sql`.
fn releases() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut versions: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let version = name.strip_prefix("smsbus--")?.strip_suffix(".sql")?;
            (!version.contains("--")).then(|| version.to_string())
        })
        .collect();
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    versions
}

async fn version(c: &Client) -> String {
    scalar(
        c,
        "SELECT extversion FROM pg_extension WHERE extname = 'smsbus'",
        &[],
    )
    .await
}

#[tokio::test]
async fn every_release_upgrades_to_the_schema_of_a_fresh_install() {
    let fresh = TestDb::new().await;
    let f = fresh.connect().await;
    let current = version(&f).await;
    let expected = schema(&f).await;
    let older: Vec<String> = releases().into_iter().filter(|r| *r != current).collect();
    assert!(
        !older.is_empty(),
        "no release before {current} in migrations/"
    );
    for release in &older {
        let db = TestDb::empty().await;
        let c = db.connect().await;
        c.batch_execute(&format!("CREATE EXTENSION smsbus VERSION '{release}'"))
            .await
            .unwrap_or_else(|e| panic!("installing {release}: {e}"));
        fill(&c).await;
        // Rows are compared in the columns the release had: an upgrade may
        // add some.
        let old_columns = columns(&c).await;
        let before = contents_of(&c, Some(&old_columns)).await;

        c.batch_execute("ALTER EXTENSION smsbus UPDATE")
            .await
            .unwrap_or_else(|e| panic!("upgrading from {release}: {e}"));
        assert_eq!(version(&c).await, current);

        let got = schema(&c).await;
        let (want, have): (BTreeSet<&String>, BTreeSet<&String>) =
            (expected.iter().collect(), got.iter().collect());
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "from {release}, the upgraded schema differs from a fresh install \
             (write the change into migrations/smsbus--{release}--{current}.sql)\n\
             fresh install only: {missing:#?}\nupgraded only: {extra:#?}"
        );
        for ((table, was), (_, is)) in before
            .iter()
            .zip(&contents_of(&c, Some(&old_columns)).await)
        {
            assert_eq!(
                was, is,
                "from {release}: smsbus.{table} changed in the upgrade"
            );
        }

        // It goes on working: new messages are routed by the old rules, and
        // the message awaiting its report gets it.
        let routed: String = scalar(
            &c,
            "INSERT INTO smsbus.message (to_address, body) VALUES ('+31612345670', 'after')
             RETURNING channel",
            &[],
        )
        .await;
        assert_eq!(routed, "kpn");
        let sent: i64 = scalar(
            &c,
            "SELECT id FROM smsbus.message WHERE status = 'sent'",
            &[],
        )
        .await;
        c.execute(
            "SELECT smsbus._apply_reports('kpn', ARRAY['r2'], ARRAY['delivered'], ARRAY['stat:DELIVRD'])",
            &[],
        )
        .await
        .unwrap();
        assert_eq!(status_of(&c, sent).await, "delivered");
    }
}

/// The version under development is one step from the last release.
#[tokio::test]
async fn the_current_version_has_a_step_from_the_last_release() {
    let fresh = TestDb::new().await;
    let current = version(&fresh.connect().await).await;
    let last = releases()
        .into_iter()
        .rfind(|r| *r != current)
        .expect("a released version");
    let step = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../migrations/smsbus--{last}--{current}.sql"));
    assert!(step.exists(), "{} is missing", step.display());
}
