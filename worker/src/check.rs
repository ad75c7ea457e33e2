//! `smsbus-worker check`: what an operator runs before starting the worker
//! (or when something is wrong): can the database be reached, is the
//! extension there in the version this worker speaks, and does every
//! enabled channel, route, blocking rule and trigger still hold up (a
//! provider that answers, a modem device that exists, a condition whose
//! table was not dropped since). One line per item; the exit status says
//! whether any failed.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use crate::channels::gsm::config::GsmConfig;
use crate::channels::smpp::config::SmppConfig;
use crate::{db, Config};

/// How long a provider gets to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What is wrong with an enabled channel, as its FAIL line says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum ChannelProblem {
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// The config does not parse (the message names the field).
    #[error("{0:#}")]
    Config(anyhow::Error),
    #[error("cannot connect to {address}: {source}")]
    Unreachable {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: timed out")]
    Timeout { address: String },
    #[error("{device}: {source}")]
    NoDevice {
        device: String,
        source: std::io::Error,
    },
}

/// One checked item.
struct Finding {
    what: String,
    problem: Option<String>,
    detail: String,
}

/// Runs every check, printing each; the number of problems found.
pub async fn run(config: &Config) -> anyhow::Result<usize> {
    let (client, connection) = db::connection_config(config, "check")
        .connect(NoTls)
        .await
        .context("cannot connect to the database")?;
    tokio::spawn(connection);
    let mut findings = vec![database(&client).await?];
    if findings[0].problem.is_none() {
        findings.extend(channels(&client).await?);
        findings.extend(rules(&client).await?);
        findings.extend(triggers(&client).await?);
    }
    let problems = findings.iter().filter(|f| f.problem.is_some()).count();
    for f in &findings {
        match &f.problem {
            None => println!("ok    {}: {}", f.what, f.detail),
            Some(p) => println!("FAIL  {}: {p}", f.what),
        }
    }
    match problems {
        0 => println!("all {} checks passed", findings.len()),
        n => println!("{n} of {} checks failed", findings.len()),
    }
    Ok(problems)
}

async fn database(client: &Client) -> anyhow::Result<Finding> {
    let server: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let installed: Option<String> = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'smsbus'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    let ours = env!("CARGO_PKG_VERSION");
    let problem = match &installed {
        None => Some("extension smsbus is not installed (CREATE EXTENSION smsbus)".to_owned()),
        Some(v) if v != ours => Some(format!(
            "extension smsbus is {v}, this worker is {ours} (ALTER EXTENSION smsbus UPDATE, or the matching worker)"
        )),
        Some(_) => db::restoring(client)
            .await?
            .then(|| db::RESTORING_LEFT_ON.to_owned()),
    };
    Ok(Finding {
        what: "database".into(),
        problem,
        detail: format!("PostgreSQL {server}, extension smsbus {ours}"),
    })
}

async fn channels(client: &Client) -> anyhow::Result<Vec<Finding>> {
    let rows = client
        .query(
            "SELECT name, kind, config FROM smsbus.channel WHERE enabled ORDER BY name",
            &[],
        )
        .await?;
    let mut findings = Vec::new();
    for row in rows {
        let (name, kind, config): (String, String, serde_json::Value) =
            (row.get(0), row.get(1), row.get(2));
        let result = match kind.as_str() {
            "smpp" => smpp(&config).await,
            "gsm" => gsm(&config),
            other => Err(ChannelProblem::UnknownKind(other.to_owned())),
        };
        let (detail, problem) = match result {
            Ok(detail) => (detail, None),
            Err(problem) => (String::new(), Some(problem.to_string())),
        };
        findings.push(Finding {
            what: format!("channel {name} ({kind})"),
            detail,
            problem,
        });
    }
    Ok(findings)
}

/// The provider accepts a connection: what was found.
async fn smpp(config: &serde_json::Value) -> Result<String, ChannelProblem> {
    let config = SmppConfig::parse(config).map_err(ChannelProblem::Config)?;
    let address = format!("{}:{}", config.host, config.port);
    // A connection, not a bind: a running worker's sessions are not
    // disturbed, and the password is not tried where it might lock out.
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Ok(format!("{address} accepts connections")),
        Ok(Err(source)) => Err(ChannelProblem::Unreachable { address, source }),
        Err(_) => Err(ChannelProblem::Timeout { address }),
    }
}

/// The modem's device exists: what was found.
fn gsm(config: &serde_json::Value) -> Result<String, ChannelProblem> {
    let config = GsmConfig::parse(config).map_err(ChannelProblem::Config)?;
    // Opening it could take the port from a running worker: its presence
    // is what can be checked from here.
    match std::fs::metadata(&config.device) {
        Ok(_) => Ok(format!("{} exists", config.device)),
        Err(source) => Err(ChannelProblem::NoDevice {
            device: config.device,
            source,
        }),
    }
}

/// Each enabled rule's condition (and function) checked again: a table or
/// function it uses may have gone since it was written.
async fn rules(client: &Client) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for (table, extra) in [("route", ", function"), ("block", ", NULL::text")] {
        let rows = client
            .query(
                &format!(
                    "SELECT id, condition{extra} FROM smsbus.{table} WHERE enabled ORDER BY id"
                ),
                &[],
            )
            .await?;
        for row in rows {
            let (id, condition, function): (i64, String, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            let what = format!("{table} {id}");
            let mut problem = checked(
                client,
                "SELECT smsbus._check_condition($1, $2)",
                &[&condition, &what],
            )
            .await;
            if let (None, Some(f)) = (&problem, &function) {
                let exists: bool = client
                    .query_one(
                        "SELECT to_regprocedure($1 || '(smsbus.message)') IS NOT NULL",
                        &[f],
                    )
                    .await?
                    .get(0);
                if !exists {
                    problem = Some(format!("function {f}(smsbus.message) does not exist"));
                }
            }
            findings.push(Finding {
                what,
                problem,
                detail: "condition checks".into(),
            });
        }
    }
    Ok(findings)
}

async fn triggers(client: &Client) -> anyhow::Result<Vec<Finding>> {
    let rows = client
        .query(
            "SELECT name, condition, language, script FROM smsbus.trigger WHERE enabled ORDER BY position, id",
            &[],
        )
        .await?;
    let mut findings = Vec::new();
    for row in rows {
        let (name, condition, language, script): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let what = format!("trigger {name}");
        let mut problem = checked(
            client,
            "SELECT smsbus._check_condition($1, $2)",
            &[&condition, &what],
        )
        .await;
        if problem.is_none() {
            let check = match language.as_str() {
                "sql" => "SELECT smsbus._check_sql_script($1, $2)",
                _ => "SELECT smsbus._check_lua_script($1, $2)",
            };
            problem = checked(client, check, &[&script, &name]).await;
        }
        findings.push(Finding {
            what,
            problem,
            detail: format!("condition and {language} script check"),
        });
    }
    Ok(findings)
}

/// Runs a check function; its error, if it raised one.
async fn checked(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Option<String> {
    client
        .query_one(sql, params)
        .await
        .err()
        .map(|e| crate::triggers::chain::error_text(&e))
}
