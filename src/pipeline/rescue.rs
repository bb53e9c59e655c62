//! Looking after the inference workers while the pipeline runs: a worker whose thread is
//! over is joined (its figures folded into the totals), and the cameras left on a worker
//! that ended abnormally (a panic outside the lanes, its sink or lanes gone) are stopped
//! and started again on a new one, its models loaded outside the pipeline's lock. A
//! bundle whose workers keep failing ends the run with a failure (clefd exits non-zero,
//! so systemd restarts it).

use std::path::PathBuf;

use super::{Control, Inner, Running, load_analyzers};
use crate::source::{CameraState, CameraStatus};

/// How many workers of a bundle may end abnormally within [`RESCUE_WINDOW`] before clefd
/// gives up and exits non-zero (systemd restarts it): a worker that keeps failing is not a
/// passing fault, but a few failures spread over a long run are.
const MAX_RESCUES: usize = 5;

/// The span [`MAX_RESCUES`] counts over: older failures are forgotten.
pub(super) const RESCUE_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Records that the worker of `hub` (of `bundle`) ended abnormally at `now` (once per
/// worker however many of its cameras are found, however many passes find them) and
/// forgets failures older than the window; true when too many remain.
fn too_many_failures(
    failures: &mut std::collections::VecDeque<(std::time::Instant, usize)>,
    hub: usize,
    now: std::time::Instant,
) -> bool {
    while failures.front().is_some_and(|(t, _)| now.duration_since(*t) > RESCUE_WINDOW) {
        failures.pop_front();
    }
    if !failures.iter().any(|(_, h)| *h == hub) {
        failures.push_back((now, hub));
    }
    failures.len() >= MAX_RESCUES
}

/// What [`Inner::tend`] found.
#[derive(Default)]
pub(super) struct Tended {
    /// Cameras whose worker ended abnormally: to stop and start again on a new worker.
    pub(super) orphans: Vec<Running>,
    /// Set when a bundle's workers keep failing: the run ends with this failure.
    pub(super) gave_up: Option<String>,
    /// Every worker has finished and no camera waits for one: the run is over.
    pub(super) over: bool,
}

impl Inner {
    /// Looks after the workers: joins those whose thread is over, and takes out the
    /// cameras left on a worker that ended abnormally (they must start again on a new
    /// one). Says when the run is over.
    pub(super) fn tend(&mut self) -> Tended {
        let mut t = Tended::default();
        let over: Vec<PathBuf> = (self.workers.iter())
            .filter(|(_, w)| w.handle.as_ref().is_none_or(|h| h.is_finished()))
            .map(|(d, _)| d.clone())
            .collect();
        for dir in over {
            if let Some(w) = self.workers.remove(&dir) {
                self.probe.remove(&w.hub);
                self.retired.push(w);
            }
        }
        self.reap();
        // Cameras that ended on their own (files) end the run, unless one that is disabled
        // may still be enabled by a command: then clefd waits for it, like with no camera.
        let ended = !self.cameras.is_empty() && self.options.disabled.is_empty();
        t.over = self.workers.is_empty() && self.retired.is_empty() && (self.stopped || ended);
        if self.stopped {
            return t;
        }
        // Wherever their worker is now (a reload may have retired it meanwhile).
        let orphaned: Vec<String> = (self.cameras.iter())
            .filter(|(_, r)| r.hub.is_abandoned() && r.hub.is_open(r.slot))
            .map(|(name, _)| name.clone())
            .collect();
        let now = std::time::Instant::now();
        for name in orphaned {
            let Some(r) = self.cameras.remove(&name) else { continue };
            r.silence();
            let failures = self.rescues.entry(r.plan.bundle.clone()).or_default();
            if too_many_failures(failures, super::hub_id(&r.hub), now) {
                t.gave_up = Some(format!(
                    "the inference worker of {} ended abnormally {} times within {} minutes: clefd must be restarted",
                    r.plan.bundle.display(),
                    failures.len(),
                    RESCUE_WINDOW.as_secs() / 60
                ));
            }
            t.orphans.push(r);
        }
        t.over &= t.orphans.is_empty();
        t
    }
}

impl Control {
    /// Stops the cameras of a worker that ended abnormally and starts them again on a new
    /// worker of their bundle (unless a reload changed, removed or restarted them
    /// meanwhile, or the daemon is stopping). An error when a bundle cannot be loaded
    /// again: the run must end. Every camera that does not come back is reported `failed`
    /// with why first, so none is left showing `streaming`.
    pub(super) fn rescue(&self, orphans: Vec<Running>) -> Result<(), String> {
        let restart: Vec<_> = orphans.iter().map(|r| (r.name.clone(), r.plan.clone())).collect();
        for (name, plan) in &restart {
            tracing::error!(camera = %name, bundle = %plan.bundle.display(), "its inference worker ended abnormally: the camera starts again on a new one");
        }
        super::stop_cameras(orphans);
        let names = || restart.iter().map(|(n, _)| n.clone());
        let workers = match super::lock(&self.inner) {
            Ok(i) if i.stopped => return Ok(()),
            Ok(i) => i.options.workers.clone(),
            Err(e) => {
                self.report_failed(names(), &e.to_string());
                return Err(e.to_string());
            }
        };
        let mut dirs: Vec<PathBuf> = restart.iter().map(|(_, p)| p.bundle.clone()).collect();
        dirs.sort();
        dirs.dedup();
        // Models load outside the lock a stop or a reload needs; a stop meanwhile skips
        // the rest (SIGTERM waits for at most the load under way).
        let mut prepared = Vec::with_capacity(dirs.len());
        for dir in dirs {
            if self.stopping() {
                return Ok(());
            }
            match load_analyzers(&workers, &dir) {
                Ok(a) => prepared.push((dir, a)),
                Err(e) => {
                    let reason = format!("cannot load {} again for a new inference worker: {e}", dir.display());
                    self.report_failed(names(), &reason);
                    return Err(reason);
                }
            }
        }
        let mut inner = super::lock(&self.inner).map_err(|e| e.to_string())?;
        if inner.stopped {
            return Ok(());
        }
        // Only cameras still configured as they were and not started again meanwhile (a
        // reload during the load) come back, and only their bundles get a worker.
        let wanted: Vec<(String, super::CameraPlan)> = (restart.into_iter())
            .filter(|(name, plan)| !inner.cameras.contains_key(name) && inner.options.cameras.get(name) == Some(plan))
            .collect();
        let mut failed = Vec::new();
        for (dir, analyzers) in prepared {
            let on_it = || wanted.iter().filter(|(_, p)| p.bundle == dir).map(|(n, _)| n.clone());
            if on_it().next().is_none() || inner.workers.get(&dir).is_some_and(super::Worker::alive) {
                continue;
            }
            if let Err(e) = inner.install_worker(&dir, analyzers) {
                let reason = format!("cannot start a new inference worker for {}: {e}", dir.display());
                failed.extend(on_it().map(|n| (n, reason.clone())));
            }
        }
        for (name, plan) in &wanted {
            if failed.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Err(e) = inner.start_camera(name, plan) {
                tracing::error!(camera = %name, error = %e, "cannot start the camera again");
                failed.push((name.clone(), e.to_string()));
            }
        }
        drop(inner);
        for (name, reason) in failed {
            self.report_failed(std::iter::once(name), &reason);
        }
        Ok(())
    }

    /// Whether the daemon is stopping (or the lock is lost, which ends the run too).
    fn stopping(&self) -> bool {
        super::lock(&self.inner).map_or(true, |i| i.stopped)
    }

    /// Reports `cameras` `failed` with `reason` (state, health, metrics, the run's
    /// failures): they are not analysed any more and must not keep showing `streaming`.
    pub(super) fn report_failed(&self, cameras: impl Iterator<Item = String>, reason: &str) {
        // Reported even when a panic poisoned the state (the run is then broken and ends
        // non-zero), so the cameras never keep showing `streaming`.
        let inner = self.inner.lock().unwrap_or_else(|p| {
            let inner = p.into_inner();
            inner.probe.set_broken("the pipeline's state");
            inner
        });
        let mut sink = (inner.sink)();
        let mut failures = inner.probe.guard(&inner.failures, "the cameras' failures");
        for camera in cameras {
            tracing::error!(camera = %camera, error = %reason, "camera failed");
            failures.insert(camera.clone(), reason.to_string());
            sink.emit(super::Output::CameraState(CameraStatus {
                camera,
                status: CameraState::Failed,
                fps: 0.0,
                last_error: Some(reason.to_string()),
                since: crate::events::rfc3339(std::time::SystemTime::now()),
                restarts: 0,
                dropped_fps_cap: 0,
                decoder: None,
                target_fps: None,
                health_fps: None,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_RESCUES, RESCUE_WINDOW, too_many_failures};
    use std::time::{Duration, Instant};

    #[test]
    fn the_rescue_limit_counts_worker_failures_within_a_window() {
        let mut f = std::collections::VecDeque::new();
        let t0 = Instant::now();
        // The same worker found over several passes counts once.
        for _ in 0..10 {
            assert!(!too_many_failures(&mut f, 1, t0));
        }
        // Failures spread wider than the window never add up.
        let spread = RESCUE_WINDOW / 2 + Duration::from_secs(1);
        for hub in 2..20 {
            assert!(!too_many_failures(&mut f, hub, t0 + spread * (hub as u32)), "hub {hub}");
        }
        // MAX_RESCUES distinct workers within the window: give up.
        let mut g = std::collections::VecDeque::new();
        let hit = (0..MAX_RESCUES)
            .map(|h| too_many_failures(&mut g, h, t0 + Duration::from_secs(h as u64)))
            .collect::<Vec<_>>();
        assert_eq!(hit.iter().filter(|x| **x).count(), 1);
        assert!(hit[MAX_RESCUES - 1]);
    }
}
