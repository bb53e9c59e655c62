//! A poisoned lock is a failure the supervisor sees, never a silent no-op: whoever finds
//! one marks the pipeline broken, and from then on nothing counts as progress (the
//! watchdog fires, `/healthz` fails) and the run ends non-zero so systemd restarts clefd.
//! The data behind the lock is still used for what is left to say.

use std::sync::{Arc, Mutex, MutexGuard};

/// Shared by everything that can find a poisoned lock of the pipeline or its watchers.
#[derive(Debug, Clone, Default)]
pub struct Breaker(Arc<Mutex<Option<String>>>);

impl Breaker {
    /// Marks the pipeline broken: `what` was left inconsistent by a panic.
    pub fn set(&self, what: &str) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if b.is_none() {
            tracing::error!("a panic poisoned {what}: clefd reports no progress from now on, so that it is restarted");
            *b = Some(format!("a panic poisoned {what}; clefd must be restarted"));
        }
    }

    /// Why the pipeline cannot go on, if a panic broke it.
    pub fn reason(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `lock`; a poisoned one marks the pipeline broken (`what` names it) and is
    /// used as it is.
    pub fn guard<'a, T>(&self, lock: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
        lock.lock().unwrap_or_else(|p| {
            self.set(what);
            p.into_inner()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_breaks_the_pipeline_once_and_still_hands_its_data() {
        let (breaker, data) = (Breaker::default(), Arc::new(Mutex::new(vec![1, 2])));
        assert_eq!(breaker.guard(&data, "the numbers").len(), 2);
        assert_eq!(breaker.reason(), None, "a healthy lock breaks nothing");
        let held = data.clone();
        let _ = std::thread::spawn(move || {
            let _g = held.lock();
            panic!("poisons the numbers");
        })
        .join();
        assert_eq!(breaker.guard(&data, "the numbers").len(), 2, "the data is still there");
        drop(breaker.guard(&data, "something else"));
        let reason = breaker.reason().unwrap_or_default();
        assert!(reason.contains("the numbers") && !reason.contains("something else"), "{reason}");
    }
}
