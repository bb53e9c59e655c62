//! The examples in `contrib/` fit clefd as it is: the Node-RED flow subscribes to topics
//! clefd publishes (checked with MQTT's own wildcard rules against `mqtt::Topics`), and the
//! Grafana dashboard is well-formed. (Its queries are checked against a live `/metrics` in
//! `tests/systemd.rs`.)

mod common;

use std::time::Duration;

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
    // One broker config node, documented at the top: persistent session, QoS 1, its
    // address from the flow's environment (with working defaults).
    let nodes = flow.as_array().unwrap();
    let brokers: Vec<&Value> = nodes.iter().filter(|n| n["type"] == "mqtt-broker").collect();
    assert_eq!(brokers.len(), 1, "one broker node");
    let broker = brokers[0];
    assert_eq!(broker["cleansession"], false, "a persistent session");
    assert!(broker["clientid"].as_str().is_some_and(|id| !id.is_empty()), "a persistent session needs a fixed id");
    assert_eq!(
        (broker["broker"].as_str(), broker["port"].as_str()),
        (Some("${CLEFD_MQTT_HOST}"), Some("${CLEFD_MQTT_PORT}"))
    );
    let tab = nodes.iter().find(|n| n["type"] == "tab").unwrap();
    assert_eq!(broker["z"], tab["id"], "scoped to the flow whose environment it reads");
    let env: Vec<&str> = tab["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(env, ["CLEFD_MQTT_HOST", "CLEFD_MQTT_PORT"]);
    assert!(tab["info"].as_str().unwrap().contains("clefd broker"), "documented at the top");
    for n in nodes.iter().filter(|n| n["type"] == "mqtt in") {
        assert_eq!((n["qos"].as_str(), &n["broker"]), (Some("1"), &broker["id"]), "{}", n["name"]);
    }
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
    // Rates follow the scrape interval and the zoom; the table is one merged table.
    let exprs: Vec<&str> =
        panels.iter().flat_map(|p| p["targets"].as_array().unwrap()).filter_map(|t| t["expr"].as_str()).collect();
    let rates: Vec<&&str> = exprs.iter().filter(|e| e.contains("rate(")).collect();
    assert!(!rates.is_empty());
    for e in rates {
        let windows = e.matches("[$__rate_interval]").count();
        assert_eq!(windows, e.matches("rate(").count(), "a fixed window: {e}");
    }
    for table in panels.iter().filter(|p| p["type"] == "table") {
        let ids: Vec<&str> =
            table["transformations"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(ids, ["merge"], "{}: one merge of its queries", table["title"]);
    }
}

/// Runs the flow's function node `id` in Node.js as Node-RED does (a `msg` with `topic`
/// and `payload` in, the returned `msg` on, `context` kept per node) over `msgs`; the
/// payloads it passed on. `None` when Node.js is not installed.
fn run_function(flow: &Value, id: &str, msgs: &[(String, Value)]) -> Option<Vec<Value>> {
    const HARNESS: &str = r#"
const fs = require('fs');
const func = fs.readFileSync(process.argv[2], 'utf8');
const input = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
const store = {};
const context = { get: (k) => store[k], set: (k, v) => { store[k] = v; } };
const node = new Function('msg', 'context', func);
const out = [];
for (const [topic, payload] of input) {
  const r = node({ topic, payload }, context);
  if (r) out.push(r.payload);
}
process.stdout.write(JSON.stringify(out));
"#;
    let func = flow.as_array()?.iter().find(|n| n["id"] == id)?["func"].as_str()?.to_string();
    let dir = tempfile::tempdir().ok()?;
    let files =
        [("harness.js", HARNESS.to_string()), ("func.js", func), ("in.json", serde_json::to_string(msgs).ok()?)];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).ok()?;
    }
    let out =
        std::process::Command::new("node").args(files.iter().map(|(name, _)| dir.path().join(name))).output().ok()?;
    assert!(out.status.success(), "the function node failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("the harness prints JSON"))
}

/// Seconds into the day of a `clefd watch` time column (`HH:MM:SS.fff`).
fn clock(column: &str) -> Option<f64> {
    let mut parts = column.split(':').map(|p| p.parse::<f64>().ok());
    Some(parts.next()?? * 3600.0 + parts.next()?? * 60.0 + parts.next()??)
}

#[test]
fn the_integrations_report_real_changes_of_live_events_in_time_order() {
    let broker = common::Broker::start();
    let consumer = common::Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("passing.mp4");
    common::passing_clip(&clip, 90);
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "nodered")
        .with(|c| c.events.empty_after_s = 1.0)
        .looping_file("hall", &clip)
        .looping_file("door", &clip)
        .write();
    // `clefd watch` on the same topics, as a user runs it.
    let watch = common::clefd()
        .args(["watch", "--mqtt", &broker.url(), "--until-offline", "nodered", "--timeout", "300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("clefd watch starts");
    let daemon = common::Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let events = |m: &[common::Received]| -> Vec<(String, Value)> {
        m.iter().filter(|x| x.topic.ends_with("/emotion")).map(|x| (x.topic.clone(), x.body.clone())).collect()
    };
    // Heartbeats: updates that repeat their track's emotion.
    let heartbeats = |evs: &[(String, Value)]| {
        let mut last = std::collections::HashMap::new();
        evs.iter()
            .filter(|(_, e)| {
                let same = last.insert(e["track_uid"].to_string(), e["emotion"].clone()) == Some(e["emotion"].clone());
                same && e["type"] == "update"
            })
            .count()
    };
    consumer.wait_for("faces that came, stayed and left on both cameras", Duration::from_secs(240), |m| {
        let evs = events(m);
        let ends = evs.iter().filter(|(_, e)| e["type"] == "end").count();
        ends >= 4 && heartbeats(&evs) >= 3
    });
    assert!(daemon.stop());
    // It exits when the device says `offline` (clefd's clean stop).
    let watched = watch.wait_with_output().expect("clefd watch ends");
    let flow = read("contrib/node-red/clefd-flow.json");
    let evs = events(&consumer.messages());

    // Node-RED: one line per new face, change of its emotion, or exit; a redelivered
    // event (at least once) prints nothing again.
    let mut expected = 0;
    let mut shown = std::collections::HashMap::new();
    for (_, e) in &evs {
        let uid = e["track_uid"].to_string();
        expected += match e["type"].as_str() {
            Some("end") => usize::from(shown.remove(&uid).is_some()),
            _ => usize::from(shown.insert(uid, e["emotion"].clone()) != Some(e["emotion"].clone())),
        };
    }
    let mut delivered = evs.clone();
    delivered.extend(evs[evs.len() / 2..].iter().cloned());
    let Some(lines) = run_function(&flow, "clefd-new-only", &delivered) else {
        return common::could_not_run("the_integrations_report_real_changes", "Node.js (`node`) is not installed");
    };
    assert_eq!(lines.len(), expected, "{lines:#?}");
    assert!(lines.len() + heartbeats(&evs) <= evs.len(), "heartbeats print nothing");
    assert!(lines.iter().any(|l| l.as_str().is_some_and(|l| l.contains(": left ("))), "exits are reported: {lines:#?}");

    // Its `current` branch: only when the face count or the dominant emotion changes.
    let currents: Vec<(String, Value)> =
        consumer.on("/current").into_iter().filter(|m| m.body.is_object()).map(|m| (m.topic, m.body)).collect();
    let mut last = std::collections::HashMap::new();
    let changes = currents
        .iter()
        .filter(|(t, b)| {
            last.insert(t.clone(), (b["faces"].clone(), b["emotion"].clone()))
                != Some((b["faces"].clone(), b["emotion"].clone()))
        })
        .count();
    let passed = run_function(&flow, "clefd-current-changes", &currents).expect("node ran above");
    assert_eq!(passed.len(), changes);

    // `clefd watch`: a header, then lines whose time column never goes backwards.
    let text = String::from_utf8_lossy(&watched.stdout).to_string();
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("TIME (UTC)") && h.contains("SEQ")), "a header first:\n{text}");
    let times: Vec<Option<f64>> =
        lines.filter(|l| l.contains(" nodered/")).map(|l| clock(l.split(' ').next()?)).collect();
    assert!(times.len() >= 10 && times.iter().all(Option::is_some), "every event line has its time:\n{text}");
    let times: Vec<f64> = times.into_iter().flatten().collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order:\n{text}");
    assert!(text.contains(" end "), "the run had exits:\n{text}");
}
