//! Under systemd (`JOURNAL_STREAM` set) clefd logs to the journal with structured fields,
//! so `journalctl CAMERA=door` or `journalctl SEQ=42` finds what a camera or an event did.
//! Runs against the machine's journald, or starts `systemd-journald` itself where systemd
//! is not running (CI containers).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOCKET: &str = "/run/systemd/journal/socket";

fn journal_answers() -> bool {
    UnixDatagram::unbound().and_then(|s| s.send_to(b"MESSAGE=clefd test probe\n", SOCKET)).is_ok()
}

/// A journald started for the test, stopped on drop; none when one already runs.
struct Journald(Option<Child>);

impl Journald {
    fn ensure() -> Journald {
        if journal_answers() {
            return Journald(None);
        }
        let child = Command::new("/lib/systemd/systemd-journald")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journald starts (Debian package systemd)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !journal_answers() {
            assert!(Instant::now() < deadline, "systemd-journald did not open {SOCKET}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Journald(Some(child))
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn under_systemd_logs_go_to_the_journal_with_camera_track_and_seq_fields() {
    let _journald = Journald::ensure();
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    let camera = format!("journalcam{}", std::process::id());
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "testdev")
        .camera(&camera, &format!("file://{}", clip.display()))
        .write()
        .to_string_lossy()
        .into_owned();
    let out = common::clefd()
        .args(["run", "--config", &cfg])
        .env("JOURNAL_STREAM", "0:0")
        .env_remove("RUST_LOG")
        .output()
        .expect("clefd runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("run summary"),
        "under systemd the log goes to the journal, not stderr"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries: Vec<serde_json::Value> = loop {
        let listed = Command::new("journalctl")
            .args(["--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=clefd", &format!("CAMERA={camera}")])
            .output()
            .expect("journalctl runs");
        let entries: Vec<serde_json::Value> =
            String::from_utf8_lossy(&listed.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if entries.iter().any(|e| e.get("SEQ").is_some()) || Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let event = entries
        .iter()
        .find(|e| e.get("SEQ").is_some())
        .unwrap_or_else(|| panic!("an event's log line with CAMERA and SEQ in the journal: {entries:?}"));
    assert!(event.get("TRACK").is_some(), "{event}");
    assert!(event["MESSAGE"].as_str().unwrap_or_default().contains("happy"), "{event}");
    assert!(event.get("PRIORITY").is_some(), "{event}");
}
