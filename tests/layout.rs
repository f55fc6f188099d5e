//! The code's layout: every source file small enough to
//! read in one sitting, and dependencies between the files of `src/` pointing one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "node_modules" && name != "corpus" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples", "fuzz/fuzz_targets"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `src/lib.rs` is the crate root "".
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests`, which
/// may reach anywhere.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a file names after `crate::` or `super::`, with `{a, b::c}` groups expanded,
/// made absolute.
fn paths_named(module: &str, code: &str) -> Vec<String> {
    let mut named = Vec::new();
    let parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let parent = parent[..parent.len().saturating_sub(1)].join("::");
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            let absolute = match (base.is_empty(), path.is_empty()) {
                (true, _) => path.to_owned(),
                (false, true) => base.clone(),
                (false, false) => format!("{base}::{path}"),
            };
            named.push(absolute.clone());
            if rest[end..].starts_with('{')
                && let Some(close) = rest[end..].find('}')
            {
                for item in rest[end + 1..end + close].split(',') {
                    let item = item.trim().split([' ', '{']).next().unwrap_or_default();
                    if !item.is_empty() && item != "self" {
                        named.push(format!("{absolute}::{item}"));
                    }
                }
            }
        }
    }
    named
}

/// The longest module that `path` starts with.
fn owning_module<'m>(modules: &'m BTreeSet<String>, path: &str) -> Option<&'m String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

/// One cycle of the graph, if it has any, as the modules along it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Which files of `src/` use which (a module using its own ancestors does not count: a
/// child always sees its parent in Rust).
fn file_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let sources: BTreeMap<String, String> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            (module_of(&src, file), code_of(&text))
        })
        .collect();
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (module, code) in &sources {
        let used: BTreeSet<String> = paths_named(module, code)
            .iter()
            .filter_map(|path| owning_module(&modules, path))
            .filter(|used| {
                !used.is_empty() && *used != module && !module.starts_with(&format!("{used}::"))
            })
            .cloned()
            .collect();
        edges.insert(module.clone(), used);
    }
    edges
}

#[test]
fn the_files_of_src_import_each_other_one_way() {
    let edges = file_graph();
    assert!(edges.len() > 50, "found only {} modules", edges.len());
    // The graph is read correctly: a use that is known to be there is seen.
    assert!(edges["proxy::ingress"].contains("verify"), "{edges:?}");
    assert!(edges["tenants"].contains("proxy::headers"), "{edges:?}");
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import circle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_a_circle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    edges.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(find_cycle(&edges).map(|c| c.len()), Some(4));
    edges.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(find_cycle(&edges), None);
}

/// The layers `src/lib.rs` states, top first: each `//! - ` line names the modules of
/// one layer in backticks.
fn stated_layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap_or_default();
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - "))
        .map(|line| {
            let names = line.split(':').next().unwrap_or_default();
            names
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// A use that goes up the stated list, if there is one, as "from -> to".
fn use_against_the_layers(
    layers: &[Vec<String>],
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    let layer_of = |module: &str| {
        let top = module.split("::").next().unwrap_or_default();
        layers
            .iter()
            .position(|layer| layer.iter().any(|m| m == top))
    };
    for (from, used) in edges {
        for to in used {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
                && b < a
            {
                return Some(format!("{from} -> {to}"));
            }
        }
    }
    None
}

#[test]
fn the_modules_use_each_other_in_the_order_lib_rs_states() {
    let layers = stated_layers();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap_or_default();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';').to_owned())
        .collect();
    let stated: Vec<String> = layers.iter().flatten().cloned().collect();
    let stated_set: BTreeSet<String> = stated.iter().cloned().collect();
    assert_eq!(
        stated.len(),
        stated_set.len(),
        "a module is listed twice: {stated:?}"
    );
    assert_eq!(
        declared, stated_set,
        "src/lib.rs's list of layers must name every module exactly once"
    );
    if let Some(offence) = use_against_the_layers(&layers, &file_graph()) {
        panic!("{offence} goes up the order src/lib.rs states");
    }
}

#[test]
fn the_layer_check_sees_a_use_that_goes_up() {
    let layers = vec![vec!["proxy".to_owned()], vec!["jose".to_owned()]];
    let mut edges = BTreeMap::new();
    edges.insert(
        "proxy::ingress".to_owned(),
        BTreeSet::from(["jose".to_owned()]),
    );
    assert_eq!(use_against_the_layers(&layers, &edges), None);
    edges.insert(
        "jose::jws".to_owned(),
        BTreeSet::from(["proxy::errors".to_owned()]),
    );
    assert_eq!(
        use_against_the_layers(&layers, &edges).as_deref(),
        Some("jose::jws -> proxy::errors")
    );
}
