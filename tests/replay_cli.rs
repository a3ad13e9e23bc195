//! `attrib replay` end to end: the binary on hand-written and generated streams.

use std::path::Path;
use std::process::Command;

fn replay(input: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_attrib"))
        .arg("replay")
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Blanks `processed_at`, the only field allowed to differ between runs.
fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\"processed_at\":\"") {
        let start = i + "\"processed_at\":\"".len();
        out.push_str(&rest[..start]);
        out.push('-');
        let end = start + rest[start..].find('"').unwrap();
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn replay_of_the_hand_written_stream_gives_the_reviewed_lines() {
    let got = normalise(&replay(Path::new("tests/data/small.jsonl")));
    let want = std::fs::read_to_string("tests/data/small.expected.jsonl").unwrap();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

#[test]
fn replay_twice_gives_identical_bytes_but_processed_at() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let w = attrib::tools::workload::generate(3, 5_000, 800);
    let text: String = w.all().map(|r| r.replay_line() + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let a = replay(&input);
    let b = replay(&input);
    assert!(a.lines().count() > 100);
    assert_eq!(normalise(&a), normalise(&b));
}

#[test]
fn replay_writes_to_a_file_and_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_attrib"))
        .args(["replay", "tests/data/small.jsonl", "--output"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let from_file = normalise(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        from_file,
        std::fs::read_to_string("tests/data/small.expected.jsonl").unwrap()
    );
}

/// Every worked example of docs/attribution.md (`docs/examples/`, with its settings file where
/// it has one) replays to the output kept in `docs/examples/expected/`, so the page stays true.
#[test]
fn the_documented_examples_give_their_documented_outputs() {
    let out = Command::new("sh")
        .arg("docs/examples/run.sh")
        .arg("--check")
        .env("ATTRIB", env!("CARGO_BIN_EXE_attrib"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let examples = std::fs::read_dir("docs/examples")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("jsonl".as_ref()))
        .count();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        examples,
        "{text}"
    );
}

/// `replay --config FILE` honours `identity.stitching`, and the environment overrides the file.
#[test]
fn replay_takes_stitching_from_its_settings_file_and_the_environment() {
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_attrib"))
            .args(["replay", "docs/examples/cross-device.jsonl", "--config"])
            .arg("docs/examples/cross-device.toml")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let on = run(&[]);
    let first = on.lines().next().unwrap();
    assert!(
        first.contains(r#""click_id":"c-1","device_id":"laptop-1""#),
        "{first}"
    );
    let off = run(&[("ATTRIB_IDENTITY_STITCHING", "false")]);
    let first = off.lines().next().unwrap();
    assert!(first.contains("no_valid_referrer"), "{first}");
}
