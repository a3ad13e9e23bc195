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
