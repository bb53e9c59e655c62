//! Delivers events so that none is lost silently.
//!
//! Every event gets the next per-device `seq`, is appended to the on-disk [`Spool`] and
//! fsync'd (one fsync per group of events that arrive together), and only then is sent,
//! QoS 1. It leaves the spool when the broker's PUBACK for it arrives. While the broker
//! is away events keep going to the spool (inference never waits on the network); on
//! every (re)connection everything unacknowledged is sent again in `seq` order, at most
//! [`WINDOW`] at a time. A consumer may therefore see an event twice after a reconnect or
//! a crash, and de-duplicates by `seq`; it never sees a gap the spool could have held.
//!
//! Each connection uses a fresh MQTT client state, so the spool is the only source of
//! retransmissions and PUBACKs map exactly to sequence numbers. The session itself is
//! persistent (`clean_session = false`). Reconnects back off exponentially (with jitter,
//! capped); `availability` is `online` (retained) on every connect, and `offline` is both
//! the last will and the last message of a clean shutdown.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::control_link::ControlLink;
use super::properties::{Kind, Meta, event_meta, remaining_expiry, reply_meta};
use super::session::{self, Session, SessionEvent, SessionOptions};
use super::spool::Spool;
use super::{BrokerUrl, Topics};
use crate::events::seq::SeqCounter;
use crate::pipeline::Output;

#[cfg(test)]
pub(super) mod peer;
#[cfg(test)]
mod peer_tests;
mod retry;
mod spooling;
mod streak;

use retry::Retry;
use streak::{Streak, Verdict};

pub use super::outgoing::{Command, Outgoing, PublishStats, PublisherConfig, TlsFiles};

/// Most events sent but not yet acknowledged.
pub const WINDOW: usize = 64;

/// The largest event (topic and payload) sent: far above any real event (about 2 KB), far
/// below what brokers accept (mosquitto: 256 MB; many set much less). One that is larger
/// would be refused by the broker and re-sent forever, blocking every event after it.
pub const MAX_EVENT_BYTES: usize = 128 * 1024;

/// A message we asked the client to send, in order, until its packet id is known.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Event(u64),
    Other,
}

/// What an acknowledgement means for the connection.
enum Acked {
    /// The broker accepted event `seq`: delivery moves.
    Accepted(u64),
    /// Anything else that needs nothing more (a refusal for good is counted already).
    Other,
    /// The broker refused an event for a reason that may clear: drop the connection and
    /// send it again after a backoff.
    Retry(session::SessionError),
}

/// The publisher: owns the spool, the sequence counter and the MQTT connection.
pub struct Publisher {
    cfg: PublisherConfig,
    topics: Topics,
    session: SessionOptions,
    seq: SeqCounter,
    spool: Spool,
    stats: Arc<PublishStats>,
    /// Latest state per camera (its topic follows the current prefix and device).
    states: BTreeMap<String, Vec<u8>>,
    /// Latest `current` summary per camera.
    currents: BTreeMap<String, Vec<u8>>,
    /// Other retained messages by topic (Home Assistant discovery, snapshots), with what
    /// they say about themselves.
    retained: BTreeMap<String, (Vec<u8>, Meta)>,
    /// What runtime control set per camera, echoed in its state as `"control"`.
    controls: BTreeMap<String, serde_json::Value>,
    /// The spool's count of events damage took, as far as the counters have it.
    lost_seen: u64,
    /// The control connection while serving with `mqtt.control` on.
    control: Option<ControlLink>,
    /// The event refused last for a reason that may clear, and how often in a row.
    streak: Streak,
}

/// A publisher stopped for a new broker configuration: what the next one carries on with
/// (unacknowledged events stay in the spool, the sequence continues, counters go on).
pub struct Parked {
    /// Where the pipeline's messages keep arriving.
    pub outputs: mpsc::Receiver<Outgoing>,
    seq: SeqCounter,
    spool: Spool,
    stats: Arc<PublishStats>,
    states: BTreeMap<String, Vec<u8>>,
    currents: BTreeMap<String, Vec<u8>>,
    retained: BTreeMap<String, (Vec<u8>, Meta)>,
    controls: BTreeMap<String, serde_json::Value>,
    /// The broker and prefix left: refusals recorded there say nothing about the next.
    left: (BrokerUrl, String),
}

/// One connection attempt with fresh client state, and what we sent on it.
struct Connection {
    session: Session,
    up: bool,
    requested: VecDeque<Sent>,
    inflight: HashMap<u16, Sent>,
    window: usize,
    next_send: u64,
    /// The topic of each event sent on this connection and not yet acknowledged (at most
    /// a window), so that a refusal names the camera's real topic.
    event_topics: HashMap<u64, String>,
}

impl Publisher {
    /// Prepares the publisher; nothing connects until [`Publisher::run`].
    pub fn new(cfg: PublisherConfig, seq: SeqCounter, spool: Spool) -> Publisher {
        let topics = Topics::new(&cfg.prefix, &cfg.device);
        let session = SessionOptions {
            protocol: cfg.protocol,
            url: cfg.url.clone(),
            client_id: cfg.client_id.clone(),
            keep_alive: cfg.keep_alive,
            credentials: cfg.credentials.clone(),
            tls: cfg.tls.clone(),
            last_will: Some((topics.availability(), b"offline".to_vec(), Meta::new(&topics, Kind::Availability, None))),
            inflight: WINDOW as u16 + 8,
            persistent: true,
            max_incoming: 256 * 1024,
        };
        let stats = Arc::new(PublishStats::default());
        stats.spooled.store(spool.pending(), Ordering::Relaxed);
        stats.delivery.set_stuck_after(cfg.stuck_after);
        stats.delivery.pending(spool.pending());
        stats.corrupt.store(spool.corrupt(), Ordering::Relaxed);
        stats.failed.store(spool.lost(), Ordering::Relaxed);
        let lost_seen = spool.lost();
        if spool.pending() > 0 {
            tracing::info!(events = spool.pending(), "events from an earlier run are waiting in the spool");
        }
        Publisher {
            cfg,
            topics,
            session,
            seq,
            spool,
            stats,
            states: BTreeMap::new(),
            currents: BTreeMap::new(),
            retained: BTreeMap::new(),
            controls: BTreeMap::new(),
            lost_seen,
            control: None,
            streak: Streak::default(),
        }
    }

    /// A publisher for a new broker configuration that carries on where `parked` stopped.
    pub fn resume(cfg: PublisherConfig, parked: Parked) -> (Publisher, mpsc::Receiver<Outgoing>) {
        let mut p = Publisher::new(cfg, parked.seq, parked.spool);
        p.stats = parked.stats;
        p.stats.spooled.store(p.spool.pending(), Ordering::Relaxed);
        p.stats.delivery.set_stuck_after(p.cfg.stuck_after);
        p.states = parked.states;
        p.currents = parked.currents;
        p.retained = parked.retained;
        p.controls = parked.controls;
        if parked.left != (p.cfg.url.clone(), p.cfg.prefix.clone()) {
            // Another broker (its ACL may allow the topic) or other topics: a camera the
            // old one refused must not stay named while it is quiet, or for good (no event
            // is ever accepted on the old prefix's topics).
            p.stats.delivery.forget_all();
        }
        (p, parked.outputs)
    }

    /// Counters.
    pub fn stats(&self) -> Arc<PublishStats> {
        self.stats.clone()
    }

    fn connect(&self) -> Connection {
        Connection {
            session: session::open(&self.session, WINDOW * 2 + 64),
            up: false,
            requested: VecDeque::new(),
            inflight: HashMap::new(),
            event_topics: HashMap::new(),
            window: 0,
            next_send: 0,
        }
    }

    /// Sends unacknowledged events from the spool while the window has room.
    fn pump(&mut self, conn: &mut Connection) {
        if !conn.up || conn.window >= WINDOW {
            return;
        }
        let records = match self.spool.read_pending(conn.next_send, WINDOW - conn.window) {
            Ok(r) => r,
            Err(e) => {
                self.disk_trouble(format!("cannot read the event spool: {e}"), 0);
                return;
            }
        };
        self.note_spool_damage();
        let now = time::OffsetDateTime::now_utc();
        for rec in records {
            let expiry = remaining_expiry(self.cfg.event_expiry_s, &rec.payload, now);
            let meta = event_meta(&rec.topic, &self.topics, expiry);
            conn.event_topics.insert(rec.seq, rec.topic.clone());
            if !conn.session.client.publish(rec.topic, false, rec.payload, &meta) {
                break;
            }
            self.spool.mark_sent(rec.seq);
            conn.requested.push_back(Sent::Event(rec.seq));
            conn.window += 1;
            conn.next_send = rec.seq + 1;
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends a camera's retained state, with what runtime control set in it as `"control"`.
    fn send_state(&self, conn: &mut Connection, camera: &str) {
        let Some(payload) = self.states.get(camera) else { return };
        let payload = match self.controls.get(camera) {
            Some(control) => match serde_json::from_slice::<serde_json::Value>(payload) {
                Ok(serde_json::Value::Object(mut state)) => {
                    state.insert("control".into(), control.clone());
                    serde_json::to_vec(&state).unwrap_or_else(|_| payload.clone())
                }
                _ => payload.clone(),
            },
            None => payload.clone(),
        };
        let meta = self.meta(Kind::State, Some(camera));
        Self::send_other(conn, self.topics.state(camera), payload, true, &meta);
    }

    /// What a message of `kind` about `camera` says about itself (MQTT 5 properties).
    fn meta(&self, kind: Kind, camera: Option<&str>) -> Meta {
        Meta::new(&self.topics, kind, camera)
    }

    fn send_other(conn: &mut Connection, topic: String, payload: Vec<u8>, retain: bool, meta: &Meta) {
        if conn.up && conn.session.client.publish(topic, retain, payload, meta) {
            conn.requested.push_back(Sent::Other);
        }
    }

    /// Publishes everything from `outputs` until the channel closes, then drains the
    /// spool for at most `flush_timeout`, publishes `offline` and disconnects.
    pub async fn run(self, outputs: mpsc::Receiver<Outgoing>) -> anyhow::Result<()> {
        self.serve(outputs, std::future::pending()).await.map(|_| ())
    }

    /// Like [`Publisher::run`], but when `park` completes first: publishes `offline`,
    /// disconnects and returns what a publisher for a new broker configuration needs
    /// ([`Publisher::resume`]). Nothing unacknowledged is lost: it stays in the spool.
    pub async fn run_until(
        self,
        outputs: mpsc::Receiver<Outgoing>,
        park: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Option<Parked>> {
        self.serve(outputs, park).await
    }

    async fn serve(
        mut self,
        mut outputs: mpsc::Receiver<Outgoing>,
        park: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Option<Parked>> {
        self.control = self.cfg.commands.clone().map(|commands| {
            ControlLink::start(&self.session, self.topics.clone(), commands, self.cfg.reconnect_max, self.stats.clone())
        });
        let mut conn = self.connect();
        tokio::pin!(park);
        let mut parking = false;
        let salt = self.cfg.client_id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut retry = Retry::new(self.cfg.reconnect_max, salt);
        let mut closing_at: Option<Instant> = None;
        loop {
            self.pump(&mut conn);
            self.stats.spooled.store(self.spool.pending(), Ordering::Relaxed);
            self.stats.delivery.pending(self.spool.pending());
            if let Some(deadline) = closing_at {
                if self.spool.pending() == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            // Whichever comes first: the next reconnection, or the end of the flush.
            let wake = match (retry.at, closing_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                out = outputs.recv(), if closing_at.is_none() => match out {
                    Some(first) => self.take(&mut conn, first, &mut outputs),
                    None => closing_at = Some(Instant::now() + self.cfg.flush_timeout),
                },
                polled = conn.session.events.recv(), if retry.at.is_none() => {
                    let lost = || Err(session::SessionError { permanent: false, message: "the connection task ended".into(), reason: "other" });
                    self.on_session(&mut conn, polled.unwrap_or_else(lost), &mut retry);
                }
                () = &mut park, if !parking => {
                    parking = true;
                    break;
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    if retry.at.is_some_and(|t| Instant::now() >= t) {
                        retry.at = None;
                        conn = self.connect();
                    }
                }
            }
        }
        self.close(conn, parking).await;
        if !parking {
            return Ok(None);
        }
        let left = (self.cfg.url.clone(), self.cfg.prefix.clone());
        let Publisher { seq, spool, stats, states, currents, retained, controls, .. } = self;
        Ok(Some(Parked { outputs, seq, spool, stats, states, currents, retained, controls, left }))
    }

    /// Takes `first` and everything already waiting behind it: retained messages go out
    /// (and are kept for reconnects), events are spooled together, with one fsync.
    fn take(&mut self, conn: &mut Connection, first: Outgoing, outputs: &mut mpsc::Receiver<Outgoing>) {
        let mut next = Some(first);
        let mut events = Vec::new();
        while let Some(out) = next {
            match out {
                Outgoing::Analysis(Output::Event(ev)) => events.push(*ev),
                Outgoing::Analysis(Output::CameraState(st)) => {
                    if st.status == crate::source::CameraState::Disabled {
                        // Turned off, not removed: no event will come to clear its
                        // refusals, which would name it in `/healthz` for good.
                        self.stats.delivery.forget(&self.topics.emotion(&st.camera));
                    }
                    let payload = serde_json::to_vec(&st).unwrap_or_default();
                    self.states.insert(st.camera.clone(), payload);
                    self.send_state(conn, &st.camera);
                }
                Outgoing::Controlled { camera, settings } => {
                    match settings {
                        Some(v) => self.controls.insert(camera.clone(), v),
                        None => self.controls.remove(&camera),
                    };
                    self.send_state(conn, &camera);
                }
                Outgoing::Reply { topic, payload } => match &self.control {
                    Some(link) if link.reply(topic.clone(), payload.clone()) => {}
                    _ => {
                        let meta = reply_meta(&self.topics, &topic);
                        Self::send_other(conn, topic, payload, false, &meta);
                    }
                },
                Outgoing::Analysis(Output::Snapshot(shot)) => {
                    let topic = self.topics.snapshot(&shot.camera);
                    let meta = self.meta(Kind::Snapshot, Some(&shot.camera));
                    Self::send_other(conn, topic.clone(), shot.jpeg.clone(), true, &meta);
                    self.retained.insert(topic, (shot.jpeg, meta));
                }
                Outgoing::Analysis(Output::CameraRemoved(camera)) => {
                    self.stats.delivery.forget(&self.topics.emotion(&camera));
                    if let Some((_, meta)) = self.retained.remove(&self.topics.snapshot(&camera)) {
                        Self::send_other(conn, self.topics.snapshot(&camera), Vec::new(), true, &meta);
                    }
                    self.states.remove(&camera);
                    self.currents.remove(&camera);
                    let meta = self.meta(Kind::State, Some(&camera));
                    Self::send_other(conn, self.topics.state(&camera), Vec::new(), true, &meta);
                    let meta = self.meta(Kind::Current, Some(&camera));
                    Self::send_other(conn, self.topics.current(&camera), Vec::new(), true, &meta);
                }
                Outgoing::Current { camera, payload } => {
                    let meta = self.meta(Kind::Current, Some(&camera));
                    Self::send_other(conn, self.topics.current(&camera), payload.clone(), true, &meta);
                    // A clear (the camera was disabled) is sent once: replayed on every
                    // reconnect it would reach consumers while the camera streams again,
                    // and an empty payload on a topic they parse is an error in Home
                    // Assistant and Node-RED. Kept only while the broker is out of reach,
                    // so the next connection clears the retained topic once.
                    if payload.is_empty() && conn.up {
                        self.currents.remove(&camera);
                    } else {
                        self.currents.insert(camera, payload);
                    }
                }
                Outgoing::Retained { topic, payload, camera } => {
                    let meta = self.meta(Kind::Discovery, camera.as_deref());
                    Self::send_other(conn, topic.clone(), payload.clone(), true, &meta);
                    self.retained.insert(topic, (payload, meta));
                }
                Outgoing::Stats(payload) => {
                    let meta = self.meta(Kind::Stats, None);
                    Self::send_other(conn, self.topics.stats(), payload, false, &meta);
                }
            }
            next = outputs.try_recv().ok();
        }
        self.spool_events(events);
    }

    /// What the MQTT session reports: connected, a publish's packet id, an acknowledgement,
    /// or a lost connection (then a reconnection is scheduled).
    fn on_session(
        &mut self,
        conn: &mut Connection,
        event: Result<SessionEvent, session::SessionError>,
        retry: &mut Retry,
    ) {
        match event {
            Ok(SessionEvent::Connected) => {
                retry.connected();
                self.on_connected(conn);
            }
            Ok(SessionEvent::Sent(pkid)) => {
                if let Some(sent) = conn.requested.pop_front() {
                    conn.inflight.insert(pkid, sent);
                }
            }
            Ok(SessionEvent::Acked { pkid, refused }) => match self.on_acked(conn, pkid, refused) {
                Acked::Accepted(seq) => retry.accepted(seq),
                Acked::Other => {}
                Acked::Retry(e) => {
                    retry.refused(self.spool.next_seq().saturating_sub(1));
                    self.on_lost(conn, e, retry);
                }
            },
            Ok(SessionEvent::Received { topic, .. }) => {
                // Commands come on the control connection; this session subscribes to nothing.
                tracing::debug!(topic, "ignored a message on the event connection");
            }
            Ok(_) => {}
            Err(e) => self.on_lost(conn, e, retry),
        }
    }

    /// The connection is lost (or dropped over a refusal): a reconnection is scheduled.
    fn on_lost(&mut self, conn: &mut Connection, e: session::SessionError, retry: &mut Retry) {
        retry.failures += 1;
        let was_up = conn.up;
        self.stats.set_connected(false);
        conn.session.poller.abort();
        conn.up = false;
        // Credentials and certificates do not fix themselves: retry those at the
        // cap instead of hammering the broker.
        if e.permanent {
            retry.backoff.to_max();
        }
        // Counted every time; logged when the reason changes (a broker that fails
        // the same way every 250 ms says so once, not four times a second).
        if self.stats.delivery.failed(e.reason, &e.message) {
            tracing::warn!(broker = %self.cfg.url, error = %e.message, reason = e.reason, retry_in_ms = retry.backoff.step().as_millis() as u64, attempts = retry.failures, was_up, spooled = self.spool.pending(), "MQTT broker unreachable; events go to the spool (logged again when the reason changes or delivery recovers)");
        } else {
            tracing::debug!(broker = %self.cfg.url, error = %e.message, attempts = retry.failures, "MQTT broker still unreachable");
        }
        retry.at = Some(Instant::now() + retry.backoff.next_delay());
    }

    /// A new connection: `online`, then every retained message again.
    fn on_connected(&mut self, conn: &mut Connection) {
        // After a failure, delivery has recovered once the broker acknowledges an event
        // (or anything, with no event to send): a connection that comes and goes is no
        // recovery.
        let pending = self.spool.pending();
        if self.stats.delivery.failing() {
            tracing::debug!(broker = %self.cfg.url, spooled = pending, "connected to MQTT broker again");
        } else {
            tracing::info!(broker = %self.cfg.url, protocol = %self.cfg.protocol, spooled = pending, "connected to MQTT broker");
        }
        conn.up = true;
        conn.next_send = 0;
        self.stats.set_connected(true);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let online = self.meta(Kind::Availability, None);
        Self::send_other(conn, self.topics.availability(), b"online".to_vec(), true, &online);
        let cameras: Vec<String> = self.states.keys().cloned().collect();
        for camera in &cameras {
            self.send_state(conn, camera);
        }
        // Commands arrive on their own connection ([`ControlLink`]). A persistent session
        // left subscribed to them by an earlier version would otherwise keep receiving
        // them here, where one too large for the client breaks event delivery.
        for filter in [self.topics.set(None), self.topics.set(Some("+"))] {
            let _ = conn.session.client.unsubscribe(filter);
        }
        for (camera, payload) in &self.currents {
            let meta = self.meta(Kind::Current, Some(camera));
            Self::send_other(conn, self.topics.current(camera), payload.clone(), true, &meta);
        }
        // A clear that waited for this connection has gone out: never again.
        self.currents.retain(|_, payload| !payload.is_empty());
        for (topic, (payload, meta)) in &self.retained {
            Self::send_other(conn, topic.clone(), payload.clone(), true, meta);
        }
    }

    /// The broker has message `pkid`: an event leaves the spool and frees the window.
    /// One the broker refused for good (an MQTT 5 reason code: its ACL denies the topic,
    /// [`session::refusal_is_final`]) leaves it too, since a re-send would get the same
    /// answer and hold back every event behind it; it is lost, counted by reason, and no
    /// progress for health. One refused for a reason that may clear (a quota, during a
    /// backlog replay) stays in the spool: the connection is dropped and everything
    /// unacknowledged is sent again after a backoff, and `mqtt.delivery_stuck_s` reports
    /// a refusal that lasts. The same event refused like that [`streak::MAX_REFUSALS`] times in a
    /// row, or over `mqtt.delivery_stuck_s`, is dropped like one refused for good
    /// ([`streak`]): it would otherwise hold back every event behind it.
    fn on_acked(&mut self, conn: &mut Connection, pkid: u16, refused: Option<&'static str>) -> Acked {
        let sent = conn.inflight.remove(&pkid);
        let event_topic = match sent {
            Some(Sent::Event(seq)) => conn.event_topics.remove(&seq),
            _ => None,
        };
        // Without its topic (never expected: `pump` records it) an event is counted by
        // reason only; a made-up topic would collect refusals no acceptance clears.
        let topic = event_topic.as_deref();
        let shown = topic.unwrap_or("?");
        match (refused, sent) {
            (Some(reason), Some(Sent::Event(seq))) if !session::refusal_is_final(reason) => {
                let now = std::time::Instant::now();
                match self.streak.refused(seq, now, self.stats.delivery.stuck_after()) {
                    Verdict::Retry => {
                        // Not acknowledged in the spool: it is sent again on the next connection.
                        return Acked::Retry(session::SessionError {
                            permanent: false,
                            message: format!(
                                "the broker refused event seq {seq} on {shown} ({reason}); it stays in the spool and is sent again after a reconnect"
                            ),
                            reason,
                        });
                    }
                    Verdict::GiveUp { times, over } => {
                        self.stats.delivery.refused(reason, topic);
                        tracing::warn!(broker = %self.cfg.url, reason, seq, topic = shown, refusals = times, over_s = over.as_secs(), "the MQTT broker refused the same event {times} times in a row for a reason that may clear: dropped so that the events behind it go on, counted in clefd_mqtt_events_refused_total");
                    }
                }
            }
            (Some(reason), Some(Sent::Event(seq))) => {
                if self.stats.delivery.refused(reason, topic) {
                    tracing::warn!(broker = %self.cfg.url, reason, seq, topic = shown, "the MQTT broker refuses our events (check its ACL or quotas): each refused event is lost, counted in clefd_mqtt_events_refused_total; logged once per topic while refusals go on");
                }
            }
            (Some(reason), _) => {
                if self.stats.delivery.refused_other(reason) {
                    tracing::warn!(broker = %self.cfg.url, reason, "the MQTT broker refused a message that is not an event (state, availability, discovery; check its ACL); logged once");
                }
            }
            (None, Some(Sent::Event(seq))) => {
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                self.stats.delivery.acked(topic);
                self.streak.accepted(seq);
            }
            (None, _) => {}
        }
        let event_accepted = refused.is_none() && matches!(sent, Some(Sent::Event(_)));
        let accepted = event_accepted || (refused.is_none() && self.spool.pending() == 0);
        if accepted {
            if let Some(failure) = self.stats.delivery.recovered() {
                tracing::info!(broker = %self.cfg.url, after_failure = %failure, spooled = self.spool.pending(), "MQTT delivery works again: the broker acknowledges what we send");
            }
        }
        if let Some(Sent::Event(seq)) = sent {
            if let Err(e) = self.spool.ack(seq) {
                // Only costs a re-send after a restart.
                tracing::warn!(seq, error = %e, "cannot record an acknowledgement in the spool");
            }
            conn.window = conn.window.saturating_sub(1);
        }
        match sent {
            Some(Sent::Event(seq)) if event_accepted => Acked::Accepted(seq),
            _ => Acked::Other,
        }
    }

    async fn close(&mut self, mut conn: Connection, parking: bool) {
        let pending = self.spool.pending();
        if parking {
            tracing::info!(broker = %self.cfg.url, pending, "leaving this broker for the new MQTT settings");
        } else if pending > 0 {
            tracing::warn!(
                pending,
                "shutting down with events the broker has not acknowledged; they stay in the spool for the next start"
            );
        }
        if conn.up {
            let offline = self.meta(Kind::Availability, None);
            Self::send_other(&mut conn, self.topics.availability(), b"offline".to_vec(), true, &offline);
            conn.session.client.disconnect().await;
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(Some(Ok(ev))) = tokio::time::timeout_at(deadline, conn.session.events.recv()).await {
                if ev == SessionEvent::Disconnected {
                    break;
                }
            }
        }
        conn.session.poller.abort();
        let _ = self.spool.sync();
        tracing::info!(
            acked = self.stats.acked.load(Ordering::Relaxed),
            dropped = self.spool.dropped(),
            "MQTT publisher stopped"
        );
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
