//! The control connection (`mqtt.control`): commands arrive on an MQTT connection of
//! their own (client id `{client_id}-control`, a clean session every time), never on the
//! event publisher's. A command that breaks this connection (one larger than rumqttc will
//! read) costs one reconnect of it, and the clean session means the broker does not send
//! it again; the event publisher's persistent session never sees a command at all.
//!
//! Every command gets exactly one answer: one too large or arriving while the daemon's
//! bounded queue is full is refused here, on its `…/set/result`; the others are queued in
//! arrival order and answered by the daemon once checked and applied (the answers go out
//! on this connection too).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Topics;
use super::outgoing::{Command, PublishStats};
use super::properties::reply_meta;
use super::session::{self, SessionEvent, SessionOptions};
use crate::backoff::Backoff;

/// The largest command accepted: a real one is under 200 bytes. A larger one is refused
/// with an answer ("too large"), not read as JSON.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// The largest packet the control connection reads (declared to an MQTT 5 broker, which
/// then does not send larger ones). A larger one over MQTT 3.1.1 ends this connection
/// once; the clean session drops it, and nothing else is disturbed.
pub const MAX_CONTROL_PACKET: usize = 4 * 1024 * 1024;

/// Answers waiting for room in the client's queue, at most; beyond that (a storm far
/// larger than any queue) an answer is dropped with a warning.
const MAX_BACKLOG: usize = 4096;

/// Requests and events the connection queues.
const QUEUE: usize = 256;

const BACKOFF_START: Duration = Duration::from_millis(250);

/// How long a connection must stay up before it counts as working: only then does the
/// backoff start over. A broker that accepts us and at once re-sends a retained command
/// too large to read (every subscribe) would otherwise be reconnected to every 250 ms.
const STEADY: Duration = Duration::from_secs(10);

/// What the reconnections have learnt: the backoff, failures in a row, and whether the
/// "too large" warning was given since the connection last worked.
struct Reconnects {
    backoff: Backoff,
    failures: u32,
    too_large_said: bool,
}

impl Reconnects {
    /// A connection ended after being up for `up_for` (`None`: it never came up). True
    /// when a "too large" loss should be logged (the first since the link last worked).
    fn ended(&mut self, up_for: Option<Duration>, too_large: bool) -> bool {
        if up_for.is_some_and(|d| d >= STEADY) {
            self.backoff.reset();
            self.failures = 0;
            self.too_large_said = false;
        }
        self.failures += 1;
        too_large && !std::mem::replace(&mut self.too_large_said, true)
    }

    /// A command got through: the link works, a later "too large" is news again.
    fn worked(&mut self) {
        self.too_large_said = false;
    }
}

/// The ids of control links, so that each marks [`PublishStats::control_ready`] as its own.
static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// One link's mark in [`PublishStats::control_ready`]. Cleared when the link ends, however
/// it ends (its [`ControlLink`] dropped on a reload, its task aborted), and only while it
/// is still this link's: an old link that ends after a new one came up (two overlap
/// during a reload) leaves the new one's mark alone.
struct ReadyMark {
    stats: Arc<PublishStats>,
    id: u64,
}

impl ReadyMark {
    fn new(stats: Arc<PublishStats>) -> ReadyMark {
        ReadyMark { stats, id: NEXT_LINK.fetch_add(1, Ordering::Relaxed) }
    }

    fn set(&self) {
        self.stats.control_ready.store(self.id, Ordering::Relaxed);
    }

    fn clear(&self) {
        let _ = self.stats.control_ready.compare_exchange(self.id, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl Drop for ReadyMark {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The control topics' subscriptions on one connection, in the order they were asked
/// for (a broker answers them in that order). The link is ready once all are granted.
#[derive(Default)]
struct Subscriptions {
    asked: VecDeque<String>,
    granted: usize,
}

/// What one SUBACK means for the link.
#[derive(Debug, PartialEq, Eq)]
enum SubAnswer {
    /// Every subscription is granted: commands are delivered from now on.
    Ready,
    /// The broker refused the subscription to this filter: nothing arrives on it.
    Refused(String),
    /// Granted; others still wait for their answer.
    Waiting,
}

impl Subscriptions {
    /// A SUBSCRIBE to `filter` went to the client.
    fn asked(&mut self, filter: String) {
        self.asked.push_back(filter);
    }

    /// The broker answered the oldest subscription not yet answered.
    fn answered(&mut self, ok: bool) -> SubAnswer {
        let filter = self.asked.pop_front().unwrap_or_default();
        if !ok {
            return SubAnswer::Refused(filter);
        }
        self.granted += 1;
        if self.asked.is_empty() && self.granted == CONTROL_FILTERS { SubAnswer::Ready } else { SubAnswer::Waiting }
    }
}

/// The control topics subscribed to: the device's and every camera's.
const CONTROL_FILTERS: usize = 2;

/// The running control connection; dropping it closes the connection.
pub struct ControlLink {
    replies: mpsc::Sender<(String, Vec<u8>)>,
}

impl ControlLink {
    /// Connects as `{event client id}-control` with a clean session, subscribes to the
    /// control topics on every connect, and hands each command to `commands`.
    pub fn start(
        events: &SessionOptions,
        topics: Topics,
        commands: mpsc::Sender<Command>,
        reconnect_max: Duration,
        stats: Arc<PublishStats>,
    ) -> ControlLink {
        let opts = SessionOptions {
            client_id: format!("{}-control", events.client_id),
            last_will: None,
            persistent: false,
            max_incoming: MAX_CONTROL_PACKET,
            inflight: 32,
            ..events.clone()
        };
        let (replies, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(opts, topics, commands, rx, reconnect_max, stats));
        ControlLink { replies }
    }

    /// Queues an answer on a control result topic; false when it cannot be queued.
    pub fn reply(&self, topic: String, payload: Vec<u8>) -> bool {
        self.replies.try_send((topic, payload)).is_ok()
    }
}

/// The refusal of a command, as its answer.
fn refusal(reason: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ok": false, "error": reason })).unwrap_or_default()
}

/// Answers waiting to be published, and how many were refused as busy in a row.
struct Answers {
    backlog: VecDeque<(String, Vec<u8>)>,
    busy_in_a_row: u64,
}

impl Answers {
    fn push(&mut self, topic: String, payload: Vec<u8>) {
        if self.backlog.len() >= MAX_BACKLOG {
            tracing::warn!(topic, "an answer to a control command was dropped: too many waiting to be sent");
            return;
        }
        self.backlog.push_back((topic, payload));
    }

    /// Hands waiting answers to the client while its queue has room.
    fn flush(&mut self, client: &session::SessionClient, topics: &Topics) {
        while let Some((topic, payload)) = self.backlog.front() {
            if !client.publish(topic.clone(), false, payload.clone(), &reply_meta(topics, topic)) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// A message on a control topic: refused here (too large, busy) or queued for the daemon.
    fn on_command(&mut self, topics: &Topics, commands: &mpsc::Sender<Command>, topic: &str, payload: Vec<u8>) {
        let Some(camera) = topics.set_target(topic) else { return };
        let answer_to = topics.set_result(camera.as_deref());
        if payload.len() > MAX_COMMAND_BYTES {
            let reason = format!("too large: {} bytes; a command is at most {MAX_COMMAND_BYTES} bytes", payload.len());
            tracing::warn!(topic, bytes = payload.len(), "control command refused: too large");
            return self.push(answer_to, refusal(&reason));
        }
        match commands.try_send(Command { camera, payload }) {
            Ok(()) => self.busy_in_a_row = 0,
            Err(TrySendError::Full(_)) => {
                self.busy_in_a_row += 1;
                if self.busy_in_a_row.is_power_of_two() {
                    tracing::warn!(
                        topic,
                        refused = self.busy_in_a_row,
                        "control commands refused: busy with earlier ones"
                    );
                }
                self.push(answer_to, refusal("busy: too many commands waiting; send it again later"));
            }
            Err(TrySendError::Closed(_)) => self.push(answer_to, refusal("clefd is stopping")),
        }
    }
}

async fn run(
    opts: SessionOptions,
    topics: Topics,
    commands: mpsc::Sender<Command>,
    mut replies: mpsc::Receiver<(String, Vec<u8>)>,
    reconnect_max: Duration,
    stats: Arc<PublishStats>,
) {
    let salt = opts.client_id.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut re =
        Reconnects { backoff: Backoff::new(BACKOFF_START, reconnect_max, salt), failures: 0, too_large_said: false };
    let mut answers = Answers { backlog: VecDeque::new(), busy_in_a_row: 0 };
    let ready = ReadyMark::new(stats.clone());
    let mut refusal_said = false;
    loop {
        let mut s = session::open(&opts, QUEUE);
        let mut up = false;
        let mut up_since = None;
        let mut subs = Subscriptions::default();
        let error = loop {
            if up {
                answers.flush(&s.client, &topics);
            }
            tokio::select! {
                ev = s.events.recv() => match ev {
                    Some(Ok(SessionEvent::Connected)) => {
                        up = true;
                        up_since = Some(tokio::time::Instant::now());
                        subs = Subscriptions::default();
                        for filter in [topics.set(None), topics.set(Some("+"))] {
                            if s.client.subscribe(filter.clone()) {
                                subs.asked(filter);
                            } else {
                                tracing::warn!(topic = %filter, "cannot subscribe to the control topic");
                            }
                        }
                    }
                    Some(Ok(SessionEvent::Subscribed { ok })) => match subs.answered(ok) {
                        SubAnswer::Ready => {
                            refusal_said = false;
                            stats.control_subscribes.fetch_add(1, Ordering::Relaxed);
                            ready.set();
                        }
                        SubAnswer::Refused(filter) => {
                            if !std::mem::replace(&mut refusal_said, true) {
                                tracing::warn!(broker = %opts.url, topic = %filter, "the MQTT broker refused the subscription to a control topic: no command on it reaches clefd (clefd_mqtt_control_ready stays 0). Let the broker's ACL allow this client to read it (mosquitto: `topic read <prefix>/<device>/#` for this user); logged once until control works");
                            }
                        }
                        SubAnswer::Waiting => {}
                    },
                    Some(Ok(SessionEvent::Received { topic, payload })) => {
                        re.worked();
                        answers.on_command(&topics, &commands, &topic, payload);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e,
                    None => break session::SessionError { permanent: false, message: "the connection task ended".into(), reason: "other" },
                },
                reply = replies.recv() => match reply {
                    Some((topic, payload)) => answers.push(topic, payload),
                    None => {
                        s.poller.abort();
                        return;
                    }
                },
            }
        };
        s.poller.abort();
        ready.clear();
        let too_large = error.reason == session::TOO_LARGE;
        let say_too_large = re.ended(up_since.map(|t| t.elapsed()), too_large);
        if say_too_large {
            // Over MQTT 3.1.1 nothing declares our limit to the broker, and the client reads
            // neither the topic nor the payload of a larger packet: it cannot be answered.
            // The clean session means the broker does not send it again, unless it is
            // retained: then it comes on every subscribe, and is said once.
            tracing::warn!(broker = %opts.url, error = %error.message, limit_bytes = MAX_CONTROL_PACKET, "a control command larger than clefd reads was dropped unanswered (its topic cannot be read); the control connection reconnects, events are not affected. If it comes back on every reconnect it is retained: clear it with `mosquitto_pub -r -n -t <prefix>/<device>/set` (logged once until the link works)");
        } else if too_large {
            tracing::debug!(broker = %opts.url, attempts = re.failures, "a control command larger than clefd reads came again");
        } else if up || re.failures.is_power_of_two() {
            tracing::warn!(broker = %opts.url, error = %error.message, attempts = re.failures, "MQTT control connection lost; events are not affected");
        }
        let wake = tokio::time::Instant::now() + re.backoff.next_delay();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                reply = replies.recv() => match reply {
                    Some((topic, payload)) => answers.push(topic, payload),
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnects() -> Reconnects {
        Reconnects {
            backoff: Backoff::new(BACKOFF_START, Duration::from_secs(30), 1),
            failures: 0,
            too_large_said: false,
        }
    }

    #[test]
    fn a_retained_command_too_large_backs_off_and_is_said_once() {
        // The broker accepts us and re-sends the retained command at once, every time.
        // Before the fix each connect reset the backoff (250 ms for ever) and each loss
        // was a WARN.
        let mut re = reconnects();
        let mut said = 0;
        for _ in 0..8 {
            if re.ended(Some(Duration::from_millis(5)), true) {
                said += 1;
            }
            re.backoff.next_delay();
        }
        assert_eq!(said, 1, "said once, not once per reconnect");
        assert!(re.backoff.step() > BACKOFF_START * 8, "the backoff grows: {:?}", re.backoff.step());
        assert_eq!(re.failures, 8);
        // A connection that stays up a while works: the backoff starts over, and a later
        // oversized command is news again.
        assert!(re.ended(Some(STEADY), true));
        assert_eq!(re.failures, 1);
        assert_eq!(re.backoff.step(), BACKOFF_START);
        re.worked();
        assert!(re.ended(None, true), "a command got through since: said again");
    }
}

#[cfg(test)]
mod ready_tests {
    use super::*;
    use crate::mqtt::BrokerUrl;
    use crate::mqtt::publisher::peer::Peer;

    #[test]
    fn the_link_is_ready_only_once_both_subscriptions_are_granted() {
        let mut subs = Subscriptions::default();
        subs.asked("clefd/dev/set".into());
        subs.asked("clefd/dev/+/set".into());
        assert_eq!(subs.answered(true), SubAnswer::Waiting);
        assert_eq!(subs.answered(false), SubAnswer::Refused("clefd/dev/+/set".into()), "the ACL denies …/+/set");
        let mut subs = Subscriptions::default();
        subs.asked("clefd/dev/set".into());
        subs.asked("clefd/dev/+/set".into());
        assert_eq!(subs.answered(false), SubAnswer::Refused("clefd/dev/set".into()));
        assert_eq!(subs.answered(true), SubAnswer::Waiting, "one refused: never ready on this connection");
        let mut subs = Subscriptions::default();
        subs.asked("clefd/dev/set".into());
        subs.asked("clefd/dev/+/set".into());
        assert_eq!(subs.answered(true), SubAnswer::Waiting);
        assert_eq!(subs.answered(true), SubAnswer::Ready);
    }

    #[test]
    fn an_old_link_that_ends_after_a_new_one_came_up_leaves_its_mark() {
        let stats = Arc::new(PublishStats::default());
        let (old, new) = (ReadyMark::new(stats.clone()), ReadyMark::new(stats.clone()));
        old.set();
        new.set();
        drop(old);
        assert_eq!(stats.control_ready.load(Ordering::Relaxed), new.id, "the old link cleared the new one's mark");
        drop(new);
        assert!(!stats.control_is_ready(), "the last link ended: not ready");
    }

    /// Waits (at most a minute) until `stats` says `ready`.
    async fn wait_ready(stats: &PublishStats, ready: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while stats.control_is_ready() != ready {
            assert!(std::time::Instant::now() < deadline, "control_ready never became {ready}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_link_that_is_dropped_is_no_longer_ready() {
        // A reload of [mqtt] drops the link; before the fix the gauge stayed 1 while the
        // next link connected (or never could).
        let peer = Peer::start(|_| 0);
        let opts = SessionOptions {
            protocol: session::Protocol::V5,
            url: BrokerUrl::parse(&format!("mqtt://127.0.0.1:{}", peer.port)).unwrap(),
            client_id: "ready-test".into(),
            keep_alive: Duration::from_secs(30),
            credentials: None,
            tls: None,
            last_will: None,
            inflight: 8,
            persistent: false,
            max_incoming: 64 * 1024,
        };
        let stats = Arc::new(PublishStats::default());
        let (commands, _rx) = mpsc::channel(4);
        let link =
            ControlLink::start(&opts, Topics::new("clefd", "dev"), commands, Duration::from_secs(1), stats.clone());
        wait_ready(&stats, true).await;
        assert_eq!(stats.control_subscribes.load(Ordering::Relaxed), 1);
        drop(link);
        wait_ready(&stats, false).await;
    }
}
