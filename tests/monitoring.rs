//! deploy/monitoring/ against the metrics a running sidecar exposes: every `jtl_sidecar_*`
//! name in the alert rules, their promtool tests and the Grafana dashboard is a sample
//! name of a family the admin listener's `/metrics` has (a counter's `_total`, a
//! histogram's `_bucket`/`_sum`/`_count`, a gauge's own name), and every value a matcher
//! names for one of the sidecar's labels is a string the code writes.
//! (promtool itself runs in deploy/validate.sh.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::proxy::{Proxy, get};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The families of an exposition and their types, from its `# TYPE` lines.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Whether `name` is a sample name of one of `families`.
fn exposed(name: &str, families: &BTreeMap<String, String>) -> bool {
    let typed = |family: &str, kinds: &[&str]| {
        families
            .get(family)
            .is_some_and(|kind| kinds.contains(&kind.as_str()))
    };
    if typed(name, &["gauge"]) {
        return true;
    }
    if name
        .strip_suffix("_total")
        .is_some_and(|family| typed(family, &["counter"]))
    {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|family| typed(family, &["histogram"]))
    })
}

/// Every `jtl_sidecar_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("jtl_sidecar_") {
        let word = &rest[start..];
        let end = word
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(word.len());
        // The bare prefix is prose ("every jtl_sidecar_* name"), not a metric.
        if end > "jtl_sidecar_".len() {
            names.insert(word[..end].to_owned());
        }
        rest = &word[end..];
    }
    names
}

/// The sidecar's own labels whose values the code spells out.
const LABELS: [&str; 7] = [
    "listener", "outcome", "result", "reason", "event", "kind", "flow",
];

/// `label="v"`, `label=~"a|b"`, `label!="v"` in `text`: (label, each alternative).
fn matched_values(text: &str) -> BTreeSet<(String, String)> {
    let mut values = BTreeSet::new();
    for label in LABELS {
        for operator in ["=\"", "=~\"", "!=\"", "!~\""] {
            let needle = format!("{label}{operator}");
            let mut rest = text;
            while let Some(start) = rest.find(&needle) {
                let after = &rest[start + needle.len()..];
                // Only a whole label name: not `fooreason=`.
                let whole = rest[..start]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                let value = after.split('"').next().unwrap_or_default();
                if whole {
                    for alternative in value.split('|') {
                        values.insert((label.to_owned(), alternative.to_owned()));
                    }
                }
                rest = after;
            }
        }
    }
    values
}

fn rust_sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

/// The PromQL of the rules, their tests and the dashboard (whose JSON must parse).
fn monitoring_text() -> String {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/dashboard.json"))
            .unwrap_or_else(|e| panic!("deploy/monitoring/dashboard.json is not JSON: {e}"));
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(
        queries.len() >= 20,
        "the dashboard has only {} queries",
        queries.len()
    );
    let mut text = read("deploy/monitoring/prometheusrule.yaml");
    text.push_str(&read("deploy/monitoring/rules.test.yaml"));
    text.push_str(&queries.join("\n"));
    text
}

/// The `expr` of every target and the `definition` of every template variable.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(query)) => {
                        out.push(query.clone())
                    }
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_exposed() {
    // With the egress listener: every family is registered, the egress ones included.
    let proxy = Proxy::builder().egress().start().await;
    let answer = get(&proxy.admin_url("/metrics"), &[]).await;
    assert_eq!(answer.status, 200);
    let exposition = String::from_utf8_lossy(&answer.body).into_owned();
    let families = families(&exposition);
    assert!(families.len() >= 20, "families: {families:?}");

    let used = metric_names(&monitoring_text());
    assert!(used.len() >= 20, "found only {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exposed(name, &families))
        .collect();
    assert!(
        missing.is_empty(),
        "used in deploy/monitoring/ but not in /metrics: {missing:?}\nfamilies: {families:?}"
    );
    // The check tells a real name from a misspelt one, by family and by type.
    for wrong in [
        "jtl_sidecar_request_total",
        "jtl_sidecar_requests",
        "jtl_sidecar_requests_in_flight_total",
        "jtl_sidecar_token_fetches_bucket",
    ] {
        assert!(!exposed(wrong, &families), "{wrong} passed");
    }
}

#[test]
fn every_label_value_the_rules_and_the_dashboard_match_is_one_the_code_writes() {
    let mut sources = String::new();
    rust_sources(&root().join("src"), &mut sources);
    let values = matched_values(&monitoring_text());
    assert!(
        values.contains(&("outcome".to_owned(), "keys_unavailable".to_owned())),
        "found {values:?}"
    );
    let unknown: Vec<&(String, String)> = values
        .iter()
        .filter(|(_, value)| !value.contains('$') && !sources.contains(&format!("\"{value}\"")))
        .collect();
    assert!(
        unknown.is_empty(),
        "matched in deploy/monitoring/ but written nowhere in src/: {unknown:?}"
    );
}
