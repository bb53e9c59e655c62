//! The history page's picture, drawn on the device as SVG (no script, nothing fetched from
//! elsewhere: the device may be offline): per stretch of time, the dominant debiased
//! emotion, how often debiasing changed the factual decision, and how many faces were seen.
//! The SVG scales to the screen's width, so a phone shows the same picture.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::history::query::Bucket;

/// The chart's drawing size (it scales to the page's width).
const W: f64 = 720.0;
/// Left margin, for the rows' labels.
const LEFT: f64 = 6.0;
/// Height of one row's band.
const BAND: f64 = 56.0;
/// The top of each band: emotion, changed, faces.
const ROWS: [f64; 3] = [22.0, 110.0, 198.0];
/// The chart's drawing height.
const H: f64 = 286.0;

/// A colour per emotion: the seven CAER-S labels by meaning, any other label by its name.
fn colour(emotion: &str) -> &'static str {
    const OTHERS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    match emotion.to_ascii_lowercase().as_str() {
        "happy" | "happiness" => "#f2b705",
        "sad" | "sadness" => "#2f6fd6",
        "angry" | "anger" => "#d62728",
        "fear" => "#7b3fa0",
        "surprise" => "#e377c2",
        "disgust" => "#5c8a1e",
        "neutral" => "#8c8c8c",
        other => OTHERS[other.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % OTHERS.len()],
    }
}

/// Text made safe to place in HTML or SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `HH:MM` (UTC) of unix milliseconds.
fn clock(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// The SVG chart of `buckets`.
pub fn chart(buckets: &[Bucket]) -> String {
    let n = buckets.len().max(1) as f64;
    let step = (W - LEFT) / n;
    let max_faces = buckets.iter().map(|b| b.faces).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg id=\"history-chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"dominant emotion, debiasing changes and faces over time\" data-buckets=\"{}\">\n",
        buckets.len()
    );
    let labels =
        ["Dominant debiased emotion", "Debiasing changed the factual decision (share of events)", "Faces seen"];
    for (top, label) in ROWS.iter().zip(labels) {
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"{}\" class=\"label\">{label}</text><rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{BAND}\" class=\"band\"/>",
            top - 6.0,
            W - LEFT
        );
    }
    for (i, b) in buckets.iter().enumerate() {
        let x = LEFT + i as f64 * step;
        let when = clock(b.start_ms);
        if let Some((emotion, count)) = &b.dominant {
            let _ = writeln!(
                svg,
                "<rect class=\"emotion\" data-emotion=\"{e}\" x=\"{x:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"{BAND}\" fill=\"{c}\"><title>{when} UTC: {e} ({count} of {} events)</title></rect>",
                ROWS[0],
                b.events,
                e = esc(emotion),
                w = step,
                c = colour(emotion),
            );
        }
        if b.debiased > 0 {
            let share = b.changed as f64 / b.debiased as f64;
            let h = (share * BAND).max(1.0);
            let _ = writeln!(
                svg,
                "<rect class=\"changed\" data-share=\"{share:.3}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"><title>{when} UTC: debiasing changed {} of {} decisions</title></rect>",
                ROWS[1] + BAND - h,
                b.changed,
                b.debiased,
                w = step,
            );
        }
        if b.faces > 0 {
            let h = b.faces as f64 / max_faces as f64 * BAND;
            let _ = writeln!(
                svg,
                "<rect class=\"faces\" data-faces=\"{}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"><title>{when} UTC: {} faces</title></rect>",
                b.faces,
                ROWS[2] + BAND - h,
                b.faces,
                w = step,
            );
        }
    }
    let _ = writeln!(svg, "<text x=\"{W}\" y=\"{}\" class=\"scale\">100%</text>", ROWS[1] + 10.0);
    let _ = writeln!(svg, "<text x=\"{W}\" y=\"{}\" class=\"scale\">{max_faces}</text>", ROWS[2] + 10.0);
    // Six time ticks under the last band.
    for k in 0..=5 {
        let i = (k * buckets.len() / 5).min(buckets.len().saturating_sub(1));
        let Some(b) = buckets.get(i) else { break };
        let x = LEFT + i as f64 * step;
        let anchor = if k == 0 {
            "start"
        } else if k == 5 {
            "end"
        } else {
            "middle"
        };
        let _ = writeln!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"tick\">{}</text>",
            H - 4.0,
            clock(b.start_ms)
        );
    }
    svg + "</svg>\n"
}

/// The legend: each emotion that dominated a stretch, with how many stretches.
fn legend(buckets: &[Bucket]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (emotion, _) in buckets.iter().filter_map(|b| b.dominant.as_ref()) {
        *counts.entry(emotion).or_default() += 1;
    }
    let mut out = String::from("<ul class=\"legend\">");
    for (emotion, n) in counts {
        let _ = write!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{} <small>{n} col.</small></li>",
            colour(emotion),
            esc(emotion)
        );
    }
    out + "</ul>"
}

/// The whole page for `camera` over the last `hours`.
pub fn page(camera: &str, hours: f64, retain_h: f64, buckets: &[Bucket], stats: String) -> String {
    let name = esc(camera);
    let events: u64 = buckets.iter().map(|b| b.events).sum();
    let (debiased, changed) = buckets.iter().fold((0, 0), |(d, c), b| (d + b.debiased, c + b.changed));
    let summary = if events == 0 {
        "No events in these hours: nobody was seen, or the camera was not analysed.".to_string()
    } else if debiased == 0 {
        format!("{events} events; debiasing is off for this camera's bundle.")
    } else {
        format!(
            "{events} events; debiasing changed the factual decision in {changed} of {debiased} ({:.0} %).",
            changed as f64 * 100.0 / debiased as f64
        )
    };
    let mut spans = String::new();
    for h in [1.0, 6.0, 24.0, retain_h] {
        if h <= retain_h && !spans.contains(&format!("hours={h}\"")) {
            let _ = write!(spans, "<a href=\"/cameras/{name}/history?hours={h}\">{h} h</a> ");
        }
    }
    let minutes = hours * 60.0 / buckets.len().max(1) as f64;
    let (hours, minutes) = (format!("{hours}"), format!("{minutes:.0}"));
    let (chart, legend, stats) = (chart(buckets), legend(buckets), esc(&stats));
    fill(
        PAGE,
        &[
            ("name", &name),
            ("hours", &hours),
            ("minutes", &minutes),
            ("summary", &summary),
            ("chart", &chart),
            ("legend", &legend),
            ("spans", &spans),
            ("stats", &stats),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
    )
}

/// `template` with each `{key}` replaced by its value, in one pass: what is inserted is
/// never scanned again, so a value holding `{chart}` (a camera name, say) stays as it is
/// and the page's size is the template's plus its values'. Other braces (the CSS) stay.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = values.iter().find(|(k, _)| after.strip_prefix(k).is_some_and(|t| t.starts_with('}')));
        match hit {
            Some((k, v)) => {
                out.push_str(v);
                rest = &after[k.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out + rest
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}: history · clefd</title>
<style>
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { margin: 0 auto; padding: 0.75rem; max-width: 60rem; }
h1 { font-size: 1.3rem; margin: 0.2rem 0; word-break: break-all; }
svg { width: 100%; height: auto; display: block; }
figure { margin: 0; }
svg .label { font-size: 14px; fill: currentColor; }
svg .tick, svg .scale { font-size: 14px; fill: currentColor; opacity: 0.8; }
@media (max-width: 40rem) { svg .label, svg .tick, svg .scale { font-size: 21px; } }
svg .scale { text-anchor: end; }
svg .band { fill: #8882; }
svg .changed { fill: #b3261e; }
svg .faces { fill: #1b7f3a; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; }
.swatch { display: inline-block; width: 0.9rem; height: 0.9rem; border-radius: 0.2rem; margin-right: 0.35rem; vertical-align: -0.1rem; }
nav a, footer a { padding: 0.3rem 0.2rem; display: inline-block; }
footer { margin-top: 1rem; font-size: 0.85rem; opacity: 0.85; }
</style></head>
<body>
<h1>{name}: the last {hours} h</h1>
<nav><a href="/">all cameras</a> · {spans}</nav>
<p id="summary">{summary}</p>
<figure>
{chart}<figcaption>Each column is {minutes} minutes (times in UTC). Hover or tap a column for its numbers.</figcaption>
</figure>
<p>Columns each emotion dominated:</p>
{legend}
<footer><p>{stats}</p><p>The events themselves: <a href="/api/events?camera={name}">/api/events?camera={name}</a> · clefd {version}</p></footer>
</body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_each_bucket_and_escapes_names() {
        let buckets = vec![
            Bucket { start_ms: 0, events: 4, dominant: Some(("Happy".into(), 3)), debiased: 4, changed: 1, faces: 2 },
            Bucket { start_ms: 60_000, ..Bucket::default() },
            Bucket {
                start_ms: 120_000,
                events: 1,
                dominant: Some(("<b>".into(), 1)),
                debiased: 0,
                changed: 0,
                faces: 1,
            },
        ];
        let svg = chart(&buckets);
        assert_eq!(svg.matches("class=\"emotion\"").count(), 2);
        assert_eq!(svg.matches("class=\"changed\"").count(), 1);
        assert!(svg.contains("data-share=\"0.250\""), "{svg}");
        assert_eq!(svg.matches("class=\"faces\"").count(), 2);
        assert!(svg.contains("data-emotion=\"&lt;b&gt;\"") && !svg.contains("<b>"), "{svg}");
        let html = page("door", 1.0, 24.0, &buckets, "stats".into());
        assert!(html.contains("changed the factual decision in 1 of 4 (25 %)"), "{html}");
        assert!(html.contains("Happy <small>1 col.</small>"), "{html}");
    }

    #[test]
    fn inserted_text_is_never_filled_again() {
        let filled = fill("<{a}|{b}|{c} { x }>", &[("a", "{b}{a}"), ("b", "B"), ("c", "{c}")]);
        assert_eq!(filled, "<{b}{a}|B|{c} { x }>");
        // A name full of placeholders makes a page no bigger than the name's own share.
        let name = "{chart}".repeat(1000);
        let buckets = vec![Bucket { start_ms: 0, events: 1, dominant: Some(("Happy".into(), 1)), ..Bucket::default() }];
        let small = page("door", 1.0, 24.0, &buckets, "s".into()).len();
        let big = page(&name, 1.0, 24.0, &buckets, "s".into()).len();
        assert!(
            big <= small + 10 * name.len(),
            "{big} bytes for a {}-byte name (the page alone is {small})",
            name.len()
        );
    }
}
