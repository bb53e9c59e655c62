//! The publisher against a scripted MQTT 5 peer ([`super::peer`]) that refuses chosen
//! events for reasons that may clear: such an event is kept and sent again after a
//! reconnect with backoff, nothing is lost or renumbered, an event refused every time is
//! given up after [`MAX_REFUSALS`], and a partial quota never brings back 250 ms
//! reconnects.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::peer::{Offer, Peer, Seen};
use super::streak::MAX_REFUSALS;
use super::*;
use crate::events::{EmotionEvent, EventType};
use crate::mqtt::{BrokerUrl, Protocol};

const QUOTA_EXCEEDED: u8 = 0x97;
const UNSPECIFIED_ERROR: u8 = 0x80;

/// A publisher connected to `peer`, over MQTT 5, with its spool in a temporary folder.
struct Running {
    stats: Arc<PublishStats>,
    to: mpsc::Sender<Outgoing>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

fn start(peer: &Peer, reconnect_max: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let seq = SeqCounter::open(&dir.path().join("seq"), spool.next_seq()).unwrap();
    let cfg = PublisherConfig {
        url: BrokerUrl::parse(&format!("mqtt://127.0.0.1:{}", peer.port)).unwrap(),
        client_id: "peer-test".into(),
        prefix: "clefd".into(),
        device: "dev".into(),
        keep_alive: Duration::from_secs(30),
        credentials: None,
        flush_timeout: Duration::from_secs(1),
        tls: None,
        reconnect_max,
        protocol: Protocol::V5,
        commands: None,
        event_expiry_s: None,
        stuck_after: Duration::from_secs(3600),
    };
    let publisher = Publisher::new(cfg, seq, spool);
    let stats = publisher.stats();
    let (to, outputs) = mpsc::channel(64);
    let task = tokio::spawn(publisher.run(outputs));
    Running { stats, to, task, _dir: dir }
}

impl Running {
    async fn send(&self, events: u64) {
        for i in 0..events {
            let event = EmotionEvent::for_test("cam0", i, EventType::Update, "happy", 0.9);
            self.to.send(Outgoing::Analysis(Output::Event(Box::new(event)))).await.unwrap();
        }
    }

    /// Waits (at most a minute) until the broker's acknowledgements of `n` events reached
    /// the publisher and nothing waits in the spool.
    async fn wait_acked(&self, n: u64, peer: &Peer) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.stats.acked.load(Ordering::Relaxed) < n || self.stats.spooled.load(Ordering::Relaxed) > 0 {
            let acked = self.stats.acked.load(Ordering::Relaxed);
            assert!(
                Instant::now() < deadline,
                "{acked} of {n} acknowledged; offered {:?}",
                by_connection(&peer.seen())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The times of the connections the peer accepted.
fn connections(seen: &[Seen]) -> Vec<Instant> {
    seen.iter().filter_map(|s| if let Seen::Connected(t) = s { Some(*t) } else { None }).collect()
}

/// The waits between connections.
fn gaps(seen: &[Seen]) -> Vec<Duration> {
    connections(seen).windows(2).map(|w| w[1] - w[0]).collect()
}

/// Every offer of an event: its seq and the reason code it got.
fn offers(seen: &[Seen]) -> Vec<(u64, u8)> {
    by_connection(seen).concat()
}

/// The offers of each connection, in order: seq and reason code.
fn by_connection(seen: &[Seen]) -> Vec<Vec<(u64, u8)>> {
    let mut conns: Vec<Vec<(u64, u8)>> = Vec::new();
    for s in seen {
        match s {
            Seen::Connected(_) => conns.push(Vec::new()),
            Seen::Event { topic, seq, reason, .. } => {
                assert_eq!(topic, "clefd/dev/cam0/emotion", "events go to their camera's topic");
                if let Some(conn) = conns.last_mut() {
                    conn.push((*seq, *reason));
                }
            }
        }
    }
    conns
}

/// The seqs the peer accepted; and whether each seq always came with the same payload
/// (the same event sent again, never renumbered).
fn accepted(seen: &[Seen]) -> (BTreeSet<u64>, bool) {
    let mut payloads = std::collections::BTreeMap::new();
    let mut same = true;
    let mut accepted = BTreeSet::new();
    for s in seen {
        if let Seen::Event { seq, payload, reason, .. } = s {
            same &= payloads.entry(*seq).or_insert_with(|| payload.clone()) == payload;
            if *reason == 0 {
                accepted.insert(*seq);
            }
        }
    }
    (accepted, same)
}

/// Whether every connection offered its events in ascending seq order.
fn each_in_order(seen: &[Seen]) -> bool {
    by_connection(seen).iter().all(|c| c.windows(2).all(|w| w[0].0 < w[1].0))
}

/// The reason codes event `seq` got, offer by offer.
fn answers(seen: &[Seen], seq: u64) -> Vec<u8> {
    offers(seen).into_iter().filter(|(s, _)| *s == seq).map(|(_, r)| r).collect()
}

#[tokio::test]
async fn a_quota_refusal_keeps_the_event_until_the_broker_relents() {
    // Event 3 is refused with "quota exceeded" twice, then accepted.
    let peer = Peer::start(|o: &Offer| if o.seq == 3 && o.times < 2 { QUOTA_EXCEEDED } else { 0 });
    let run = start(&peer, Duration::from_secs(5));
    run.send(8).await;
    run.wait_acked(8, &peer).await;
    let seen = peer.seen();
    let conns = by_connection(&seen);
    let (got, same) = accepted(&seen);
    assert_eq!(got, (0..8).collect(), "every event delivered: {conns:?}");
    assert!(same, "a seq always carries the same event");
    assert!(each_in_order(&seen), "in seq order: {conns:?}");
    assert_eq!(answers(&seen, 3), [QUOTA_EXCEEDED, QUOTA_EXCEEDED, 0], "kept and sent again until accepted");
    assert_eq!(conns.len(), 3, "each refusal drops the connection once: {conns:?}");
    assert!(conns[1..].iter().all(|c| c.first().map(|o| o.0) == Some(3)), "sent again from the refused one: {conns:?}");
    // Jitter is ±20 % of 250 ms, then of 500 ms (a refusal holds the backoff).
    let waits = gaps(&seen);
    assert!(waits[0] >= Duration::from_millis(200) && waits[1] >= Duration::from_millis(400), "{waits:?}");
    assert_eq!(run.stats.acked.load(Ordering::Relaxed), 8, "each acknowledged once");
    assert_eq!(run.stats.delivery.refusals(), [], "nothing dropped");
    assert!(run.stats.delivery.failures().contains(&("quota_exceeded", 2)), "{:?}", run.stats.delivery.failures());
    run.task.abort();
}

#[tokio::test]
async fn an_event_refused_every_time_is_dropped_after_max_refusals_and_the_rest_go_on() {
    // Before the fix event 2 was sent again at the backoff cap forever, and the events
    // behind it were never acknowledged.
    let peer = Peer::start(|o: &Offer| if o.seq == 2 { UNSPECIFIED_ERROR } else { 0 });
    let run = start(&peer, Duration::from_millis(300));
    run.send(6).await;
    run.wait_acked(5, &peer).await;
    let seen = peer.seen();
    let twos = answers(&seen, 2);
    assert_eq!(twos, vec![UNSPECIFIED_ERROR; MAX_REFUSALS as usize], "offered MAX_REFUSALS times, then dropped");
    let (got, same) = accepted(&seen);
    assert_eq!(got, [0, 1, 3, 4, 5].into(), "{:?}", by_connection(&seen));
    assert!(same && each_in_order(&seen));
    assert_eq!(run.stats.acked.load(Ordering::Relaxed), 5);
    assert_eq!(run.stats.delivery.refusals(), [("unspecified_error", 1)], "the dropped event is counted by reason");
    run.task.abort();
}

#[tokio::test]
async fn a_partial_quota_backs_off_to_the_cap() {
    // Each connection's first two events are accepted, the third refused with "quota
    // exceeded". Before the fix each accepted event started the backoff over: a
    // reconnect every 250 ms for as long as the quota lasted.
    let peer = Peer::start(|o: &Offer| if o.on_connection >= 2 { QUOTA_EXCEEDED } else { 0 });
    let cap = Duration::from_secs(1);
    let run = start(&peer, cap);
    run.send(10).await;
    run.wait_acked(10, &peer).await;
    let seen = peer.seen();
    let (got, same) = accepted(&seen);
    assert_eq!(got, (0..10).collect(), "{:?}", by_connection(&seen));
    assert!(same && each_in_order(&seen));
    assert_eq!(run.stats.delivery.refusals(), [], "a partial quota drops nothing");
    let waits = gaps(&seen);
    assert!(waits.len() >= 4, "{waits:?}");
    assert!(waits.iter().all(|w| *w >= Duration::from_millis(200)), "{waits:?}");
    assert!(waits[2..].iter().all(|w| *w >= cap.mul_f64(0.8)), "the waits grow to the cap: {waits:?}");
    run.task.abort();
}

const NOT_AUTHORIZED: u8 = 0x87;

/// Waits (at most a minute) until `done` holds; `what` names it in the failure.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether delivery health names cam0's topic as refused.
fn names_cam0(stats: &PublishStats) -> bool {
    stats.delivery.summary().is_some_and(|s| s.contains("clefd/dev/cam0/emotion"))
}

#[tokio::test]
async fn a_camera_turned_off_is_no_longer_named_as_refused() {
    // The ACL denies cam0's topic; the operator disables cam0 (not removed). Before the
    // fix only CameraRemoved forgot the topic: /healthz named it until a restart.
    let peer = Peer::start(|_| NOT_AUTHORIZED);
    let run = start(&peer, Duration::from_secs(1));
    run.stats.delivery.set_stuck_after(Duration::ZERO);
    run.send(1).await;
    wait_until("cam0 named as refused", || names_cam0(&run.stats)).await;
    let off = crate::source::CameraStatus {
        camera: "cam0".into(),
        status: crate::source::CameraState::Disabled,
        fps: 0.0,
        last_error: None,
        since: String::new(),
        restarts: 0,
        dropped_fps_cap: 0,
        decoder: None,
        target_fps: None,
        health_fps: None,
    };
    run.to.send(Outgoing::Analysis(Output::CameraState(off))).await.unwrap();
    wait_until("cam0 forgotten once disabled", || !names_cam0(&run.stats)).await;
    run.task.abort();
}

/// What `p` hands over when parked (as `serve` does, without running it).
fn park(p: Publisher) -> Parked {
    let (_, outputs) = mpsc::channel(1);
    let left = (p.cfg.url.clone(), p.cfg.prefix.clone());
    let Publisher { seq, spool, stats, states, currents, retained, controls, .. } = p;
    Parked { outputs, seq, spool, stats, states, currents, retained, controls, left }
}

#[test]
fn refusals_are_forgotten_when_the_broker_or_prefix_changes() {
    // Before the fix `resume` kept them: after a prefix change the old topic gets no
    // event again, so it stayed named in /healthz for good.
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let seq = SeqCounter::open(&dir.path().join("seq"), spool.next_seq()).unwrap();
    let cfg = |url: &str, prefix: &str| PublisherConfig {
        url: BrokerUrl::parse(url).unwrap(),
        client_id: "resume-test".into(),
        prefix: prefix.into(),
        device: "dev".into(),
        keep_alive: Duration::from_secs(30),
        credentials: None,
        flush_timeout: Duration::from_secs(1),
        tls: None,
        reconnect_max: Duration::from_secs(1),
        protocol: Protocol::V5,
        commands: None,
        event_expiry_s: None,
        stuck_after: Duration::ZERO,
    };
    let p = Publisher::new(cfg("mqtt://127.0.0.1:1883", "clefd"), seq, spool);
    let stats = p.stats();
    let refuse = || stats.delivery.refused("not_authorized", Some("clefd/dev/cam0/emotion"));
    refuse();
    assert!(names_cam0(&stats));
    let mut keepalive = cfg("mqtt://127.0.0.1:1883", "clefd");
    keepalive.keep_alive = Duration::from_secs(60);
    let (p, _) = Publisher::resume(keepalive, park(p));
    assert!(names_cam0(&stats), "same broker and prefix: the refusals still hold");
    let (p, _) = Publisher::resume(cfg("mqtt://127.0.0.1:1883", "site2"), park(p));
    assert!(!names_cam0(&stats), "another prefix: the old topic is no longer named");
    refuse();
    let (_p, _) = Publisher::resume(cfg("mqtt://127.0.0.1:1884", "site2"), park(p));
    assert!(!names_cam0(&stats), "another broker: its ACL may allow the topic");
}
