//! Snapshots (`[snapshots]`): off by default; when on, each track's `new` event comes
//! with a small JPEG of the face, retained on the camera's snapshot topic and written to
//! a folder that keeps only the newest pictures, and the event says where.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Broker, Consumer, Daemon};

/// A broker, a consumer of everything on it, a folder, and the configuration of device
/// `snap` whose camera `hall` plays `clip` (in that folder): a face that crosses the frame
/// and leaves it, looped, so a new track begins on every pass; snapshots go to MQTT and to
/// `snaps` (in that folder), which keeps two, at most 96 pixels on their longer side.
struct Passing {
    broker: Broker,
    consumer: Consumer,
    dir: tempfile::TempDir,
    clip: PathBuf,
    snaps: PathBuf,
    text: String,
}

fn passing() -> Passing {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("passing.mp4");
    common::passing_clip(&clip, 60);
    let snaps = dir.path().join("snaps");
    let text = common::base_config(dir.path(), &broker.url(), "snap")
        + &format!("[snapshots]\nmqtt = true\ndir = \"{}\"\nmax_files = 2\nsize_px = 96\n", snaps.display())
        + &format!("[cameras.hall]\nuri = \"file://{}\"\nloop = true\n", clip.display());
    Passing { broker, consumer, dir, clip, snaps, text }
}

#[test]
fn new_tracks_come_with_a_picture_of_the_face_on_mqtt_and_in_a_bounded_folder() {
    let Passing { broker, consumer, dir, clip, snaps, text } = passing();
    let text = text + &format!("[cameras.door]\nuri = \"file://{}\"\nloop = true\nsnapshots = false\n", clip.display());
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(&cfg, text).unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let news = |m: &[common::Received]| -> Vec<serde_json::Value> {
        m.iter()
            .filter(|x| x.topic == "clefd/snap/hall/emotion" && x.body["type"] == "new")
            .map(|x| x.body.clone())
            .collect()
    };
    consumer.wait_for("three tracks, each with its snapshot", Duration::from_secs(120), |m| news(m).len() >= 3);
    assert!(daemon.stop());

    let m = consumer.messages();
    for event in news(&m) {
        let uid = event["track_uid"].as_str().unwrap();
        assert_eq!(event["snapshot"]["topic"], "clefd/snap/hall/snapshot", "{event}");
        let file = event["snapshot"]["file"].as_str().expect("the file it was written to");
        assert!(file.ends_with(&format!("{uid}.jpg")) && file.starts_with(snaps.to_str().unwrap()), "{file}");
    }
    // A camera with `snapshots = false` takes none.
    let door: Vec<_> = m.iter().filter(|x| x.topic == "clefd/snap/door/emotion" && x.body["type"] == "new").collect();
    assert!(!door.is_empty() && door.iter().all(|x| x.body.get("snapshot").is_none()));
    assert!(m.iter().all(|x| x.topic != "clefd/snap/door/snapshot"));
    let others = m.iter().filter(|x| x.topic.ends_with("/emotion") && x.body["type"] != "new");
    assert!(others.clone().count() > 0 && others.clone().all(|x| x.body.get("snapshot").is_none()));

    // On MQTT: a JPEG of the face, at most 96 pixels on its longer side.
    let shot = m.iter().rev().find(|x| x.topic == "clefd/snap/hall/snapshot").expect("a snapshot message");
    assert_eq!(&shot.payload[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    let path = dir.path().join("got.jpg");
    std::fs::write(&path, &shot.payload).unwrap();
    let picture = clefd::source::decode_image(&path).expect("it decodes");
    let (long, short) = (picture.width.max(picture.height), picture.width.min(picture.height));
    assert!(long <= 96 && short >= 32, "the face, never scaled up: {}x{}", picture.width, picture.height);
    // Retained: a dashboard that connects later gets it at once.
    let late = Consumer::start(broker.port);
    late.wait_for("the retained snapshot", Duration::from_secs(10), |m| {
        m.iter().any(|x| x.topic == "clefd/snap/hall/snapshot" && x.retained && x.payload.starts_with(&[0xFF, 0xD8]))
    });

    // In the folder: the newest two only, the last event's among them.
    let files: Vec<_> = std::fs::read_dir(&snaps).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    assert!(!files.is_empty() && files.len() <= 2, "{files:?}");
    assert!(files.iter().all(|f| f.extension().is_some_and(|x| x == "jpg")), "no temporary file left: {files:?}");
    let last = news(&m).pop().unwrap();
    assert!(std::path::Path::new(last["snapshot"]["file"].as_str().unwrap()).is_file(), "{files:?}");
}

#[test]
fn snapshots_are_off_by_default() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 2.0, 15);
    let cfg = common::write_config(dir.path(), &broker.url(), &clip, "realtime = false\n");
    let out = common::run_clefd(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    consumer.wait_for("the track's end", Duration::from_secs(30), |m| {
        m.iter().any(|x| x.topic.ends_with("/cam1/emotion") && x.body["type"] == "end")
    });
    let m = consumer.messages();
    assert!(m.iter().any(|x| x.topic.ends_with("/emotion") && x.body["type"] == "new"));
    assert!(m.iter().all(|x| !x.topic.ends_with("/snapshot") && x.body.get("snapshot").is_none()));
}

/// A snapshot folder on a disk that hangs (each write takes ten minutes: the test hook
/// `CLEFD_TEST_SNAPSHOT_DELAY_MS`) never holds up analysis: new tracks keep coming, each
/// with its picture on MQTT, while nothing reaches the folder; SIGTERM still ends clefd.
#[test]
fn a_hung_snapshot_folder_does_not_stop_analysis() {
    let Passing { broker: _broker, consumer, dir, snaps, text, .. } = passing();
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = common::clefd();
    cmd.args(["run", "--config", cfg.to_str().unwrap()]).env("CLEFD_TEST_SNAPSHOT_DELAY_MS", "600000");
    let daemon = Daemon::spawn(cmd, &dir.path().join("clefd.log"));
    let news = |m: &[common::Received]| {
        m.iter().filter(|x| x.topic == "clefd/snap/hall/emotion" && x.body["type"] == "new").count()
    };
    consumer.wait_for("four tracks while the folder hangs", Duration::from_secs(120), |m| news(m) >= 4);
    let m = consumer.messages();
    let pictures = m.iter().filter(|x| x.topic == "clefd/snap/hall/snapshot" && !x.payload.is_empty()).count();
    assert!(pictures >= 4, "each new track's picture on MQTT: {pictures}");
    let written = std::fs::read_dir(&snaps).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0);
    assert_eq!(written, 0, "nothing reaches a folder whose disk hangs");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM with a hung snapshot folder");
}

/// A snapshot folder that cannot be written (its path runs through a file) costs the
/// pictures, never the analysis: each failed write is counted on `/metrics`
/// (`clefd_snapshots_failed_total`, beside `clefd_snapshots_dropped_total`), and `new`
/// events keep coming.
#[test]
fn snapshots_that_cannot_be_written_are_counted_on_metrics() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("passing.mp4");
    common::passing_clip(&clip, 60);
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let port = common::free_port();
    let text = common::base_config(dir.path(), &broker.url(), "snap")
        + &common::http_section(port)
        + &format!("[snapshots]\ndir = \"{}\"\nmax_files = 2\n", blocker.join("snaps").display())
        + &format!("[cameras.hall]\nuri = \"file://{}\"\nloop = true\n", clip.display());
    let (daemon, _log) = common::run_daemon(&common::write_toml(dir.path(), &text), &[]);
    let news = |m: &[common::Received]| {
        m.iter().filter(|x| x.topic == "clefd/snap/hall/emotion" && x.body["type"] == "new").count()
    };
    consumer.wait_for("two tracks", Duration::from_secs(120), |m| news(m) >= 2);
    let failed = "clefd_snapshots_failed_total";
    common::wait_metric(port, failed, "the failed snapshot writes", Duration::from_secs(60), |v| v >= 2.0);
    assert_eq!(common::metric(port, "clefd_snapshots_dropped_total"), Some(0.0), "none dropped: the queue kept up");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM with an unwritable snapshot folder");
}
