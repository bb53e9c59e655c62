//! The systemd side: the unit passes `systemd-analyze verify` and scores well on
//! `systemd-analyze security`; the notify protocol (READY, WATCHDOG only while frames
//! move, STOPPING) against a datagram socket set as NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn unit_with_binary(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(common::repo().join("systemd/clefd.service")).unwrap();
    let p = dir.join("clefd.service");
    std::fs::write(&p, text.replace("/usr/bin/clefd", env!("CARGO_BIN_EXE_clefd"))).unwrap();
    p
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_binary(dir.path());
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("clefd.service:"), "systemd-analyze verify: {stderr}");
    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let score: f64 = text
        .split("Overall exposure level for clefd.service:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 4.0, "security exposure {score} > 4.0");
    let users = std::fs::read_to_string(common::repo().join("systemd/clefd.sysusers")).unwrap();
    assert!(users.contains("u clefd") && users.contains("m clefd video"));
}

type Log = Arc<Mutex<Vec<(Instant, String)>>>;

fn listen(path: &Path) -> Log {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                l.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            if Arc::strong_count(&l) == 1 {
                return;
            }
        }
    });
    log
}

fn wait_for(log: &Log, what: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((t, _)) = log.lock().unwrap().iter().find(|(_, m)| m.contains(what)) {
            return *t;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}: {:?}",
            log.lock().unwrap().iter().map(|(_, m)| m.clone()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_notified(dir: &Path, extra_env: &[(&str, &str)]) -> (std::process::Child, Log, common::Broker) {
    let broker = common::Broker::start();
    let clip = dir.join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    let cfg = dir.join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir, &broker.url(), "sd")
            + &format!("[cameras.cam]\nuri = \"file://{}\"\nloop = true\n", clip.display()),
    )
    .unwrap();
    let sock = dir.join("notify.sock");
    let log = listen(&sock);
    let mut cmd = common::clefd();
    cmd.args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    (child, log, broker)
}

fn watchdogs_between(log: &Log, a: Instant, b: Instant) -> usize {
    log.lock().unwrap().iter().filter(|(t, m)| m == "WATCHDOG=1" && *t >= a && *t < b).count()
}

#[test]
fn ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (child, log, _broker) = run_notified(dir.path(), &[]);
    let ready = wait_for(&log, "READY=1", Duration::from_secs(20));
    wait_for(&log, "STATUS=1/1 cameras streaming", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    let pings = watchdogs_between(&log, ready, ready + Duration::from_secs(3));
    assert!(pings >= 4, "pings every 0.5 s while frames flow: {pings}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    wait_for(&log, "STOPPING=1", Duration::from_secs(10));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
}

#[test]
fn a_hung_inference_stage_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log, _broker) = run_notified(dir.path(), &[("CLEFD_TEST_INFERENCE_DELAY_MS", "6000")]);
    let ready = wait_for(&log, "READY=1", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(5));
    // The first frame is taken at once and then inference hangs for 6 s: after at most
    // one ping on the way in, systemd hears nothing and would restart the service.
    let pings = watchdogs_between(&log, ready + Duration::from_millis(1500), ready + Duration::from_secs(5));
    assert_eq!(pings, 0, "no WATCHDOG=1 while inference is stuck");
    let _ = child.kill();
    let _ = child.wait();
}
