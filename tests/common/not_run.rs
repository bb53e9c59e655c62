//! Tests that cannot run here say so where it counts: in CI (env `CI` set, as root) they
//! must run, so there this is a failure; elsewhere the test is recorded as not run, one
//! line per test in the file named by `CLEFD_TEST_NOT_RUN`, which `.ci/run` counts in its
//! summary. Never a "skipped" that reads as a pass.

use std::io::Write;

/// Records that `test` could not run for `reason`; panics when `CI` is set. Call it and
/// return from the test.
pub fn could_not_run(test: &str, reason: &str) {
    assert!(std::env::var_os("CI").is_none(), "{test} could not run in CI: {reason}");
    eprintln!("NOT RUN {test}: {reason}");
    if let Some(path) = std::env::var_os("CLEFD_TEST_NOT_RUN") {
        let line = format!("{test}: {reason}\n");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            panic!("cannot record {test} as not run in {}: {e}", std::path::Path::new(&path).display());
        }
    }
}
