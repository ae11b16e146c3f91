//! The Prometheus alert rules shipped in `docs/alerts.yml`.
//!
//! Goal: the rules load in Prometheus, each alert fires on the series it
//! is meant for (and not before), and every metric a rule reads is one the
//! daemon exports, so that a renamed metric cannot leave an alert silent.
//! Method: `promtool check rules` and `promtool test rules` on
//! `docs/alerts_test.yml`; then read both files as text: every alert of
//! the rules has a firing expectation in the test file, and every metric
//! name in an `expr` is listed in `docs/METRICS.md` (or is `up`).

use std::path::Path;
use std::process::Command;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");

fn promtool(arguments: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(arguments)
        .current_dir(DOCS)
        .output()
        .expect("promtool is installed (apt-get install prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {arguments:?} failed:\n{text}"
    );
    text
}

/// The values of `key:` lines of a YAML text, in order.
fn values_of<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix(key))
        .map(|value| value.trim().trim_matches('"'))
        .collect()
}

#[test]
fn rules_load_and_every_alert_is_tested() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let rules = std::fs::read_to_string(Path::new(DOCS).join("alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(Path::new(DOCS).join("alerts_test.yml")).expect("tests");
    let alerts = values_of(&rules, "- alert:");
    assert!(alerts.len() >= 10, "alerts found: {alerts:?}");
    // A test case that expects the alert to fire names it and then lists
    // an alert with labels (`exp_alerts: []` expects silence).
    let mut firing = Vec::new();
    let mut current = None;
    for line in tests.lines().map(str::trim_start) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim());
        } else if line.starts_with("- exp_labels:") {
            firing.extend(current);
        }
    }
    for alert in &alerts {
        assert!(
            firing.contains(alert),
            "alert {alert} has no test case in which it fires"
        );
    }
}

#[test]
fn rules_read_only_exported_metrics() {
    let rules = std::fs::read_to_string(Path::new(DOCS).join("alerts.yml")).expect("rules");
    let metrics_doc = std::fs::read_to_string(Path::new(DOCS).join("METRICS.md")).expect("doc");
    let expressions = values_of(&rules, "expr:");
    assert!(!expressions.is_empty());
    let mut names = Vec::new();
    for expression in expressions {
        let mut rest = expression;
        while let Some(start) = rest.find(|character: char| character.is_ascii_lowercase()) {
            rest = &rest[start..];
            let end = rest
                .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if word.starts_with("log_capturer_") || word.starts_with("kafka_") {
                names.push(word.to_string());
            }
            rest = &rest[end..];
        }
    }
    assert!(names.len() >= 10, "metric names found: {names:?}");
    for name in names {
        assert!(
            metrics_doc.contains(&format!("`{name}`")),
            "{name} is read by an alert but not listed in docs/METRICS.md"
        );
    }
}
