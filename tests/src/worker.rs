//! Runs `smsbus-worker` as a child process, as an operator would.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of the worker binary: `SMSBUS_WORKER_BIN`, else next to the test
/// executable's target directory.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("SMSBUS_WORKER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/smsbus-worker
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("smsbus-worker"))
        .expect("target directory")
}

/// A running worker, killed if still running when dropped.
pub struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// Starts the worker on `conninfo` with extra flags.
    pub fn start(conninfo: &str, args: &[&str]) -> Worker {
        // A file, not a pipe: nobody reads a pipe while the worker runs, and
        // a full one would block it.
        let log = std::env::temp_dir().join(format!(
            "smsbus-worker-{}-{}.log",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = std::fs::File::create(&log).expect("worker log file");
        let mut command = Command::new(binary());
        die_with_parent(&mut command);
        let child = command
            .env("DATABASE_URL", conninfo)
            .env(
                "RUST_LOG",
                std::env::var("SMSBUS_TEST_WORKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        Worker { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the worker");
    }

    /// Waits up to `timeout` for the worker to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the worker") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the worker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Has the child get SIGTERM when the process that started it dies, so a
/// killed test or benchmark run leaves no worker behind to claim channels
/// in the next run's database.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it runs in the
    // child between fork and exec and touches no shared state.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
