//! Health decisions on the cameras' states, as problem text (`None`: nothing wrong), so
//! that whichever HTTP server serves `/healthz` decides alike: a camera disabled on
//! purpose is no fault (with every camera disabled clefd is healthy), no camera streaming
//! is one, and so is a camera streaming far below the frame rate it is configured for.

use std::collections::BTreeMap;

use crate::source::{CameraState, CameraStatus};

/// A camera streaming at less than this share of its configured `fps` is "far below" it.
pub const FAR_BELOW: f64 = 0.5;

/// What to do about a camera that inference cannot keep up with (its frames arrive but most
/// are dropped before analysis): the problem text says it, so whoever reads `/healthz`
/// knows the remedy and not only the symptom.
pub const ANALYSED_ADVICE: &str = "inference cannot keep up: lower its `fps`, run fewer cameras or use a faster engine";

/// What is wrong with the cameras, if anything; `analysed` is each camera's analysed rate
/// over its last two whole health windows (see [`far_below_fps`]).
pub fn cameras_problem(cameras: &BTreeMap<String, CameraStatus>, analysed: &BTreeMap<String, f64>) -> Option<String> {
    let active: Vec<&CameraStatus> = cameras.values().filter(|c| c.status != CameraState::Disabled).collect();
    if !active.is_empty() && !active.iter().any(|c| c.status == CameraState::Streaming) {
        return Some("no camera is streaming".into());
    }
    far_below_fps(cameras, analysed)
}

/// The frame rate health expects of a camera: its `fps` cap is a maximum, not a target, so
/// it is lowered to the source's own rate where that is known (`negotiated` in its caps,
/// `measured` into the cap over the last health window: a 10 fps camera under `fps = 25`,
/// a webcam down to 7.5 fps at night). A file played unpaced (`paced` false) has no rate
/// to expect, nor has a camera without a cap.
pub fn fps_target(cap: Option<f64>, negotiated: Option<f64>, measured: Option<f64>, paced: bool) -> Option<f64> {
    let cap = cap.filter(|c| *c > 0.0 && paced)?;
    let own = |r: Option<f64>| r.filter(|r| *r > 0.0).unwrap_or(f64::INFINITY);
    Some(cap.min(own(negotiated)).min(own(measured)))
}

/// The cameras streaming far below the rate expected of them (degraded: frames are lost
/// on the way, or the machine cannot keep up), judged on the rate over a whole health
/// window (`health_fps`, at least 10 s, so 1-2 fps cameras do not flap). The rate is the
/// lower of what the camera delivered and what was analysed of it (`analysed`, by camera,
/// the better of two consecutive windows, so one slow window such as a warm-up is no
/// verdict): a camera delivering its 12 fps of which inference takes 4 is degraded too,
/// and the text says what to do about it. A camera without a measured window yet is no
/// evidence either way.
pub fn far_below_fps(cameras: &BTreeMap<String, CameraStatus>, analysed: &BTreeMap<String, f64>) -> Option<String> {
    let rate = |c: &CameraStatus| -> Option<(f64, bool)> {
        let delivered = c.health_fps.filter(|d| *d > 0.0)?;
        match analysed.get(&c.camera) {
            Some(&a) if a < delivered => Some((a, true)),
            _ => Some((delivered, false)),
        }
    };
    let say = |name: &str, f: f64, t: f64, analysed: bool| {
        if analysed {
            format!("{name} ({ANALYSED_ADVICE}; {f:.1} of {t:.1} fps analysed)")
        } else {
            format!("{name} ({f:.1} of {t:.1} fps)")
        }
    };
    let slow: Vec<String> = (cameras.values())
        .filter(|c| c.status == CameraState::Streaming)
        .filter_map(|c| rate(c).map(|r| (c, r)))
        .filter_map(|(c, (f, how))| c.target_fps.filter(|t| f < t * FAR_BELOW).map(|t| (c, f, t, how)))
        .map(|(c, f, t, how)| say(&c.camera, f, t, how))
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
            health_fps: (fps > 0.0).then_some(fps),
            last_error: None,
            since: String::new(),
            restarts: 0,
            dropped_fps_cap: 0,
            decoder: None,
            target_fps: target,
        };
        (name.into(), st)
    }

    /// The problem with `cameras` when nothing was analysed slower than delivered.
    fn problem(cameras: BTreeMap<String, CameraStatus>) -> Option<String> {
        cameras_problem(&cameras, &BTreeMap::new())
    }

    #[test]
    fn slow_cameras_degrade_and_disabled_ones_do_not() {
        use CameraState::*;
        let all = |c: Vec<(String, CameraStatus)>| c.into_iter().collect::<BTreeMap<_, _>>();
        assert_eq!(problem(all(vec![])), None);
        assert_eq!(problem(all(vec![cam("a", Disabled, 0.0, Some(5.0))])), None, "all disabled: healthy");
        let slow = problem(all(vec![cam("a", Streaming, 0.2, Some(1.0)), cam("b", Streaming, 15.0, None)]));
        assert_eq!(slow.as_deref(), Some("cameras far below their configured fps: a (0.2 of 1.0 fps)"));
        assert_eq!(problem(all(vec![cam("a", Streaming, 0.0, Some(15.0))])), None, "not measured yet");
        assert_eq!(problem(all(vec![cam("a", Streaming, 9.0, Some(15.0))])), None, "near its rate");
        let none = problem(all(vec![cam("a", Failed, 0.0, None), cam("b", Disabled, 0.0, None)]));
        assert_eq!(none.as_deref(), Some("no camera is streaming"));
        // No whole window measured yet: no evidence, whatever the 2 s rate says.
        let (n, mut early) = cam("a", Streaming, 1.0, Some(15.0));
        early.health_fps = None;
        assert_eq!(problem(all(vec![(n, early)])), None, "no window yet");
    }

    #[test]
    fn the_fps_cap_is_a_maximum_not_a_target() {
        // A 10 fps RTSP camera under fps = 25: expected 10; at 9.5 it is fine, at 4 it is not.
        assert_eq!(fps_target(Some(25.0), Some(10.0), None, true), Some(10.0));
        // A webcam whose caps say 30 but that gives 7.5 at night.
        assert_eq!(fps_target(Some(25.0), Some(30.0), Some(7.5), true), Some(7.5));
        // Variable or unknown rate in the caps: the cap, lowered by what is measured.
        assert_eq!(fps_target(Some(12.0), None, None, true), Some(12.0));
        assert_eq!(fps_target(Some(12.0), Some(0.0), Some(2.0), true), Some(2.0));
        // A source delivering 12 fps under a cap of 12: expected 12, so 5 analysed degrades.
        let t = fps_target(Some(12.0), Some(12.0), Some(12.0), true);
        assert_eq!(t, Some(12.0));
        let all = |c: Vec<(String, CameraStatus)>| c.into_iter().collect::<BTreeMap<_, _>>();
        assert!(problem(all(vec![cam("a", CameraState::Streaming, 5.0, t)])).is_some());
        // A 2 fps file under fps = 12 delivering its 2 fps: healthy.
        let t = fps_target(Some(12.0), Some(2.0), Some(2.0), true);
        assert_eq!(problem(all(vec![cam("a", CameraState::Streaming, 2.0, t)])), None);
        // Delivered at 12 but analysed at 4: degraded, and the text says which rate.
        let t = fps_target(Some(12.0), Some(12.0), Some(12.0), true);
        let cams = all(vec![cam("a", CameraState::Streaming, 12.0, t)]);
        let slow = cameras_problem(&cams, &[("a".to_string(), 4.0)].into_iter().collect());
        let advised =
            format!("cameras far below their configured fps: a ({ANALYSED_ADVICE}; 4.0 of 12.0 fps analysed)");
        assert_eq!(slow, Some(advised));
        assert_eq!(cameras_problem(&cams, &[("a".to_string(), 11.0)].into_iter().collect()), None);
        // A file played unpaced, or no cap: nothing expected.
        assert_eq!(fps_target(Some(12.0), Some(25.0), None, false), None);
        assert_eq!(fps_target(None, Some(25.0), Some(25.0), true), None);
    }
}
