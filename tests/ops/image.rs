//! The container image.

use crate::{read, repo};

/// The image ships the binary `scripts/dist` makes: no debug sections, a fraction of the
/// release binary's size, still running; its debug info kept beside it and linked.
#[test]
fn the_image_ships_a_stripped_binary() {
    let dockerfile = read("deploy/Dockerfile");
    assert!(
        dockerfile.contains("scripts/dist /out")
            && dockerfile.contains("COPY --from=builder /out/attrib /usr/local/bin/attrib"),
        "deploy/Dockerfile builds with scripts/dist and ships /out/attrib"
    );
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "!scripts/dist"),
        "the build context lets scripts/dist in"
    );
    let out = tempfile::tempdir().unwrap();
    let built = env!("CARGO_BIN_EXE_attrib");
    let status = std::process::Command::new(repo().join("scripts/dist"))
        .arg("--binary")
        .arg(built)
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/dist: {status}");
    let shipped = out.path().join("attrib");
    let sections = std::process::Command::new("readelf")
        .arg("-S")
        .arg("-W")
        .arg(&shipped)
        .output()
        .unwrap();
    let sections = String::from_utf8_lossy(&sections.stdout);
    for debug in [".debug_info", ".debug_line", ".debug_str", ".symtab"] {
        assert!(!sections.contains(debug), "{debug} in the shipped binary");
    }
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let size = std::fs::metadata(&shipped).unwrap().len();
    let full = std::fs::metadata(built).unwrap().len();
    assert!(
        size < 64 << 20 && size * 4 < full,
        "shipped binary {size} bytes (release build {full})"
    );
    let debug = std::fs::metadata(out.path().join("attrib.debug"))
        .unwrap()
        .len();
    assert!(debug > size, "debug info kept beside it: {debug} bytes");
    let version = std::process::Command::new(&shipped)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        concat!("attrib ", env!("CARGO_PKG_VERSION"))
    );
}

/// Both base images are pinned by digest (`deploy/pin-base-images --check`), and the stages
/// build from those arguments.
#[test]
fn the_base_images_are_pinned_by_digest() {
    let out = std::process::Command::new(repo().join("deploy/pin-base-images"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dockerfile = read("deploy/Dockerfile");
    for (arg, from) in [
        ("RUST_IMAGE", "FROM ${RUST_IMAGE} AS builder"),
        ("RUNTIME_IMAGE", "FROM ${RUNTIME_IMAGE}"),
    ] {
        let value = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {arg}=")))
            .unwrap_or_else(|| panic!("ARG {arg}"));
        let (_, digest) = value.split_once("@sha256:").expect("a digest");
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{value}"
        );
        assert!(dockerfile.contains(from), "{from}");
    }
}
