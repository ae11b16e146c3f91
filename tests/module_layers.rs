//! Goal: the modules of `src/` depend one way. No cycle between top-level
//! modules, and the boundaries of the sink seam hold: no sink module
//! imports the dispatcher, the pipeline or the DLQ; the dispatcher imports
//! no concrete sink kind; the DLQ (storage) imports no sink and no config.
//! Method: read every `.rs` file under `src/` as text, collect the
//! `crate::` paths it names (`use crate::a::b`, `use crate::{a, b::c}`,
//! `crate::a::f()` in code), and check the graph of top-level modules they
//! make. Text, not a compiler: a path in a comment counts too, which errs
//! on the strict side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files of the crate and the module path each one is (`["sink", "kafka",
/// "sink"]` for `src/sink/kafka/sink.rs`). The binary's `main.rs` and the
/// crate root are left out: they sit on top of everything.
fn crate_files() -> Vec<(Vec<String>, PathBuf)> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).expect("under src");
            let mut module: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            let root = module == ["lib"] || module == ["main"];
            (!root).then_some((module, path))
        })
        .collect()
}

/// Every module path named after `crate::` in `text`, with brace groups
/// expanded one level (`crate::{a, b::c}` gives `a` and `b::c`).
fn crate_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("crate::") {
        let before = rest[..start].chars().next_back();
        rest = &rest[start + "crate::".len()..];
        if before.is_some_and(|character| character.is_alphanumeric() || character == '_') {
            continue; // `log_capturer::`-like identifiers ending in `crate`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    paths.push(path_prefix(item));
                }
            }
        } else {
            paths.push(path_prefix(rest));
        }
    }
    paths
}

/// The leading `a::b::c` of `text`.
fn path_prefix(text: &str) -> String {
    let end = text
        .find(|character: char| {
            !(character.is_alphanumeric() || character == '_' || character == ':')
        })
        .unwrap_or(text.len());
    text[..end].trim_end_matches(':').to_string()
}

/// Imports as (importing module path, imported path, file).
fn imports() -> Vec<(Vec<String>, String, PathBuf)> {
    let mut imports = Vec::new();
    for (module, path) in crate_files() {
        let text = std::fs::read_to_string(&path).expect("read source");
        for imported in crate_paths(&text) {
            imports.push((module.clone(), imported, path.clone()));
        }
    }
    assert!(
        imports.len() > 100,
        "the crate's imports were not found: {}",
        imports.len()
    );
    imports
}

fn top_level_graph() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (module, imported, file) in imports() {
        let from = module[0].clone();
        let to = imported.split("::").next().unwrap_or_default().to_string();
        if to.is_empty() || to == from {
            continue;
        }
        graph.entry(from).or_default().entry(to).or_insert(file);
    }
    graph
}

/// A cycle of the graph, if there is one, as the list of its modules.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, PathBuf>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(position) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[position..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = top_level_graph();
    for expected in ["sink", "dispatch", "pipeline", "dlq", "config"] {
        assert!(
            graph.contains_key(expected),
            "no imports found in {expected}"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        let evidence: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let file = &graph[&pair[0]][&pair[1]];
                format!("{} -> {} (in {})", pair[0], pair[1], file.display())
            })
            .collect();
        panic!(
            "import cycle between top-level modules:\n  {}",
            evidence.join("\n  ")
        );
    }
}

/// The imports of modules under `from` whose path starts with one of
/// `forbidden`, as readable lines.
fn crossings(from: &str, forbidden: &[&str]) -> Vec<String> {
    imports()
        .into_iter()
        .filter(|(module, imported, _)| {
            module[0] == from
                && forbidden.iter().any(|prefix| {
                    imported == prefix || imported.starts_with(&format!("{prefix}::"))
                })
        })
        .map(|(_, imported, file)| format!("{}: crate::{imported}", file.display()))
        .collect()
}

#[test]
fn sinks_import_no_dispatcher_pipeline_or_dlq() {
    let found = crossings("sink", &["dispatch", "pipeline", "dlq", "replay", "config"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn dispatcher_imports_no_sink_kind() {
    let kinds = ["sink::kafka", "sink::file", "sink::stdout", "sink::null"];
    let found = crossings("dispatch", &kinds);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn dlq_is_storage_only() {
    let found = crossings(
        "dlq",
        &["sink", "config", "dispatch", "pipeline", "replay", "source"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

/// The checker itself: a path in braces, a path in code, and an identifier
/// that merely ends in `crate` are read as they should be; a cycle is found.
#[test]
fn checker_reads_paths_and_finds_cycles() {
    let text = "use crate::{a::b, c};\nlet x = crate::d::f();\nother_crate::e::g();";
    assert_eq!(crate_paths(text), ["a::b", "c", "d::f"]);
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string(), PathBuf::from(format!("{from}.rs")));
    }
    assert_eq!(find_cycle(&graph).expect("a cycle"), ["a", "b", "c", "a"]);
    graph.get_mut("c").expect("c").remove("a");
    assert_eq!(find_cycle(&graph), None);
}
