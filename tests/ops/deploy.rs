//! Deployment files: they parse, and agree with the program (ports and probe paths).

use crate::common::{HttpServer, http_state};
use crate::promql::deploy_exprs;
use crate::{read, repo, yaml};
use attrib::ops::settings::Settings;
use attrib::runtime::Handles;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every YAML file (each document of it) under the given roots, relative to the repository.
fn yaml_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")) {
                out.push(p);
            }
        }
    }
    let mut files = vec![repo().join("docker-compose.yml")];
    for d in ["deploy/kubernetes", "deploy/grafana", "deploy/prometheus"] {
        walk(&repo().join(d), &mut files);
    }
    let mut rel: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    rel.sort();
    rel
}

#[test]
fn deploy_files_parse() {
    let files = yaml_files();
    for must in [
        "docker-compose.yml",
        "deploy/kubernetes/statefulset.yaml",
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/prometheus/alerts.yml",
    ] {
        assert!(
            files.iter().any(|f| f == must),
            "{must} not found in {files:?}"
        );
    }
    for f in &files {
        let text = read(f);
        let mut docs = 0;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{f} is not valid YAML: {e}"));
            assert!(v.is_mapping(), "{f}: a document that is not a mapping");
            docs += 1;
        }
        assert!(docs >= 1, "{f} is empty");
        if f.starts_with("deploy/kubernetes/") {
            let v = yaml(f);
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{f}: apiVersion/kind"
            );
        }
    }
    let dash: Json = serde_json::from_str(&read("deploy/grafana/dashboards/attrib.json"))
        .expect("deploy/grafana/dashboards/attrib.json is not valid JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));

    // Kustomize lists every manifest of the directory, and only existing ones.
    let k = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/kubernetes/"))
        .filter(|f| *f != "kustomization.yaml")
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml resources vs deploy/kubernetes/"
    );

    // Grafana: the dashboard's data sources are the provisioned one, and the provider reads
    // the directory compose mounts the dashboards into.
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = ds["datasources"][0]["uid"].as_str().unwrap().to_string();
    let mut uids = BTreeSet::new();
    collect_datasource_uids(&dash, &mut uids);
    uids.remove("${datasource}");
    uids.remove("$datasource");
    uids.remove("-- Grafana --"); // Grafana's built-in annotation source
    assert!(
        uids.iter().all(|u| *u == uid),
        "dashboard data source uids {uids:?} vs provisioned {uid:?}"
    );
    let prov = yaml("deploy/grafana/provisioning/dashboards/attrib.yml");
    let path = prov["providers"][0]["options"]["path"].as_str().unwrap();
    let compose = yaml("docker-compose.yml");
    let mounts = strings(&compose["services"]["grafana"]["volumes"]);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./deploy/grafana/dashboards:")
                && m.split(':').nth(1) == Some(path)),
        "grafana mounts {mounts:?} vs provider path {path}"
    );
    let home =
        compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            .as_str()
            .unwrap();
    assert_eq!(home, format!("{path}/attrib.json"));
}

fn collect_datasource_uids(v: &Json, out: &mut BTreeSet<String>) {
    match v {
        Json::Object(o) => {
            if let Some(Json::Object(ds)) = o.get("datasource") {
                if let Some(u) = ds.get("uid").and_then(Json::as_str) {
                    out.insert(u.to_string());
                }
            }
            o.values().for_each(|x| collect_datasource_uids(x, out));
        }
        Json::Array(a) => a.iter().for_each(|x| collect_datasource_uids(x, out)),
        _ => {}
    }
}

pub(crate) fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `(port, name)` of the attrib container in the StatefulSet, and the container itself.
pub(crate) fn attrib_container(sts: &Yaml) -> &Yaml {
    sts["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "attrib")
        .expect("container `attrib` in statefulset.yaml")
}

fn port_number(v: &Yaml) -> u16 {
    match v {
        Yaml::Number(n) => n.as_u64().unwrap() as u16,
        Yaml::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("not a port number: {s}")),
        other => panic!("not a port: {other:?}"),
    }
}

#[test]
fn ports_and_probe_paths_match_the_http_server() {
    let addr: std::net::SocketAddr = Settings::default().http_addr;
    let port = addr.port();
    assert_eq!(port, 9464);

    // StatefulSet: the container port, the scrape annotations, the probes.
    let sts = yaml("deploy/kubernetes/statefulset.yaml");
    let c = attrib_container(&sts);
    let ports = c["ports"].as_sequence().unwrap();
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("container port named http");
    assert_eq!(port_number(&http["containerPort"]), port, "containerPort");
    let ann = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        port_number(&ann["prometheus.io/port"]),
        port,
        "prometheus.io/port"
    );
    assert_eq!(ann["prometheus.io/path"].as_str(), Some("/metrics"));
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    for (probe, path) in [
        ("startupProbe", "/health/live"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"].as_str(), Some(path), "{probe} path");
        let p = &g["port"];
        assert!(
            p.as_str() == Some("http") || port_number(p) == port,
            "{probe} port {p:?}"
        );
    }

    // Services: port and target port.
    for f in [
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/service-headless.yaml",
    ] {
        let svc = yaml(f);
        let sp = &svc["spec"]["ports"][0];
        assert_eq!(port_number(&sp["port"]), port, "{f} port");
        let tp = &sp["targetPort"];
        assert!(
            tp.as_str() == Some("http") || port_number(tp) == port,
            "{f} targetPort {tp:?}"
        );
        // The selector picks the StatefulSet's pods.
        let sel = svc["spec"]["selector"].as_mapping().unwrap();
        let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
        for (k, v) in sel {
            assert_eq!(&pod_labels[k], v, "{f} selector {k:?}");
        }
    }

    // Compose: the published port maps to the container's port; Prometheus scrapes it.
    let compose = yaml("docker-compose.yml");
    let published = strings(&compose["services"]["attrib"]["ports"]);
    assert!(
        published.iter().any(|p| {
            p.trim_end_matches("/tcp")
                .rsplit(':')
                .next()
                .and_then(|x| x.parse::<u16>().ok())
                == Some(port)
        }),
        "compose attrib ports {published:?}"
    );
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let job = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "attrib")
        .expect("scrape job attrib");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(
        targets,
        [format!("attrib:{port}")],
        "prometheus.yml targets"
    );
    assert!(
        compose["services"]["attrib"].is_mapping(),
        "compose service `attrib`"
    );
    // The alert rules' job label is the job Prometheus scrapes attrib under.
    let k8s = yaml("deploy/prometheus/prometheus-kubernetes.yml");
    assert!(
        k8s["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|j| j["job_name"] == "attrib"),
        "prometheus-kubernetes.yml has no job attrib"
    );
    for (from, expr) in deploy_exprs() {
        if let Some(rest) = expr.split("job=\"").nth(1) {
            let job = rest.split('"').next().unwrap();
            assert_eq!(job, "attrib", "{from}: job {job}");
        }
    }

    // The image exposes it.
    let docker = read("deploy/Dockerfile");
    assert!(
        docker.lines().any(|l| l.trim().starts_with("EXPOSE")
            && l.split_whitespace().any(|w| w == port.to_string())),
        "deploy/Dockerfile does not EXPOSE {port}"
    );

    // And those paths answer on the real router.
    let server = HttpServer::start(http_state(&Settings::default(), &Handles::default()));
    let r = server.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("# TYPE attrib_ready gauge"), "{}", r.body);
    assert_eq!(server.get("/health/live", &[]).status, 200);
    assert_eq!(server.get("/health/ready", &[]).status, 503);
}
