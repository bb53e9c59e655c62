//! The index page (`/`) and the state it shows (`/api/state`): every camera with its
//! state, fps and last picture, and the daemon's health. The page is complete as served
//! (it reads without JavaScript) and then refreshes itself from `/api/state` every few
//! seconds, pictures included; it fits a phone's width as well as a desktop's.

use std::sync::atomic::Ordering;

use super::http::Health;

/// How often the page asks for the state again, in milliseconds.
const REFRESH_MS: u32 = 2000;

/// What the index shows, as JSON: health, then each camera's state.
pub fn state(health: &Health) -> serde_json::Value {
    // Through the health's guard: a poisoned lock breaks the run (and shows), never an
    // empty page.
    let cameras = health.states();
    let problem = health.problem();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "status": if problem.is_none() { "ok" } else { "unhealthy" },
        "reason": problem,
        "mqtt_connected": health.publish.connected.load(Ordering::Relaxed),
        "cameras": cameras.iter().map(|(name, st)| serde_json::json!({
            "name": name,
            "state": st.status.as_str(),
            "fps": (st.fps * 10.0).round() / 10.0,
            "since": st.since,
            "last_error": st.last_error,
        })).collect::<Vec<_>>(),
    })
}

/// The index page, filled in with the state of now.
pub fn page(health: &Health) -> String {
    let cameras = health.states();
    let mut cards = String::new();
    for (name, st) in &cameras {
        let url = html_escape(&path_segment(name));
        let name = html_escape(name);
        cards += &format!(
            "<article class=\"cam\" data-camera=\"{name}\">\n\
             <a href=\"/cameras/{url}/live.mjpeg\"><img alt=\"{name}, last analysed frame\" src=\"/cameras/{url}/latest.jpg\" loading=\"lazy\"></a>\n\
             <table><tr class=\"{state}\"><td>{name}</td><td>{state}</td><td>{fps:.1} fps</td></tr></table>\n\
             <p><a href=\"/cameras/{url}/latest.jpg\">latest</a> · <a href=\"/cameras/{url}/live.mjpeg\">live</a> · <a href=\"/cameras/{url}/history\">history</a></p>\n\
             </article>\n",
            state = st.status.as_str(),
            fps = st.fps,
        );
    }
    let problem = health.problem();
    let status = match &problem {
        None => "ok".to_string(),
        Some(reason) => format!("unhealthy: {}", html_escape(reason)),
    };
    PAGE.replace("{version}", env!("CARGO_PKG_VERSION"))
        .replace("{status_class}", if problem.is_none() { "ok" } else { "bad" })
        .replace("{status}", &status)
        .replace("{cards}", &cards)
        .replace("{refresh_ms}", &REFRESH_MS.to_string())
}

/// What may stand unencoded in a path segment (RFC 3986's unreserved characters).
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `s` as one URL path segment: a space, `#`, `?` or `/` in a name cannot cut a link short.
fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Text made safe to place in HTML.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clefd</title>
<style>
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { margin: 0 auto; padding: 0.75rem; max-width: 80rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0.5rem 1rem; }
h1 { font-size: 1.4rem; margin: 0.2rem 0; }
#status { padding: 0.2rem 0.6rem; border-radius: 0.4rem; }
.ok { background: #1b7f3a; color: #fff; }
.bad { background: #b3261e; color: #fff; }
main { display: grid; gap: 0.75rem; grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr)); margin-top: 0.75rem; }
.cam { border: 1px solid #8884; border-radius: 0.5rem; overflow: hidden; }
.cam img { display: block; width: 100%; aspect-ratio: 4 / 3; object-fit: cover; background: #8882; }
.cam table { width: 100%; border-collapse: collapse; }
.cam td { padding: 0.4rem 0.6rem; }
.cam td:first-child { font-weight: 600; word-break: break-all; }
.cam td:nth-child(2) { text-transform: uppercase; font-size: 0.8rem; }
.cam td:last-child { text-align: right; white-space: nowrap; }
tr.streaming td:nth-child(2) { color: #1b7f3a; } tr.failed td:nth-child(2), tr.stalled td:nth-child(2) { color: #b3261e; }
.cam p { margin: 0 0.6rem 0.5rem; }
a { padding: 0.3rem 0; display: inline-block; }
footer { margin-top: 1rem; }
</style></head>
<body>
<header><h1>clefd {version}</h1><span id="status" class="{status_class}">{status}</span></header>
<main id="cameras">
{cards}</main>
<footer><a href="/metrics">metrics</a> · <a href="/healthz">health</a> · <a href="/api/state">state (JSON)</a></footer>
<script>
"use strict";
function card(c) {
  let a = document.querySelector('[data-camera="' + CSS.escape(c.name) + '"]');
  if (!a) { location.reload(); return; }
  let row = a.querySelector("tr"), cells = row.querySelectorAll("td");
  row.className = c.state;
  cells[1].textContent = c.state;
  cells[2].textContent = c.fps.toFixed(1) + " fps";
  let img = a.querySelector("img");
  if (c.state === "streaming") img.src = "/cameras/" + encodeURIComponent(c.name) + "/latest.jpg?t=" + Date.now();
}
async function refresh() {
  try {
    let r = await fetch("/api/state", { cache: "no-store" });
    let st = await r.json();
    let el = document.getElementById("status");
    el.textContent = st.status === "ok" ? "ok" : "unhealthy: " + st.reason;
    el.className = st.status === "ok" ? "ok" : "bad";
    if (st.cameras.length !== document.querySelectorAll("[data-camera]").length) { location.reload(); return; }
    st.cameras.forEach(card);
  } catch (e) {
    let el = document.getElementById("status");
    el.textContent = "clefd does not answer"; el.className = "bad";
  }
  setTimeout(refresh, {refresh_ms});
}
setTimeout(refresh, {refresh_ms});
</script>
</body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_in_links_and_escaped_in_text() {
        assert_eq!(path_segment("hall-2_b.x~"), "hall-2_b.x~", "unreserved characters stay");
        assert_eq!(path_segment("front door#2?/é"), "front%20door%232%3F%2F%C3%A9");
        assert_eq!(html_escape("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
    }
}
