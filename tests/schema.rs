//! The event schema is derived from the Rust types that serialise events
//! (`clefd::events::event_schema`) and held to the shared contract consumers rely on
//! (`../shared/schema/emotion-event-v2.schema.json`): the same properties, the same JSON
//! types, enums and constants, and every property the contract requires always sent.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

/// Optional event properties clefd sends beyond the contract (which allows them):
/// `snapshot`, only on `new` events with `[snapshots]` on.
const ADDED: &[&str] = &["snapshot"];

/// `v`, or what its `$ref` points to in `root`'s `$defs`.
fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
        Some(name) => &root["$defs"][name],
        None => v,
    }
}

/// The JSON types a property may take: its `type`, the types of its `anyOf` branches, and
/// `string` for a string `enum` or `const`.
fn types(root: &Value, v: &Value) -> BTreeSet<String> {
    let v = resolve(root, v);
    let mut out = BTreeSet::new();
    match &v["type"] {
        Value::String(t) => drop(out.insert(t.clone())),
        Value::Array(ts) => out.extend(ts.iter().filter_map(Value::as_str).map(String::from)),
        _ => {}
    }
    for branch in v["anyOf"].as_array().into_iter().chain(v["oneOf"].as_array()).flatten() {
        out.extend(types(root, branch));
    }
    if v["enum"].as_array().is_some_and(|e| e.iter().all(Value::is_string)) || v["const"].is_string() {
        out.insert("string".into());
    }
    out
}

fn names(v: &Value, key: &str) -> BTreeSet<String> {
    match &v[key] {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => BTreeSet::new(),
    }
}

/// The values an enum allows: its `enum`, or the constants of its `oneOf` branches (what
/// documented variants become).
fn allowed(root: &Value, v: &Value) -> Value {
    let v = resolve(root, v);
    match v["oneOf"].as_array() {
        Some(branches) if v["enum"].is_null() => branches.iter().map(|b| b["const"].clone()).collect(),
        _ => v["enum"].clone(),
    }
}

/// Compares one object schema of ours with the contract's; returns the differences.
fn compare(path: &str, ours_root: &Value, ours: &Value, theirs: &Value, out: &mut Vec<String>) {
    let ours = resolve(ours_root, ours);
    // Ours may add optional properties the contract leaves open (`additionalProperties`
    // is true there), each named here; none may be missing.
    let ours_names: BTreeSet<String> =
        names(ours, "properties").into_iter().filter(|n| !(path == "event" && ADDED.contains(&n.as_str()))).collect();
    if ours_names != names(theirs, "properties") {
        out.push(format!("{path}: properties {:?} vs {:?}", names(ours, "properties"), names(theirs, "properties")));
    }
    if path == "event" {
        assert_ne!(theirs["additionalProperties"], false, "the contract must allow the added properties");
        for added in ADDED {
            assert!(!names(ours, "required").contains(*added), "{added} must stay optional");
        }
    }
    if !names(theirs, "required").is_subset(&names(ours, "required")) {
        out.push(format!(
            "{path}: the contract requires {:?}, we always send {:?}",
            names(theirs, "required"),
            names(ours, "required")
        ));
    }
    for (key, t) in theirs["properties"].as_object().into_iter().flatten() {
        let o = resolve(ours_root, &ours["properties"][key]);
        let (ot, tt) = (types(ours_root, o), types(ours_root, t));
        if ot != tt {
            out.push(format!("{path}.{key}: types {ot:?} vs {tt:?}"));
        }
        if !t["enum"].is_null() && allowed(ours_root, o) != t["enum"] {
            out.push(format!("{path}.{key}: enum {} vs {}", allowed(ours_root, o), t["enum"]));
        }
        if !t["const"].is_null() && o["const"] != t["const"] {
            out.push(format!("{path}.{key}: const {} vs {}", o["const"], t["const"]));
        }
        if t["properties"].is_object() {
            compare(&format!("{path}.{key}"), ours_root, o, t, out);
        }
    }
}

#[test]
fn the_schema_derived_from_the_event_type_matches_the_shared_contract() {
    let ours = clefd::events::event_schema();
    let theirs: Value = serde_json::from_str(&common::event_schema()).unwrap();
    let mut differences = Vec::new();
    compare("event", &ours, &ours, &theirs, &mut differences);
    assert!(differences.is_empty(), "{}\nderived: {ours:#}", differences.join("\n"));
}

#[test]
fn the_comparison_catches_a_drift() {
    let ours = clefd::events::event_schema();
    let mut theirs: Value = serde_json::from_str(&common::event_schema()).unwrap();
    theirs["properties"]["debias"]["enum"] = serde_json::json!(["on", "off", "auto"]);
    theirs["properties"]["frame_size"]["required"] = serde_json::json!(["width", "height", "fps"]);
    theirs["properties"].as_object_mut().unwrap().remove("latency_ms");
    let mut differences = Vec::new();
    compare("event", &ours, &ours, &theirs, &mut differences);
    assert_eq!(differences.len(), 3, "{differences:#?}");
}
