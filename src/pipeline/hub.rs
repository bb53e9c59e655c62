//! The hand-off between cameras and an inference worker: one slot per camera holding
//! only the latest frame. A camera that outruns inference overwrites its slot (the
//! overwritten frame is counted as dropped), so memory on the frame path is bounded by
//! construction: at most one waiting frame per camera. A file analysed frame by frame
//! instead waits for room, and may queue as many frames as the worker has lanes (so that
//! every lane has a frame of it to work on).
//!
//! Slots belong to one camera generation: a slot's id is never handed out twice, and the
//! worker releases a slot once it has seen it close, so a hub holds only the cameras that
//! run now however often cameras restart, and a late call from a stopped camera's threads
//! finds no slot instead of another camera's.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// What the worker gets next.
#[derive(Debug)]
pub enum Next<T> {
    /// Frames from one or more cameras, at most one per camera: `(slot, frame)`. A camera
    /// with several frames queued gives the oldest.
    Frames(Vec<(usize, T)>),
    /// Camera `slot` lost its stream and will restart: its tracks are over.
    Reset(usize),
    /// Camera `slot` has ended (EOS, error or stop); it will send nothing more.
    Closed(usize),
    /// Every camera has ended, or the hub was shut down. The hub takes no camera after
    /// this ([`FrameHub::add_slot`] returns `None`): its worker is gone.
    Done,
    /// [`FrameHub::ring`] was called (an inference lane finished) and nothing else is due.
    Rung,
}

#[derive(Debug)]
struct Slot<T> {
    frames: VecDeque<T>,
    open: bool,
    reset: bool,
    closed_reported: bool,
    received: u64,
    dropped: u64,
}

impl<T> Slot<T> {
    fn new() -> Slot<T> {
        Slot { frames: VecDeque::new(), open: true, reset: false, closed_reported: false, received: 0, dropped: 0 }
    }
}

#[derive(Debug)]
struct State<T> {
    /// Open or not yet released slots, by id.
    slots: BTreeMap<usize, Slot<T>>,
    /// The id the next slot gets.
    next_id: usize,
    cursor: usize,
    shutdown: bool,
    rung: bool,
    /// Once every camera has ended the worker leaves: `Done` was handed out.
    finished: bool,
    /// Retired by a reload: done as soon as no camera is open, even if it never had one.
    retired: bool,
    /// The worker ended without being told `Done` (a panic, its sink or lanes gone): the
    /// cameras still open here feed nobody and must move to a new worker.
    abandoned: bool,
    /// Producers blocked in [`FrameHub::put_waiting`] right now.
    waiting: usize,
}

/// Latest-frame-wins mailboxes for a fixed set of cameras.
#[derive(Debug)]
pub struct FrameHub<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    taken: Condvar,
    /// Frames a waiting camera may queue ([`FrameHub::put_waiting`]).
    waiting_depth: AtomicUsize,
    /// Never shared by two hubs of a process (an address could be, once one is freed).
    id: usize,
}

/// The id the next hub gets.
static NEXT_HUB: AtomicUsize = AtomicUsize::new(0);

/// Per-camera counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Frames handed in.
    pub received: u64,
    /// Frames overwritten before the worker took them.
    pub dropped: u64,
}

impl<T> FrameHub<T> {
    /// A hub with `cameras` open slots.
    pub fn new(cameras: usize) -> FrameHub<T> {
        let slots = (0..cameras).map(|i| (i, Slot::new())).collect();
        FrameHub {
            state: Mutex::new(State {
                slots,
                next_id: cameras,
                cursor: 0,
                shutdown: false,
                rung: false,
                finished: false,
                retired: false,
                abandoned: false,
                waiting: 0,
            }),
            ready: Condvar::new(),
            taken: Condvar::new(),
            waiting_depth: AtomicUsize::new(1),
            id: NEXT_HUB.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// This hub's identity: unique in the process, never reused.
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many frames a camera using [`FrameHub::put_waiting`] may queue (the worker's
    /// lane count; at least 1).
    pub fn set_waiting_depth(&self, depth: usize) {
        self.waiting_depth.store(depth.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves plain data behind (counts and frames,
        // each whole): keep going, but say so once rather than silently.
        self.state.lock().unwrap_or_else(|p| {
            self.state.clear_poison();
            tracing::error!(
                hub = self.id(),
                "a panic interrupted the frame hand-off; it goes on with its state as left"
            );
            p.into_inner()
        })
    }

    /// Opens one more slot (a camera added by a reload); returns its id, or `None` when
    /// the hub's worker has finished (every camera ended) and a new worker is needed.
    pub fn add_slot(&self) -> Option<usize> {
        let mut s = self.lock();
        if s.finished || s.shutdown {
            return None;
        }
        let id = s.next_id;
        s.next_id += 1;
        s.slots.insert(id, Slot::new());
        Some(id)
    }

    /// Forgets a slot whose close the worker has seen (its frames, counters and memory
    /// go with it).
    pub fn release(&self, slot: usize) {
        let mut s = self.lock();
        if s.slots.get(&slot).is_some_and(|sl| !sl.open) {
            s.slots.remove(&slot);
        }
        drop(s);
        self.taken.notify_all();
    }

    /// Slots held now (cameras running, or ended and not yet released).
    pub fn slots(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether the worker has been told `Done` (or the hub was shut down): no camera can
    /// be added any more.
    pub fn is_finished(&self) -> bool {
        let s = self.lock();
        s.finished || s.shutdown
    }

    /// Marks the hub as left by a worker that ended abnormally: it takes no camera any
    /// more, and cameras waiting to hand in a frame let go at once.
    pub fn abandon(&self) {
        let mut s = self.lock();
        s.abandoned = true;
        s.shutdown = true;
        drop(s);
        self.ready.notify_all();
        self.taken.notify_all();
    }

    /// Whether the worker ended without `Done` ([`FrameHub::abandon`]).
    pub fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Whether any camera is still open here (one feeds this hub, or may).
    pub fn any_open(&self) -> bool {
        self.lock().slots.values().any(|sl| sl.open)
    }

    /// Whether camera `slot` is still open (neither ended nor stopped).
    pub fn is_open(&self, slot: usize) -> bool {
        self.lock().slots.get(&slot).is_some_and(|sl| sl.open)
    }

    /// Lets the worker finish once no camera is open, even if it never had one (a reload
    /// replaced it).
    pub fn retire(&self) {
        let mut s = self.lock();
        s.retired = true;
        drop(s);
        self.ready.notify_all();
    }

    /// Hands in a frame, replacing (and counting) any frame still waiting.
    pub fn put(&self, slot: usize, frame: T) {
        let mut s = self.lock();
        let Some(sl) = s.slots.get_mut(&slot) else {
            return;
        };
        if !sl.open {
            return;
        }
        sl.received += 1;
        sl.dropped += sl.frames.len() as u64;
        sl.frames.clear();
        sl.frames.push_back(frame);
        drop(s);
        self.ready.notify_one();
    }

    /// Hands in a frame without dropping any: waits while the camera's queue is full
    /// (see [`FrameHub::set_waiting_depth`]). For files analysed as fast as possible
    /// (every frame, decoding paced by inference). Gives up when the camera is closed or
    /// the hub shut down.
    pub fn put_waiting(&self, slot: usize, frame: T) {
        let depth = self.waiting_depth.load(Ordering::Relaxed);
        let mut s = self.lock();
        loop {
            let Some(sl) = s.slots.get(&slot) else { return };
            if !sl.open || s.shutdown {
                return;
            }
            if sl.frames.len() < depth {
                break;
            }
            s.waiting += 1;
            s = self
                .taken
                .wait_timeout(s, std::time::Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            s.waiting -= 1;
        }
        if let Some(sl) = s.slots.get_mut(&slot) {
            sl.received += 1;
            sl.frames.push_back(frame);
        }
        drop(s);
        self.ready.notify_one();
    }

    /// Marks a camera's stream as broken: a waiting frame is discarded and the worker
    /// is told to end the camera's tracks.
    pub fn reset(&self, slot: usize) {
        let mut s = self.lock();
        if let Some(sl) = s.slots.get_mut(&slot) {
            sl.reset = true;
            sl.frames.clear();
        }
        drop(s);
        self.ready.notify_one();
    }

    /// Marks a camera as ended.
    pub fn close(&self, slot: usize) {
        let mut s = self.lock();
        if let Some(sl) = s.slots.get_mut(&slot) {
            sl.open = false;
        }
        drop(s);
        self.ready.notify_one();
        self.taken.notify_all();
    }

    /// Wakes a worker waiting in [`FrameHub::next`] (which returns [`Next::Rung`] when no
    /// frame, reset or close is due): an inference lane has a result for it.
    pub fn ring(&self) {
        let mut s = self.lock();
        s.rung = true;
        drop(s);
        self.ready.notify_all();
    }

    /// Stops the worker after the frame it is working on.
    pub fn shutdown(&self) {
        let mut s = self.lock();
        s.shutdown = true;
        drop(s);
        self.ready.notify_all();
    }

    /// Counters of one camera.
    pub fn stats(&self, slot: usize) -> SlotStats {
        let s = self.lock();
        s.slots.get(&slot).map(|sl| SlotStats { received: sl.received, dropped: sl.dropped }).unwrap_or_default()
    }

    /// Frames waiting right now (at most one per camera, or the waiting depth for
    /// cameras that wait for room).
    pub fn waiting(&self) -> usize {
        self.lock().slots.values().map(|s| s.frames.len()).sum()
    }

    /// The slots with a frame waiting right now.
    pub fn waiting_slots(&self) -> Vec<usize> {
        self.lock().slots.iter().filter(|(_, sl)| !sl.frames.is_empty()).map(|(&i, _)| i).collect()
    }

    /// Blocks until frames, a reset or a close are available. Once a frame is waiting,
    /// lingers up to `linger` for other cameras' frames (so they can share one batch),
    /// then takes up to `max_frames` of them, cameras in turn.
    pub fn next(&self, max_frames: usize, linger: std::time::Duration) -> Next<T> {
        self.take(max_frames, linger, false)
    }

    /// As [`FrameHub::next`], but frames are taken only as a full batch: one from every
    /// open camera (or `max_frames`). Partial sets stay in the hub, where newer frames can
    /// still replace them. For a batch that will wait for a lane: it may as well be whole.
    pub fn next_full(&self, max_frames: usize) -> Next<T> {
        self.take(max_frames, std::time::Duration::ZERO, true)
    }

    fn take(&self, max_frames: usize, linger: std::time::Duration, full_only: bool) -> Next<T> {
        let mut s = self.lock();
        loop {
            if s.shutdown {
                s.finished = true;
                return Next::Done;
            }
            if let Some((&i, sl)) = s.slots.iter_mut().find(|(_, sl)| sl.reset) {
                sl.reset = false;
                return Next::Reset(i);
            }
            let waiting = |s: &State<T>| s.slots.values().filter(|sl| !sl.frames.is_empty()).count();
            let open = s.slots.values().filter(|sl| sl.open).count();
            let enough = if full_only { max_frames.min(open).max(1) } else { 1 };
            if waiting(&s) >= enough {
                let deadline = std::time::Instant::now() + linger;
                while waiting(&s) < max_frames.min(open) && !s.shutdown {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    s = self.ready.wait_timeout(s, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
                }
                // Cameras in turn, starting after the last one served.
                let cursor = s.cursor;
                let order: Vec<usize> =
                    s.slots.range(cursor..).chain(s.slots.range(..cursor)).map(|(&i, _)| i).collect();
                let mut frames = Vec::new();
                for i in order {
                    if frames.len() >= max_frames.max(1) {
                        break;
                    }
                    // One frame per camera per batch: a camera's next frame goes to the
                    // next batch (and so to another lane).
                    if let Some(f) = s.slots.get_mut(&i).and_then(|sl| sl.frames.pop_front()) {
                        frames.push((i, f));
                    }
                }
                if let Some(&(last, _)) = frames.last() {
                    s.cursor = last + 1;
                }
                self.taken.notify_all();
                return Next::Frames(frames);
            }
            if std::mem::take(&mut s.rung) {
                return Next::Rung;
            }
            if let Some((&i, sl)) = s.slots.iter_mut().find(|(_, sl)| !sl.open && !sl.closed_reported) {
                sl.closed_reported = true;
                return Next::Closed(i);
            }
            // A hub with no camera yet waits for one (a reload may add it); one whose
            // cameras have all ended (or that was retired) is done.
            let had_cameras = s.next_id > 0 || s.retired;
            if had_cameras && s.slots.values().all(|sl| !sl.open) {
                s.finished = true;
                return Next::Done;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latest_frame_wins_and_drops_are_counted() {
        let hub = FrameHub::new(2);
        for i in 0..100 {
            hub.put(0, i);
            assert!(hub.waiting() <= 2);
        }
        hub.put(1, 1000);
        match hub.next(4, Duration::ZERO) {
            Next::Frames(f) => assert_eq!(f, vec![(0, 99), (1, 1000)], "one batch, the latest frame of each camera"),
            other => panic!("{other:?}"),
        }
        assert_eq!(hub.stats(0), SlotStats { received: 100, dropped: 99 });
        hub.close(0);
        assert!(matches!(hub.next(1, Duration::ZERO), Next::Closed(0)));
        hub.close(1);
        assert!(matches!(hub.next(1, Duration::ZERO), Next::Closed(1)));
        assert!(matches!(hub.next(1, Duration::ZERO), Next::Done));
    }

    #[test]
    fn a_slow_worker_sees_bounded_backlog() {
        let hub = std::sync::Arc::new(FrameHub::new(1));
        let producer = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u32 {
                    hub.put(0, vec![i; 64]);
                }
                hub.close(0);
            })
        };
        let mut taken = 0;
        loop {
            assert!(hub.waiting() <= 1);
            match hub.next(1, Duration::ZERO) {
                Next::Frames(f) => {
                    taken += f.len() as u64;
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                Next::Closed(_) | Next::Reset(_) | Next::Rung => {}
                Next::Done => break,
            }
        }
        producer.join().unwrap();
        let st = hub.stats(0);
        assert_eq!(st.received, 10_000);
        assert_eq!(st.received - st.dropped, taken);
        assert!(st.dropped > 0);
    }

    #[test]
    fn a_waiting_producer_loses_no_frame_and_lets_go_on_close() {
        let hub = std::sync::Arc::new(FrameHub::new(1));
        let producer = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    hub.put_waiting(0, i);
                    assert!(hub.waiting() <= 1);
                }
                hub.close(0);
            })
        };
        let mut seen = Vec::new();
        loop {
            match hub.next(1, Duration::ZERO) {
                Next::Frames(f) => {
                    seen.extend(f.into_iter().map(|(_, v)| v));
                    std::thread::sleep(Duration::from_micros(300));
                }
                Next::Closed(_) | Next::Reset(_) | Next::Rung => {}
                Next::Done => break,
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>(), "every frame, in order");
        assert_eq!(hub.stats(0).dropped, 0);

        // With two lanes a waiting camera queues two frames, handed out one per batch.
        let hub = std::sync::Arc::new(FrameHub::new(1));
        hub.set_waiting_depth(2);
        hub.put_waiting(0, 1);
        hub.put_waiting(0, 2);
        assert_eq!(hub.waiting(), 2);
        let h = hub.clone();
        let third = std::thread::spawn(move || h.put_waiting(0, 3));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!third.is_finished(), "the third frame waits for room (put_waiting has not returned)");
        assert_eq!(hub.waiting(), 2, "the third frame is not queued yet");
        assert!(matches!(hub.next(4, Duration::ZERO), Next::Frames(f) if f == vec![(0, 1)]));
        third.join().unwrap();
        assert!(matches!(hub.next(4, Duration::ZERO), Next::Frames(f) if f == vec![(0, 2)]));
        assert!(matches!(hub.next(4, Duration::ZERO), Next::Frames(f) if f == vec![(0, 3)]));

        // A producer blocked on a full slot returns as soon as the camera is closed.
        let hub = std::sync::Arc::new(FrameHub::new(1));
        hub.put_waiting(0, 1);
        let h = hub.clone();
        let blocked = std::thread::spawn(move || h.put_waiting(0, 2));
        std::thread::sleep(Duration::from_millis(100));
        hub.close(0);
        blocked.join().unwrap();
    }

    #[test]
    fn an_abandoned_hub_takes_no_camera_and_lets_a_waiting_producer_go() {
        let hub = std::sync::Arc::new(FrameHub::<u32>::new(1));
        hub.put_waiting(0, 1);
        let h = hub.clone();
        let blocked = std::thread::spawn(move || h.put_waiting(0, 2));
        // Abandoned only once the producer is blocked (counted under the lock the wait
        // releases), so the test is of letting a waiting producer go, whatever the timing.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while hub.lock().waiting == 0 {
            assert!(std::time::Instant::now() < deadline, "the producer never blocked");
            std::thread::yield_now();
        }
        hub.abandon();
        blocked.join().unwrap();
        assert_eq!(hub.lock().slots.get(&0).map(|s| s.frames.len()), Some(1), "the blocked frame was not queued");
        assert!(hub.is_abandoned() && hub.is_finished());
        assert!(hub.is_open(0), "the camera itself did not end: it must move to a new worker");
        assert_eq!(hub.add_slot(), None, "an abandoned hub takes no camera");
    }

    #[test]
    fn a_ring_wakes_a_waiting_worker() {
        let hub = std::sync::Arc::new(FrameHub::<u32>::new(1));
        let h = hub.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            h.ring();
        });
        assert!(matches!(hub.next(1, Duration::ZERO), Next::Rung));
        ringer.join().unwrap();
        hub.put(0, 7);
        hub.ring();
        assert!(matches!(hub.next(1, Duration::ZERO), Next::Frames(_)), "frames come before the ring");
        assert!(matches!(hub.next(1, Duration::ZERO), Next::Rung));
    }

    #[test]
    fn a_batch_queued_ahead_is_taken_only_whole() {
        let hub = std::sync::Arc::new(FrameHub::<u32>::new(3));
        hub.put(0, 1);
        hub.put(1, 1);
        // Two of three cameras: not whole, so the worker keeps waiting (until a ring).
        let h = hub.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            h.ring();
        });
        assert!(matches!(hub.next_full(4), Next::Rung));
        ringer.join().unwrap();
        assert_eq!(hub.waiting(), 2, "the partial set stays in the hub");
        hub.put(0, 2);
        assert_eq!(hub.stats(0).dropped, 1, "where a newer frame still replaces an older one");
        hub.put(2, 1);
        assert!(matches!(hub.next_full(4), Next::Frames(f) if f.len() == 3), "whole: one frame per camera");
        // A closed camera no longer counts, and max_frames caps what "whole" means.
        hub.close(2);
        assert!(matches!(hub.next(4, Duration::ZERO), Next::Closed(2)));
        hub.put(0, 3);
        hub.put(1, 3);
        assert!(matches!(hub.next_full(4), Next::Frames(f) if f.len() == 2));
        hub.put(0, 4);
        assert!(matches!(hub.next_full(1), Next::Frames(f) if f == vec![(0, 4)]));
    }
}
