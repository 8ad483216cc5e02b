//! The module layering rules of docs/architecture.md, read from the source: no module imports a
//! sibling that imports it back, and `bench/` (a client) does not import `server/`. A child may
//! use its parent (`super::`); what is forbidden is two modules of one parent each needing the
//! other, which is where the old `worker.rs` ↔ `pipeline.rs` knot came from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// `src/a/b.rs` and `src/a/b/mod.rs` → `["a", "b"]`.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(SRC).expect("under src/");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `//` comments (doc links name modules without importing them) and without
/// its inline `#[cfg(test)] mod tests` (tests may use any module for fixtures: `synth` to make
/// transactions for `transaction`'s own tests).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` / `super::…` path in `code`, brace groups expanded one level deep
/// (`crate::{a::b, c}` → `crate::a::b`, `crate::c`), as segment lists.
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i..].starts_with(b"crate::") || bytes[i..].starts_with(b"super::"))
            && (i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(code[start..j].to_string());
            if bytes[j..].starts_with(b"::{") {
                // One level of a brace group: each item's first segment.
                let mut depth = 0;
                let mut item = String::new();
                for c in code[j + 3..].chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if c == ',' && depth == 0 {
                        push_item(&segments, &item, &mut out);
                        item.clear();
                    } else {
                        item.push(c);
                    }
                }
                push_item(&segments, &item, &mut out);
                break;
            }
            if bytes[j..].starts_with(b"::") && j + 2 < bytes.len() && is_ident(bytes[j + 2]) {
                j += 2;
            } else {
                out.push(segments.clone());
                break;
            }
        }
        i = j.max(i + 1);
    }
    out
}

fn push_item(prefix: &[String], item: &str, out: &mut Vec<Vec<String>>) {
    let item = item.trim();
    let first = item.split("::").next().unwrap_or("").split(" as ").next();
    if let Some(first) = first.map(str::trim)
        && !first.is_empty()
        && first != "self"
        && !first.starts_with('{')
    {
        let mut path = prefix.to_vec();
        path.extend(item.split("::").map(|s| s.trim().to_string()));
        out.push(path);
    }
}

/// Whether `module` is a module (a file or a folder under src/), not an item of its parent.
fn is_module(module: &[String]) -> bool {
    let base = module.iter().fold(PathBuf::from(SRC), |p, s| p.join(s));
    base.with_extension("rs").is_file() || base.is_dir()
}

/// Edges between siblings: (importer, imported), each the two modules under their common parent.
fn sibling_edges() -> BTreeMap<(Vec<String>, Vec<String>), String> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let me = module_of(&file);
        let test_file = me
            .last()
            .is_some_and(|m| m == "tests" || m.ends_with("_tests"));
        if me.first().is_some_and(|m| m == "bin") || test_file {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for path in paths(&code(&text)) {
            let target: Vec<String> = if path[0] == "crate" {
                path[1..].to_vec()
            } else {
                // super::super::x from a/b/c.rs (module a::b::c) is a::x.
                let ups = path.iter().take_while(|s| *s == "super").count();
                let mut base = me[..me.len().saturating_sub(ups)].to_vec();
                base.extend(path[ups..].iter().cloned());
                base
            };
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < me.len() && common < target.len() {
                let (a, b) = (me[..=common].to_vec(), target[..=common].to_vec());
                if a != b && is_module(&b) {
                    let at = file
                        .strip_prefix(SRC)
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    edges.entry((a, b)).or_insert(at);
                }
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_a_sibling_that_imports_it_back() {
    let edges = sibling_edges();
    let knots: BTreeSet<String> = edges
        .iter()
        .filter(|((a, b), _)| a < b && edges.contains_key(&(b.clone(), a.clone())))
        .map(|((a, b), at)| {
            let back = &edges[&(b.clone(), a.clone())];
            format!("{} ({at}) <-> {} ({back})", a.join("::"), b.join("::"))
        })
        .collect();
    assert!(
        knots.is_empty(),
        "sibling modules importing each other: {knots:#?}"
    );
    // The check sees the imports it is meant to (a parser that found nothing would pass too).
    assert!(edges.contains_key(&(vec!["server".into()], vec!["scoring".into()])));
    assert!(edges.contains_key(&(vec!["bench".into()], vec!["protocol".into()])));
}

#[test]
fn the_load_generator_does_not_import_the_server() {
    let edges = sibling_edges();
    let into_server: Vec<_> = edges
        .iter()
        .filter(|((a, b), _)| a == &["bench"] && b == &["server"])
        .map(|(_, at)| at)
        .collect();
    assert!(
        into_server.is_empty(),
        "bench/ imports server/ in {into_server:?}"
    );
}

#[test]
fn the_parser_reads_groups_nesting_and_super() {
    let found = paths("use crate::{a::B, c::{d, e}, self};\nuse super::super::f::G; x::crate::no");
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        ["crate::a::B", "crate::c::{d, e}", "super::super::f::G"]
    );
}
