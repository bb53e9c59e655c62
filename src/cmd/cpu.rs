//! Where a run's CPU time went, by the role of each thread (from
//! `/proc/self/task/*/schedstat`), so `clefd bench` can show what decoding takes from
//! inference on the same cores.

use std::collections::HashMap;
use std::time::Duration;

/// What a thread does, told from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Inference lanes (`infer-*`): preprocessing, the models, CLEF.
    Inference,
    /// GStreamer's streaming threads (named after their pad, `multiqueue0:src`): demuxing,
    /// decoding, scaling.
    Decoding,
    /// The pipeline worker (`worker-*`): tracking, smoothing, events.
    Tracking,
    /// Everything else (main thread, supervisors, appsink callbacks).
    Other,
}

impl Role {
    fn of(name: &str) -> Role {
        if name.starts_with("infer-") {
            Role::Inference
        } else if name.starts_with("worker-") {
            Role::Tracking
        } else if name.contains(':') {
            Role::Decoding
        } else {
            Role::Other
        }
    }
}

/// CPU time used so far by each live thread of this process.
pub struct ThreadTimes(HashMap<String, (Role, Duration)>);

impl ThreadTimes {
    /// Reads every thread's CPU time now (threads that cannot be read count as idle).
    pub fn now() -> ThreadTimes {
        let mut times = HashMap::new();
        for entry in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
            let dir = entry.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
                .unwrap_or(0);
            let tid = entry.file_name().to_string_lossy().into_owned();
            times.insert(tid, (Role::of(name.trim()), Duration::from_nanos(ns)));
        }
        ThreadTimes(times)
    }

    /// CPU time per role since `earlier` (threads born since then count from zero).
    pub fn since(&self, earlier: &ThreadTimes) -> Vec<(Role, Duration)> {
        let mut by_role: HashMap<Role, Duration> = HashMap::new();
        for (tid, (role, t)) in &self.0 {
            let before = earlier.0.get(tid).map_or(Duration::ZERO, |(_, t)| *t);
            *by_role.entry(*role).or_default() += t.saturating_sub(before);
        }
        let mut roles: Vec<_> = by_role.into_iter().collect();
        roles.sort();
        roles
    }
}

/// One line for the report: CPU milliseconds per frame by role, and cores kept busy.
pub fn per_frame_line(roles: &[(Role, Duration)], frames: u64, wall: Duration) -> String {
    let label = |r: Role| match r {
        Role::Inference => "inference",
        Role::Decoding => "decoding (GStreamer threads)",
        Role::Tracking => "tracking+events",
        Role::Other => "other",
    };
    let parts: Vec<String> = roles
        .iter()
        .map(|(r, t)| format!("{} {:.2} ms", label(*r), t.as_secs_f64() * 1000.0 / frames.max(1) as f64))
        .collect();
    let busy: f64 = roles.iter().map(|(_, t)| t.as_secs_f64()).sum::<f64>() / wall.as_secs_f64().max(1e-9);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("  CPU per frame: {}; {busy:.2} of {cores} cores busy", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_told_apart_by_name() {
        assert_eq!(Role::of("infer-face-fer2"), Role::Inference);
        assert_eq!(Role::of("multiqueue0:src"), Role::Decoding);
        assert_eq!(Role::of("worker-face-fer"), Role::Tracking);
        assert_eq!(Role::of("clefd"), Role::Other);
    }

    #[test]
    fn a_busy_thread_shows_up_in_its_role() {
        let before = ThreadTimes::now();
        // The thread works until the kernel has charged it some CPU (read from its own
        // schedstat, whatever the roles say), then looks at every thread at once.
        let t = std::thread::Builder::new()
            .name("infer-test".into())
            .spawn(|| {
                let own = || {
                    std::fs::read_to_string("/proc/thread-self/schedstat")
                        .ok()
                        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
                        .unwrap_or(0)
                };
                let tid = std::fs::read_link("/proc/thread-self")
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                let mut x = 0u64;
                while own() < 30_000_000 {
                    for _ in 0..1_000_000 {
                        x = x.wrapping_add(std::hint::black_box(1));
                    }
                }
                std::hint::black_box(x);
                let charged = own();
                (tid, charged, ThreadTimes::now())
            })
            .unwrap();
        let (tid, charged, after) = t.join().unwrap();
        assert_eq!(after.0.get(&tid).map(|(role, _)| *role), Some(Role::Inference), "an infer-* thread is inference");
        let roles = after.since(&before);
        let inference = roles.iter().find(|(r, _)| *r == Role::Inference).map(|(_, t)| *t).unwrap_or_default();
        assert!(inference.as_nanos() >= u128::from(charged), "its CPU is counted under inference: {roles:?}");
    }
}
