//! Runtime control over MQTT (`mqtt.control`): what a command may change, how it is
//! checked (the config file's ranges, every mistake named), and how what was set lies on
//! top of the camera files. Pure apart from [`Controls::load`] and [`Controls::save`];
//! the daemon applies the result through the same reload as SIGHUP.

use std::collections::BTreeMap;
use std::path::Path;

use clefd::config::{MAX_CAMERAS, Settings, limits};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What runtime control set for one camera: each value present replaces the camera
/// file's until it is set to `null` again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Run the camera or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Frames analysed per second at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Faces scoring below this are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f32>,
    /// Faces smaller than this (pixels, shorter side) are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_face_px: Option<f32>,
    /// The detector runs on every N-th frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_every: Option<u32>,
    /// Snapshots of its faces (when `[snapshots]` is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<bool>,
}

impl Overrides {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

/// What runtime control set, camera by camera.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Controls(pub BTreeMap<String, Overrides>);

/// The settings a command may change; `None` puts the camera file's value back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    Enabled(Option<bool>),
    Fps(Option<f64>),
    ScoreThreshold(Option<f32>),
    MinFacePx(Option<f32>),
    DetectEvery(Option<u32>),
    Snapshots(Option<bool>),
}

const SETTABLE: &str = "enabled, fps, score_threshold, min_face_px, detect_every, snapshots";

/// Reads one command (a JSON object); every problem in it, or what it changes.
fn parse(payload: &[u8]) -> Result<Vec<Change>, String> {
    let object = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(format!("a command is a JSON object of settings ({SETTABLE})")),
        Err(e) => return Err(format!("not JSON ({e}): a command is a JSON object of settings ({SETTABLE})")),
    };
    if object.is_empty() {
        return Err(format!("the command sets nothing: give one or more of {SETTABLE}"));
    }
    let mut changes = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in &object {
        match change(key, value) {
            Ok(c) => changes.push(c),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() { Ok(changes) } else { Err(problems.join("; ")) }
}

fn change(key: &str, value: &Value) -> Result<Change, String> {
    let number = |lo: f64, hi: f64| -> Result<Option<f64>, String> {
        match value {
            Value::Null => Ok(None),
            Value::Number(n) => match n.as_f64() {
                Some(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
                _ => Err(format!("{key}: {n} is out of range: must be between {lo} and {hi}")),
            },
            other => Err(format!("{key}: {other} is not a number (or null for the camera file's value)")),
        }
    };
    Ok(match key {
        "enabled" => match value {
            Value::Bool(b) => Change::Enabled(Some(*b)),
            Value::Null => Change::Enabled(None),
            other => return Err(format!("enabled: {other} is not true or false")),
        },
        "fps" => Change::Fps(number(limits::FPS.0, limits::FPS.1)?),
        "score_threshold" => {
            Change::ScoreThreshold(number(f64::from(limits::SCORE.0), f64::from(limits::SCORE.1))?.map(|v| v as f32))
        }
        "min_face_px" => {
            Change::MinFacePx(number(f64::from(limits::FACE_PX.0), f64::from(limits::FACE_PX.1))?.map(|v| v as f32))
        }
        "detect_every" => {
            let (lo, hi) = limits::DETECT_EVERY;
            let n = number(f64::from(lo), f64::from(hi))?;
            if n.is_some_and(|v| v.fract() != 0.0) {
                return Err(format!("detect_every: {value} is not a whole number of frames"));
            }
            Change::DetectEvery(n.map(|v| v as u32))
        }
        "snapshots" => match value {
            Value::Bool(b) => Change::Snapshots(Some(*b)),
            Value::Null => Change::Snapshots(None),
            other => return Err(format!("snapshots: {other} is not true or false")),
        },
        other => return Err(format!("unknown setting '{other}': a command may set {SETTABLE}")),
    })
}

impl Controls {
    /// `self` with `payload` applied to `camera` (every camera when `None`), checked
    /// against the file settings `file`: the new controls, or why the command is refused.
    pub fn with_command(&self, file: &Settings, camera: Option<&str>, payload: &[u8]) -> Result<Controls, String> {
        let changes = parse(payload)?;
        let targets: Vec<String> = match camera {
            Some(name) if file.cameras.contains_key(name) => vec![name.to_string()],
            Some(name) => {
                let known: Vec<&str> = file.cameras.keys().map(String::as_str).collect();
                return Err(format!("no camera '{name}' in the configuration (cameras: {})", known.join(", ")));
            }
            None => file.cameras.keys().cloned().collect(),
        };
        let mut next = self.clone();
        for name in targets {
            let o = next.0.entry(name).or_default();
            for change in &changes {
                match *change {
                    Change::Enabled(v) => o.enabled = v,
                    Change::Fps(v) => o.fps = v,
                    Change::ScoreThreshold(v) => o.score_threshold = v,
                    Change::MinFacePx(v) => o.min_face_px = v,
                    Change::DetectEvery(v) => o.detect_every = v,
                    Change::Snapshots(v) => o.snapshots = v,
                }
            }
        }
        next.0.retain(|_, o| !o.is_empty());
        let enabled = next.apply(file).enabled_cameras().count();
        if enabled > MAX_CAMERAS {
            return Err(format!("{enabled} cameras would be enabled: one clefd runs at most {MAX_CAMERAS}"));
        }
        if enabled == 0 {
            return Err("every camera would be disabled: keep at least one (or stop clefd)".into());
        }
        Ok(next)
    }

    /// The file settings with what was set laid over them. Cameras the files no longer
    /// name are left out of `self` first ([`Controls::prune`]).
    pub fn apply(&self, file: &Settings) -> Settings {
        let mut s = file.clone();
        for (name, o) in &self.0 {
            let Some(cam) = s.cameras.get_mut(name) else { continue };
            cam.enabled = o.enabled.unwrap_or(cam.enabled);
            cam.fps = o.fps.or(cam.fps);
            cam.score_threshold = o.score_threshold.or(cam.score_threshold);
            cam.min_face_px = o.min_face_px.or(cam.min_face_px);
            cam.detect_every = o.detect_every.unwrap_or(cam.detect_every);
            cam.snapshots = o.snapshots.unwrap_or(cam.snapshots);
        }
        s
    }

    /// Forgets what was set for cameras the files no longer name.
    pub fn prune(&mut self, file: &Settings) {
        self.0.retain(|name, _| file.cameras.contains_key(name));
    }

    /// What was set for `camera`, as its state shows it (`None`: nothing).
    pub fn echo(&self, camera: &str) -> Option<Value> {
        self.0.get(camera).and_then(|o| serde_json::to_value(o).ok())
    }

    /// Reads what an earlier run kept; nothing when there is no file. A file that cannot
    /// be read is reported and ignored: the camera files' settings apply.
    /// Values are checked like a command's: one out of range (a file edited by hand, or
    /// damaged) refuses the whole file, naming it, the camera and the key.
    pub fn load(path: &Path) -> Result<Controls, String> {
        let controls: Controls = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Controls::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        controls.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(controls)
    }

    /// Every value within the range a command may set.
    fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (camera, o) in &self.0 {
            let Ok(Value::Object(values)) = serde_json::to_value(o) else { continue };
            for (key, value) in &values {
                if let Err(e) = change(key, value) {
                    problems.push(format!("camera '{camera}': {e}"));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// Keeps what was set for the next start: written aside, fsync'd and renamed into
    /// place, so a crash leaves the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        clefd::mqtt::state_file::write(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_strictly() {
        assert_eq!(parse(br#"{"enabled": false}"#), Ok(vec![Change::Enabled(Some(false))]));
        assert_eq!(parse(br#"{"fps": null}"#), Ok(vec![Change::Fps(None)]));
        assert_eq!(parse(br#"{"detect_every": 3}"#), Ok(vec![Change::DetectEvery(Some(3))]));
        assert_eq!(parse(br#"{"snapshots": false}"#), Ok(vec![Change::Snapshots(Some(false))]));
        let both = parse(br#"{"score_threshold": 0.8, "min_face_px": 40}"#).unwrap();
        assert!(both.contains(&Change::ScoreThreshold(Some(0.8))) && both.contains(&Change::MinFacePx(Some(40.0))));
        for (payload, says) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "a command is a JSON object"),
            (b"{}", "sets nothing"),
            (br#"{"fps": 0}"#, "fps: 0 is out of range: must be between 0.1 and 240"),
            (br#"{"score_threshold": 7}"#, "score_threshold: 7 is out of range"),
            (br#"{"enabled": "yes"}"#, "enabled: \"yes\" is not true or false"),
            (br#"{"fps": "fast"}"#, "fps: \"fast\" is not a number"),
            (br#"{"detect_every": 2.5}"#, "detect_every: 2.5 is not a whole number"),
            (br#"{"detect_every": 31}"#, "detect_every: 31 is out of range: must be between 1 and 30"),
            (br#"{"colour": 1}"#, "unknown setting 'colour'"),
        ] {
            let e = parse(payload).unwrap_err();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(payload));
        }
        // Every mistake of one command at once.
        let e = parse(br#"{"fps": -1, "zoom": 2}"#).unwrap_err();
        assert!(e.contains("fps: -1") && e.contains("'zoom'"), "{e}");
    }

    #[test]
    fn a_kept_file_with_values_out_of_range_is_refused_naming_file_camera_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.json");
        std::fs::write(&path, br#"{"door": {"fps": -1, "detect_every": 0}, "hall": {"enabled": false}}"#).unwrap();
        let e = Controls::load(&path).unwrap_err();
        assert!(e.contains("control.json"), "{e}");
        assert!(e.contains("camera 'door': fps: -1"), "{e}");
        assert!(e.contains("camera 'door': detect_every: 0"), "{e}");
        let mut ok = Controls::default();
        ok.0.insert("hall".into(), Overrides { fps: Some(5.0), ..Overrides::default() });
        ok.save(&path).unwrap();
        assert_eq!(Controls::load(&path).unwrap(), ok, "what is saved loads back");
    }
}
