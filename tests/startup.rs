//! Start-up and shutdown as an operator meets them: fatal settings stop the process at once
//! with a message naming the cause; SIGTERM while attrib waits for an unreachable broker stops
//! it cleanly (exit 0) within the shutdown bound. No broker needed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `attrib run` (brokers unreachable unless `env` says otherwise) with its stderr in
/// `dir/stderr`.
fn spawn_attrib(env: &[(&str, String)], dir: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_attrib"))
        .arg("run")
        .env("ATTRIB_STATE_DIR", dir.join("state"))
        .env("ATTRIB_BROKERS", "127.0.0.1:1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap()
}

/// Runs `attrib run` with the environment; returns (exit code, stderr) or kills it after
/// `timeout`.
fn run_attrib(env: &[(&str, String)], timeout: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_attrib(env, dir.path());
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        code,
        std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
    )
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn http_address_in_use_exits_non_zero_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_attrib(
        &[("ATTRIB_HTTP_ADDR", addr.clone())],
        Duration::from_secs(20),
    );
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(err.contains(&addr) && err.contains("http_addr"), "{err}");
}

#[test]
fn invalid_librdkafka_option_exits_non_zero_naming_it() {
    for (var, value, named) in [
        ("ATTRIB_KAFKA_NO_SUCH_OPTION", "1", "no.such.option"),
        (
            "ATTRIB_KAFKA_ENABLE_IDEMPOTENCE",
            "false",
            "kafka.enable.idempotence",
        ),
    ] {
        let (code, err) = run_attrib(
            &[("ATTRIB_HTTP_ADDR", free_addr()), (var, value.into())],
            Duration::from_secs(20),
        );
        assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
        assert!(err.contains(named), "{err}");
    }
}

#[test]
fn unreachable_broker_is_reported_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = spawn_attrib(
        &[
            ("ATTRIB_HTTP_ADDR", free_addr()),
            ("ATTRIB_LOG_LEVEL", "info".into()),
        ],
        dir.path(),
    );
    // One clear line within seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("cannot reach Kafka") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no report of the unreachable broker:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let asked = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "SIGTERM not answered within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status}:\n{text}");
    assert!(
        text.matches("cannot reach Kafka").count() <= 2,
        "the report is rate-limited:\n{text}"
    );
}
