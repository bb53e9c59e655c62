//! Health decisions on the cameras' states, as problem text (`None`: nothing wrong), so
//! that whichever HTTP server serves `/healthz` decides alike: a camera disabled on
//! purpose is no fault (with every camera disabled clefd is healthy), no camera streaming
//! is one, and so is a camera streaming far below the frame rate it is configured for.

use std::collections::BTreeMap;

use crate::source::{CameraState, CameraStatus};

/// A camera streaming at less than this share of its configured `fps` is "far below" it.
pub const FAR_BELOW: f64 = 0.5;

/// What is wrong with the cameras, if anything.
pub fn cameras_problem(cameras: &BTreeMap<String, CameraStatus>) -> Option<String> {
    let active: Vec<&CameraStatus> = cameras.values().filter(|c| c.status != CameraState::Disabled).collect();
    if !active.is_empty() && !active.iter().any(|c| c.status == CameraState::Streaming) {
        return Some("no camera is streaming".into());
    }
    far_below_fps(cameras)
}

/// The cameras streaming far below their configured frame rate (degraded: frames are lost
/// on the way, or the machine cannot keep up). A streaming report without a measured rate
/// yet (the first one says 0) is no evidence either way.
pub fn far_below_fps(cameras: &BTreeMap<String, CameraStatus>) -> Option<String> {
    let slow: Vec<String> = (cameras.values())
        .filter(|c| c.status == CameraState::Streaming && c.fps > 0.0)
        .filter_map(|c| c.target_fps.filter(|t| c.fps < t * FAR_BELOW).map(|t| (c, t)))
        .map(|(c, t)| format!("{} ({:.1} of {t} fps)", c.camera, c.fps))
        .collect();
    (!slow.is_empty()).then(|| format!("cameras far below their configured fps: {}", slow.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(name: &str, status: CameraState, fps: f64, target: Option<f64>) -> (String, CameraStatus) {
        let st = CameraStatus {
            camera: name.into(),
            status,
            fps,
            last_error: None,
            since: String::new(),
            restarts: 0,
            dropped_fps_cap: 0,
            decoder: None,
            target_fps: target,
        };
        (name.into(), st)
    }

    #[test]
    fn slow_cameras_degrade_and_disabled_ones_do_not() {
        use CameraState::*;
        let all = |c: Vec<(String, CameraStatus)>| c.into_iter().collect::<BTreeMap<_, _>>();
        assert_eq!(cameras_problem(&all(vec![])), None);
        assert_eq!(cameras_problem(&all(vec![cam("a", Disabled, 0.0, Some(5.0))])), None, "all disabled: healthy");
        let slow = cameras_problem(&all(vec![cam("a", Streaming, 0.2, Some(1.0)), cam("b", Streaming, 15.0, None)]));
        assert_eq!(slow.as_deref(), Some("cameras far below their configured fps: a (0.2 of 1 fps)"));
        assert_eq!(cameras_problem(&all(vec![cam("a", Streaming, 0.0, Some(15.0))])), None, "not measured yet");
        assert_eq!(cameras_problem(&all(vec![cam("a", Streaming, 9.0, Some(15.0))])), None, "near its rate");
        let none = cameras_problem(&all(vec![cam("a", Failed, 0.0, None), cam("b", Disabled, 0.0, None)]));
        assert_eq!(none.as_deref(), Some("no camera is streaming"));
    }
}
