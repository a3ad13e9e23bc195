//! Prometheus Operator manifests.

use crate::yaml;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;

/// `deploy/prometheus/operator/`: the PrometheusRule carries exactly the rule groups of
/// `alerts.yml` (which promtool checks and `alerts_test.yml` tests), and the ServiceMonitor
/// selects exactly one of the attrib Services, by its labels, scrapes a port that Service has,
/// and gives its targets the job name the rules expect.
#[test]
fn prometheus_rule_manifest_matches_alerts_file() {
    let dir = "deploy/prometheus/operator";

    // The kustomization lists both manifests (and nothing else).
    let k = yaml(&format!("{dir}/kustomization.yaml"));
    let listed: BTreeSet<&str> = k["resources"]
        .as_sequence()
        .expect("resources in the operator kustomization.yaml")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["prometheusrule.yaml", "servicemonitor.yaml"]),
        "{dir}/kustomization.yaml resources"
    );

    // PrometheusRule: spec.groups == alerts.yml's groups, as parsed YAML.
    let rule_file = format!("{dir}/prometheusrule.yaml");
    let rule = yaml(&rule_file);
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    assert!(
        rule["metadata"]["labels"]["release"].is_string(),
        "{rule_file}: no `release` label for the Prometheus's ruleSelector"
    );
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let groups = alerts["groups"].as_sequence().expect("alerts.yml groups");
    assert!(!groups.is_empty(), "alerts.yml has no groups");
    assert!(
        rule["spec"]["groups"].as_sequence().is_some(),
        "{rule_file}: no spec.groups"
    );
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "{rule_file}: spec.groups differs from the groups of deploy/prometheus/alerts.yml \
         (regenerate it: see its header)"
    );

    // ServiceMonitor: its selector matches the labels of exactly one attrib Service.
    let sm_file = format!("{dir}/servicemonitor.yaml");
    let sm = yaml(&sm_file);
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(sm["kind"].as_str(), Some("ServiceMonitor"));
    assert!(
        sm["metadata"]["labels"]["release"].is_string(),
        "{sm_file}: no `release` label for the Prometheus's serviceMonitorSelector"
    );
    let wanted = sm["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("ServiceMonitor spec.selector.matchLabels");
    assert!(!wanted.is_empty(), "{sm_file}: empty selector");
    let selected: Vec<(&str, Yaml)> = [
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/service-headless.yaml",
    ]
    .into_iter()
    .map(|f| (f, yaml(f)))
    .filter(|(_, svc)| {
        wanted
            .iter()
            .all(|(k, v)| &svc["metadata"]["labels"][k] == v)
    })
    .collect();
    let names: Vec<&str> = selected.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        names.len(),
        1,
        "{sm_file} must select exactly one Service (two would scrape every pod twice): {names:?}"
    );
    let (svc_file, svc) = &selected[0];

    // Each endpoint's port is a named port of that Service; the path is /metrics.
    let ports: Vec<&str> = svc["spec"]["ports"]
        .as_sequence()
        .expect("Service spec.ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let endpoints = sm["spec"]["endpoints"]
        .as_sequence()
        .expect("ServiceMonitor spec.endpoints");
    assert!(!endpoints.is_empty(), "{sm_file}: no endpoints");
    for e in endpoints {
        let port = e["port"]
            .as_str()
            .expect("ServiceMonitor endpoint `port` (a Service port name)");
        assert!(
            ports.contains(&port),
            "{sm_file}: endpoint port {port:?} is not a port of {svc_file} ({ports:?})"
        );
        assert_eq!(
            e["path"].as_str().unwrap_or("/metrics"),
            "/metrics",
            "{sm_file}: endpoint path"
        );
    }

    // The job label: the Service label named by jobLabel, else the Service's name. The rules
    // expect "attrib" (AttribDown: up{job="attrib"}).
    let job = match sm["spec"]["jobLabel"].as_str() {
        Some(label) => svc["metadata"]["labels"][label].as_str(),
        None => svc["metadata"]["name"].as_str(),
    };
    assert_eq!(job, Some("attrib"), "{sm_file}: job label of its targets");
}
