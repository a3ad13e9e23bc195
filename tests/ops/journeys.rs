//! The journeys API.

use crate::common::{HttpServer, Running, http_state, rec};
use crate::health::mock_with_tables;
use crate::poll;
use attrib::model::records::InputTopic;
use attrib::ops::settings::JourneysApi;
use attrib::tools::testkit::{produce, wait_consumed};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn journeys_api_needs_the_bearer_token_and_is_404_when_disabled() {
    use InputTopic::*;
    const TOKEN: &str = "ops-test-token-5f2c";
    let (_cluster, s, _dir) = mock_with_tables(|s| {
        s.journeys_api = JourneysApi {
            enabled: true,
            token: Some(TOKEN.into()),
            ..JourneysApi::default()
        };
    });
    let run = Running::start(&s);
    let server = HttpServer::start(http_state(&s, &run.handles));
    run.wait_ready(Duration::from_secs(60));
    let clicks = vec![
        rec(
            Clicks,
            "d-1",
            r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"d-1"}"#,
        ),
        rec(
            Clicks,
            "d-1",
            r#"{"type":"click","click_id":"c-2","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T11:00:00Z","device_id":"d-1"}"#,
        ),
        rec(
            Clicks,
            "d-2",
            r#"{"type":"click","click_id":"c-3","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T09:00:00Z","device_id":"d-2"}"#,
        ),
    ];
    produce(&s.brokers, &s, &clicks).unwrap();
    wait_consumed(&run.handles, 3, Duration::from_secs(60)).unwrap();

    let bearer = format!("Bearer {TOKEN}");
    // Without a token, with a wrong one, with the right one in another scheme: 401.
    for auth in [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some("Bearer ".to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = server.get("/journeys/d-1", &headers);
        assert_eq!(r.status, 401, "Authorization {auth:?}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
        assert!(
            !r.body.contains("c-1"),
            "a refused request leaks the journey: {}",
            r.body
        );
    }

    // With the token: the journey, with its click ids.
    let r = poll(Duration::from_secs(30), "GET /journeys/d-1 = 200", || {
        let r = server.get("/journeys/d-1", &[("Authorization", &bearer)]);
        (r.status == 200).then_some(r)
    });
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
    let body: Json = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(body["key"], "d-1", "{body:#}");
    let ids: BTreeSet<&str> = body["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["journey"]["clicks"].as_array().into_iter().flatten())
        .map(|c| c["click_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["c-1", "c-2"]), "{body:#}");
    // Each stored click shows the device it came from.
    let devices: BTreeSet<&str> = body["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["journey"]["clicks"].as_array().into_iter().flatten())
        .map(|c| c["device_id"].as_str().unwrap_or("(none)"))
        .collect();
    assert_eq!(devices, BTreeSet::from(["d-1"]), "{body:#}");

    // A key with no journey: 404 (with the token).
    let r = server.get("/journeys/no-such-device", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 404, "{r:?}");

    // The same handles served with the API disabled: 404, token or not.
    let mut off = s.clone();
    off.journeys_api = JourneysApi::default();
    let disabled = HttpServer::start(http_state(&off, &run.handles));
    for headers in [vec![], vec![("Authorization", bearer.as_str())]] {
        let r = disabled.get("/journeys/d-1", &headers);
        assert_eq!(r.status, 404, "{r:?}");
        assert!(!r.body.contains("c-1"), "{}", r.body);
    }
    run.stop();
}

/// With identity stitching on, `GET /journeys/{device}` shows the device's link and the
/// journey of its customer (the laptop's click moved there, the phone's order), and
/// `GET /journeys/{customer}` the customer's journey.
#[test]
fn journeys_api_shows_a_devices_link_and_its_customers_journey() {
    use InputTopic::*;
    const TOKEN: &str = "ops-test-token-link";
    let (cluster, s, _dir) = mock_with_tables(|s| {
        s.identity.stitching = true;
        s.journeys_api = JourneysApi {
            enabled: true,
            token: Some(TOKEN.into()),
            ..JourneysApi::default()
        };
    });
    let repartition = attrib::runtime::topology::repartition_topic(&s.application_id);
    cluster.create_topic(&repartition, 2, 1).unwrap();
    let run = Running::start(&s);
    let server = HttpServer::start(http_state(&s, &run.handles));
    run.wait_ready(Duration::from_secs(60));
    let records = vec![
        rec(
            Clicks,
            "laptop",
            r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"laptop"}"#,
        ),
        rec(
            Identities,
            "laptop",
            r#"{"type":"identify","device_id":"laptop","customer_id":"cu-1","occurred_at":"2026-11-01T10:05:00Z"}"#,
        ),
        rec(
            Conversions,
            "phone",
            r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-02T10:00:00Z","device_id":"phone","customer_id":"cu-1","order_subtotal":"10.00"}"#,
        ),
    ];
    produce(&s.brokers, &s, &records).unwrap();
    wait_consumed(&run.handles, 3, Duration::from_secs(60)).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let body = poll(Duration::from_secs(30), "the laptop's link", || {
        let r = server.get("/journeys/laptop", &[("Authorization", &bearer)]);
        let body: Json = serde_json::from_str(&r.body).ok()?;
        body["link"]["customer_journey"]
            .as_array()
            .is_some_and(|j| !j.is_empty())
            .then_some(body)
    });
    assert_eq!(body["link"]["customer_id"], "cu-1", "{body:#}");
    let journey = &body["link"]["customer_journey"][0]["journey"];
    assert_eq!(journey["clicks"][0]["click_id"], "c-1", "{body:#}");
    assert_eq!(journey["clicks"][0]["device_id"], "laptop", "{body:#}");
    assert_eq!(journey["orders"][0]["order_id"], "o-1", "{body:#}");
    // The laptop has no anonymous journey any more: it moved.
    assert_eq!(body["partitions"], serde_json::json!([]), "{body:#}");
    let r = server.get("/journeys/cu-1", &[("Authorization", &bearer)]);
    let body: Json = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(
        body["customer_journey"][0]["journey"]["orders"][0]["order_id"], "o-1",
        "{body:#}"
    );
    let m = &run.handles.metrics;
    assert_eq!(m.links.with_label_values(&["created"]).get(), 2);
    assert_eq!(m.journeys_moved.get(), 1);
    run.stop();
}
