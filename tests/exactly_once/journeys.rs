//! The journeys API across instances.

use crate::expect::wait_all_committed;
use crate::inputs::{natural, produce_paced, tables};
use crate::instance::{Instance, Logs, SERIAL, settings_env, setup};
use attrib::model::records::InputTopic;
use attrib::tools::testkit::produce;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `GET /journeys/{key}` on either of two instances answers for the keys of both: the one
/// that does not own the key's partition asks the one that does (found through the consumer
/// group), and a lookup it forwards is answered from the owner's store only.
#[test]
fn journey_lookup_on_either_instance_answers_for_keys_of_both() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(4) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    const TOKEN: &str = "lookup-token-7d1e";
    let with_api = |name: &str| {
        let mut env = settings_env(&s, name, &dir.path().join(name));
        env.push(("ATTRIB_JOURNEYS_API_ENABLED".into(), "true".into()));
        env.push(("ATTRIB_JOURNEYS_API_TOKEN".into(), TOKEN.into()));
        env
    };
    let all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let a = Instance::start(with_api("lookup-a"), dir.path().join("a.log"));
    let b = Instance::start(with_api("lookup-b"), dir.path().join("b.log"));
    let url_of = |i: &Instance| {
        let addr = &i
            .env
            .iter()
            .find(|(k, _)| k == "ATTRIB_HTTP_ADDR")
            .unwrap()
            .1;
        format!("http://{addr}")
    };
    let (url_a, url_b) = (url_of(&a), url_of(&b));
    let stream = natural(5, 2, 30);
    produce_paced(&s, stream.clone()).join().unwrap();
    wait_all_committed(&s, 4);
    let keys: BTreeSet<String> = stream
        .iter()
        .filter(|r| r.topic == InputTopic::Clicks)
        .filter_map(|r| r.key.clone())
        .collect();
    assert!(keys.len() >= 20, "{} keys", keys.len());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let get = |base: &str, key: &str, forwarded: bool| -> (u16, String) {
        let mut req = agent
            .get(&format!("{base}/journeys/{key}"))
            .header("Authorization", &format!("Bearer {TOKEN}"));
        if forwarded {
            req = req.header("x-attrib-forwarded", "1");
        }
        let mut resp = req.call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    };
    let mut served_by: BTreeMap<String, usize> = BTreeMap::new();
    for key in &keys {
        let mut answers = Vec::new();
        for base in [&url_a, &url_b] {
            let (status, body) = get(base, key, false);
            assert_eq!(status, 200, "{key} on {base}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["key"], key.as_str(), "{body}");
            let journey = &v["partitions"][0]["journey"];
            let items = journey["clicks"].as_array().unwrap().len()
                + journey["orders"].as_array().unwrap().len();
            assert!(items > 0, "{key}: {body}");
            answers.push(v);
        }
        assert_eq!(
            answers[0], answers[1],
            "{key}: both instances give the owner's answer"
        );
        let owner = answers[0]["instance"].as_str().unwrap().to_string();
        assert!(owner == url_a || owner == url_b, "{owner}");
        // Forwarded lookups are answered from the receiver's own store only.
        let other = if owner == url_a { &url_b } else { &url_a };
        assert_eq!(
            get(other, key, true).0,
            404,
            "{key} forwarded to a non-owner"
        );
        assert_eq!(
            get(&owner, key, true).0,
            200,
            "{key} forwarded to its owner"
        );
        *served_by.entry(owner).or_default() += 1;
    }
    assert_eq!(
        served_by.len(),
        2,
        "both instances own keys of the stream: {served_by:?}"
    );
    for base in [&url_a, &url_b] {
        let (status, body) = get(base, "no-such-device", false);
        assert_eq!((status, body.as_str()), (404, "no journey with this key"));
    }
    eprintln!("lookups answered on both instances; owners {served_by:?}");
    a.stop();
    b.stop();
}
