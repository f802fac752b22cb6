//! The direction of dependencies inside node/src (docs/ARCHITECTURE.md, "Layers inside
//! node/"), checked over the source: every `crate::<module>` a file names is an edge from its
//! top-level module to that one. The engines never reach up into a handler or the composition
//! root, and the graph of top-level modules has no loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Engines: called by handlers, never calling them.
const ENGINES: &[&str] = &[
    "proxy",
    "quota",
    "usage",
    "safety",
    "records",
    "events",
    "providers",
    "tokens",
    "sse",
    "error",
    "signed_id",
];
/// What an engine may never name: the handlers, the composition root, the server.
const ABOVE_ENGINES: &[&str] = &[
    "openai",
    "passthrough",
    "admin",
    "peer",
    "state",
    "server",
    "listener",
    "demo",
    "admin_client",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `proxy/attempt.rs` -> `proxy`, `state.rs` -> `state`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_str().unwrap().trim_end_matches(".rs").to_owned()
}

/// Every top-level module named as `crate::<name>` in `text`, comments left out; a
/// `use crate::{a, b::c}` names each of `a` and `b`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        names.insert(name.to_owned());
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
            rest = after;
        }
    }
    names
}

/// Edges between top-level modules, with the files that make each.
fn graph() -> BTreeMap<(String, String), Vec<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        if from == "main" || from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for to in named_modules(&text) {
            if to != from && modules.contains(&to) {
                let shown = file.strip_prefix(src()).unwrap().display().to_string();
                edges.entry((from.clone(), to)).or_default().push(shown);
            }
        }
    }
    edges
}

#[test]
fn engines_never_import_handlers_or_the_app_state() {
    let upward: Vec<String> = graph()
        .into_iter()
        .filter(|((from, to), _)| {
            ENGINES.contains(&from.as_str()) && ABOVE_ENGINES.contains(&to.as_str())
        })
        .map(|((from, to), files)| format!("{from} -> {to} in {files:?}"))
        .collect();
    assert!(
        upward.is_empty(),
        "engines must take what they need as arguments, not import upward:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_modules_of_node_import_each_other_without_a_loop() {
    let edges = graph();
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    // Depth-first search; a node met again on the current path closes a loop.
    fn visit<'a>(
        at: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|m| *m == at) {
            let mut cycle = path[start..].to_vec();
            cycle.push(at);
            return Some(cycle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for to in next.get(at).into_iter().flatten() {
            if let Some(cycle) = visit(to, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for from in next.keys() {
        if let Some(cycle) = visit(from, &next, &mut Vec::new(), &mut done) {
            let hops: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let files = &edges[&(w[0].to_owned(), w[1].to_owned())];
                    format!("{} -> {} ({})", w[0], w[1], files.join(", "))
                })
                .collect();
            panic!("node/src's modules import in a loop:\n{}", hops.join("\n"));
        }
    }
}

#[test]
fn the_check_sees_both_kinds_of_use() {
    let names = named_modules(
        "use crate::proxy::{self, Forwarded};\nuse crate::{state, error::ApiError};\n\
         let x = crate::quota::tap::Usage::default(); // crate::openai is a comment\n",
    );
    let expected: BTreeSet<String> = ["proxy", "state", "error", "quota"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
}
