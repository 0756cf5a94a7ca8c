//! The layout's rules, checked on the source files (like the CRD drift test): in the operator,
//! `resource/` ← `core/` ← `shell/` ← `runtime/`, imports pointing one way only, and `core/`
//! and `resource/` do no I/O; in the whole library, no module imports one that imports it
//! back, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 4] = ["resource", "core", "shell", "runtime"];

/// What a pure folder may not name in code.
const IO_MARKERS: [&str; 6] = [
    "kube::Api",
    "kube::Client",
    "Api<",
    "Client::",
    ".await",
    "crate::operator::shell",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `operator::core::plan` for `src/operator/core/plan.rs` (`operator::core` for its `mod.rs`).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The file without comments (line comments and `//!`/`///` docs; the code has no block
/// comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The module paths a file's code names (`crate::a::b::c` and `super::b`), as written; [`tree`]
/// keeps the longest prefix of each that is a module.
fn references(module: &str, code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let mut path = Vec::new();
        let mut at = rest;
        loop {
            let name = ident_at(at);
            if name.is_empty() || name.starts_with(char::is_uppercase) {
                break;
            }
            path.push(name);
            match at[name.len()..].strip_prefix("::") {
                Some(next) => at = next,
                None => break,
            }
        }
        if !path.is_empty() {
            out.insert(path.join("::"));
        }
    }
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let mut rest = code;
    while let Some(i) = rest.find("super::") {
        rest = &rest[i + "super::".len()..];
        let name = ident_at(rest);
        if !name.is_empty() && !name.starts_with(char::is_uppercase) {
            out.insert(format!("{parent}::{name}"));
        }
    }
    out.remove(module);
    out
}

/// The longest prefix of `path` that is one of `known`.
fn module_in(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let mut p = path;
    loop {
        if known.contains(p) {
            return Some(p.to_owned());
        }
        p = p.rsplit_once("::")?.0;
    }
}

fn layer(module: &str) -> Option<usize> {
    let folder = module.split("::").nth(1)?;
    LAYERS.iter().position(|l| *l == folder)
}

struct Tree {
    /// module → the operator modules it names.
    edges: BTreeMap<String, BTreeSet<String>>,
    code: BTreeMap<String, String>,
}

/// Every module of the library (`src/`, without the binaries).
fn tree() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.retain(|f| !f.starts_with(src.join("bin")) && f != &src.join("lib.rs"));
    let mut edges = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for f in all {
        let module = module_of(&src, &f);
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let code = code(&text);
        edges.insert(module.clone(), references(&module, &code));
        texts.insert(module, code);
    }
    let known: BTreeSet<String> = edges.keys().cloned().collect();
    for (m, deps) in edges.iter_mut() {
        *deps = deps
            .iter()
            .filter_map(|d| module_in(d, &known))
            .filter(|d| d != m)
            .collect();
    }
    Tree { edges, code: texts }
}

#[test]
fn every_file_is_in_one_of_the_four_folders() {
    let t = tree();
    for m in t.edges.keys().filter(|m| m.starts_with("operator")) {
        let depth = m.matches("::").count();
        assert!(
            m == "operator" || m == "operator::architecture" || (layer(m).is_some() && depth <= 2),
            "{m} is outside resource/, core/, shell/, runtime/"
        );
    }
}

#[test]
fn imports_point_from_runtime_to_shell_to_core_to_resource_only() {
    let t = tree();
    let mut wrong = Vec::new();
    for (m, deps) in &t.edges {
        let Some(from) = m.starts_with("operator::").then(|| layer(m)).flatten() else {
            continue;
        };
        for d in deps {
            if layer(d).is_some_and(|to| to > from) {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
}

#[test]
fn resource_and_core_do_no_io() {
    let t = tree();
    let mut wrong = Vec::new();
    for (m, code) in &t.code {
        if !m.starts_with("operator::") || !matches!(layer(m), Some(0 | 1)) {
            continue;
        }
        for marker in IO_MARKERS {
            if code.contains(marker) {
                wrong.push(format!("{m} names {marker}"));
            }
        }
    }
    assert!(wrong.is_empty(), "I/O in a pure folder: {wrong:#?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let t = tree();
    // Depth-first search for a cycle; report the first one found with its path.
    fn visit<'a>(
        m: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m);
        for d in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m);
        None
    }
    let mut done = BTreeSet::new();
    for m in t.edges.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(m, &t.edges, &mut path, &mut done) {
            panic!("import circle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checks_see_imports_and_ignore_comments() {
    let code = code(
        "//! see [`super::shell`]\nuse crate::operator::core::plan::{self, Plan};\nuse super::vocabulary::Desired;\nlet x = crate::operator::resource::crd::ApiToken::crd(); // crate::operator::shell::x\n",
    );
    let refs = references("operator::core::spec", &code);
    let want: BTreeSet<String> = [
        "operator::core::plan",
        "operator::core::vocabulary",
        "operator::resource::crd",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(refs, want);
}

#[test]
fn every_module_is_listed_in_its_folder_and_in_the_architecture_doc() {
    let t = tree();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .unwrap_or_else(|e| panic!("docs/architecture.md: {e}"));
    let mut missing = Vec::new();
    for m in t.edges.keys() {
        let parts: Vec<&str> = m.split("::").collect();
        if parts.first() != Some(&"operator") {
            continue;
        }
        let [_, folder, name] = parts.as_slice() else {
            continue;
        };
        let folder_doc = t
            .code
            .get(&format!("operator::{folder}"))
            .map_or("", String::as_str);
        let folder_text =
            std::fs::read_to_string(root.join(format!("src/operator/{folder}/mod.rs")))
                .unwrap_or_default();
        if !folder_doc.contains(&format!("pub mod {name};"))
            || !folder_text.contains(&format!("[`{name}`]"))
        {
            missing.push(format!("{m}: not in src/operator/{folder}/mod.rs's list"));
        }
        if !doc.contains(&format!("`{name}`")) {
            missing.push(format!("{m}: not in docs/architecture.md"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
