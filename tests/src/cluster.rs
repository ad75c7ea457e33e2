//! A PostgreSQL cluster of a test's own, for what the shared test cluster
//! must not suffer: being restarted or crashed mid-test. Made with initdb
//! in a temporary directory on a free port, as the postgres user when
//! running as root (PostgreSQL refuses root), with database `smsbus`
//! holding the extension; stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::db::connect_to;

/// The directory of PostgreSQL's programs (`pg_config --bindir`).
pub fn pg_bin(program: &str) -> PathBuf {
    let pg_config = std::env::var("PG_CONFIG")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
    let out = Command::new(&pg_config)
        .arg("--bindir")
        .output()
        .unwrap_or_else(|e| panic!("{pg_config}: {e}"));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join(program)
}

pub struct OwnCluster {
    dir: PathBuf,
    port: u16,
}

/// A PostgreSQL program, run as the cluster's owner.
fn as_owner(program: &str) -> Command {
    let bin = pg_bin(program);
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    }
}

fn run_as_owner(program: &str, args: &[&str]) {
    let out = as_owner(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_to_postgres(path: &Path) {
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("a postgres user");
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
}

impl OwnCluster {
    /// A directory and a port for a cluster, not made yet.
    fn place() -> OwnCluster {
        let dir = std::env::temp_dir().join(format!(
            "smsbus-cluster-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("run")).unwrap();
        chown_to_postgres(&dir);
        chown_to_postgres(&dir.join("run"));
        let port = crate::net::free_port();
        OwnCluster { dir, port }
    }

    /// Appends this cluster's port and socket directory to its settings.
    fn configure(&self) {
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 100\nshared_buffers = 64MB\nfsync = off\n",
            self.port,
            self.dir.join("run").display()
        );
        let conf_file = Path::new(&self.data()).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_file).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_file, text).unwrap();
    }

    pub async fn start() -> OwnCluster {
        let cluster = OwnCluster::place();
        let data = cluster.data();
        run_as_owner(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        cluster.configure();
        cluster.pg_ctl(&["start"]);
        let admin = connect_to(&cluster.conninfo_of("postgres")).await;
        admin.batch_execute("CREATE DATABASE smsbus").await.unwrap();
        connect_to(&cluster.conninfo())
            .await
            .batch_execute("CREATE EXTENSION smsbus")
            .await
            .unwrap();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir.join("postgresql.log").display().to_string();
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        run_as_owner("pg_ctl", &all);
    }

    fn conninfo_of(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.join("run").display(),
            self.port
        )
    }

    /// `key=value` connection string of database `smsbus`.
    pub fn conninfo(&self) -> String {
        self.conninfo_of("smsbus")
    }

    /// Stops the server as a crash would (no checkpoint, every connection
    /// cut) and starts it again, which then recovers from its WAL.
    pub fn crash_and_restart(&self) {
        self.pg_ctl(&["-m", "immediate", "restart"]);
    }

    /// A hot standby streaming from this cluster (`pg_basebackup -R`),
    /// started.
    pub fn standby(&self) -> OwnCluster {
        let standby = OwnCluster::place();
        let data = standby.data();
        let port = self.port.to_string();
        let host = self.dir.join("run").display().to_string();
        run_as_owner(
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        standby.configure();
        standby.pg_ctl(&["start"]);
        standby
    }

    /// Stops the server at once, as a crash or a pulled plug would.
    pub fn stop_immediately(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Promotes a standby to primary, and waits until it is one.
    pub fn promote(&self) {
        self.pg_ctl(&["promote"]);
    }

    /// The `host` and `port` of this cluster, for a connection string
    /// naming several.
    pub fn address(&self) -> (String, u16) {
        (self.dir.join("run").display().to_string(), self.port)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = as_owner("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
