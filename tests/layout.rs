//! The layout's rules, checked on the source: only the runtime talks to Kafka, and the
//! dependencies between folders point one way (model ← rules ← stage ← runtime; formats and
//! state on the model only; ops and tools on top).

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

fn all() -> Vec<(String, String)> {
    let mut v = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut v,
    );
    assert!(v.len() > 20, "sources not found");
    v
}

/// Code lines (comments left out) that mention `needle`.
fn uses(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn only_the_runtime_and_the_tools_on_top_of_it_import_rdkafka() {
    let mut offenders = Vec::new();
    for (file, text) in all() {
        // The demo runs librdkafka's mock cluster, on top of the runtime; the test kit produces
        // input and reads outputs back for the tests, the benchmarks and the demo.
        if file.starts_with("runtime/") || file == "tools/demo.rs" || file == "tools/testkit.rs" {
            continue;
        }
        for l in uses(&text, "rdkafka::") {
            offenders.push(format!("{file}: {}", l.trim()));
        }
    }
    assert!(
        offenders.is_empty(),
        "rdkafka outside runtime/: {offenders:#?}"
    );
}

#[test]
fn dependencies_between_folders_point_one_way() {
    // folder → folders it must not import
    let forbidden: &[(&str, &[&str])] = &[
        (
            "model/",
            &[
                "rules", "formats", "state", "stage", "runtime", "ops", "tools",
            ],
        ),
        (
            "rules/",
            &["formats", "state", "stage", "runtime", "ops", "tools"],
        ),
        ("formats/", &["rules", "state", "stage", "runtime", "tools"]),
        (
            "state/",
            &["rules", "formats", "stage", "runtime", "ops", "tools"],
        ),
        ("stage/", &["runtime", "tools"]),
        ("runtime/", &["tools"]),
    ];
    let mut offenders = Vec::new();
    for (file, text) in all() {
        for (folder, banned) in forbidden {
            if !file.starts_with(folder) {
                continue;
            }
            for b in *banned {
                for l in uses(&text, &format!("crate::{b}::")) {
                    offenders.push(format!("{file} uses {b}: {}", l.trim()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
