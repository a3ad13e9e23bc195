//! Start-up and shutdown as an operator meets them: fatal settings stop the process at once
//! with a message naming the cause; SIGTERM while attrib waits for an unreachable broker stops
//! it cleanly (exit 0) within the shutdown bound; `check-config` shows the settings without
//! their secrets. No broker needed.

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
            if let Err(e) = child.kill() {
                eprintln!("killing attrib after {timeout:?}: {e}");
            }
            if let Err(e) = child.wait() {
                eprintln!("waiting for attrib: {e}");
            }
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

/// Runs `attrib check-config` with only `env`'s `ATTRIB_*` variables (the test's own are
/// removed) and, if given, a config file; returns (exit code, stdout, stderr).
fn check_config(env: &[(&str, &str)], file: Option<&str>) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attrib"));
    cmd.arg("check-config");
    if let Some(text) = file {
        let path = dir.path().join("attrib.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATTRIB_")) {
        cmd.env_remove(k);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn check_config_shows_secrets_as_stars() {
    let secrets = [
        ("ATTRIB_JOURNEYS_API_TOKEN", "journeys-token-s3cret"),
        ("ATTRIB_SCHEMA_REGISTRY_PASSWORD", "registry-s3cret"),
        ("ATTRIB_KAFKA_SASL_PASSWORD", "sasl-s3cret"),
        ("ATTRIB_KAFKA_SSL_KEY_PASSWORD", "key-s3cret"),
        ("ATTRIB_KAFKA_SSL_KEYSTORE_PASSWORD", "keystore-s3cret"),
        (
            "ATTRIB_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
            "oauth-s3cret",
        ),
    ];
    let mut env = vec![
        ("ATTRIB_JOURNEYS_API_ENABLED", "true"),
        ("ATTRIB_SCHEMA_REGISTRY_URL", "https://sr.example:8081"),
        ("ATTRIB_SCHEMA_REGISTRY_USER", "SR_API_KEY"),
        ("ATTRIB_KAFKA_SASL_USERNAME", "attrib-user"),
    ];
    env.extend(secrets);
    let (code, out, err) = check_config(&env, None);
    assert_eq!(code, Some(0), "{err}");
    for (var, secret) in secrets {
        assert!(!out.contains(secret), "{var}'s value is printed:\n{out}");
    }
    let shown: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(
        shown["journeys_api"]["token"].as_str(),
        Some("***"),
        "{out}"
    );
    assert_eq!(
        shown["schema_registry"]["password"].as_str(),
        Some("***"),
        "{out}"
    );
    for key in [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
    ] {
        assert_eq!(shown["kafka"][key].as_str(), Some("***"), "{key}:\n{out}");
    }
    // What is not secret stays readable.
    assert_eq!(
        shown["schema_registry"]["user"].as_str(),
        Some("SR_API_KEY")
    );
    assert_eq!(
        shown["kafka"]["sasl.username"].as_str(),
        Some("attrib-user")
    );

    // Credentials in the registry URL too.
    let (code, out, err) = check_config(
        &[(
            "ATTRIB_SCHEMA_REGISTRY_URL",
            "https://KEY:url-s3cret@sr.example:8081",
        )],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !out.contains("url-s3cret") && out.contains("https://KEY:***@sr.example:8081"),
        "{out}"
    );
}

#[test]
fn misspelt_variable_stops_run_and_check_config_naming_it() {
    let (code, _, err) = check_config(&[("ATTRIB_TOPIC_CLICKS", "my.clicks")], None);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(
        err.contains("ATTRIB_TOPIC_CLICKS") && err.contains("did you mean `ATTRIB_TOPICS_CLICKS`?"),
        "{err}"
    );
    let (code, err) = run_attrib(
        &[
            ("ATTRIB_HTTP_ADDR", free_addr()),
            ("ATTRIB_COMMIT_INTERVALL_MS", "50".into()),
        ],
        Duration::from_secs(20),
    );
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(
        err.contains("ATTRIB_COMMIT_INTERVALL_MS")
            && err.contains("did you mean `ATTRIB_COMMIT_INTERVAL_MS`?"),
        "{err}"
    );
    // Stitching is a setting like the others: `check-config` shows it, a wrong value is refused.
    let (code, out, err) = check_config(&[("ATTRIB_IDENTITY_STITCHING", "true")], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("[identity]\nstitching = true"), "{out}");
    let (code, _, err) = check_config(&[("ATTRIB_IDENTITY_STITCHING", "yes")], None);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(err.contains("identity.stitching"), "{err}");
}

/// scripts/test, scripts/kafka, .ci/run, the tests and the benchmarks read these and pass them
/// on to the `attrib` processes they start.
#[test]
fn variables_of_the_test_scripts_are_not_refused() {
    let (code, out, err) = check_config(
        &[
            ("ATTRIB_TEST_BROKERS", "127.0.0.1:9092"),
            ("ATTRIB_TEST_KAFKA_PORT", "19092"),
            ("ATTRIB_TEST_LOG", "debug"),
            ("ATTRIB_BENCH_KAFKA", "127.0.0.1:9092"),
            ("ATTRIB_CACHE_DIR", "/tmp/attrib-cache"),
            ("ATTRIB_REQUIRE_BROKER", "1"),
            ("ATTRIB_CRASH_KILLS", "30"),
            ("ATTRIB_AGREEMENT_SEEDS", "1,2,3"),
            ("ATTRIB_FUZZ_ITERATIONS", "100"),
            ("ATTRIB_UPDATE_GOLDEN", "1"),
        ],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("brokers = \"localhost:9092\""), "{out}");
}

#[test]
fn http_addr_may_be_a_host_name() {
    let (code, out, err) = check_config(&[], Some("http_addr = \"localhost:9464\"\n"));
    assert_eq!(code, Some(0), "{err}");
    let shown: toml::Table = toml::from_str(&out).unwrap();
    let addr: std::net::SocketAddr = shown["http_addr"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() == 9464, "{out}");
    let (code, _, err) = check_config(&[("ATTRIB_HTTP_ADDR", "localhost")], None);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(err.contains("`http_addr`: `localhost`"), "{err}");

    // And `attrib run` serves on it.
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_attrib(
        &[("ATTRIB_HTTP_ADDR", format!("localhost:{port}"))],
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            use std::io::{Read, Write};
            s.write_all(
                b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let mut answer = String::new();
            if let Err(e) = s.read_to_string(&mut answer) {
                eprintln!("reading the answer on localhost:{port}: {e}");
            }
            break answer;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break String::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Err(e) = child.kill() {
        eprintln!("killing attrib: {e}");
    }
    if let Err(e) = child.wait() {
        eprintln!("waiting for attrib: {e}");
    }
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "no answer on localhost:{port}: {answer:?}\n{}",
        std::fs::read_to_string(dir.path().join("stderr")).unwrap()
    );
}

#[test]
fn invalid_log_level_is_refused_listing_the_levels() {
    let (code, _, err) = check_config(&[("ATTRIB_LOG_LEVEL", "verbose")], None);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(
        err.contains("`log_level` `verbose`")
            && err.contains("trace, debug, info, warn, error, off"),
        "{err}"
    );
    let (code, err) = run_attrib(
        &[
            ("ATTRIB_HTTP_ADDR", free_addr()),
            ("ATTRIB_LOG_LEVEL", "attrib=loud".into()),
        ],
        Duration::from_secs(20),
    );
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(err.contains("`log_level` `attrib=loud`"), "{err}");
    let (code, out, err) = check_config(&[("ATTRIB_LOG_LEVEL", "warn,attrib=debug")], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("log_level = \"warn,attrib=debug\""), "{out}");
}

/// JSON logs put the message at the top level, and an error that stops start-up is a JSON line
/// too; plain logs written to a file carry no colour codes.
#[test]
fn json_logs_have_a_top_level_message_and_errors_are_json_too() {
    let (code, err) = run_attrib(
        &[
            ("ATTRIB_LOG_FORMAT", "json".into()),
            ("ATTRIB_COMMIT_INTERVAL_MS", "0".into()),
        ],
        Duration::from_secs(20),
    );
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    let last: serde_json::Value = serde_json::from_str(err.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {err}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("commit_interval_ms"),
        "{last}"
    );
    // A normal start with JSON logs: every line is JSON with a top-level message.
    let (code, err) = run_attrib(
        &[
            ("ATTRIB_LOG_FORMAT", "json".into()),
            ("ATTRIB_HTTP_ADDR", free_addr()),
            ("ATTRIB_BROKERS", "127.0.0.1:1".into()),
        ],
        Duration::from_secs(4),
    );
    assert_eq!(code, None, "still running, waiting for Kafka: {err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l["message"].is_string(), "{l}");
        assert!(l.get("fields").is_none(), "{l}");
    }
    // Plain logs into a file: no ANSI escapes.
    let (_, err) = run_attrib(
        &[
            ("ATTRIB_HTTP_ADDR", free_addr()),
            ("ATTRIB_BROKERS", "127.0.0.1:1".into()),
        ],
        Duration::from_secs(4),
    );
    assert!(!err.is_empty() && !err.contains('\u{1b}'), "{err:?}");
    let (code, err) = run_attrib(
        &[("ATTRIB_COMMIT_INTERVAL_MS", "0".into())],
        Duration::from_secs(20),
    );
    assert!(matches!(code, Some(c) if c != 0));
    assert!(
        err.trim_end().ends_with("must be positive") && err.contains("Error: "),
        "{err}"
    );
}
