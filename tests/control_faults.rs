//! Runtime control can never cut event delivery off (issue 26, item 4), against a real
//! broker: a command far larger than any real one (300 KB, QoS 1) is answered "too large"
//! and events keep being delivered; a storm of 500 commands gets exactly 500 answers (ok,
//! refused or busy), applied in arrival order, and the final state is the last accepted
//! command's.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Broker, Consumer, Daemon, Received};

const WAIT: Duration = Duration::from_secs(120);
const STORM_WAIT: Duration = Duration::from_secs(400);

fn config(dir: &Path, broker: &Broker, clip: &Path, cameras: &[&str]) -> std::path::PathBuf {
    let mut text = common::base_config(dir, &broker.url(), "flt").replace("[mqtt]\n", "[mqtt]\ncontrol = true\n");
    for camera in cameras {
        text += &format!("[cameras.{camera}]\nuri = \"file://{}\"\nloop = true\n", clip.display());
    }
    common::write_toml(dir, &text)
}

/// Publishes every line of `lines` on `topic` (QoS 1) with the broker's own client, as
/// fast as it goes; the child is returned running.
fn publish_lines(broker: &Broker, topic: &str, lines: &[String]) -> std::process::Child {
    let mut child = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (mosquitto-clients) runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    drop(stdin);
    child
}

fn seqs(m: &[Received]) -> Vec<u64> {
    m.iter().filter(|x| x.topic.ends_with("/emotion")).filter_map(|x| x.body["seq"].as_u64()).collect()
}

fn answers(m: &[Received]) -> Vec<&Received> {
    m.iter().filter(|x| x.topic == "clefd/flt/a/set/result" || x.topic == "clefd/flt/set/result").collect()
}

#[test]
fn an_oversized_command_is_answered_and_events_keep_flowing() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let cfg = config(dir.path(), &broker, &clip, &["a"]);
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    consumer.wait_for("3 events", WAIT, |m| seqs(m).len() >= 3);

    // 300 KB at QoS 1: more than the event connection reads (256 KB).
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!(r#"{{"fps": 5, "pad": "{}"}}"#, "x".repeat(300 * 1024))).unwrap();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", "clefd/flt/a/set", "-f"])
        .arg(&big)
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    consumer.wait_for("the answer to the 300 KB command", WAIT, |m| !answers(m).is_empty());
    let m = consumer.messages();
    let answer = &answers(&m)[0].body;
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("too large"), "{answer}");

    // Delivery goes on: new numbers keep arriving (a reconnect loop re-sending the same
    // ones would not get past `top`).
    let top = seqs(&m).into_iter().max().unwrap();
    consumer.wait_for("5 new events after the oversized command", WAIT, |m| {
        seqs(m).into_iter().filter(|&s| s > top).count() >= 5
    });
    // And control still works.
    let before = answers(&consumer.messages()).len();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", "clefd/flt/a/set"])
        .args(["-m", r#"{"fps": 5}"#])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    consumer.wait_for("the answer to a normal command", WAIT, |m| answers(m).len() > before);
    let m = consumer.messages();
    let answer = &answers(&m)[before].body;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answers(&m).len(), before + 1, "one answer per command");
    assert!(daemon.stop());
}

#[test]
fn a_command_storm_gets_one_answer_each_and_ends_in_the_last_accepted_state() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let cfg = config(dir.path(), &broker, &clip, &["a", "b"]);
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    consumer.wait_for("both cameras streaming", WAIT, |m| {
        ["a", "b"]
            .iter()
            .all(|c| m.iter().any(|x| x.topic == format!("clefd/flt/{c}/state") && x.body["status"] == "streaming"))
    });

    // Distinct values: 1000+i on a's topic, 2000+i on the device's (every camera).
    let camera: Vec<String> = (0..250).map(|i| format!(r#"{{"min_face_px": {}}}"#, 1000 + i)).collect();
    let device: Vec<String> = (0..250).map(|i| format!(r#"{{"min_face_px": {}}}"#, 2000 + i)).collect();
    let mut a = publish_lines(&broker, "clefd/flt/a/set", &camera);
    let mut d = publish_lines(&broker, "clefd/flt/set", &device);
    assert!(a.wait().unwrap().success() && d.wait().unwrap().success(), "mosquitto_pub");

    consumer.wait_for("500 answers", STORM_WAIT, |m| answers(m).len() >= 500);
    let m = consumer.messages();
    let all = answers(&m);
    let accepted: Vec<&&Received> = all.iter().filter(|x| x.body["ok"] == true).collect();
    for x in &all {
        let error = x.body["error"].as_str().unwrap_or_default();
        assert!(x.body["ok"] == true || error.starts_with("busy"), "only ok or busy: {}", x.body);
    }
    assert!(!accepted.is_empty(), "some commands are applied");
    // In arrival order: each topic's accepted values only grow.
    for (topic, base) in [("clefd/flt/a/set/result", 1000.0), ("clefd/flt/set/result", 2000.0)] {
        let values: Vec<f64> = accepted
            .iter()
            .filter(|x| x.topic == topic)
            .filter_map(|x| x.body["control"]["a"]["min_face_px"].as_f64())
            .collect();
        assert!(values.iter().all(|&v| v >= base && v < base + 250.0), "{topic}: {values:?}");
        assert!(values.windows(2).all(|w| w[0] < w[1]), "applied in arrival order on {topic}: {values:?}");
    }
    // The final state of each camera is what the last accepted command set.
    // For b: the last accepted device-wide command (none: b keeps the file's value).
    let last_device = accepted.iter().rev().find(|x| x.topic == "clefd/flt/set/result");
    for c in ["a", "b"] {
        let last = if c == "a" { accepted.last() } else { last_device };
        let want = last.and_then(|x| x.body["control"][c]["min_face_px"].as_f64());
        let topic = format!("clefd/flt/{c}/state");
        consumer.wait_for(&format!("{c}'s state showing {want:?}"), WAIT, |m| {
            m.iter().rev().find(|x| x.topic == topic).is_some_and(|x| x.body["control"]["min_face_px"].as_f64() == want)
        });
    }
    assert_eq!(answers(&consumer.messages()).len(), 500, "exactly one answer per command");
    assert!(daemon.stop());
}
