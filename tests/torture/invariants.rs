//! What must hold after every step, the real daemon against the [`Model`]: each camera's
//! state is the same in its retained MQTT `state`, `/`, `/healthz` and `/metrics` and is
//! the state it is in (a camera said `streaming` analyses frames); `/healthz` and
//! systemd's `STATUS=` agree; `seq` only grows, with gaps only where counted lost; every
//! command has exactly one answer, the one the model expects (`answers.rs`); no empty
//! payload reaches a topic Home Assistant still parses; a free live-view seat serves a
//! frame; events keep flowing after a control-channel or fault step (after a flood, from
//! its last answer on).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::answers::Answer;
use super::model::{Expect, Model, POOL};
use super::rig::{self, DEVICE, Rig};
use crate::common::http_get;

/// One invariant that does not hold, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// What the subscriber has seen so far, folded as it arrives.
#[derive(Default)]
pub struct Digest {
    /// Each camera's last `state` payload (`""` once cleared).
    pub states: BTreeMap<String, String>,
    /// Each camera's Home Assistant discovery configs that are live now.
    discovery: BTreeMap<String, BTreeSet<String>>,
    /// Every `seq` received, and the largest.
    seqs: BTreeSet<u64>,
    max_seq: Option<u64>,
    /// Answers received on each `…/set/result`, in order.
    pub answers: BTreeMap<String, Vec<Answer>>,
    /// Broken rules seen in the stream (sticky: they happened).
    pub broken: Vec<Violation>,
    pub received: u64,
}

impl Digest {
    /// Takes in what the subscriber received since the last call.
    pub fn drain(&mut self, rig: &Rig) {
        for m in rig.tap.take() {
            self.received += 1;
            self.take(&m.topic, &m.payload);
        }
    }

    fn take(&mut self, topic: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload).to_string();
        let parts: Vec<&str> = topic.split('/').collect();
        if parts.first() == Some(&"homeassistant") && parts.len() == 5 {
            let camera = parts[2].strip_prefix(&format!("clefd_{DEVICE}_")).unwrap_or(parts[2]).to_string();
            let live = self.discovery.entry(camera).or_default();
            if text.is_empty() {
                live.remove(parts[3]);
            } else {
                live.insert(parts[3].to_string());
            }
            return;
        }
        if parts.len() < 3 || parts[0] != "clefd" || parts[1] != DEVICE {
            return;
        }
        if topic.ends_with("/set/result") {
            self.answers.entry(topic.to_string()).or_default().push(Answer::parse(&text));
            return;
        }
        let [_, _, camera, leaf] = parts[..] else { return };
        let discovered = self.discovery.get(camera).is_some_and(|d| !d.is_empty());
        match leaf {
            "state" => {
                if text.is_empty() && discovered {
                    self.broken.push(v(
                        "consumers never get an empty payload they parse",
                        format!("{camera}/state cleared while its Home Assistant discovery is still announced"),
                    ));
                }
                self.states.insert(camera.to_string(), text);
            }
            "current" if text.is_empty() && discovered => {
                let status = self.states.get(camera).map(|s| status_of(s)).unwrap_or_default();
                if status == "streaming" || status.is_empty() {
                    self.broken.push(v(
                        "consumers never get an empty payload they parse",
                        format!(
                            "{camera}/current cleared while discovery is announced and the camera is '{status}' \
                             (not disabled first)"
                        ),
                    ));
                }
            }
            "emotion" => {
                let Some(seq) = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["seq"].as_u64())
                else {
                    return;
                };
                if !self.seqs.contains(&seq) && self.max_seq.is_some_and(|m| seq < m) {
                    self.broken.push(v("seq only grows", format!("seq {seq} arrived after {:?}", self.max_seq)));
                }
                self.seqs.insert(seq);
                self.max_seq = self.max_seq.max(Some(seq));
            }
            _ => {}
        }
    }

    /// Numbers in `0..=max` never received.
    fn gaps(&self) -> u64 {
        self.max_seq.map_or(0, |m| m + 1 - self.seqs.len() as u64)
    }

    /// Distinct events received.
    pub fn events(&self) -> usize {
        self.seqs.len()
    }
}

fn v(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// `status` of a state payload (`""` when cleared or not JSON).
fn status_of(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One series of a Prometheus exposition.
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                .collect();
            Some(Series { name: name.to_string(), labels, value: value.parse().ok()? })
        })
        .collect()
}

/// The sum of a metric's series (0 when absent or nobody answers).
pub fn metric_sum(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    parse_metrics(&body).iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

/// One look at the daemon from outside.
struct Look {
    frames: BTreeMap<String, f64>,
    metric_state: BTreeMap<String, String>,
    lost: f64,
    health_code: u16,
    health: BTreeMap<String, String>,
    health_body: String,
    index: BTreeMap<String, String>,
    status_line: Option<String>,
}

fn look(rig: &Rig) -> Look {
    let (_, metrics) = http_get(rig.http, "/metrics");
    let series = parse_metrics(&metrics);
    let mut frames = BTreeMap::new();
    let mut metric_state = BTreeMap::new();
    let mut lost = 0.0;
    for s in &series {
        let camera = s.labels.get("camera").cloned().unwrap_or_default();
        match s.name.as_str() {
            "clefd_frames_analysed_total" => {
                frames.insert(camera, s.value);
            }
            "clefd_camera_state" if s.value == 1.0 => {
                metric_state.insert(camera, s.labels.get("state").cloned().unwrap_or_default());
            }
            "clefd_mqtt_events_dropped_total" | "clefd_events_lost_total" => lost += s.value,
            _ => {}
        }
    }
    let (health_code, health_body) = http_get(rig.http, "/healthz");
    let health = serde_json::from_str::<serde_json::Value>(&health_body)
        .ok()
        .and_then(|v| v["cameras"].as_object().cloned())
        .map(|o| o.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    let (_, page) = http_get(rig.http, "/");
    // Each camera's row: `<tr class="STATE"><td>NAME</td><td>STATE</td>…`, as served before
    // the page's script refreshes it from `/api/state`.
    let index = page
        .split("<tr")
        .skip(1)
        .filter_map(|row| {
            let cells: Vec<&str> = row.split_once("><td>")?.1.split("</td><td>").collect();
            Some((cells.first()?.to_string(), cells.get(1)?.to_string()))
        })
        .collect();
    let status_line = rig
        .notify
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(_, m)| m.lines().find_map(|l| l.strip_prefix("STATUS=")).map(str::to_string));
    Look { frames, metric_state, lost, health_code, health, health_body, index, status_line }
}

/// Everything that must hold now; polled until it does or `deadline` passes. Returns what
/// still fails then.
/// Invariants in `skip` (already reported by a run that goes on) are not waited for.
pub fn check(rig: &mut Rig, digest: &mut Digest, model: &Model, deadline: Duration, skip: &[&str]) -> Vec<Violation> {
    let end = Instant::now() + deadline;
    let mut first_frames: Option<BTreeMap<String, f64>> = None;
    let mut progressed: BTreeSet<String> = BTreeSet::new();
    digest.drain(rig);
    // The astronaut (hall) makes events while it runs as the file configures it, or at
    // the fps a flood set. After a flood, events are awaited from when its last command
    // was answered: each command it accepts restarts the camera, and an event from before
    // the last restart proves nothing.
    let mut events_from = floods_answered(rig, digest).then_some(digest.max_seq);
    let want_events = rig.want_events
        && model.expect("hall") == Some(Expect::Running)
        && !model.overrides.get("hall").is_some_and(|o| o.tuned);
    loop {
        digest.drain(rig);
        if events_from.is_none() && floods_answered(rig, digest) {
            events_from = Some(digest.max_seq);
        }
        let now = look(rig);
        note_progress(first_frames.get_or_insert_with(BTreeMap::new), &now.frames, &mut progressed);
        let mut out = compare(rig, digest, model, &now, &progressed);
        if want_events && events_from.is_none_or(|from| digest.max_seq <= from) {
            let detail = match events_from {
                Some(from) => format!("no event since seq {from:?} while hall runs"),
                None => "the flood's commands are not all answered".to_string(),
            };
            out.push(v("events keep being delivered after a control command or a fault", detail));
        }
        out.retain(|f| !skip.contains(&f.invariant));
        if out.is_empty() && !skip.contains(&LIVE) {
            out.extend(live_view(rig, model));
        }
        if !rig.running() {
            out.push(v("the daemon runs", format!("clefd exited; its log:\n{}", tail(&rig.log))));
            return out;
        }
        if out.is_empty() || Instant::now() > end {
            return out;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
}

/// Whether every command of the last step's floods has its answer.
fn floods_answered(rig: &Rig, digest: &Digest) -> bool {
    rig.floods.iter().all(|f| digest.answers.get(&f.topic).map_or(0, Vec::len) >= f.first + f.n)
}

/// Adds to `progressed` the cameras whose frames-analysed counter grew since `base` (the
/// first value seen of each). A camera counts as analysing once its counter grew between
/// two looks. The counter belongs to a camera generation: a restart (a reload, a command)
/// starts it again from zero, so a lower value is a new generation, counted from there.
/// Torture seed 12 step 78: the first look came while the reload was still loading a
/// bundle, at the old generation's count (ball had run 170 s at 5 fps), which the new
/// generation (602 after the 120 s deadline) could not pass.
fn note_progress(base: &mut BTreeMap<String, f64>, frames: &BTreeMap<String, f64>, progressed: &mut BTreeSet<String>) {
    for (camera, n) in frames {
        match base.get(camera) {
            Some(b) if n > b => {
                progressed.insert(camera.clone());
            }
            Some(b) if n < b => {
                base.insert(camera.clone(), *n);
            }
            Some(_) => {}
            None => {
                base.insert(camera.clone(), *n);
            }
        }
    }
}

fn compare(rig: &Rig, digest: &Digest, model: &Model, now: &Look, progressed: &BTreeSet<String>) -> Vec<Violation> {
    let mut out: Vec<Violation> = digest.broken.clone();
    out.extend(rig.noticed.iter().map(|(i, d)| v(i, d.clone())));
    out.extend(super::answers::check(rig, digest));
    out.extend(super::answers::floods(rig, digest, model));
    for (name, _) in POOL {
        let retained = digest.states.get(name).map(|s| status_of(s));
        let views = [
            ("retained state", retained.clone().unwrap_or_default()),
            ("/", now.index.get(name).cloned().unwrap_or_default()),
            ("/healthz", now.health.get(name).cloned().unwrap_or_default()),
            ("/metrics", now.metric_state.get(name).cloned().unwrap_or_default()),
        ];
        let shown = || views.iter().map(|(w, s)| format!("{w}: '{s}'")).collect::<Vec<_>>().join(", ");
        let Some(expect) = model.expect(name) else {
            if views.iter().any(|(_, s)| !s.is_empty()) {
                out.push(v("a removed camera leaves no trace", format!("{name} was removed; {}", shown())));
            }
            continue;
        };
        let (allowed, invariant): (&[&str], _) = match expect {
            Expect::Running => (&["streaming"], "a running camera is streaming everywhere"),
            Expect::Disabled => (&["disabled"], "a disabled camera is listed as disabled everywhere"),
            Expect::Over => (&["ended", "failed"], "a file that ended is ended (or failed) everywhere"),
            Expect::Unreachable => {
                (&["reconnecting", "starting", "stalled"], "a camera whose source is down says so everywhere")
            }
        };
        let first = &views[0].1;
        if views.iter().any(|(_, s)| s != first) || !allowed.contains(&first.as_str()) {
            out.push(v(invariant, format!("{name} should be {allowed:?} ({expect:?}); {}", shown())));
        }
        if expect == Expect::Running && !progressed.contains(name) {
            out.push(v(
                "every enabled, reachable camera analyses frames",
                format!("{name}: frames analysed {:?}, not growing", now.frames.get(name)),
            ));
        }
    }
    let active = model.cameras.keys().filter(|c| model.expect(c) != Some(Expect::Disabled)).count();
    let running = model.running().len();
    let healthy = running > 0 || active == 0;
    if (now.health_code == 200) != healthy {
        out.push(v(
            "/healthz tells the truth",
            format!(
                "{running} cameras should stream of {active} on, /healthz said {}: {}",
                now.health_code,
                now.health_body.trim()
            ),
        ));
    }
    let want = format!("{running}/{active} cameras streaming");
    if !now.status_line.as_deref().is_some_and(|l| l.starts_with(&want)) {
        out.push(v(
            "systemd STATUS= follows the cameras",
            format!("expected '{want}…', last STATUS={:?}", now.status_line),
        ));
    }
    if digest.gaps() as f64 > now.lost {
        out.push(v(
            "every event not counted lost reaches a persistent subscriber",
            format!(
                "{} seq numbers up to {:?} missing, {} counted lost or dropped",
                digest.gaps(),
                digest.max_seq,
                now.lost
            ),
        ));
    }
    out
}

const LIVE: &str = "a free live-view seat serves frames";

/// A viewer gets a frame of a running camera while the model says seats are free.
fn live_view(rig: &Rig, model: &Model) -> Vec<Violation> {
    let running = model.running();
    let Some(camera) = running.first() else { return vec![] };
    if model.seats_held() >= 8 {
        return vec![];
    }
    match rig::viewer_gets_a_frame(rig.http, camera) {
        Ok(()) => vec![],
        Err(e) => vec![v(LIVE, format!("{} seats held, a new viewer of {camera}: {e}", model.seats_held()))],
    }
}

/// The last lines of a log.
pub fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::note_progress;
    use std::collections::{BTreeMap, BTreeSet};

    /// Looks as at seed 12 step 78: the old generation's count first (about 850 after
    /// 170 s at 5 fps), then the restarted camera's own count from zero, growing (602 at
    /// the 120 s deadline).
    #[test]
    fn a_counter_that_restarts_with_its_camera_still_counts_as_progress() {
        let (mut base, mut progressed) = (BTreeMap::new(), BTreeSet::new());
        for ball in [847.0, 847.0, 0.0, 3.0, 300.0, 602.0] {
            note_progress(&mut base, &BTreeMap::from([("ball".to_string(), ball)]), &mut progressed);
        }
        assert!(progressed.contains("ball"), "a restarted camera growing from zero is analysed");

        // A counter that stays put, or only drops, is not progress.
        let (mut base, mut progressed) = (BTreeMap::new(), BTreeSet::new());
        for ball in [847.0, 847.0, 0.0, 0.0] {
            note_progress(&mut base, &BTreeMap::from([("ball".to_string(), ball)]), &mut progressed);
        }
        assert!(progressed.is_empty(), "{progressed:?}");
    }
}
