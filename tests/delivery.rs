//! MQTT delivery that loses nothing: a broker outage in the middle of a run, a SIGKILL
//! while events wait in the spool, and the spool's bound. All against real mosquitto
//! brokers; consumers use persistent sessions on a persistent broker, as a dashboard would.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Broker, Consumer, Daemon, TestConfig, seqs};

/// First-time-seen sequence numbers, in arrival order.
fn first_seen(seqs: &[u64]) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

/// `cameras` looping cameras, a heartbeat every 0.2 s, and what `mqtt` sets.
fn config(
    dir: &std::path::Path,
    broker: &Broker,
    device: &str,
    cameras: usize,
    mqtt: impl FnOnce(&mut TestConfig),
) -> TestConfig {
    let clip = dir.join("clip.mp4");
    if !clip.exists() {
        common::astronaut_clip(&clip, 4.0, 15);
    }
    let mut cfg = TestConfig::new(dir, &broker.url(), device).with(|c| c.events.heartbeat_s = 0.2);
    for i in 0..cameras {
        cfg = cfg.looping_file(&format!("cam{i}"), &clip);
    }
    mqtt(&mut cfg);
    cfg
}

/// The daemon's next seq (its state file), 0 before the first event.
fn next_seq(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join("state/seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Waits until the daemon has numbered (and so spooled) `n` more events.
fn wait_spooled(dir: &std::path::Path, n: u64) {
    let target = next_seq(dir) + n;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next_seq(dir) < target {
        assert!(std::time::Instant::now() < deadline, "no events were spooled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count_events(c: &Consumer, device: &str) -> usize {
    seqs(&c.messages(), device).len()
}

#[test]
fn a_broker_outage_loses_nothing_and_keeps_order() {
    outage("outage", "3.1.1", "MQTT 3.1.1");
}

#[test]
fn a_broker_outage_loses_nothing_over_mqtt_5() {
    outage("outage5", "5", "MQTT 5");
}

fn outage(device: &str, version: &str, protocol: &str) {
    let mut broker = Broker::start_persistent();
    let consumer = Consumer::start_persistent(broker.port, "dashboard");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &broker, device, 1, |c| c.config.mqtt.protocol = version.into()).write();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("a few events", Duration::from_secs(30), |m| seqs(m, device).len() >= 5);
    broker.stop();
    wait_spooled(dir.path(), 5);
    broker.start_again();
    let before = count_events(&consumer, device);
    consumer.wait_for("events after the outage", Duration::from_secs(30), |m| seqs(m, device).len() >= before + 10);
    let log = || std::fs::read_to_string(dir.path().join("clefd.log")).unwrap_or_default();
    assert!(daemon.stop(), "{}", log());
    consumer.wait_for("offline", Duration::from_secs(10), |m| {
        m.iter().any(|x| x.topic == format!("clefd/{device}/availability") && x.body == "offline" && !x.retained)
    });
    let all = seqs(&consumer.messages(), device);
    let first = first_seen(&all);
    let last: u64 = std::fs::read_to_string(dir.path().join("state/seq")).unwrap().trim().parse::<u64>().unwrap() - 1;
    assert_eq!(
        first,
        (0..=last).collect::<Vec<_>>(),
        "every seq from 0 to {last}, in order (duplicates allowed)\n{}",
        log()
    );
    assert!(log().contains("MQTT broker unreachable; events go to the spool"), "{}", log());
    assert!(log().contains(protocol), "the log names the protocol ({protocol}):\n{}", log());
}

#[test]
fn spooled_events_survive_sigkill() {
    let mut broker = Broker::start_persistent();
    let consumer = Consumer::start_persistent(broker.port, "dashboard");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(dir.path(), &broker, "killed", 1, |_| {}).http(port).write();
    let mut daemon = Daemon::start(&cfg, &dir.path().join("clefd1.log"));
    consumer.wait_for("a few events", Duration::from_secs(30), |m| seqs(m, "killed").len() >= 3);
    broker.stop();
    common::wait_metric(port, "clefd_spool_events", "events spooled", Duration::from_secs(60), |n| n >= 5.0);
    // What the spool holds for sure: the events acknowledged plus those waiting, synced
    // (the gauge follows each fsync; with the broker down nothing more is acknowledged).
    // A group numbered in `state/seq` but not yet appended when SIGKILL lands is lost
    // with its numbers: a gap, not a spooled event.
    let (_, exposition) = common::http_get(port, "/metrics");
    let acked = common::metrics::value(&exposition, "clefd_mqtt_events_acked_total").expect("acked in /metrics");
    let waiting = common::metrics::value(&exposition, "clefd_spool_events").expect("spooled in /metrics");
    daemon.kill();
    let spooled_up_to = (acked + waiting) as u64 - 1;
    let received_before = seqs(&consumer.messages(), "killed").into_iter().max().unwrap();
    assert!(spooled_up_to > received_before + 3, "events were spooled while the broker was down");
    broker.start_again();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd2.log"));
    consumer.wait_for("the spooled events", Duration::from_secs(30), |m| {
        first_seen(&seqs(m, "killed")).len() as u64 > spooled_up_to + 1
    });
    assert!(daemon.stop());
    let first = first_seen(&seqs(&consumer.messages(), "killed"));
    assert_eq!(
        &first[..=spooled_up_to as usize],
        &(0..=spooled_up_to).collect::<Vec<_>>()[..],
        "nothing lost across SIGKILL"
    );
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_exactly_what_is_missing() {
    let mut broker = Broker::start_persistent();
    let consumer = Consumer::start_persistent(broker.port, "dashboard");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // Retries at most a second apart, so the daemon is back within the 3 s the test allows
    // after the broker returns (with the default 30 s cap, the backoff after an 8 s outage
    // could put the next try after the daemon is stopped).
    let cfg = config(dir.path(), &broker, "bounded", 4, |c| {
        c.config.mqtt.spool_max_mb = 0.1;
        c.config.mqtt.reconnect_max_s = 1.0;
    })
    .http(port)
    .write();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("events", Duration::from_secs(30), |m| seqs(m, "bounded").len() >= 5);
    broker.stop();
    let spool = dir.path().join("state/spool");
    let log_path = dir.path().join("clefd.log");
    let dropped_now = || common::metric(port, "clefd_mqtt_events_dropped_total").unwrap_or(0.0);
    // Sample the spool's size until it has overflowed (and a while after).
    let mut max_bytes = 0;
    let mut overflowed_at = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while overflowed_at.is_none_or(|seq| next_seq(dir.path()) < seq + 20) {
        assert!(std::time::Instant::now() < deadline, "the spool never overflowed");
        std::thread::sleep(Duration::from_millis(100));
        let bytes: u64 =
            std::fs::read_dir(&spool).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        max_bytes = max_bytes.max(bytes);
        if overflowed_at.is_none() && dropped_now() > 0.0 {
            overflowed_at = Some(next_seq(dir.path()));
        }
    }
    assert!(max_bytes <= 110 * 1024, "the spool stays within its bound: {max_bytes} bytes");
    broker.start_again();
    common::wait_metric(
        port,
        "clefd_mqtt_connects_total",
        "a connection after the outage",
        Duration::from_secs(60),
        |n| n >= 2.0,
    );
    // Drained to a few events, far below its bound: nothing more can be dropped.
    common::wait_metric(port, "clefd_spool_events", "the spool drained", Duration::from_secs(60), |n| n <= 10.0);
    let dropped = dropped_now();
    assert!(daemon.stop());
    consumer.wait_for("offline", Duration::from_secs(10), |m| {
        m.iter().any(|x| x.topic == "clefd/bounded/availability" && x.body == "offline" && !x.retained)
    });
    let log = std::fs::read_to_string(&log_path).unwrap();
    let last: u64 = std::fs::read_to_string(dir.path().join("state/seq")).unwrap().trim().parse::<u64>().unwrap() - 1;
    let received: BTreeSet<u64> = seqs(&consumer.messages(), "bounded").into_iter().collect();
    let missing = (0..=last).filter(|s| !received.contains(s)).count() as f64;
    assert!(dropped > 0.0, "the outage overflowed the spool\n{log}");
    // Exact: events that were in flight when the broker went away are kept and sent again
    // (the broker may have them), so only events that never left are dropped and counted.
    assert_eq!(dropped, missing, "clefd_mqtt_events_dropped_total equals the events missing at the consumer\n{log}");
}

#[test]
fn a_sequence_file_behind_the_spool_never_makes_numbers_repeat() {
    // A restored or moved state_dir: the spool has had 0..=99 acknowledged, the sequence
    // file says 0 (and, for good measure, is torn). Before the fix events went out as
    // seq 0, 1, ... and the spool took them for acknowledged: never published.
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &broker, "restored", 1, |_| {}).write();
    std::fs::create_dir_all(dir.path().join("state/spool")).unwrap();
    std::fs::write(dir.path().join("state/spool/acked"), "100\n").unwrap();
    std::fs::write(dir.path().join("state/seq"), "").unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("events after the spool's number", Duration::from_secs(60), |m| seqs(m, "restored").len() >= 3);
    assert!(daemon.stop());
    let all = seqs(&consumer.messages(), "restored");
    assert!(all.iter().all(|s| *s >= 100), "numbers continue after the spool's: {all:?}");
    assert_eq!(first_seen(&all)[..3], [100, 101, 102]);
}

/// The series of `name` in an exposition, whatever their labels, summed.
fn sum_series(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The config of a delivery-watch test, `cameras` cameras of `device` over `protocol`:
/// delivery is stuck after 3 s, reconnects wait at most 1 s. Written; and its HTTP port.
fn watched(
    dir: &std::path::Path,
    broker: &Broker,
    device: &str,
    cameras: usize,
    protocol: &str,
) -> (std::path::PathBuf, u16) {
    let port = common::free_port();
    let cfg = config(dir, broker, device, cameras, |c| {
        c.config.mqtt.protocol = protocol.into();
        c.config.mqtt.delivery_stuck_s = 3.0;
        c.config.mqtt.reconnect_max_s = 1.0;
    })
    .http(port)
    .write();
    (cfg, port)
}

/// Lines of the log that say the broker is unreachable.
fn unreachable_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("MQTT broker unreachable")).collect()
}

#[test]
fn a_stuck_delivery_is_unhealthy_however_the_connection_flaps() {
    // A broker that takes the connection and drops it at the first event (its packet
    // limit is below any event's size): connected every few hundred ms, nothing ever
    // acknowledged. Before the fix /healthz said ok throughout, because each connection
    // restarted its "unreachable for a minute" clock.
    let mut broker = Broker::start_with("max_packet_size 300\n");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = watched(dir.path(), &broker, "stuck", 1, "3.1.1");
    let log_path = dir.path().join("clefd.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let daemon = Daemon::start(&cfg, &log_path);
    common::wait_http(port, "/healthz", "a stuck delivery in /healthz", Duration::from_secs(90), |code, body| {
        code == 503 && body.contains("acknowledged no event")
    });
    common::wait_metric(
        port,
        "clefd_mqtt_connects_total",
        "connections that come and go",
        Duration::from_secs(60),
        |n| n >= 3.0,
    );
    assert_eq!(common::metric(port, "clefd_mqtt_delivery_stuck"), Some(1.0), "the gauge says so too");
    assert_eq!(common::metric(port, "clefd_mqtt_events_acked_total"), Some(0.0), "nothing got through");
    // Every failure counted, each reason logged once: three more flaps, no new line
    // (unless a reason not seen before turns up).
    let failures = || {
        let (_, exposition) = common::http_get(port, "/metrics");
        let reasons = exposition.lines().filter(|l| l.starts_with("clefd_mqtt_connect_failures_total{")).count();
        (sum_series(&exposition, "clefd_mqtt_connect_failures_total"), reasons)
    };
    let (logged, (before, reasons)) = (unreachable_lines(&log()).len(), failures());
    assert!(logged >= 1, "the failure is logged:\n{}", log());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while failures().0 < before + 3.0 {
        assert!(std::time::Instant::now() < deadline, "the connection stopped flapping: {:?}", failures());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (logged_after, (_, reasons_after)) = (unreachable_lines(&log()).len(), failures());
    assert!(
        logged_after - logged <= reasons_after - reasons,
        "the same failure is not logged again: {logged} -> {logged_after} lines\n{}",
        log()
    );

    // The broker gone: a new reason, logged once however often it repeats.
    broker.stop();
    let refused = "clefd_mqtt_connect_failures_total{reason=\"connection_refused\"}";
    common::wait_metric(port, refused, "refused connections", Duration::from_secs(60), |n| n >= 3.0);
    let text = log();
    let said: Vec<&str> = unreachable_lines(&text).into_iter().filter(|l| l.contains("connection_refused")).collect();
    assert_eq!(said.len(), 1, "a refused connection is logged once:\n{text}");
    let (code, body) = common::http_get(port, "/healthz");
    assert!(code == 503 && body.contains("Connection refused"), "still stuck, with the last error: {body}");

    // A broker that takes events: delivery recovers, and so does health.
    broker.start_again_with("");
    common::wait_http(port, "/healthz", "health back to ok", Duration::from_secs(60), |code, _| code == 200);
    common::wait_metric(port, "clefd_mqtt_events_acked_total", "events acknowledged", Duration::from_secs(60), |n| {
        n > 0.0
    });
    assert_eq!(common::metric(port, "clefd_mqtt_delivery_stuck"), Some(0.0));
    assert!(log().contains("MQTT delivery works again"), "recovery is logged:\n{}", log());
    assert!(daemon.stop(), "{}", log());
}

#[test]
fn numbers_a_kill_took_before_spooling_are_counted_at_the_next_start() {
    // A SIGKILL between making `seq` durable and spooling the events leaves numbers that
    // no spool holds: a gap consumers see. Before the fix nobody counted it. What such a
    // kill leaves is made here exactly: `state/seq` five numbers ahead of the spool.
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(dir.path(), &broker, "gap", 1, |_| {}).http(port).write();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd1.log"));
    consumer.wait_for("a few events", Duration::from_secs(60), |m| seqs(m, "gap").len() >= 3);
    assert!(daemon.stop());
    let next = next_seq(dir.path());
    std::fs::write(dir.path().join("state/seq"), format!("{}\n", next + 5)).unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd2.log"));
    common::wait_metric(port, "clefd_events_lost_total", "the gap counted", Duration::from_secs(60), |n| n > 0.0);
    assert_eq!(common::metric(port, "clefd_events_lost_total"), Some(5.0), "exactly the numbers no spool holds");
    consumer
        .wait_for("events after the gap", Duration::from_secs(60), |m| seqs(m, "gap").iter().any(|s| *s >= next + 5));
    assert!(daemon.stop());
    let received: BTreeSet<u64> = seqs(&consumer.messages(), "gap").into_iter().collect();
    let last = *received.last().expect("events arrived");
    let missing: Vec<u64> = (0..=last).filter(|s| !received.contains(s)).collect();
    assert_eq!(missing, (next..next + 5).collect::<Vec<_>>(), "the gap consumers see is the one counted");
    // Counted once: the next start counts nothing.
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd3.log"));
    common::wait_metric(port, "clefd_mqtt_connects_total", "connected", Duration::from_secs(60), |n| n >= 1.0);
    assert_eq!(common::metric(port, "clefd_events_lost_total"), Some(0.0), "not counted again");
    assert!(daemon.stop());
}

/// A daemon started with `NOTIFY_SOCKET`, as systemd starts it; what it tells systemd.
fn start_notified(cfg: &std::path::Path, dir: &std::path::Path, log: &std::path::Path) -> (Daemon, common::NotifyLog) {
    let sock = dir.join("notify.sock");
    let notify = common::notify_listen(&sock);
    let mut cmd = common::clefd();
    cmd.args(["run", "--config", cfg.to_str().unwrap()]).env("NOTIFY_SOCKET", &sock);
    (Daemon::spawn(cmd, log), notify)
}

/// The `STATUS=` lines systemd heard from `from` on.
fn statuses(notify: &common::NotifyLog, from: usize) -> Vec<String> {
    let said = notify.lock().unwrap();
    said[from.min(said.len())..].iter().filter(|(_, m)| m.contains("STATUS=")).map(|(_, m)| m.clone()).collect()
}

#[test]
fn a_broker_that_refuses_every_event_is_unhealthy_and_says_so() {
    // mosquitto's ACL denies the event topic: over MQTT 5 it acknowledges each event with
    // "not authorized" (reason 0x87). Before the fix the refusal counted as delivery:
    // /healthz said ok, nothing was counted, STATUS= said nothing, no event ever arrived.
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite #\ntopic deny clefd/+/+/emotion\n").unwrap();
    let mut broker = Broker::start_with(&format!("acl_file {}\n", acl.display()));
    let (cfg, port) = watched(dir.path(), &broker, "denied", 1, "5");
    let log_path = dir.path().join("clefd.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (daemon, notify) = start_notified(&cfg, dir.path(), &log_path);
    common::wait_http(port, "/healthz", "refused events in /healthz", Duration::from_secs(90), |code, body| {
        code == 503 && body.contains("refused every event") && body.contains("not_authorized")
    });
    let refused = "clefd_mqtt_events_refused_total{reason=\"not_authorized\"}";
    common::wait_metric(port, refused, "refusals counted", Duration::from_secs(60), |n| n >= 10.0);
    assert_eq!(common::metric(port, "clefd_mqtt_events_acked_total"), Some(0.0), "a refusal is no delivery");
    assert_eq!(common::metric(port, "clefd_mqtt_delivery_stuck"), Some(1.0), "the gauge says so too");
    // Refused events leave the spool (a re-send would be refused again and hold back
    // everything behind it): what waits is at most the window in flight.
    let waiting = common::metric(port, "clefd_spool_events").expect("spool depth");
    assert!(waiting <= 64.0, "refused events do not pile up in the spool: {waiting}");
    let said = log();
    let lines = said.lines().filter(|l| l.contains("refuses our events")).count();
    assert_eq!(lines, 1, "the refusal is logged once, not once per event:\n{said}");
    common::notify_wait(
        &notify,
        "events are not delivered: the MQTT broker refuses every event on clefd/denied/cam0/emotion (not_authorized)",
        Duration::from_secs(30),
    );

    // The broker gone: systemd hears that it is unreachable.
    broker.stop();
    common::notify_wait(&notify, "events are not delivered: the MQTT broker is unreachable", Duration::from_secs(60));

    // A broker that takes events: health and the status line recover.
    let cured = notify.lock().unwrap().len();
    broker.start_again_with("");
    common::wait_http(port, "/healthz", "health back to ok", Duration::from_secs(60), |code, _| code == 200);
    common::wait_metric(port, "clefd_mqtt_events_acked_total", "events accepted", Duration::from_secs(60), |n| n > 0.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !statuses(&notify, cured).iter().any(|m| !m.contains("not delivered")) {
        assert!(std::time::Instant::now() < deadline, "STATUS= never cleared: {:?}", statuses(&notify, cured));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.stop(), "{}", log());
}

#[test]
fn a_camera_whose_every_event_is_refused_is_named_while_the_others_deliver() {
    // mosquitto's ACL denies cam1's event topic only. Before the fix cam0's accepted
    // events stopped the one refusal clock: /healthz said ok and STATUS= said nothing
    // while every event of cam1 was refused.
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite #\ntopic deny clefd/+/cam1/emotion\n").unwrap();
    let broker = Broker::start_with(&format!("acl_file {}\n", acl.display()));
    let consumer = Consumer::start(broker.port);
    let (cfg, port) = watched(dir.path(), &broker, "partial", 2, "5");
    let log_path = dir.path().join("clefd.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (daemon, notify) = start_notified(&cfg, dir.path(), &log_path);
    let body =
        common::wait_http(port, "/healthz", "cam1's refusals in /healthz", Duration::from_secs(90), |code, body| {
            code == 503 && body.contains("every event on clefd/partial/cam1/emotion (not_authorized)")
        });
    assert!(!body.contains("cam0/emotion"), "cam0 is delivered, not named: {body}");
    common::notify_wait(
        &notify,
        "events are not delivered: the MQTT broker refuses every event on clefd/partial/cam1/emotion (not_authorized)",
        Duration::from_secs(30),
    );
    // cam0's events go on arriving, acknowledged, while cam1's are refused and counted.
    let cam0 = |m: &[common::Received]| m.iter().filter(|m| m.topic.ends_with("/partial/cam0/emotion")).count();
    let before = (cam0(&consumer.messages()), common::metric(port, "clefd_mqtt_events_acked_total").unwrap_or(0.0));
    consumer.wait_for("more of cam0's events", Duration::from_secs(60), |m| cam0(m) >= before.0 + 3);
    common::wait_metric(
        port,
        "clefd_mqtt_events_acked_total",
        "cam0's events acknowledged",
        Duration::from_secs(60),
        |n| n > before.1,
    );
    let refused = "clefd_mqtt_events_refused_total{reason=\"not_authorized\"}";
    common::wait_metric(port, refused, "cam1's refusals counted", Duration::from_secs(60), |n| n >= 3.0);
    // No check that the consumer gets none of cam1's events: the ACL's deny applies to its
    // reads too, so that could not fail. The refusals counted above are the proof.
    let (code, body) = common::http_get(port, "/healthz");
    assert!(code == 503 && body.contains("cam1/emotion"), "still named while it lasts: {body}");
    assert!(daemon.stop(), "{}", log());
}

#[test]
fn a_command_over_4_mb_under_mqtt_3_never_cuts_the_event_connection() {
    // Under MQTT 3.1.1 nothing tells the broker how much clefd reads: a 5 MB command reaches
    // the control connection, which can read neither it nor its topic (so it cannot be
    // answered) and reconnects. The event connection never sees a command: it stays up,
    // events keep arriving, and the next command gets its answer.
    let broker = Broker::start();
    // An MQTT 5 consumer declares its own 1 MB limit, so the broker keeps the 5 MB from it.
    let consumer = common::Consumer5::start(broker.port, "clefd/big/#", None);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = config(dir.path(), &broker, "big", 1, |c| c.config.mqtt.control = true).http(port).write();
    let log_path = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log_path);
    let events = |m: &[common::Received5]| -> Vec<u64> {
        m.iter().filter(|x| x.topic.ends_with("/emotion")).filter_map(|x| x.body["seq"].as_u64()).collect()
    };
    consumer.wait_for("a few events", Duration::from_secs(60), |m| events(m).len() >= 3);
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!(r#"{{"fps": 5, "pad": "{}"}}"#, "x".repeat(5 << 20))).unwrap();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", "clefd/big/cam0/set", "-f"])
        .arg(&big)
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    common::wait_log(&log_path, "a control command larger than clefd reads was dropped unanswered", 1);
    let top = events(&consumer.messages()).into_iter().max().unwrap_or(0);
    consumer.wait_for("5 new events after the 5 MB command", Duration::from_secs(60), |m| {
        events(m).into_iter().filter(|&s| s > top).count() >= 5
    });
    assert_eq!(common::metric(port, "clefd_mqtt_connects_total"), Some(1.0), "the event connection was never cut");
    // Control works again: the next command gets exactly one answer (the 5 MB one none).
    let answers = |m: &[common::Received5]| -> Vec<serde_json::Value> {
        m.iter().filter(|x| x.topic == "clefd/big/cam0/set/result").map(|x| x.body.clone()).collect()
    };
    consumer.publish("clefd/big/cam0/set", br#"{"fps": 5}"#);
    consumer.wait_for("the answer to the next command", Duration::from_secs(60), |m| !answers(m).is_empty());
    let said = answers(&consumer.messages());
    assert_eq!(said.len(), 1, "one answer: {said:?}");
    assert_eq!(said[0]["ok"], true, "{said:?}");
    assert!(daemon.stop());
}
