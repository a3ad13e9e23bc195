//! `attrib run` child processes: their settings, start, SIGKILL, restart and stop, and
//! the logs of a failed test.

use crate::common;
use attrib::ops::settings::{Guarantee, Settings};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prints the attrib logs of a failed test.
pub(crate) struct Logs(pub(crate) PathBuf);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the evidence (the logs) for a look after the run.
            let keep = std::env::temp_dir().join(format!("attrib-failed-{}", std::process::id()));
            if let Err(err) = std::fs::create_dir_all(&keep) {
                eprintln!("cannot create {}: {err}", keep.display());
            }
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                if e.path().is_file() {
                    if let Err(err) = std::fs::copy(e.path(), keep.join(e.file_name())) {
                        eprintln!("cannot keep {}: {err}", e.path().display());
                    }
                }
            }
            eprintln!("attrib's logs kept in {}", keep.display());
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!(
                        "--- {} (last 40 lines)\n{}",
                        e.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }
}

/// The tests share one broker and the machine's two cores: one at a time.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn kills() -> usize {
    std::env::var("ATTRIB_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// An `attrib run` child process.
pub(crate) struct Instance {
    child: Child,
    pub(crate) env: Vec<(String, String)>,
    log: PathBuf,
}

pub(crate) fn settings_env(s: &Settings, instance: &str, state: &Path) -> Vec<(String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    [
        ("ATTRIB_BROKERS", s.brokers.clone()),
        ("ATTRIB_APPLICATION_ID", s.application_id.clone()),
        ("ATTRIB_INSTANCE_ID", instance.to_string()),
        ("ATTRIB_STATE_DIR", state.display().to_string()),
        ("ATTRIB_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("ATTRIB_PROCESSING_GUARANTEE", "exactly_once".to_string()),
        ("ATTRIB_COMMIT_INTERVAL_MS", "100".to_string()),
        (
            "ATTRIB_LOG_LEVEL",
            std::env::var("ATTRIB_TEST_LOG").unwrap_or_else(|_| "warn,attrib=info".to_string()),
        ),
        (
            "ATTRIB_IDENTITY_STITCHING",
            s.identity.stitching.to_string(),
        ),
        ("ATTRIB_KAFKA_SESSION_TIMEOUT_MS", "6000".to_string()),
        ("ATTRIB_KAFKA_HEARTBEAT_INTERVAL_MS", "1000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(s.topics.variables())
    .chain(
        std::env::var("ATTRIB_TEST_KAFKA_DEBUG")
            .ok()
            .map(|d| ("ATTRIB_KAFKA_DEBUG".to_string(), d)),
    )
    .collect()
}

impl Instance {
    pub(crate) fn start(env: Vec<(String, String)>, log: PathBuf) -> Instance {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_attrib"))
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Instance { child, env, log }
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn restart(&mut self) {
        let mut next = Instance::start(self.env.clone(), self.log.clone());
        std::mem::swap(&mut self.child, &mut next.child);
        // `next` now holds the old (killed) child; dropping it is a no-op.
    }

    /// Waits for the process to end by itself (a failpoint), returning its status.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "attrib did not end within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "attrib exited with {status}; log {}",
                    self.log.display()
                );
                return;
            }
            assert!(Instant::now() < deadline, "attrib did not stop within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails leaves no attrib process behind (it would keep running against a broker
/// that is gone).
impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Err(e) = self.child.kill() {
                eprintln!("killing attrib {}: {e}", self.child.id());
            }
            if let Err(e) = self.child.wait() {
                eprintln!("waiting for attrib {}: {e}", self.child.id());
            }
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    if let Err(e) = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
    {
        eprintln!("SIGTERM to {pid}: {e}");
    }
}

/// Waits (at most 60 s) until `file` exists: a failpoint's signal (`src/runtime/failpoint.rs`).
pub(crate) fn wait_for_file(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "no {} within 60 s",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Settings with fresh topics on the broker `scripts/test` started. `None` outside it.
pub(crate) fn setup(partitions: i32) -> Option<(Settings, tempfile::TempDir)> {
    let brokers = common::real_broker()?;
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_topics(&s.brokers, &common::topics_of(&s, partitions));
    Some((s, dir))
}
