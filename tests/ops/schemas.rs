//! The Kubernetes manifests against the API types they name (`deploy/validate`, a Go program
//! on the Kubernetes, Prometheus Operator and kustomize types: unknown fields, duplicate fields
//! and values of the wrong type are refused, as `kubeconform -strict` refuses them).

use crate::repo;
use std::path::Path;
use std::process::Command;

fn validate(files: &[&Path]) -> (bool, String) {
    let out = Command::new("go")
        .args(["-C", "deploy/validate", "run", "-buildvcs=false", "."])
        .args(files)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run go (Go 1.26, see scripts/setup): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let (ok, out) = validate(&[]);
    eprintln!("{out}");
    assert!(ok, "{out}");
    for kind in [
        "apps/v1 StatefulSet",
        "v1 Service",
        "v1 ConfigMap",
        "policy/v1 PodDisruptionBudget",
        "monitoring.coreos.com/v1 ServiceMonitor",
        "monitoring.coreos.com/v1 PrometheusRule",
        "kustomize.config.k8s.io/v1beta1 Kustomization",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(kind)),
            "{kind} not checked:\n{out}"
        );
    }
}

/// The checker can fail: a misspelt field in a copy of each kind of manifest is refused, named.
#[test]
fn a_misspelt_field_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "deploy/kubernetes/statefulset.yaml",
            "  replicas:",
            "  replica:",
            "replica",
        ),
        (
            "deploy/prometheus/operator/servicemonitor.yaml",
            "interval:",
            "intervall:",
            "intervall",
        ),
        (
            "deploy/prometheus/operator/prometheusrule.yaml",
            "expr:",
            "expression:",
            "expression",
        ),
        (
            "deploy/kubernetes/kustomization.yaml",
            "resources:",
            "resource:",
            "resource",
        ),
    ];
    for (file, from, to, field) in cases {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(text.contains(from), "{file} has {from:?}");
        let bad = dir.path().join(Path::new(file).file_name().unwrap());
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(&[&bad]);
        assert!(!ok, "{file} with {to:?} accepted:\n{out}");
        assert!(
            out.contains(&format!("unknown field \"{field}\"")),
            "{file}: the refusal names {field}:\n{out}"
        );
    }
}
