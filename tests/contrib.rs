//! The examples in `contrib/` fit clefd as it is: the Node-RED flow subscribes to topics
//! clefd publishes (checked with MQTT's own wildcard rules against `mqtt::Topics`), and the
//! Grafana dashboard is well-formed. (Its queries are checked against a live `/metrics` in
//! `tests/systemd.rs`.)

mod common;

use serde_json::Value;

/// MQTT topic-filter matching: `+` one level, `#` the rest.
fn matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn read(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::repo().join(path)).unwrap()).unwrap()
}

#[test]
fn the_node_red_flow_subscribes_to_what_clefd_publishes() {
    let flow = read("contrib/node-red/clefd-flow.json");
    let topics = clefd::mqtt::Topics::new("clefd", "kitchen-pi");
    let published = [topics.emotion("door"), topics.current("door"), topics.availability(), topics.state("door")];
    let subscriptions: Vec<&str> = flow
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "mqtt in")
        .filter_map(|n| n["topic"].as_str())
        .collect();
    assert_eq!(subscriptions.len(), 3, "{subscriptions:?}");
    for filter in &subscriptions {
        assert!(published.iter().any(|t| matches(filter, t)), "{filter} matches nothing clefd publishes");
    }
    assert!(matches(subscriptions[0], &topics.emotion("door")) && !matches(subscriptions[0], &topics.state("door")));
    // Every node a wire points to exists; JSON payloads are parsed where events arrive.
    let ids: Vec<&str> = flow.as_array().unwrap().iter().filter_map(|n| n["id"].as_str()).collect();
    for node in flow.as_array().unwrap() {
        for target in node["wires"].as_array().into_iter().flatten().flat_map(|w| w.as_array().unwrap()) {
            assert!(ids.contains(&target.as_str().unwrap()), "a wire to a missing node: {target}");
        }
    }
    assert!(flow.as_array().unwrap().iter().any(|n| n["topic"] == "clefd/+/+/emotion" && n["datatype"] == "json"));
    assert!(!matches("clefd/+/+/emotion", "clefd/kitchen-pi/availability"), "the matcher can say no");
}

#[test]
fn the_grafana_dashboard_is_well_formed() {
    let dashboard = read("contrib/grafana/clefd.json");
    assert_eq!(dashboard["uid"], "clefd");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "unbalanced: {expr}");
        }
    }
    assert!(common::dashboard_metrics(&dashboard).contains("clefd_events_total"));
}
