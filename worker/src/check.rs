//! `smsbus-worker check`: what an operator runs before starting the worker
//! (or when something is wrong): can the database be reached, is the
//! extension there in the version this worker speaks, and does every
//! enabled channel, route, blocking rule, trigger and SMPP server
//! listener still hold up (a provider that answers, a modem device that
//! exists, a condition whose table was not dropped since, TLS files the
//! listener can load), and whether the worker would LISTEN or poll
//! ([`crate::sessions`]). One line per item; the exit status says whether
//! any failed.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use crate::channels::gsm::config::GsmConfig;
use crate::channels::http::config::HttpConfig;
use crate::channels::smpp::config::SmppConfig;
use crate::smpp_server::listener;
use crate::statements::{self, params};
use crate::{db, sessions, Config};

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
        findings.push(wake_ups(config, &client).await);
        findings.extend(channels(&client).await?);
        findings.extend(rules(&client).await?);
        findings.extend(triggers(&client).await?);
        findings.extend(smpp_servers(&client).await?);
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
    let server: String = client
        .query_typed("SELECT current_setting('server_version')", &[])
        .await?[0]
        .get(0);
    let installed: Option<String> = client
        .query_typed(
            "SELECT extversion FROM pg_extension WHERE extname = 'smsbus'",
            &[],
        )
        .await?
        .first()
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

/// How the worker would learn of new work: notifications, or poll-only
/// and why (not a failure: the worker works either way, later).
async fn wake_ups(config: &Config, client: &Client) -> Finding {
    let (problem, detail) = match sessions::probe(config, client).await {
        Ok(sessions) => (None, sessions.to_string()),
        Err(e) => (Some(format!("{e:#}")), String::new()),
    };
    Finding {
        what: "wake-ups".into(),
        problem,
        detail,
    }
}

async fn channels(client: &Client) -> anyhow::Result<Vec<Finding>> {
    let rows = client
        .query_typed(
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
            "http" => http(&config),
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

/// The mapping reads: what it sends to. Its provider is not called (a
/// request would send a message).
fn http(config: &serde_json::Value) -> Result<String, ChannelProblem> {
    let config = HttpConfig::parse(config).map_err(ChannelProblem::Config)?;
    Ok(format!(
        "preset {}, up to {} requests at once, webhooks {}",
        config.preset,
        config.concurrency,
        if config.webhook_url.is_empty() {
            "at the provider's own setting"
        } else {
            "at webhook_url"
        }
    ))
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
            .query_typed(
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
                &condition,
                &what,
            )
            .await;
            if let (None, Some(f)) = (&problem, &function) {
                let exists: bool = statements::query_one(
                    client,
                    "SELECT to_regprocedure($1 || '(smsbus.message)') IS NOT NULL",
                    &params![f],
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
        .query_typed(
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
            &condition,
            &what,
        )
        .await;
        if problem.is_none() {
            let check = match language.as_str() {
                "sql" => "SELECT smsbus._check_sql_script($1, $2)",
                _ => "SELECT smsbus._check_lua_script($1, $2)",
            };
            problem = checked(client, check, &script, &name).await;
        }
        findings.push(Finding {
            what,
            problem,
            detail: format!("condition and {language} script check"),
        });
    }
    Ok(findings)
}

/// Each enabled SMPP server listener with TLS: its certificate and key
/// loaded as the listener loads them, so a file that is missing, is not
/// PEM or does not match shows here rather than as a listener that
/// keeps failing to start. (The socket is not opened: a running worker
/// may hold it.)
async fn smpp_servers(client: &Client) -> anyhow::Result<Vec<Finding>> {
    let rows = client
        .query_typed(
            "SELECT name, tls_cert_file, tls_key_file FROM smsbus.smpp_server
             WHERE enabled AND tls_cert_file IS NOT NULL AND tls_key_file IS NOT NULL ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| tls_files(row.get(0), row.get(1), row.get(2)))
        .collect())
}

fn tls_files(name: &str, cert_file: &str, key_file: &str) -> Finding {
    let problem = listener::acceptor(cert_file, key_file)
        .err()
        .map(|e| format!("{e:#}"));
    Finding {
        what: format!("smpp server {name}"),
        problem,
        detail: format!("TLS certificate {cert_file} and key {key_file} load"),
    }
}

/// Runs a check function of two text arguments; its error, if it raised
/// one.
async fn checked(client: &Client, sql: &str, subject: &str, what: &str) -> Option<String> {
    statements::query(client, sql, &params![subject, what])
        .await
        .err()
        .map(|e| crate::triggers::chain::error_text(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    // A self-signed Ed25519 certificate for localhost, its key and another
    // key (openssl genpkey/req), made for this test only.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBPjCB8aADAgECAhR8SBuz0BBjQ92bPxgA8lbIT4ivDTAFBgMrZXAwFDESMBAG
A1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMzEyMTAxOVoYDzIxMjYxMTA5MTIxMDE5
WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwKjAFBgMrZXADIQAhKOLfGAGbwLg2wvBy
CYql3RO2rTm6UTS59V6i7/kFsqNTMFEwHQYDVR0OBBYEFAMcrcAOY04EE1NSBavy
MP3ZTsg6MB8GA1UdIwQYMBaAFAMcrcAOY04EE1NSBavyMP3ZTsg6MA8GA1UdEwEB
/wQFMAMBAf8wBQYDK2VwA0EADXOByEy6B+SOa0hHx2JS33/HHDLOvqQryUi9Y2PR
kOQa3sNDvFxi7jjwjD41YPQEa+BCJyMdfhMN/SEQ/HUhBA==
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICfh/yOwLdvHfoCTSW2/4mfx60mAu+2ScZJQtThEdrBv
-----END PRIVATE KEY-----
";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICsYvpBaU19rPNyTji4O1lJCJjpD2YOEQSYO2i9sh57D
-----END PRIVATE KEY-----
";

    /// The files in a folder of their own, removed when dropped.
    struct Files(PathBuf);

    impl Files {
        fn new(files: &[(&str, &str)]) -> Files {
            let dir = std::env::temp_dir().join(format!("smsbus-check-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            Files(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn tls_files_are_loaded_as_the_listener_loads_them() {
        let files = Files::new(&[
            ("cert.pem", CERT),
            ("key.pem", KEY),
            ("other.pem", OTHER_KEY),
        ]);
        let problem = |cert: &str, key: &str| {
            let finding = tls_files("main", &files.path(cert), &files.path(key));
            assert_eq!(finding.what, "smpp server main");
            finding.problem
        };
        assert_eq!(problem("cert.pem", "key.pem"), None);
        let missing = problem("missing.pem", "key.pem").unwrap();
        assert!(
            missing.starts_with("tls_cert_file: cannot read ") && missing.contains("missing.pem"),
            "{missing}"
        );
        let not_a_cert = problem("key.pem", "key.pem").unwrap();
        assert!(
            not_a_cert.ends_with("key.pem holds no certificate"),
            "{not_a_cert}"
        );
        let no_key = problem("cert.pem", "cert.pem").unwrap();
        assert!(
            no_key.ends_with("cert.pem holds no private key"),
            "{no_key}"
        );
        let mismatch = problem("cert.pem", "other.pem").unwrap();
        assert!(
            mismatch.starts_with("tls: the certificate and the key do not go together"),
            "{mismatch}"
        );
    }
}
