//! The answers on `…/set/result` against what the model predicts: exactly one per command,
//! the expected one (or busy, only as many as the command queue could not hold), in order;
//! and a flood's accepted commands applied in order, the last one staying in the camera's
//! retained state.

use super::invariants::{Digest, Violation};
use super::model::Model;
use super::rig::{Burst, Rig};
use super::steps::{COMMAND_QUEUE, Want, flood_fps};

/// One answer on a `…/set/result`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub ok: bool,
    /// Refused on arrival, before the daemon's checks: busy (its queue full: only beyond the
    /// first [`COMMAND_QUEUE`] of commands sent at once) or too large.
    /// These go out at once, so they may overtake the answers of commands sent before.
    pub busy: bool,
    pub too_large: bool,
    /// What an accepted command's answer echoes as set (`control`), by camera.
    pub control: serde_json::Value,
}

impl Answer {
    /// Reads an answer's JSON (anything else reads as a refusal).
    pub fn parse(text: &str) -> Answer {
        let answer = serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
        let error = answer["error"].as_str().unwrap_or_default();
        Answer {
            ok: answer["ok"] == true,
            busy: error.starts_with("busy"),
            too_large: error.starts_with("too large"),
            control: answer["control"].clone(),
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.ok, self.busy, self.too_large) {
            (true, ..) => write!(f, "ok"),
            (_, true, _) => write!(f, "busy"),
            (_, _, true) => write!(f, "too large"),
            _ => write!(f, "refused"),
        }
    }
}

/// A list of words, runs of one word written once with their count: `ok x17, busy x3`.
fn runs(words: &[String]) -> String {
    let runs: Vec<String> = words.chunk_by(|a, b| a == b).map(|r| format!("{} x{}", r[0], r.len())).collect();
    format!("[{}] ({} answers)", runs.join(", "), words.len())
}

fn v(invariant: &'static str, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// Every command has exactly one answer, the one the model predicts.
pub fn check(rig: &Rig, digest: &Digest) -> Vec<Violation> {
    let mut out = Vec::new();
    // Answers carry no command id: count them, and count what they say. A command refused
    // on arrival (busy, too large) is answered at once and may overtake the answers of
    // commands before it; the daemon's own answers (accepted, refused) come in the
    // commands' order, so they are the model's predictions for the commands not refused on
    // arrival, in order.
    for (topic, want) in &rig.expected {
        let got = digest.answers.get(topic).cloned().unwrap_or_default();
        let daemon: Vec<Want> = got
            .iter()
            .filter(|a| !a.busy && !a.too_large)
            .map(|a| if a.ok { Want::Ok } else { Want::Refused })
            .collect();
        let too_large = got.iter().filter(|a| a.too_large).count();
        let mut rest = want.iter().filter(|w| **w != Want::TooLarge);
        let in_order = daemon.iter().all(|d| rest.any(|w| w == d));
        if got.len() != want.len() || too_large != want.iter().filter(|w| **w == Want::TooLarge).count() || !in_order {
            let want: Vec<String> = want.iter().map(|w| format!("{w:?}").to_lowercase()).collect();
            let got: Vec<String> = got.iter().map(|a| a.to_string().replace(' ', "")).collect();
            out.push(v(
                "every command gets exactly one answer, the expected one",
                format!("{topic}: expected {} (some may be busy), received {}", runs(&want), runs(&got)),
            ));
        }
        let bursts = rig.bursts.get(topic).map_or(&[][..], Vec::as_slice);
        if let Some(detail) = busy_beyond_the_queue(bursts, &got) {
            out.push(v(BUSY, format!("{topic}: {detail}")));
        }
    }
    out
}

const BUSY: &str = "a command is refused as busy only when the command queue is full";

/// A command is refused as busy only when the daemon's command queue ([`COMMAND_QUEUE`])
/// is full (`src/mqtt/control_link.rs`, `try_send`). A step starts with the queue empty
/// (the check before it waited for every answer, and a command is answered once taken off
/// the queue), so of `n` commands sent at once the first `COMMAND_QUEUE` find room: at
/// most `n - COMMAND_QUEUE` are busy, and a lone command never is. A burst's answers are
/// the `n` from its first: busy ones overtake only the answers of their own burst. What is
/// wrong, if anything.
fn busy_beyond_the_queue(bursts: &[Burst], got: &[Answer]) -> Option<String> {
    let wrong: Vec<String> = bursts
        .iter()
        .filter_map(|b| {
            let answers = got.get(b.first..(b.first + b.n).min(got.len()))?;
            let busy = answers.iter().filter(|a| a.busy).count();
            let most = b.n.saturating_sub(COMMAND_QUEUE);
            (busy > most).then(|| {
                let words: Vec<String> = answers.iter().map(|a| a.to_string().replace(' ', "")).collect();
                format!("{busy} busy of {} sent at once (at most {most}): {}", b.n, runs(&words))
            })
        })
        .collect();
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// A flood's accepted commands are applied in the order sent (the `fps` their answers echo
/// grows), and each camera's retained state ends with what the last accepted one set.
pub fn floods(rig: &Rig, digest: &Digest, model: &Model) -> Vec<Violation> {
    const ORDER: &str = "a flood's accepted commands apply in order, the last one stays";
    let mut out = Vec::new();
    for flood in &rig.floods {
        let got = digest.answers.get(&flood.topic).map_or(&[][..], |a| &a[flood.first.min(a.len())..]);
        if got.len() < flood.n {
            continue; // counted by the answers' invariant
        }
        let cameras: Vec<&str> =
            if flood.cameras.is_empty() { model.cameras.keys().copied().collect() } else { flood.cameras.clone() };
        let Some(probe) = cameras.first() else { continue };
        let accepted: Vec<&Answer> = got[..flood.n].iter().filter(|a| a.ok).collect();
        let fps: Vec<Option<f64>> = accepted.iter().map(|a| a.control[probe]["fps"].as_f64()).collect();
        let sent: Vec<f64> = (0..flood.n).map(flood_fps).collect();
        let known = fps.iter().all(|f| f.is_some_and(|f| sent.iter().any(|s| (s - f).abs() < 1e-9)));
        if accepted.is_empty() || !known || !fps.windows(2).all(|w| w[0] < w[1]) {
            out.push(v(
                ORDER,
                format!("{}: accepted {} of {}, their fps in order {fps:?}", flood.topic, accepted.len(), flood.n),
            ));
            continue;
        }
        let last = &accepted[accepted.len() - 1].control;
        for camera in cameras {
            let state = digest.states.get(camera).map(String::as_str).unwrap_or_default();
            let control = serde_json::from_str::<serde_json::Value>(state).map(|s| s["control"].clone());
            if control.as_ref().ok() != Some(&last[camera]) {
                out.push(v(
                    ORDER,
                    format!(
                        "{camera}: the last accepted command set {}, the retained state says {control:?}",
                        last[camera]
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Answer, busy_beyond_the_queue};
    use crate::rig::Burst;

    fn answers(words: &str) -> Vec<Answer> {
        words
            .chars()
            .map(|c| match c {
                'o' => Answer::parse(r#"{"ok": true}"#),
                'b' => Answer::parse(r#"{"ok": false, "error": "busy: too many commands waiting"}"#),
                _ => Answer::parse(r#"{"ok": false, "error": "fps: must be above 0"}"#),
            })
            .collect()
    }

    /// Figures of the kind the torture runs see: a flood of 20 may have 4 busy, not 5; a lone
    /// command is never busy; each burst is held to its own size (a flood's allowance does
    /// not cover a lone command after it).
    #[test]
    fn busy_only_beyond_what_the_command_queue_holds() {
        let flood = [Burst { first: 0, n: 20 }];
        let four = format!("{}bbbb", "o".repeat(16));
        assert_eq!(busy_beyond_the_queue(&flood, &answers(&four)), None);
        let five = format!("bbbbb{}", "o".repeat(15));
        let found = busy_beyond_the_queue(&flood, &answers(&five)).expect("5 busy of 20 is one too many");
        assert!(found.starts_with("5 busy of 20 sent at once (at most 4)"), "{found}");

        let lone = [Burst { first: 0, n: 1 }];
        assert_eq!(busy_beyond_the_queue(&lone, &answers("o")), None);
        assert_eq!(busy_beyond_the_queue(&lone, &answers("r")), None);
        assert!(busy_beyond_the_queue(&lone, &answers("b")).is_some(), "a lone command is never busy");

        let both = [Burst { first: 0, n: 20 }, Burst { first: 20, n: 1 }];
        let after = format!("{}bbbb", "o".repeat(16));
        assert_eq!(busy_beyond_the_queue(&both, &answers(&format!("{after}o"))), None);
        let spare = format!("{}bbb", "o".repeat(17));
        assert!(busy_beyond_the_queue(&both, &answers(&format!("{spare}b"))).is_some());
        // A storm of 16 fits the queue whole: none busy.
        assert!(
            busy_beyond_the_queue(&[Burst { first: 0, n: 16 }], &answers(&format!("{}b", "o".repeat(15)))).is_some()
        );
    }
}
