//! Applying new options to a running pipeline: the cameras a reload does not touch keep
//! streaming, and models are loaded before the lock a stop needs is taken.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::options::{CameraPlan, PipelineOptions};
use super::{Control, EventSink, Inner, Output, PipelineError, Prepared, Running, load_analyzers};

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Cameras started because they are new.
    pub added: Vec<String>,
    /// Cameras restarted because their plan changed.
    pub changed: Vec<String>,
    /// Cameras stopped because they left the options.
    pub removed: Vec<String>,
    /// Cameras left running untouched.
    pub unchanged: Vec<String>,
    /// Worker options (engine, events, tracker) changed: every camera moved to new workers.
    pub workers_restarted: bool,
}

impl Control {
    /// Applies new options: starts new cameras, restarts cameras whose plan changed, stops
    /// removed ones, leaves the rest alone. New cameras start before old ones stop, so a
    /// worker never sees all its cameras gone.
    ///
    /// Bundles the new options need are loaded first, without holding the lock a stop
    /// needs; if one cannot be loaded the reload is refused and nothing changes.
    pub fn reload(&self, options: &PipelineOptions) -> Result<ReloadReport, PipelineError> {
        let mut report = ReloadReport::default();
        let mut tries = 0;
        let (to_stop, sink) = loop {
            let Some(prepared) = self.prepare(options)? else { return Ok(report) };
            let mut inner = super::lock(&self.inner)?;
            if inner.stopped {
                return Ok(report);
            }
            // A worker may have ended since its bundle was prepared: models are never
            // loaded under this lock (a SIGTERM would wait for them), so prepare again.
            tries += 1;
            if tries < MAX_PREPARES && !inner.unprepared(options, &prepared).is_empty() {
                continue;
            }
            let old = std::mem::replace(&mut inner.options, options.clone());
            report.workers_restarted = old.workers != options.workers;
            if report.workers_restarted {
                inner.retire_workers();
            }
            for (dir, analyzers) in prepared {
                if !inner.workers.get(&dir).is_some_and(super::Worker::alive) {
                    inner.install_worker(&dir, analyzers)?;
                }
            }
            let to_stop = inner.keep_or_stop(options, &mut report);
            inner.start_new(options, &mut report);
            break (to_stop, (!report.removed.is_empty()).then(|| (inner.sink)()));
        };
        for running in &to_stop {
            tracing::info!(camera = %running.name, "stopping camera (reload)");
        }
        super::stop_cameras(to_stop);
        // After the supervisors have stopped, so this comes after their last state.
        if let Some(mut sink) = sink {
            for name in &report.removed {
                sink.emit(Output::CameraRemoved(name.clone()));
            }
        }
        Ok(report)
    }

    /// Loads, outside the lock, every bundle a new or changed camera of `options` needs
    /// that has no worker yet (all of them when the worker options change). `None` when the pipeline has stopped.
    fn prepare(&self, options: &PipelineOptions) -> Result<Option<Vec<Prepared>>, PipelineError> {
        let needed = {
            let inner = super::lock(&self.inner)?;
            if inner.stopped {
                return Ok(None);
            }
            inner.unprepared(options, &[])
        };
        if !needed.is_empty() {
            tracing::info!(bundles = needed.len(), "reload: loading bundles before switching cameras over");
        }
        // Test hook: a reload whose models take long to load (SIGTERM must not wait for it).
        if let Some(ms) = std::env::var("CLEFD_TEST_RELOAD_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let mut prepared = Vec::with_capacity(needed.len());
        for dir in needed {
            let analyzers = load_analyzers(&options.workers, &dir)?;
            prepared.push((dir, analyzers));
        }
        Ok(Some(prepared))
    }
}

/// How often a reload prepares its bundles before it lets the last few load under the
/// lock (a worker ending between each preparation and the lock, again and again).
const MAX_PREPARES: u32 = 3;

impl Inner {
    /// The bundles a new or changed camera of `options` needs that have no running worker
    /// (all of them when the worker options change) and are not in `prepared`. Only
    /// bundles a camera will start on: a worker started for none would never end (a file
    /// run that has ended would then wait for it for ever).
    fn unprepared(&self, options: &PipelineOptions, prepared: &[Prepared]) -> Vec<PathBuf> {
        let all = self.options.workers != options.workers;
        let starts = |name: &String, plan: &CameraPlan| all || self.cameras.get(name).is_none_or(|r| r.plan != *plan);
        let mut dirs: Vec<PathBuf> = (options.cameras.iter())
            .filter(|(name, plan)| starts(name, plan))
            .map(|(_, c)| c.bundle.clone())
            .filter(|d| all || !self.workers.get(d).is_some_and(super::Worker::alive))
            .filter(|d| !prepared.iter().any(|(p, _)| p == d))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Moves every worker to `retired`: they finish once their cameras are gone.
    fn retire_workers(&mut self) {
        for (_, old) in std::mem::take(&mut self.workers) {
            self.probe.remove(&old.hub);
            // Its cameras all stop in this reload; one that had none ends too.
            old.hub.retire();
            self.retired.push(old);
        }
        self.reap();
    }

    /// Keeps the running cameras whose plan is unchanged (and whose worker stays); returns
    /// the others, to be stopped once the lock is released.
    fn keep_or_stop(&mut self, options: &PipelineOptions, report: &mut ReloadReport) -> Vec<Running> {
        let mut to_stop = Vec::new();
        for (name, running) in std::mem::take(&mut self.cameras) {
            match options.cameras.get(&name) {
                Some(plan) if !report.workers_restarted && *plan == running.plan => {
                    report.unchanged.push(name.clone());
                    self.cameras.insert(name, running);
                }
                Some(_) => {
                    // Before its successor starts: a late `streaming` of the old generation
                    // would otherwise land after the new one's first report.
                    running.silence();
                    report.changed.push(name);
                    to_stop.push(running);
                }
                None => {
                    running.silence();
                    self.probe.guard(&self.probe.current, "the map of the cameras' slots").remove(&name);
                    self.probe.views.forget(&name);
                    report.removed.push(name);
                    to_stop.push(running);
                }
            }
        }
        to_stop
    }

    /// Starts the cameras of `options` that are not running (new or changed).
    fn start_new(&mut self, options: &PipelineOptions, report: &mut ReloadReport) {
        let wanted: BTreeMap<&String, &CameraPlan> = options.cameras.iter().collect();
        for (name, plan) in wanted {
            if self.cameras.contains_key(name) {
                continue;
            }
            if !report.changed.contains(name) {
                report.added.push(name.clone());
            }
            if let Err(e) = self.start_camera(name, plan) {
                // Its bundle was loaded above: only a thread that cannot start lands
                // here. The other cameras go on.
                tracing::error!(camera = %name, error = %e, "cannot start camera after reload");
                self.probe.guard(&self.failures, "the cameras' failures").insert(name.clone(), e.to_string());
            }
        }
    }
}
