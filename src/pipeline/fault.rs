//! Fault injection at run time, for the tests (the seeded torture test): when the
//! environment names a folder in `CLEFD_TEST_FAULT_DIR` at start, inference lanes and
//! workers look there, at most once a second (all of them together), for a file that
//! asks for a fault, remove it, and inject the fault once:
//!
//! - `lane-panic`: the next lane to take a batch panics inside it (caught by the lane,
//!   counted in `clefd_lane_panics_total`, the batch dropped, the lane goes on);
//! - `worker-panic`: the next worker to take a batch panics outside its lanes (reaped,
//!   counted in `clefd_worker_failures_total`, its cameras moved to a new worker);
//! - `worker-stop`: the next worker to take a batch stops as if its sink had closed.
//!
//! Without the variable every call is one read of a value set once: off by default, at
//! no cost worth measuring. `CLEFD_TEST_WORKER_FAULT` (read at start, in `worker.rs`)
//! stays for faults at a fixed batch.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Where fault requests are looked for, and when the process started (the clock of the
/// once-a-second limit); `None` when fault injection is off.
fn folder() -> Option<&'static (PathBuf, Instant)> {
    static FOLDER: OnceLock<Option<(PathBuf, Instant)>> = OnceLock::new();
    FOLDER.get_or_init(|| std::env::var_os("CLEFD_TEST_FAULT_DIR").map(|d| (PathBuf::from(d), Instant::now()))).as_ref()
}

/// Milliseconds since start of the last look of the lanes and of the workers, plus one
/// (0: never looked). Apart, so that the worker, which takes a batch just before a lane
/// runs it, never takes every look.
static LANES_LOOKED: AtomicU64 = AtomicU64::new(0);
static WORKERS_LOOKED: AtomicU64 = AtomicU64::new(0);

/// Which of `names` was waiting (it is then consumed). Looks at most once a second for
/// all the callers sharing `looked`, so a busy lane costs one clock read per batch.
fn requested(looked: &AtomicU64, names: &[&str]) -> Option<usize> {
    let (dir, start) = folder()?;
    let now = start.elapsed().as_millis() as u64 + 1;
    let last = looked.load(Ordering::Relaxed);
    if last != 0 && now < last + 1000 {
        return None;
    }
    if looked.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return None;
    }
    // Removing is what claims the request: of two threads, one wins.
    names.iter().position(|n| std::fs::remove_file(dir.join(n)).is_ok())
}

/// Called by a lane before it analyses a batch: panics when `lane-panic` was asked for.
pub fn lane() {
    if requested(&LANES_LOOKED, &["lane-panic"]).is_some() {
        panic!("CLEFD_TEST_FAULT_DIR: the inference lane panics (fault injection)");
    }
}

/// Called by a worker as it takes a batch: panics when `worker-panic` was asked for;
/// true (stop as if the sink had closed) when `worker-stop` was.
pub fn worker() -> bool {
    match requested(&WORKERS_LOOKED, &["worker-panic", "worker-stop"]) {
        Some(0) => panic!("CLEFD_TEST_FAULT_DIR: the inference worker panics (fault injection)"),
        Some(_) => true,
        None => false,
    }
}
