//! The crate map of `docs/architecture.md`, checked against `cargo metadata`:
//! every workspace crate depends only on crates below it, so the contract
//! stays free of I/O crates and no edge reaches up into the read side or the
//! binary. A new crate must be given its place here.

use std::collections::BTreeMap;
use std::process::Command;

/// Each workspace crate and its layer: a crate may depend on crates of a
/// lower layer only.
const LAYERS: &[(&str, u8)] = &[
    ("tollgate-contract", 0),
    ("tollgate-mock-upstream", 0),
    ("tollgate-control", 1),
    // The two HTTP edges (batch ingest, the proxy) and the write path (the
    // processors) are branches of the flow on the same layer, so none may
    // use another: what they share is in the contract (records) or the
    // control plane (keys, prices, budgets, the producer).
    // The read side (queries) sits beside them: it reads what the
    // processors write, through ClickHouse, not through their code.
    ("tollgate-ingest", 2),
    ("tollgate-proxy", 2),
    ("tollgate-processors", 2),
    ("tollgate-queries", 2),
    // Who is calling and what they may do: the accounts and keys of the
    // control plane, for the API and the pages above it.
    ("tollgate-access", 2),
    // The JSON API and the pages are siblings; the binary mounts both.
    ("tollgate-api", 3),
    ("tollgate-dashboards", 3),
    ("tollgate-alerting", 3),
    ("tollgate", 4),
];

/// Crates only the listed crates may depend on, whatever their layer: each
/// edge is a process of its own, started by the binary alone.
const ONLY_USED_BY: &[(&str, &[&str])] = &[
    ("tollgate-proxy", &["tollgate"]),
    ("tollgate-ingest", &["tollgate"]),
];

/// The one optional dependency of the contract on an I/O crate, and the
/// feature that enables it: `derive(clickhouse::Row)` on the audit rows,
/// a column list the audit fold and the read side need; the contract calls
/// nothing in it.
const CONTRACT_OPTIONAL: &[(&str, &str)] = &[("clickhouse", "clickhouse-rows")];

/// Crates that do I/O; the contract must not depend on any of them.
const IO_CRATES: &[&str] = &[
    "tokio",
    "rdkafka",
    "sqlx",
    "clickhouse",
    "reqwest",
    "axum",
    "hyper",
];

fn metadata() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(crate::support::repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn no_crate_depends_on_one_above_it() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let metadata = metadata();
    let packages = metadata["packages"].as_array().unwrap();
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let Some(&layer) = layers.get(name) else {
            problems.push(format!(
                "{name} is not in the crate map (tests/layering.rs)"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            if let Some(&dep_layer) = layers.get(dep_name) {
                if dep_layer >= layer && dep["kind"].is_null() {
                    problems.push(format!(
                        "{name} (layer {layer}) depends on {dep_name} (layer {dep_layer})"
                    ));
                }
            }
            if let Some((_, users)) = ONLY_USED_BY.iter().find(|(c, _)| *c == dep_name) {
                if !users.contains(&name) {
                    problems.push(format!(
                        "{name} depends on {dep_name}, which only {} may use",
                        users.join(", ")
                    ));
                }
            }
            let allowed_optional = dep["optional"].as_bool() == Some(true)
                && CONTRACT_OPTIONAL.iter().any(|(c, feature)| {
                    *c == dep_name
                        && package["features"][*feature]
                            .as_array()
                            .is_some_and(|f| f.iter().any(|x| x == &format!("dep:{dep_name}")))
                });
            if name == "tollgate-contract"
                && IO_CRATES.contains(&dep_name)
                && dep["kind"].is_null()
                && !allowed_optional
            {
                problems.push(format!(
                    "tollgate-contract depends on the I/O crate {dep_name}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
