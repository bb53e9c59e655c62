//! The MQTT 5 contract consumers rely on (README, "For consumers"): every publish says
//! what it carries (payload format, content type, schema, device, camera; events their
//! expiry), a shared subscription spreads the events over its members exactly once across
//! a clefd restart, and the fleet topology (clefd -> a local mosquitto bridged to a
//! central one) delivers every event across an outage of the central broker and of the
//! link, de-duplicated by (device, seq).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{Broker, Consumer, Consumer5, Daemon, Link, Received5, TestConfig};

/// A config for device `device` on `broker_url` over MQTT 5, one camera `door` playing a
/// face that crosses the frame, in a loop.
fn config(dir: &Path, broker_url: &str, device: &str, f: impl FnOnce(&mut clefd::config::file::Config)) -> TestConfig {
    let clip = dir.join("passing.mp4");
    if !clip.exists() {
        common::passing_clip(&clip, 90);
    }
    TestConfig::new(dir, broker_url, device).with(|c| c.mqtt.protocol = "5".into()).with(f).looping_file("door", &clip)
}

fn is_event(m: &Received5) -> bool {
    m.topic.ends_with("/emotion")
}

/// (device, seq) of every event in `msgs`, duplicates included.
fn keys(msgs: &[Received5]) -> Vec<(String, u64)> {
    msgs.iter()
        .filter(|m| is_event(m))
        .filter_map(|m| Some((m.body["device"].as_str()?.to_string(), m.body["seq"].as_u64()?)))
        .collect()
}

/// What every message on `topic` must say about itself: (content type, utf-8, schema,
/// camera), `None` for a topic the test itself publishes on.
fn expected(topic: &str) -> Option<(&'static str, bool, &'static str, Option<&'static str>)> {
    let json = "application/json";
    Some(match topic {
        t if t.ends_with("/set") => return None,
        t if t.starts_with("homeassistant/") => (json, true, "homeassistant.discovery/1", Some("door")),
        "clefd/fleet5/availability" => ("text/plain; charset=utf-8", true, "clefd.availability/1", None),
        "clefd/fleet5/stats" => (json, true, "clefd.stats/1", None),
        "clefd/fleet5/door/emotion" => (json, true, "clefd.emotion/2", Some("door")),
        "clefd/fleet5/door/state" => (json, true, "clefd.state/1", Some("door")),
        "clefd/fleet5/door/current" => (json, true, "clefd.current/1", Some("door")),
        "clefd/fleet5/door/snapshot" => ("image/jpeg", false, "clefd.snapshot/1", Some("door")),
        "clefd/fleet5/door/set/result" => (json, true, "clefd.set-result/1", Some("door")),
        other => panic!("a topic the contract does not cover: {other}"),
    })
}

#[test]
fn every_publish_carries_the_mqtt5_contract() {
    const EXPIRY_S: u32 = 600;
    let broker = Broker::start();
    let consumer = Consumer5::start(broker.port, "#", None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &broker.url(), "fleet5", |c| {
        c.mqtt.event_expiry_s = f64::from(EXPIRY_S);
        c.mqtt.home_assistant = true;
        c.mqtt.stats_interval_s = 1.0;
        c.mqtt.control = true;
        c.snapshots.mqtt = true;
    })
    .write();
    let mut daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let kinds = ["/availability", "/stats", "/emotion", "/state", "/current", "/snapshot", "/config"];
    consumer.wait_for("a message on every kind of topic", Duration::from_secs(120), |m| {
        kinds.iter().all(|k| m.iter().any(|x| x.topic.ends_with(k)))
    });
    consumer.publish("clefd/fleet5/door/set", br#"{"fps": 10}"#);
    consumer.wait_for("the answer to a command", Duration::from_secs(30), |m| {
        m.iter().any(|x| x.topic.ends_with("/set/result"))
    });
    // The last will comes from the broker, with the properties clefd gave it.
    let before = consumer.messages().len();
    daemon.kill();
    consumer.wait_for("the last will", Duration::from_secs(30), |m| {
        m[before..].iter().any(|x| x.topic == "clefd/fleet5/availability" && x.body == "offline")
    });

    let msgs = consumer.messages();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for m in &msgs {
        let Some((content_type, utf8, schema, camera)) = expected(&m.topic) else { continue };
        let p = m.properties.as_ref().unwrap_or_else(|| panic!("{} came without properties", m.topic));
        assert_eq!(p.content_type.as_deref(), Some(content_type), "{}", m.topic);
        assert_eq!(p.payload_format_indicator, Some(u8::from(utf8)), "{}", m.topic);
        assert_eq!(m.user("schema"), Some(schema), "{}", m.topic);
        assert_eq!(m.user("device"), Some("fleet5"), "{}", m.topic);
        assert_eq!(m.user("camera"), camera, "{}", m.topic);
        if utf8 {
            let text = std::str::from_utf8(&m.payload).unwrap_or_else(|_| panic!("{}: not UTF-8", m.topic));
            if content_type == "application/json" && !text.is_empty() {
                assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "{}: not JSON: {text}", m.topic);
            }
        } else {
            assert!(m.payload.starts_with(&[0xff, 0xd8]), "{}: not a JPEG", m.topic);
        }
        if is_event(m) {
            assert_eq!(m.body["schema"], schema, "the property names the payload's own schema");
            let left = p.message_expiry_interval.expect("an event carries its expiry");
            assert!(left > 0 && left <= EXPIRY_S, "expiry {left} s of {EXPIRY_S}");
        } else {
            assert_eq!(p.message_expiry_interval, None, "{}: only events expire", m.topic);
        }
        *checked.entry(m.topic.rsplit('/').next().unwrap_or_default().to_string()).or_default() += 1;
    }
    for kind in ["availability", "stats", "emotion", "state", "current", "snapshot", "config", "result"] {
        assert!(checked.get(kind).copied().unwrap_or(0) > 0, "no {kind} message checked: {checked:?}");
    }
    let wills = msgs[before..].iter().filter(|x| x.topic == "clefd/fleet5/availability").count();
    assert!(wills >= 1, "the will was checked with the rest");
}

#[test]
fn a_shared_subscription_gets_every_event_exactly_once_across_a_restart() {
    let broker = Broker::start();
    let all = Consumer5::start(broker.port, "clefd/+/+/emotion", None);
    let filter = "$share/workers/clefd/+/+/emotion";
    let members = [
        Consumer5::start(broker.port, filter, Some("worker-a")),
        Consumer5::start(broker.port, filter, Some("worker-b")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &broker.url(), "shared5", |_| {}).write();
    let count = |m: &[Received5]| keys(m).len();
    let mut first_run = 0;
    for run in 0..2 {
        let daemon = Daemon::start(&cfg, &dir.path().join(format!("run{run}.log")));
        all.wait_for("ten more events", Duration::from_secs(120), |m| count(m) >= first_run + 10);
        assert!(daemon.stop(), "clefd stops cleanly");
        first_run = count(&all.messages());
    }
    let total = count(&all.messages());
    let spread = || members.iter().map(|c| count(&c.messages())).sum::<usize>();
    all.wait_for("the members to have as many", Duration::from_secs(30), |_| spread() >= total);

    let every: Vec<(String, u64)> = keys(&all.messages());
    let unique: BTreeSet<_> = every.iter().cloned().collect();
    assert_eq!(unique.len(), every.len(), "a clean restart sends no event twice");
    let seqs: Vec<u64> = unique.iter().map(|(_, s)| *s).collect();
    let (lo, hi) = (seqs[0], seqs[seqs.len() - 1]);
    assert_eq!(seqs.len() as u64, hi - lo + 1, "no gap across the restart: {seqs:?}");
    let mut shared: Vec<(String, u64)> = members.iter().flat_map(|c| keys(&c.messages())).collect();
    shared.sort();
    let once: Vec<(String, u64)> = unique.into_iter().collect();
    assert_eq!(shared, once, "each event went to exactly one member");
    for (i, member) in members.iter().enumerate() {
        assert!(!keys(&member.messages()).is_empty(), "member {i} got a share of the events");
    }
}

#[test]
fn a_bridged_fleet_delivers_every_event_across_broker_and_link_outages() {
    let mut central = Broker::start_persistent();
    let link = Link::start(central.port);
    let local = Broker::start_bridged(link.port);
    // What clefd published, as the local broker saw it.
    let truth = Consumer::start(local.port);
    let far = Consumer5::start(central.port, "clefd/+/+/emotion", Some("datacenter"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &local.url(), "edge5", |_| {}).write();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let made = || truth.seqs("edge5").len();
    far.wait_for("events across the bridge", Duration::from_secs(120), |m| keys(m).len() >= 5);

    // The central broker goes away while clefd goes on.
    central.stop();
    let at = made();
    truth.wait_for("events during the central outage", Duration::from_secs(120), |m| {
        common::seqs(m, "edge5").len() >= at + 5
    });
    central.start_again();
    let newest = truth.seqs("edge5").into_iter().max().unwrap_or_default();
    far.wait_for("events from during the central outage", Duration::from_secs(120), |m| {
        keys(m).iter().any(|(_, s)| *s >= newest)
    });

    // Then the link between the two brokers.
    link.cut();
    let at = made();
    truth.wait_for("events during the link outage", Duration::from_secs(120), |m| {
        common::seqs(m, "edge5").len() >= at + 5
    });
    link.restore();
    let at = made();
    truth.wait_for("events after the link is back", Duration::from_secs(120), |m| {
        common::seqs(m, "edge5").len() >= at + 3
    });
    assert!(daemon.stop(), "clefd stops cleanly");

    let sent: BTreeSet<(String, u64)> = truth.seqs("edge5").into_iter().map(|s| ("edge5".to_string(), s)).collect();
    far.wait_for("every event at the center", Duration::from_secs(120), |m| {
        keys(m).into_iter().collect::<BTreeSet<_>>().is_superset(&sent)
    });
    let got = keys(&far.messages());
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique, sent, "the center has exactly the events clefd sent, once de-duplicated");
    let seqs: Vec<u64> = unique.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs.len() as u64, seqs[seqs.len() - 1] - seqs[0] + 1, "no gap: {seqs:?}");
    // The bridge speaks MQTT 5: the contract's properties arrive at the center too.
    for m in far.messages().iter().filter(|m| is_event(m)) {
        assert_eq!(m.user("schema"), Some("clefd.emotion/2"), "properties kept across the bridge");
        assert_eq!((m.user("device"), m.user("camera")), (Some("edge5"), Some("door")));
    }
    eprintln!(
        "bridged fleet: {} events sent, {} received at the center ({} duplicates)",
        sent.len(),
        got.len(),
        got.len() - unique.len()
    );
}
