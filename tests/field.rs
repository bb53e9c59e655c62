//! Field faults, injected for real: a camera that is down at boot, a disk that fills up
//! or turns read-only under the daemon (a private tmpfs in its own mount namespace), a
//! flood of idle HTTP clients under a low descriptor limit, signals during start-up, a
//! broker that refuses us at shutdown. Each checks what the daemon does (events counted,
//! health, exit codes), waiting for conditions with deadlines, never timing it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Consumer, Daemon, wait_http};

/// A looping file camera with HTTP on `port`, state in `dir/state`.
fn looping_config(dir: &Path, broker: &str, port: u16) -> std::path::PathBuf {
    let clip = dir.join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    common::TestConfig::new(dir, broker, "field").http(port).looping_file("cam", &clip).write()
}

/// Whether this process may make mount namespaces (root, `unshare` installed).
fn can_unshare() -> bool {
    Command::new("unshare").args(["-m", "true"]).status().is_ok_and(|s| s.success())
}

/// A daemon whose state folder is a small tmpfs of its own, in a private mount
/// namespace, with a broker and a consumer.
struct OnTmpfs {
    daemon: Daemon,
    consumer: Consumer,
    port: u16,
    dir: tempfile::TempDir,
    _broker: common::Broker,
    /// What the daemon tells systemd.
    notify: common::NotifyLog,
}

/// `None` (the test recorded as not run) where mount namespaces cannot be made.
fn on_tmpfs(test: &str, size: &str) -> Option<OnTmpfs> {
    on_tmpfs_then(test, size, "")
}

/// Like [`on_tmpfs`], running `then` (shell, in the daemon's namespace) after the mount.
fn on_tmpfs_then(test: &str, size: &str, then: &str) -> Option<OnTmpfs> {
    if !can_unshare() {
        common::could_not_run(test, "needs root for a private mount namespace (unshare -m)");
        return None;
    }
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = looping_config(dir.path(), &broker.url(), port);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let script = format!(
        "mount -t tmpfs -o size={size} clefd-test {} {} && exec {} run --config {}",
        state.display(),
        then.replace("{state}", &state.display().to_string()),
        env!("CARGO_BIN_EXE_clefd"),
        cfg.display()
    );
    let sock = dir.path().join("notify.sock");
    let notify = common::notify_listen(&sock);
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]).env("NOTIFY_SOCKET", &sock);
    let daemon = Daemon::spawn(cmd, &dir.path().join("clefd.log"));
    Some(OnTmpfs { daemon, consumer, port, dir, _broker: broker, notify })
}

/// The value of a metric the daemon exposes (-1 when it does not answer).
fn metric(port: u16, series: &str) -> f64 {
    common::metric(port, series).unwrap_or(-1.0)
}

/// Waits until an event with a seq above `above` arrives; returns the highest seen.
fn wait_new_event(consumer: &Consumer, above: Option<u64>, timeout: Duration) -> u64 {
    consumer.wait_for("a new event", timeout, |_| consumer.seqs("field").iter().any(|s| above.is_none_or(|a| *s > a)));
    consumer.seqs("field").into_iter().max().unwrap_or(0)
}

/// Fault, then recovery: `/healthz` says why and events are counted as lost while the
/// fault lasts; analysis never stops; new events flow once the fault is gone.
fn degrade_and_recover(port: u16, consumer: &Consumer, reason: &str, fault: impl FnOnce(), cure: impl FnOnce()) {
    let before = wait_new_event(consumer, None, Duration::from_secs(60));
    fault();
    degraded(port, reason);
    recovers(port, consumer, Some(before), cure);
}

/// `/healthz` says why, events are counted as lost, and analysis goes on.
fn degraded(port: u16, reason: &str) {
    wait_http(port, "/healthz", "the disk problem in /healthz", Duration::from_secs(60), |code, body| {
        code == 503 && body.contains(reason)
    });
    let frames = metric(port, "clefd_frames_analysed_total{camera=\"cam\"}");
    wait_http(port, "/metrics", "analysis going on and events counted as lost", Duration::from_secs(60), |_, b| {
        let lost = b.lines().any(|l| l.starts_with("clefd_events_lost_total ") && !l.ends_with(" 0"));
        lost && b.contains("clefd_spool_writable 0")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(port, "clefd_frames_analysed_total{camera=\"cam\"}") < frames + 10.0 {
        assert!(Instant::now() < deadline, "analysis stopped while the disk refused writes");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Once `cure` ran: health is ok again, nothing more is lost, and the events that follow
/// are numbered one after another. `before`: the highest seq received before the fault.
fn recovers(port: u16, consumer: &Consumer, before: Option<u64>, cure: impl FnOnce()) {
    cure();
    wait_http(port, "/healthz", "health back to ok", Duration::from_secs(60), |code, _| code == 200);
    // Recovered: nothing more is lost, and the events that follow are numbered one after
    // another (no number burnt, none counted as lost, after the cure).
    let lost = metric(port, "clefd_events_lost_total");
    let from = consumer.seqs("field").into_iter().max().or(before);
    let new = |s: &u64| from.is_none_or(|f| *s > f);
    consumer.wait_for("three events after the cure", Duration::from_secs(60), |_| {
        consumer.seqs("field").iter().filter(|s| new(s)).count() >= 3
    });
    let mut after: Vec<u64> = consumer.seqs("field").into_iter().filter(|s| new(s)).collect();
    after.sort_unstable();
    after.dedup();
    assert_eq!(after[1..3], [after[0] + 1, after[0] + 2], "consecutive numbers after the cure: {after:?}");
    assert_eq!(metric(port, "clefd_events_lost_total"), lost, "no event lost after the cure");
}

/// README's promise: the events lost are exactly the numbers missing from `seq`, as the
/// consumer sees them (`lost` read from `/metrics` before the daemon stopped).
fn assert_lost_is_the_gap(consumer: &Consumer, lost: f64) {
    let mut seen = consumer.seqs("field");
    seen.sort_unstable();
    seen.dedup();
    let last = *seen.last().expect("events arrived");
    let missing = (0..=last).filter(|s| seen.binary_search(s).is_err()).count();
    assert!(lost > 0.0, "the fault lost events");
    assert_eq!(missing as f64, lost, "events lost = the gap in seq; received {seen:?}");
}

#[test]
fn a_full_disk_loses_events_counted_and_analysis_goes_on() {
    let Some(mut t) = on_tmpfs("a_full_disk_loses_events_counted_and_analysis_goes_on", "2m") else { return };
    // The daemon's own view of its state folder (its mount namespace).
    let filler = format!("/proc/{}/root{}/filler", t.daemon.pid(), t.dir.path().join("state").display());
    degrade_and_recover(
        t.port,
        &t.consumer,
        "No space left on device",
        || {
            let mut f = std::fs::File::create(&filler).expect("the daemon's tmpfs");
            let block = vec![0u8; 64 * 1024];
            while std::io::Write::write_all(&mut f, &block).is_ok() {}
        },
        || std::fs::remove_file(&filler).unwrap(),
    );
    assert!(t.daemon.running(), "the daemon is still running");
    let lost = metric(t.port, "clefd_events_lost_total");
    assert!(t.daemon.stop(), "asked to stop: exit 0");
    assert_lost_is_the_gap(&t.consumer, lost);
}

#[test]
fn a_read_only_state_folder_degrades_and_recovers() {
    let Some(t) = on_tmpfs("a_read_only_state_folder_degrades_and_recovers", "16m") else { return };
    let state = t.dir.path().join("state");
    let s = state.to_str().unwrap();
    // A read-only view over the folder (files already open stay writable, as after a
    // remount that the kernel forced), then taken away again.
    let in_its_namespace = |args: &[&str]| in_namespace(t.daemon.pid(), args);
    degrade_and_recover(
        t.port,
        &t.consumer,
        "Read-only file system",
        || in_its_namespace(&["mount", "--bind", "-o", "ro", s, s]),
        || in_its_namespace(&["umount", s]),
    );
    let lost = metric(t.port, "clefd_events_lost_total");
    assert!(t.daemon.stop(), "asked to stop: exit 0");
    assert_lost_is_the_gap(&t.consumer, lost);
}

/// Runs a command in the mount namespace of process `pid`.
fn in_namespace(pid: u32, args: &[&str]) {
    let st = Command::new("nsenter").args(["-t", &pid.to_string(), "-m"]).args(args).status();
    assert!(st.is_ok_and(|s| s.success()), "{args:?}");
}

/// The status line and content type of `path`, read raw (a JPEG body is no text).
fn head_of(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(out.len());
    String::from_utf8_lossy(&out[..end]).into_owned()
}

/// The live view is served while events cannot be kept.
fn serves_the_live_view(port: u16) {
    let live = "/cameras/cam/latest.jpg";
    let deadline = Instant::now() + Duration::from_secs(60);
    while !head_of(port, live).contains("image/jpeg") {
        assert!(Instant::now() < deadline, "the live view is served meanwhile: {}", head_of(port, live));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// systemd hears that the problem is over: a `STATUS=` after the first `from` messages
/// that no longer says events are being lost.
fn status_cleared(notify: &common::NotifyLog, from: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let said: Vec<String> = notify.lock().unwrap()[from..].iter().map(|(_, m)| m.clone()).collect();
        if said.iter().any(|m| m.contains("STATUS=") && !m.contains("being lost")) {
            return;
        }
        assert!(Instant::now() < deadline, "STATUS= never cleared: {said:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_read_only_state_folder_at_start_degrades_and_recovers() {
    // The state folder is read-only before clefd starts: the spool folder cannot be made.
    // Before the fix clefd exited 1 ("opening the event spool"); now it serves, analyses,
    // counts what it cannot keep, says why, and recovers when the folder is writable.
    let test = "a_read_only_state_folder_at_start_degrades_and_recovers";
    let Some(t) = on_tmpfs_then(test, "16m", "&& mount --bind -o ro {state} {state}") else { return };
    degraded(t.port, "Read-only file system");
    serves_the_live_view(t.port);
    common::notify_wait(&t.notify, "events are being lost", Duration::from_secs(60));
    let state = t.dir.path().join("state");
    let s = state.to_str().unwrap();
    let cured = t.notify.lock().unwrap().len();
    recovers(t.port, &t.consumer, None, || in_namespace(t.daemon.pid(), &["umount", s]));
    status_cleared(&t.notify, cured);
    let lost = metric(t.port, "clefd_events_lost_total");
    assert!(t.daemon.stop(), "asked to stop: exit 0");
    assert_lost_is_the_gap(&t.consumer, lost);
}

#[test]
fn a_full_state_folder_at_start_degrades_and_recovers() {
    // The state folder is full before clefd starts (a 512 KB tmpfs, filled up): neither
    // `seq` nor a spool segment can be written. clefd starts, analyses, serves the live
    // view, counts what it cannot keep, says why (`/healthz`, `STATUS=`), and carries on
    // by itself once space is freed.
    let test = "a_full_state_folder_at_start_degrades_and_recovers";
    let fill = "&& (dd if=/dev/zero of={state}/filler bs=64k 2>/dev/null; true)";
    let Some(t) = on_tmpfs_then(test, "512k", fill) else { return };
    degraded(t.port, "No space left on device");
    serves_the_live_view(t.port);
    common::notify_wait(&t.notify, "events are being lost", Duration::from_secs(60));
    // The daemon's own view of its state folder (its mount namespace).
    let filler = format!("/proc/{}/root{}/filler", t.daemon.pid(), t.dir.path().join("state").display());
    assert!(std::fs::metadata(&filler).is_ok_and(|m| m.len() > 256 * 1024), "the folder was filled");
    let cured = t.notify.lock().unwrap().len();
    recovers(t.port, &t.consumer, None, || std::fs::remove_file(&filler).unwrap());
    status_cleared(&t.notify, cured);
    let lost = metric(t.port, "clefd_events_lost_total");
    assert!(t.daemon.stop(), "asked to stop: exit 0");
    assert_lost_is_the_gap(&t.consumer, lost);
}

#[test]
fn ready_comes_at_once_with_only_an_unreachable_camera() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = common::free_port();
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "boot")
        .camera("gate", &format!("rtsp://127.0.0.1:{dead}/stream"))
        .write();
    let sock = dir.path().join("notify.sock");
    let log = common::notify_listen(&sock);
    let mut cmd = common::clefd();
    cmd.args(["run", "--config", cfg.to_str().unwrap()]).env("NOTIFY_SOCKET", &sock);
    let mut daemon = Daemon::spawn(cmd, &dir.path().join("clefd.log"));
    let started = Instant::now();
    // Generous: a loaded machine loads the models slowly. Before the fix READY never came.
    let ready = common::notify_wait(&log, "READY=1", Duration::from_secs(60));
    eprintln!("READY after {:.2} s with the only camera unreachable", (ready - started).as_secs_f64());
    common::notify_wait(&log, "STATUS=0/1 cameras streaming", Duration::from_secs(10));
    assert!(daemon.running());
    assert!(daemon.stop(), "asked to stop: exit 0");
    common::notify_wait(&log, "STOPPING=1", Duration::from_secs(10));
}

#[test]
fn signals_during_start_up_are_answered() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = looping_config(dir.path(), &broker.url(), common::free_port());
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    // "starting" is logged after the config is read and before the models load.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("starting") {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    common::signal(daemon.pid(), "HUP");
    let clean = daemon.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(clean, "SIGTERM while starting is a clean stop:\n{text}");
    assert!(text.contains("SIGTERM: shutting down"), "{text}");
}

#[test]
fn an_invalid_config_exits_78_from_run_and_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(&cfg, "[mqtt]\nkeep_alive_s = 1\n[cameras.a]\nuri = \"file:///nonexistent.mp4\"\n").unwrap();
    let run = common::run_clefd(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(run.status.code(), Some(78), "{}", String::from_utf8_lossy(&run.stderr));
    let check = common::run_clefd(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(check.status.code(), Some(78));
}

#[test]
fn a_flood_of_idle_http_clients_never_stops_the_daemon() {
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = looping_config(dir.path(), &broker.url(), port);
    // 256 descriptors: fewer than the idle clients below, as 1024 was for 1,100 before.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=256:256", env!("CARGO_BIN_EXE_clefd"), "run", "--config", cfg.to_str().unwrap()]);
    let mut daemon = Daemon::spawn(cmd, &dir.path().join("clefd.log"));
    let before = wait_new_event(&consumer, None, Duration::from_secs(60));
    let idle: Vec<std::net::TcpStream> =
        (0..400).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() > 256, "the flood got through to the listener: {}", idle.len());
    // Events go on being numbered, spooled and delivered during the flood.
    let during = wait_new_event(&consumer, Some(before), Duration::from_secs(60));
    wait_new_event(&consumer, Some(during), Duration::from_secs(60));
    assert!(daemon.running(), "still running during the flood");
    drop(idle);
    wait_http(port, "/healthz", "/healthz answering after the flood", Duration::from_secs(60), |code, _| code == 200);
    let text = std::fs::read_to_string(dir.path().join("clefd.log")).unwrap();
    assert!(!text.contains("Too many open files"), "{text}");
    assert!(daemon.stop(), "asked to stop: exit 0");
}

#[test]
fn shutdown_with_a_refusing_broker_ends_within_the_flush_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let st = Command::new("mosquitto_passwd").args(["-b", "-c"]).arg(&pw).args(["someone", "secret"]).status();
    assert!(st.is_ok_and(|s| s.success()), "mosquitto_passwd");
    let port = common::free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n", pw.display()),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto").arg("-c").arg(&conf).stderr(Stdio::null()).spawn().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    let cfg = common::TestConfig::new(dir.path(), &format!("mqtt://127.0.0.1:{port}"), "refused")
        .with(|c| {
            c.mqtt.flush_timeout_s = 1.0;
            c.mqtt.reconnect_max_s = 600.0;
        })
        .looping_file("cam", &clip)
        .write();
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    // Refused, and events waiting in the spool.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("unreachable") && text.contains("seq=") {
            break;
        }
        assert!(Instant::now() < deadline, "never refused with events pending:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next reconnection is 600 s away; the flush gives up after 1 s. Before the fix
    // shutdown waited for the reconnection timer, past stop()'s (and systemd's) 20 s.
    let clean = daemon.stop();
    let _ = broker.kill();
    let _ = broker.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(clean, "exit 0 without waiting for the next reconnection:\n{text}");
    assert!(text.contains("they stay in the spool"), "{text}");
}

/// A daemon whose HTTP port is taken logs why and goes on without HTTP; the tests' HTTP
/// helpers then fail at once with the daemon's words, not after their timeout.
#[test]
fn a_taken_http_port_fails_the_http_helpers_with_the_daemons_words() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "taken").http(port).camera("a", "test://ball").write();
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    common::wait_log(&log, "cannot serve /metrics and /healthz", 1);
    let waited = std::panic::catch_unwind(|| {
        wait_http(port, "/healthz", "health", Duration::from_secs(60), |code, _| code == 200);
    });
    let said = waited.expect_err("no answer from a taken port");
    let said = said.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(said.contains("could not bind its HTTP port") && said.contains("in use"), "{said}");
    assert!(daemon.stop(), "the daemon goes on without HTTP and stops cleanly");
}
