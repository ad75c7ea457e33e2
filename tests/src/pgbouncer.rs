//! PgBouncer (Debian's, 1.18) in front of the test cluster, for the
//! pooler tests: a pooler of the test's own on a free port, in session
//! or transaction mode, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::db::base_conninfo;
use crate::worker::die_with_parent;

/// Debian's PgBouncer.
pub const BINARY: &str = "/usr/sbin/pgbouncer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
}

impl PoolMode {
    fn name(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl PgBouncer {
    /// A pooler for every database of the test cluster, `pool_size`
    /// server connections per database and user.
    pub async fn start(mode: PoolMode, pool_size: u32) -> PgBouncer {
        PgBouncer::start_for(&base_conninfo(), mode, pool_size).await
    }

    /// The same in front of the server `server` names (`host=... port=...`).
    pub async fn start_for(server: &str, mode: PoolMode, pool_size: u32) -> PgBouncer {
        let dir = std::env::temp_dir().join(format!(
            "smsbus-pgbouncer-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = crate::net::free_port();
        let (host, server_port) = server_address(server);
        let ini = format!(
            "[databases]\n\
             * = host={host} port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             admin_users = postgres\n\
             pool_mode = {mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 500\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            mode = mode.name(),
            users = dir.join("users.txt").display(),
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        give_to_postgres(&dir);
        // PgBouncer refuses to run as root: it runs as postgres, as the
        // child itself (not under runuser), so that dropping this kills it
        // and it dies with the test (the parent-death signal is set after
        // the change of user, which would clear it).
        let mut command = Command::new(BINARY);
        if let Some(user) = postgres_user() {
            use std::os::unix::process::CommandExt;
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        die_with_parent(&mut command);
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        let bouncer = PgBouncer { dir, port, child };
        let started = crate::worker::eventually(Duration::from_secs(10), || async {
            tokio_postgres::connect(&bouncer.conninfo("postgres"), tokio_postgres::NoTls)
                .await
                .is_ok()
        })
        .await;
        assert!(started, "PgBouncer did not start:\n{}", bouncer.log());
        bouncer
    }

    /// `key=value` connection string of `dbname` through the pooler.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Gone already is fine.
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
        let _removed = std::fs::remove_dir_all(&self.dir);
    }
}

/// The socket directory (or host) and port of a `key=value` string.
fn server_address(conninfo: &str) -> (String, String) {
    let field = |key: &str| {
        conninfo
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    };
    (
        field("host").unwrap_or_else(|| "127.0.0.1".into()),
        field("port").unwrap_or_else(|| "5432".into()),
    )
}

/// The user PgBouncer runs as when the tests run as root.
fn postgres_user() -> Option<nix::unistd::User> {
    nix::unistd::geteuid().is_root().then(|| {
        nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("a postgres user")
    })
}

fn give_to_postgres(dir: &Path) {
    if let Some(user) = postgres_user() {
        for path in [
            dir.to_path_buf(),
            dir.join("pgbouncer.ini"),
            dir.join("users.txt"),
        ] {
            nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}
