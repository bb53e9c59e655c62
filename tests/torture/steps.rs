//! The steps of a torture run: drawn from a seed, applied to the [`Model`] (what should
//! follow) and, by the rig, to the real daemon. A step that no longer applies (a shrunk
//! list removed what it needed) is skipped, so any sub-list of a run is a run.

use std::fmt;

use super::model::{Bundle, Camera, Expect, INITIAL, Model, Overrides, POOL, kind};

/// splitmix64: small, seedable, good enough to draw steps.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Commands that are refused (each must still get its one answer).
const INVALID: [&str; 6] =
    ["not json at all", r#"{"score_threshold": 7}"#, r#"{"fps": 0}"#, r#"{"detect_every": 0}"#, r#"{"zoom": 2}"#, "{}"];

/// Valid settings that restart the camera they reach.
const TUNES: [&str; 6] = [
    r#"{"fps": 3}"#,
    r#"{"fps": 4}"#,
    r#"{"score_threshold": 0.6}"#,
    r#"{"min_face_px": 20}"#,
    r#"{"detect_every": 2}"#,
    r#"{"fps": null, "detect_every": null}"#,
];

/// Puts every setting back to the file's.
pub const CLEAR: &str =
    r#"{"enabled": null, "fps": null, "score_threshold": null, "min_face_px": null, "detect_every": null}"#;

/// One thing done to the daemon or its world.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// SIGHUP with a camera added to the config.
    Add { name: &'static str, bundle: Bundle, fps: f64 },
    /// SIGHUP with a camera removed.
    Remove { name: &'static str },
    /// SIGHUP with a camera's bundle or fps changed.
    Change { name: &'static str, bundle: Bundle, fps: f64 },
    /// `{"enabled": false}` on the camera's `set`.
    Disable { name: &'static str },
    /// `{"enabled": null}` on the camera's `set`.
    Enable { name: &'static str },
    /// A valid setting on the camera's `set` (restarts it).
    Tune { name: &'static str, payload: &'static str },
    /// A valid setting on the device's `set` (restarts every camera).
    DeviceTune { payload: &'static str },
    /// A refused command (`camera` `None`: the device's topic; `"nosuch"`: no such camera).
    Invalid { camera: Option<&'static str>, payload: &'static str },
    /// Many commands at once on one camera: valid settings and refused ones, mixed.
    Storm { name: &'static str, n: usize, seed: u64 },
    /// The RTSP server goes away.
    SourceDown,
    /// The RTSP server comes back.
    SourceUp,
    /// The broker is stopped for `pause_ms` and started again.
    BrokerRestart { pause_ms: u64 },
    /// `n` live viewers open on a camera and stay.
    ViewersOpen { name: &'static str, n: usize },
    /// Every live viewer goes.
    ViewersClose,
    /// `n` live viewers come to a camera, stay a second and go.
    ViewersVisit { name: &'static str, n: usize },
    /// A command of about 300 KB on a camera's (`None`: the device's) `set`: refused as
    /// too large on its `set/result`, and events keep flowing (issue 26: it used to cut
    /// clefd off the broker for good).
    Oversize { camera: Option<&'static str> },
    /// A command that is not text (bytes that are not UTF-8): refused, answered once.
    Unreadable { camera: Option<&'static str> },
    /// `n` valid commands at once, more than the daemon's command queue holds, each a
    /// different `fps`: each answered once (`ok`, or refused as busy), the accepted applied in
    /// arrival order, the final state the last accepted one's.
    Flood { camera: Option<&'static str>, n: usize },
    /// An inference lane panics on its next batch (`CLEFD_TEST_FAULT_DIR`): counted once,
    /// its cameras go on.
    LanePanic,
    /// An inference worker panics outside its lanes (`panic`) or stops as if its sink had
    /// closed: reaped, counted, its cameras moved to a new worker and analysed again.
    WorkerFault { panic: bool },
    /// Back to the initial config, settings and world (resource figures are taken here).
    Reset,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Add { name, bundle, fps } => write!(f, "add {name} ({bundle:?}, fps {fps})"),
            Step::Remove { name } => write!(f, "remove {name}"),
            Step::Change { name, bundle, fps } => write!(f, "change {name} ({bundle:?}, fps {fps})"),
            Step::Disable { name } => write!(f, "disable {name}"),
            Step::Enable { name } => write!(f, "enable {name}"),
            Step::Tune { name, payload } => write!(f, "tune {name} {payload}"),
            Step::DeviceTune { payload } => write!(f, "tune all {payload}"),
            Step::Invalid { camera, payload } => write!(f, "invalid on {} {payload:?}", camera.unwrap_or("device")),
            Step::Storm { name, n, seed } => write!(f, "storm {name} x{n} (seed {seed})"),
            Step::SourceDown => write!(f, "rtsp source down"),
            Step::SourceUp => write!(f, "rtsp source up"),
            Step::BrokerRestart { pause_ms } => write!(f, "broker restart ({pause_ms} ms down)"),
            Step::ViewersOpen { name, n } => write!(f, "open {n} viewers on {name}"),
            Step::ViewersClose => write!(f, "close every viewer"),
            Step::ViewersVisit { name, n } => write!(f, "{n} viewers come to {name} and go"),
            Step::Oversize { camera } => write!(f, "oversize command on {}", camera.unwrap_or("device")),
            Step::Unreadable { camera } => write!(f, "unreadable command on {}", camera.unwrap_or("device")),
            Step::Flood { camera, n } => write!(f, "flood {} x{n}", camera.unwrap_or("device")),
            Step::LanePanic => write!(f, "an inference lane panics"),
            Step::WorkerFault { panic: true } => write!(f, "an inference worker panics"),
            Step::WorkerFault { panic: false } => write!(f, "an inference worker stops"),
            Step::Reset => write!(f, "reset"),
        }
    }
}

/// The answer the model predicts for a command (any of them may instead be refused as
/// busy while the daemon's queue is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `{"ok": true, …}`.
    Ok,
    /// `{"ok": false, "error": …}`, checked and refused by the daemon.
    Refused,
    /// Refused as too large on arrival (`"error": "too large: …"`), before any check.
    TooLarge,
}

/// A control command as sent: the camera of its topic (`None`: the device's), the payload,
/// and the answer the model predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub camera: Option<&'static str>,
    pub payload: Vec<u8>,
    pub want: Want,
    /// Part of a flood: its accepted commands are checked for order and the final state.
    pub flood: bool,
}

/// The command queue of the daemon (`src/cmd/run.rs`): a flood is larger.
pub const COMMAND_QUEUE: usize = 16;

/// The `fps` the `i`-th command of a flood sets: each one different, growing with `i`, so
/// the accepted ones can be told apart (and their order checked) by their answers' echo.
pub fn flood_fps(i: usize) -> f64 {
    4.0 + (i % 1000) as f64 / 1000.0
}

/// A command of about 300 KB: a valid setting padded with a long string.
fn oversize() -> Vec<u8> {
    format!(r#"{{"fps": 3, "pad": "{}"}}"#, "x".repeat(300 * 1024)).into_bytes()
}

/// Bytes that are not UTF-8 (nor JSON).
const UNREADABLE: &[u8] = b"\xff\xfe{\"fps\": \x80\xc3\x28 3}\x00\x9f";

/// The storm's commands (drawn from its own seed, so the list shrinks as one step).
pub fn storm(n: usize, seed: u64) -> Vec<(&'static str, bool)> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| if rng.below(3) == 0 { (rng.pick(&INVALID), false) } else { (rng.pick(&TUNES), true) }).collect()
}

/// Applies `step` to the model: `None` when it does not apply now (skipped), else the
/// control commands it sends (config edits and world changes are read off the model).
pub fn apply(model: &mut Model, step: &Step) -> Option<Vec<Command>> {
    let cmd = |camera, payload: &str, ok| Command {
        camera,
        payload: payload.as_bytes().to_vec(),
        want: if ok { Want::Ok } else { Want::Refused },
        flood: false,
    };
    match *step {
        Step::Add { name, bundle, fps } => {
            if model.cameras.contains_key(name) {
                return None;
            }
            model.cameras.insert(name, Camera { kind: kind(name), bundle, fps });
            model.overrides.remove(name);
            Some(vec![])
        }
        Step::Remove { name } => {
            if !model.cameras.contains_key(name) || (model.enabled(name) && model.enabled_count() < 2) {
                return None;
            }
            model.cameras.remove(name);
            model.overrides.remove(name);
            Some(vec![])
        }
        Step::Change { name, bundle, fps } => {
            let cam = model.cameras.get_mut(name)?;
            if cam.bundle == bundle && cam.fps == fps {
                return None;
            }
            (cam.bundle, cam.fps) = (bundle, fps);
            Some(vec![])
        }
        Step::Disable { name } => {
            model.cameras.get(name)?;
            let ok = !model.enabled(name) || model.enabled_count() > 1;
            if ok {
                model.overrides.entry(name).or_default().enabled = Some(false);
            }
            Some(vec![cmd(Some(name), r#"{"enabled": false}"#, ok)])
        }
        Step::Enable { name } => {
            model.cameras.get(name)?;
            model.overrides.entry(name).or_default().enabled = None;
            Some(vec![cmd(Some(name), r#"{"enabled": null}"#, true)])
        }
        Step::Tune { name, payload } => {
            model.cameras.get(name)?;
            model.overrides.entry(name).or_default().tuned = true;
            Some(vec![cmd(Some(name), payload, true)])
        }
        Step::DeviceTune { payload } => {
            for name in model.cameras.keys() {
                model.overrides.entry(name).or_default().tuned = true;
            }
            Some(vec![cmd(None, payload, true)])
        }
        Step::Invalid { camera, payload } => {
            if camera.is_some_and(|c| c != "nosuch" && !model.cameras.contains_key(c)) {
                return None;
            }
            Some(vec![cmd(camera, payload, false)])
        }
        Step::Storm { name, n, seed } => {
            model.cameras.get(name)?;
            let commands: Vec<Command> = storm(n, seed).into_iter().map(|(p, ok)| cmd(Some(name), p, ok)).collect();
            if commands.iter().any(|c| c.want == Want::Ok) {
                model.overrides.entry(name).or_default().tuned = true;
            }
            Some(commands)
        }
        Step::SourceDown | Step::SourceUp => {
            let up = *step == Step::SourceUp;
            if model.source_up == up {
                return None;
            }
            model.source_up = up;
            Some(vec![])
        }
        Step::BrokerRestart { .. } => Some(vec![]),
        Step::ViewersOpen { name, n } => {
            if !model.cameras.contains_key(name) || !model.enabled(name) || model.seats_held() + n > 8 {
                return None;
            }
            model.viewers.extend(std::iter::repeat_n(name, n));
            Some(vec![])
        }
        Step::ViewersClose => {
            model.viewers.clear();
            Some(vec![])
        }
        Step::ViewersVisit { name, n } => {
            if !model.cameras.contains_key(name) || !model.enabled(name) || model.seats_held() + n > 8 {
                return None;
            }
            Some(vec![])
        }
        Step::Oversize { camera } | Step::Unreadable { camera } => {
            if camera.is_some_and(|c| !model.cameras.contains_key(c)) {
                return None;
            }
            Some(vec![match step {
                Step::Oversize { .. } => Command { camera, payload: oversize(), want: Want::TooLarge, flood: false },
                _ => Command { camera, payload: UNREADABLE.to_vec(), want: Want::Refused, flood: false },
            }])
        }
        Step::Flood { camera, n } => {
            let targets: Vec<&'static str> = match camera {
                Some(c) if model.cameras.contains_key(c) => vec![c],
                Some(_) => return None,
                None => model.cameras.keys().copied().collect(),
            };
            for name in targets {
                model.overrides.entry(name).or_default().flooded = true;
            }
            let payload = |i| format!(r#"{{"fps": {}}}"#, flood_fps(i)).into_bytes();
            Some((0..n).map(|i| Command { camera, payload: payload(i), want: Want::Ok, flood: true }).collect())
        }
        Step::LanePanic | Step::WorkerFault { .. } => (!model.running().is_empty()).then(Vec::new),
        Step::Reset => {
            let fresh = Model::initial();
            let overrides: Vec<&'static str> =
                model.overrides.iter().filter(|(_, o)| **o != Overrides::default()).map(|(n, _)| *n).collect();
            model.cameras = fresh.cameras;
            model.source_up = true;
            model.viewers.clear();
            model.overrides.clear();
            Some(if overrides.is_empty() { vec![] } else { vec![cmd(None, CLEAR, true)] })
        }
    }
}

/// Draws `n` steps from `seed`, each one that applies where it is drawn.
/// The steps of the control channel's edge cases and of faults come from a stream of
/// their own (one in four steps), so a seed's other steps are the ones it drew before
/// they existed (the seeds and step lists in docs/reliability.md still mean the same).
pub fn generate(seed: u64, n: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut extra = Rng::new(seed ^ 0x5EED_C0DE_FA17_0026);
    let mut turns = 0;
    let mut model = Model::initial();
    let mut steps = Vec::with_capacity(n);
    let bundles = [Bundle::Face, Bundle::Context];
    while steps.len() < n {
        let present: Vec<&'static str> = model.cameras.keys().copied().collect();
        let absent: Vec<&'static str> =
            POOL.iter().map(|(n, _)| *n).filter(|n| !model.cameras.contains_key(n)).collect();
        if extra.below(4) == 0 {
            // The kinds in turn, from a place the seed picks: a short run meets most of them.
            let camera = if extra.below(3) == 0 { None } else { Some(extra.pick(&present)) };
            let step = match (seed as usize + turns) % 6 {
                0 | 3 => Step::Flood { camera, n: COMMAND_QUEUE + 4 + extra.below(3 * COMMAND_QUEUE) },
                1 => Step::Oversize { camera },
                2 => Step::LanePanic,
                4 => Step::Unreadable { camera },
                _ => Step::WorkerFault { panic: extra.below(2) == 0 },
            };
            turns += 1;
            if apply(&mut model, &step).is_some() {
                steps.push(step);
            }
            continue;
        }
        let any = rng.pick(&present);
        // A camera without frames (off, over, unreachable) is where viewers used to leak.
        let frameless: Vec<&'static str> =
            present.iter().copied().filter(|c| model.enabled(c) && model.expect(c) != Some(Expect::Running)).collect();
        let step = match rng.below(20) {
            0 | 1 if !absent.is_empty() => {
                let name = rng.pick(&absent);
                let bundle = if INITIAL.iter().any(|(n, _)| *n == name) || rng.below(2) == 0 {
                    Bundle::Face
                } else {
                    Bundle::Context
                };
                Step::Add { name, bundle, fps: 5.0 }
            }
            2 => Step::Remove { name: any },
            3 => Step::Change { name: any, bundle: rng.pick(&bundles), fps: rng.pick(&[4.0, 5.0, 6.0]) },
            4 | 5 => Step::Disable { name: if rng.below(2) == 0 { "smpte" } else { any } },
            6 | 7 => {
                let off: Vec<&'static str> = present.iter().copied().filter(|c| !model.enabled(c)).collect();
                Step::Enable { name: if off.is_empty() { any } else { rng.pick(&off) } }
            }
            8 => Step::Tune { name: any, payload: rng.pick(&TUNES) },
            9 => Step::DeviceTune { payload: rng.pick(&TUNES) },
            10 => {
                let camera = rng.pick(&[None, Some("nosuch"), Some(any)]);
                Step::Invalid { camera, payload: rng.pick(&INVALID) }
            }
            11 => Step::Storm { name: any, n: 10 + rng.below(30), seed: rng.next() },
            12 if model.cameras.contains_key("door") || rng.below(2) == 0 => {
                if model.source_up {
                    Step::SourceDown
                } else {
                    Step::SourceUp
                }
            }
            12 => Step::Add { name: "door", bundle: Bundle::Face, fps: 5.0 },
            13 => Step::BrokerRestart { pause_ms: rng.pick(&[0, 500, 2000]) },
            14 | 15 => {
                let on = if frameless.is_empty() || rng.below(4) == 0 { any } else { rng.pick(&frameless) };
                let free = 8usize.saturating_sub(model.seats_held());
                match (free, rng.below(2)) {
                    (0, _) => Step::ViewersClose,
                    (_, 0) => Step::ViewersOpen { name: on, n: free },
                    _ => Step::ViewersVisit { name: on, n: free },
                }
            }
            16 => Step::ViewersClose,
            17 if !absent.is_empty() => {
                Step::Add { name: rng.pick(&["clip", "torn"]), bundle: rng.pick(&bundles), fps: 5.0 }
            }
            18 => Step::Storm { name: any, n: 10 + rng.below(30), seed: rng.next() },
            _ => Step::Invalid { camera: Some(any), payload: rng.pick(&INVALID) },
        };
        if apply(&mut model, &step).is_some() {
            steps.push(step);
        }
    }
    steps
}
