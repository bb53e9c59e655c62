//! Looking after the inference workers while the pipeline runs: a worker whose thread is
//! over is joined (its figures folded into the totals), and the cameras left on a worker
//! that ended abnormally (a panic outside the lanes, its sink or lanes gone) are stopped
//! and started again on a new one, its models loaded outside the pipeline's lock. A
//! bundle whose workers keep failing ends the run with a failure (clefd exits non-zero,
//! so systemd restarts it).

use std::path::PathBuf;

use super::{Control, Inner, Running, load_analyzers};

/// How often a bundle's cameras move to a new worker before clefd gives up and exits
/// non-zero (systemd restarts it): a worker that keeps failing is not a passing fault.
const MAX_RESCUES: u32 = 5;

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
        t.over = self.workers.is_empty() && self.retired.is_empty() && (self.stopped || !self.cameras.is_empty());
        if self.stopped {
            return t;
        }
        // Wherever their worker is now (a reload may have retired it meanwhile).
        let orphaned: Vec<String> = (self.cameras.iter())
            .filter(|(_, r)| r.hub.is_abandoned() && r.hub.is_open(r.slot))
            .map(|(name, _)| name.clone())
            .collect();
        let mut bundles = Vec::new();
        for name in orphaned {
            let Some(r) = self.cameras.remove(&name) else { continue };
            r.silence();
            if !bundles.contains(&r.plan.bundle) {
                bundles.push(r.plan.bundle.clone());
            }
            t.orphans.push(r);
        }
        for bundle in bundles {
            let n = self.rescues.entry(bundle.clone()).or_default();
            *n += 1;
            if *n > MAX_RESCUES {
                t.gave_up = Some(format!(
                    "the inference worker of {} ended abnormally {n} times: clefd must be restarted",
                    bundle.display()
                ));
            }
        }
        t.over &= t.orphans.is_empty();
        t
    }
}

impl Control {
    /// Stops the cameras of a worker that ended abnormally and starts them again on a new
    /// worker of their bundle (unless a reload changed or removed them meanwhile). An
    /// error when a bundle cannot be loaded again: the run must end.
    pub(super) fn rescue(&self, orphans: Vec<Running>) -> Result<(), String> {
        let restart: Vec<_> = orphans.iter().map(|r| (r.name.clone(), r.plan.clone())).collect();
        for (name, plan) in &restart {
            tracing::error!(camera = %name, bundle = %plan.bundle.display(), "its inference worker ended abnormally: the camera starts again on a new one");
        }
        super::stop_cameras(orphans);
        let workers = super::lock(&self.inner).map_err(|e| e.to_string())?.options.workers.clone();
        let mut dirs: Vec<PathBuf> = restart.iter().map(|(_, p)| p.bundle.clone()).collect();
        dirs.sort();
        dirs.dedup();
        // Models load outside the lock a stop or a reload needs.
        let mut prepared = Vec::with_capacity(dirs.len());
        for dir in dirs {
            prepared.push((dir.clone(), load_analyzers(&workers, &dir).map_err(|e| e.to_string())?));
        }
        let mut inner = super::lock(&self.inner).map_err(|e| e.to_string())?;
        if inner.stopped {
            return Ok(());
        }
        for (dir, analyzers) in prepared {
            if !inner.workers.get(&dir).is_some_and(super::Worker::alive) {
                inner.install_worker(&dir, analyzers).map_err(|e| e.to_string())?;
            }
        }
        for (name, plan) in restart {
            if inner.cameras.contains_key(&name) || inner.options.cameras.get(&name) != Some(&plan) {
                continue;
            }
            if let Err(e) = inner.start_camera(&name, &plan) {
                tracing::error!(camera = %name, error = %e, "cannot start the camera again");
                inner.failures.lock().map(|mut f| f.insert(name.clone(), e.to_string())).ok();
            }
        }
        Ok(())
    }
}
