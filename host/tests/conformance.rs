//! `llq-host plugins check` against plugins that break the contract on purpose (each broken
//! promise must fail its own check, and a crash or a hang only that check) and against a
//! built-in one. The matrix over every built-in plugin and option set is `make check-plugins`.

mod common;

use common::{llq, so, stderr};
use serde_json::Value;

/// `plugins check` on `lib` with `args`; the JSON report and the exit status.
fn check(lib: &str, args: &[&str]) -> (Value, bool) {
    let path = so(lib).display().to_string();
    let mut a = vec!["plugins", "check", path.as_str(), "--json", "-"];
    a.extend_from_slice(args);
    let o = llq(&a);
    let report: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no JSON report ({e}): {}", stderr(&o)));
    assert_eq!(report["format"], "llq-plugin-check/1");
    assert_eq!(report["passed"], o.status.success(), "exit status and verdict disagree");
    (report, o.status.success())
}

fn status<'a>(r: &'a Value, check: &str) -> (&'a str, &'a str) {
    let c = r["checks"].as_array().unwrap().iter().find(|c| c["check"] == check).unwrap();
    (c["status"].as_str().unwrap(), c["summary"].as_str().unwrap())
}

#[test]
fn a_conforming_plugin_passes_and_reports_what_it_measured() {
    let (r, ok) = check("nf4", &["--opt", "double_quant=true"]);
    assert!(ok, "{r:#}");
    assert_eq!(r["isolated"], true);
    let c = r["checks"].as_array().unwrap().iter().find(|c| c["check"] == "round-trip").unwrap();
    let cases = c["details"]["cases"].as_array().unwrap();
    // 7 shapes × 2 weight kinds; 128×256 in blocks of 64 with double quantization:
    // 4 bits + an 8-bit absmax per 64 weights + an f32 absmax for each of the 2 groups of 256
    // absmaxes and one f32 offset (their mean, bitsandbytes' double quantization).
    assert_eq!(cases.len(), 14);
    let bits = cases[0]["bits_per_weight"].as_f64().unwrap();
    assert!((bits - (4.0 + 8.0 / 64.0 + 3.0 * 32.0 / 32768.0)).abs() < 1e-9, "{bits}");
    assert_eq!(status(&r, "group-scales").0, "skip");
}

#[test]
fn each_broken_promise_fails_its_own_check() {
    let (r, ok) = check("test_wrong_size", &["--only", "load,packed-size"]);
    assert!(!ok);
    assert_eq!(status(&r, "load").0, "pass");
    let (s, why) = status(&r, "packed-size");
    assert!(s == "fail" && why.contains("declared packed_size 32768"), "{why}");

    let (r, ok) = check("test_sloppy", &[]);
    assert!(!ok);
    for (name, expect, needle) in [
        ("load", "pass", ""),
        ("options", "pass", ""),
        ("packed-size", "pass", ""),
        ("round-trip", "fail", "worse than all zeros"),
        ("determinism", "fail", "different bytes"),
        ("threads", "fail", "differs from the single-threaded result"),
        ("hostile-inputs", "fail", "one byte short: accepted"),
    ] {
        let (s, why) = status(&r, name);
        assert!(s == expect && why.contains(needle), "{name}: {s}: {why}");
    }
    let (r, _) = check("test_panicky", &["--only", "packed-size"]);
    let (s, why) = status(&r, "packed-size");
    assert!(s == "fail" && why.contains("panicked in quantize"), "{why}");
}

#[test]
fn a_crash_or_a_hang_fails_only_the_checks_it_hits() {
    let (r, ok) = check("test_sloppy", &["--opt", "crash=true", "--only", "load,packed-size"]);
    assert!(!ok);
    assert_eq!(status(&r, "load").0, "pass");
    let (s, why) = status(&r, "packed-size");
    assert!(s == "fail" && why.contains("died") && why.contains("SIGABRT"), "{why}");

    let t0 = std::time::Instant::now();
    let (r, _) = check("test_sloppy", &["--opt", "hang=true", "--only", "options,threads", "--timeout", "2"]);
    assert_eq!(status(&r, "options").0, "pass");
    let (s, why) = status(&r, "threads");
    assert!(s == "fail" && why.contains("did not finish in 2 s"), "{why}");
    assert!(t0.elapsed().as_secs() < 30);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let nf4 = so("nf4").display().to_string();
    let o = llq(&["plugins", "check", &nf4, "--only", "speed"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no check named `speed`") && stderr(&o).contains("round-trip"),
        "{}",
        stderr(&o)
    );
    let o = llq(&["plugins", "check", &nf4, "--opt", "block_size=65"]);
    assert!(!o.status.success() && stderr(&o).contains("block_size"), "{}", stderr(&o));
    let o = llq(&["plugins", "check", &nf4, "--list"]);
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && list.lines().count() == 11 && list.contains("hostile-inputs"), "{list}");
    let o = llq(&["plugins", "check", "/nonexistent/x.so"]);
    assert!(!o.status.success() && stderr(&o).contains("/nonexistent/x.so"), "{}", stderr(&o));
}
