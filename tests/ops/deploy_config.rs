//! Deployment files: the config files and environment variables they give attrib are
//! accepted.

use crate::deploy::{attrib_container, strings};
use crate::{read, yaml};
use attrib::ops::settings::Settings;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The environment the StatefulSet gives the container; `valueFrom` values are placeholders,
/// `$(VAR)` references are kept (Kubernetes expands them).
fn statefulset_env() -> Vec<(String, String)> {
    let sts = yaml("deploy/kubernetes/statefulset.yaml");
    attrib_container(&sts)["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e["value"]
                .as_str()
                .map_or_else(|| "from-secret".to_string(), str::to_string);
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn compose_attrib_env() -> Vec<(String, String)> {
    let compose = yaml("docker-compose.yml");
    compose["services"]["attrib"]["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn deploy_configs_are_accepted_by_settings() {
    // The ConfigMap's attrib.toml, alone and with the StatefulSet's environment.
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let cm_toml = cm["data"]["attrib.toml"]
        .as_str()
        .expect("data.attrib.toml");
    Settings::parse(cm_toml, std::iter::empty())
        .unwrap_or_else(|e| panic!("configmap.yaml attrib.toml: {e:#}"));
    let pod = Settings::parse(cm_toml, statefulset_env())
        .unwrap_or_else(|e| panic!("configmap.yaml attrib.toml + statefulset env: {e:#}"));
    assert_eq!(
        pod.kafka.common.get("client.id").map(String::as_str),
        Some("$(POD_NAME)")
    );

    // The StatefulSet mounts the ConfigMap where `--config` points, and the state volume
    // where state_dir points.
    let sts = yaml("deploy/kubernetes/statefulset.yaml");
    let c = attrib_container(&sts);
    let args = strings(&c["args"]);
    let config = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config FILE in the container args");
    let (dir, file) = config.rsplit_once('/').unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mount_of = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("volumeMount {name}"))
            .to_string()
    };
    assert_eq!(
        mount_of("config"),
        dir,
        "config volume mount vs --config {config}"
    );
    assert!(cm["data"][file].is_string(), "ConfigMap has no key {file}");
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let cfg_vol = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(cfg_vol["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(
        pod.state_dir,
        PathBuf::from(mount_of("state")),
        "state_dir vs the state volume mount"
    );
    assert!(
        sts["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["metadata"]["name"] == "state"),
        "no volumeClaimTemplate `state`"
    );
    assert_eq!(
        sts["spec"]["serviceName"].as_str(),
        yaml("deploy/kubernetes/service-headless.yaml")["metadata"]["name"].as_str(),
        "serviceName vs the headless Service"
    );

    // deploy/attrib.toml, alone and with the compose environment.
    let example = read("deploy/attrib.toml");
    Settings::parse(&example, std::iter::empty())
        .unwrap_or_else(|e| panic!("deploy/attrib.toml: {e:#}"));
    let local = Settings::parse(&example, compose_attrib_env())
        .unwrap_or_else(|e| panic!("deploy/attrib.toml + compose env: {e:#}"));

    // Compose mounts it where the image's command reads it, and the state volume at state_dir.
    let compose = yaml("docker-compose.yml");
    let vols = strings(&compose["services"]["attrib"]["volumes"]);
    assert!(
        vols.iter()
            .any(|v| v.starts_with("./deploy/attrib.toml:/etc/attrib/attrib.toml")),
        "compose volumes {vols:?}"
    );
    assert!(
        read("deploy/Dockerfile").contains(r#"CMD ["run", "--config", "/etc/attrib/attrib.toml"]"#),
        "Dockerfile CMD reads another config path"
    );
    assert!(
        vols.iter()
            .any(|v| v.split(':').nth(1).map(PathBuf::from).as_ref() == Some(&local.state_dir)),
        "no compose volume at state_dir {}: {vols:?}",
        local.state_dir.display()
    );

    // The compose `topics` service creates exactly the topics this configuration uses.
    let topics = &compose["services"]["topics"];
    assert_eq!(
        topics["environment"]["APPLICATION_ID"].as_str(),
        Some(local.application_id.as_str()),
        "compose topics APPLICATION_ID vs application_id"
    );
    let script = strings(&topics["entrypoint"]).join("\n");
    let t = &local.topics;
    for name in [
        &t.clicks,
        &t.conversions,
        &t.promo_codes,
        &t.config,
        &t.actions,
        &t.invalid_actions,
        &t.dlq,
    ] {
        assert!(
            script.lines().any(|l| {
                let l = l.trim();
                l == format!("create {name}") || l.starts_with(&format!("create {name} "))
            }),
            "the compose topics service does not create {name}"
        );
    }
    assert!(
        script.contains("create \"$${APPLICATION_ID}-journeys-changelog\""),
        "the compose topics service does not create the changelog"
    );
}

/// Whether `Settings` reads the variable: it changes the parsed settings (or is refused, for
/// a setting whose only valid value is its default), or is a librdkafka pass-through.
fn understood(name: &str) -> Result<String, String> {
    if matches!(
        name,
        "ATTRIB_KAFKA_"
            | "ATTRIB_KAFKA_CONSUMER_"
            | "ATTRIB_KAFKA_PRODUCER_"
            | "ATTRIB_KAFKA_ADMIN_"
    ) {
        return Ok("ATTRIB_KAFKA_<OPTION> pass-through".into());
    }
    if let Some(opt) = name.strip_prefix("ATTRIB_KAFKA_") {
        let s = Settings::parse("", [(name.to_string(), "v".to_string())])
            .map_err(|e| e.to_string())?;
        let key = opt.to_ascii_lowercase().replace('_', ".");
        let set = s.kafka.common.get(&key).or_else(|| {
            attrib::ops::settings::ClientKind::ALL.iter().find_map(|k| {
                let section = format!("{}.", k.name());
                s.kafka.section(*k).get(key.strip_prefix(&section)?)
            })
        });
        return if set.map(String::as_str) == Some("v") {
            Ok(format!("librdkafka {key}"))
        } else {
            Err(format!("{name} did not set kafka.{key}"))
        };
    }
    // A token, so that ATTRIB_JOURNEYS_API_ENABLED=true is valid.
    let base_env = || vec![("ATTRIB_JOURNEYS_API_TOKEN".to_string(), "base".to_string())];
    let base = Settings::parse("", base_env()).unwrap();
    let mut refused = None;
    for candidate in [
        "x-test-value",
        "12345",
        "true",
        "at_least_once",
        "127.0.0.1:1",
    ] {
        let mut env = base_env();
        env.push((name.to_string(), candidate.to_string()));
        match Settings::parse("", env) {
            Ok(s) if s != base => return Ok(format!("changes settings with {candidate:?}")),
            Ok(_) => {}
            // Settings refuses a variable that names no setting.
            Err(e) if e.to_string().contains("names no setting") => {
                return Err(format!("{name} names no setting: {e}"));
            }
            Err(e) => refused = Some(e.to_string()),
        }
    }
    match refused {
        Some(e) => Ok(format!("read and validated: {e}")),
        None => Err(format!("{name} is ignored by Settings")),
    }
}

fn env_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("ATTRIB_") {
        let start = i + p;
        let mut end = start + "ATTRIB_".len();
        while end < b.len()
            && (b[end].is_ascii_uppercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        // A bare `ATTRIB_` (as in "ATTRIB_* variables") names no variable.
        if before_ok && end > start + "ATTRIB_".len() {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn env_vars_in_statefulset_and_compose_are_understood() {
    let mut problems = Vec::new();
    for f in ["deploy/kubernetes/statefulset.yaml", "docker-compose.yml"] {
        // Commented-out examples count: operators uncomment them.
        let names = env_names(&read(f));
        assert!(!names.is_empty(), "{f}: no ATTRIB_* variables");
        for n in names {
            match understood(&n) {
                Ok(how) => eprintln!("{f}: {n}: {how}"),
                Err(e) => problems.push(format!("{f}: {e}")),
            }
        }
    }
    // And the environment actually set there is accepted with the files it goes with.
    for (k, _) in statefulset_env().iter().chain(compose_attrib_env().iter()) {
        if k.starts_with("ATTRIB_") {
            if let Err(e) = understood(k) {
                problems.push(e);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The variables the deployment docs and example configs name must exist too.
#[test]
fn env_vars_documented_in_deploy_are_understood() {
    let mut problems = Vec::new();
    for f in [
        "deploy/attrib.toml",
        "deploy/README.md",
        "deploy/kubernetes/configmap.yaml",
    ] {
        for n in env_names(&read(f)) {
            match understood(&n) {
                Ok(how) => eprintln!("{f}: {n}: {how}"),
                Err(e) => problems.push(format!("{f}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
