//! The heap in use, as glibc's allocator counts it (`mallinfo2`): the bytes handed out by
//! `malloc` and not yet freed, mmapped blocks included. RSS also holds what the allocator
//! keeps for reuse (it climbs to a plateau as camera threads come and go), so a slow leak
//! shows here long before it shows in RSS.
//!
//! `mallinfo2` came with glibc 2.33; JetPack 5's glibc is 2.31. It is looked up when first
//! asked for, not linked, so the binary still runs there (without the figure).
//!
//! `mallinfo2` locks every arena in turn and walks its free chunks, stalling `malloc` in
//! the camera and inference threads meanwhile. So `/metrics` shows [`recent_in_use_bytes`]:
//! a figure at most [`REFRESH`] old, sampled on a short-lived thread of its own (never on
//! the async runtime, never once per scrape).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How old the figure on `/metrics` may be: a scrape sooner than this after the last
/// sample reads the cached figure, whatever the scrape rate.
pub const REFRESH: Duration = Duration::from_secs(10);

/// What the cache holds before its first sample, or where there is no `mallinfo2`.
const NONE: u64 = u64::MAX;

/// The figure `/metrics` shows, and when it was last asked for.
struct Cache {
    bytes: AtomicU64,
    sampled: Mutex<Option<Instant>>,
    sampling: AtomicBool,
}

static CACHE: Cache =
    Cache { bytes: AtomicU64::new(NONE), sampled: Mutex::new(None), sampling: AtomicBool::new(false) };

impl Cache {
    /// Whether a sample is due at `now` (none yet, or the last is [`REFRESH`] old and no
    /// other is under way); when it is, `now` counts as the last sample's time.
    fn due(&self, now: Instant) -> bool {
        let Ok(mut sampled) = self.sampled.lock() else { return false };
        if sampled.is_some_and(|t| now.saturating_duration_since(t) < REFRESH) || self.sampling.load(Ordering::Acquire)
        {
            return false;
        }
        *sampled = Some(now);
        self.sampling.store(true, Ordering::Release);
        true
    }

    fn store(&self, bytes: Option<u64>) {
        self.bytes.store(bytes.unwrap_or(NONE), Ordering::Relaxed);
        self.sampling.store(false, Ordering::Release);
    }

    fn get(&self) -> Option<u64> {
        Some(self.bytes.load(Ordering::Relaxed)).filter(|b| *b != NONE)
    }
}

/// The heap in use as last sampled, at most [`REFRESH`] ago (plus one sample's time);
/// starts the next sample on its own thread when one is due, so the caller never waits on
/// the arenas' locks. `None` until the first sample is in, and where there is no figure.
pub fn recent_in_use_bytes() -> Option<u64> {
    if available() && CACHE.due(Instant::now()) {
        let spawned = std::thread::Builder::new().name("clefd-heap".into()).spawn(|| CACHE.store(in_use_bytes()));
        if spawned.is_err() {
            // No thread to be had now (a thread limit): the next due scrape tries again.
            CACHE.store(CACHE.get());
        }
    }
    CACHE.get()
}

/// Whether this C library has `mallinfo2` (a look-up, no arena walked).
fn available() -> bool {
    mallinfo2_fn().is_some()
}

/// Bytes of heap in use now; `None` where the C library has no `mallinfo2` (not glibc, or a
/// glibc older than 2.33).
/// (It walks every arena under its lock: call it off the async runtime, and not often.)
#[cfg(target_env = "gnu")]
pub fn in_use_bytes() -> Option<u64> {
    let mallinfo2 = mallinfo2_fn()?;
    // SAFETY: takes no argument; it walks the arenas under their locks.
    let m = unsafe { mallinfo2() };
    u64::try_from(m.uordblks.saturating_add(m.hblkhd)).ok()
}

#[cfg(target_env = "gnu")]
type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;

/// glibc's `mallinfo2`, looked up once.
#[cfg(target_env = "gnu")]
fn mallinfo2_fn() -> Option<Mallinfo2> {
    use std::sync::OnceLock;

    static MALLINFO2: OnceLock<Option<Mallinfo2>> = OnceLock::new();
    *MALLINFO2.get_or_init(|| {
        // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the objects already loaded.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        // SAFETY: glibc's `struct mallinfo2 mallinfo2(void)` (malloc.h), which `libc` mirrors.
        (!f.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2>(f) })
    })
}

/// Not glibc: no figure.
#[cfg(not(target_env = "gnu"))]
pub fn in_use_bytes() -> Option<u64> {
    None
}

#[cfg(not(target_env = "gnu"))]
fn mallinfo2_fn() -> Option<()> {
    None
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::in_use_bytes;

    /// A block of 64 MiB is mmapped by glibc: it counts while held (`hblkhd`, not only
    /// `uordblks`, which would say a few MB). (Other tests allocate and free beside this
    /// one, so what freeing it gives back is not asserted.)
    #[test]
    fn a_block_held_counts_in_the_heap_in_use() {
        const BLOCK: usize = 64 << 20;
        let block = std::hint::black_box(vec![7u8; BLOCK]);
        let held = in_use_bytes().expect("Debian's glibc has mallinfo2");
        assert!(held >= BLOCK as u64, "{held} bytes in use while {BLOCK} are held");
        drop(block);
    }

    /// However often `/metrics` is scraped, the arenas are walked at most once per
    /// `REFRESH` (and never while a sample is under way).
    #[test]
    fn a_sample_is_due_at_most_once_per_refresh() {
        use super::{Cache, NONE, REFRESH};
        use std::time::{Duration, Instant};
        let cache = Cache { bytes: NONE.into(), sampled: std::sync::Mutex::new(None), sampling: false.into() };
        let t0 = Instant::now();
        assert!(cache.due(t0), "the first scrape starts a sample");
        assert!(!cache.due(t0 + REFRESH), "a sample under way is not started twice");
        cache.store(Some(42));
        let soon = (1..100).filter(|ms| cache.due(t0 + Duration::from_millis(ms * 99))).count();
        assert_eq!(soon, 0, "scrapes within REFRESH read the cache");
        assert_eq!(cache.get(), Some(42));
        assert!(cache.due(t0 + REFRESH), "a scrape REFRESH later starts the next sample");
        cache.store(None);
        assert_eq!(cache.get(), None, "no figure reads as none, not as u64::MAX");
    }

    /// The first scrape finds no figure yet; one comes from the sampling thread soon after.
    #[test]
    fn the_recent_figure_comes_from_the_sampling_thread() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let bytes = loop {
            if let Some(b) = super::recent_in_use_bytes() {
                break b;
            }
            assert!(std::time::Instant::now() < deadline, "no heap figure came within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(bytes > 0 && bytes != super::NONE, "{bytes}");
    }
}
