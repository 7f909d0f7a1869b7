//! The host's dependency rule: every import points one way. No module uses a module that
//! uses it, directly or through others — between top-level modules (`quant` and `model`),
//! and between any two modules at all (a child file and its parent's `mod.rs` count: the
//! parent declares the child, so a child that imports from its parent closes a cycle).
//! Read from the sources: `crate::a::b` and `super::x` paths outside comments.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`cmd::run`) of every source file under `src`, with its text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

/// The code of `text` without `//` comments (doc comments name modules too).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// `crate::a::b::C` and `super::x::Y` paths in `text`, as module-path segments (from the
/// crate root), for the file whose module is `module`.
fn references(module: &str, text: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = vec![];
    let code = code(text);
    let own: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
    let parent = own[..own.len().saturating_sub(1)].to_vec();
    // Inline modules (`mod tests { use super::*; }`) come last in our files: a `super::`
    // after one names the file's own module.
    let inline = code.match_indices("mod ").find(|(i, _)| {
        let rest = &code[i + 4..];
        let id = ident(rest);
        !id.is_empty() && rest[id.len()..].trim_start().starts_with('{')
    });
    for prefix in ["crate::", "super::"] {
        for (i, _) in code.match_indices(prefix) {
            let base = match prefix {
                "crate::" => vec![],
                _ if inline.is_some_and(|(m, _)| m < i) => own.clone(),
                _ => parent.clone(),
            };
            // `crate::` inside a longer identifier (e.g. `llq_crate::`) is not this crate.
            if code[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut segs = base.clone();
            let mut rest = &code[i + prefix.len()..];
            loop {
                let id = ident(rest);
                if id.is_empty() {
                    break;
                }
                segs.push(id.clone());
                rest = &rest[id.len()..];
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            out.push(segs);
        }
    }
    out
}

/// A cycle in `graph`, if there is one (as the path of nodes around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut c = path[start..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut state, &mut vec![]))
}

/// The module graph of `src`: an edge from each file's module to every module it names
/// (the longest known module prefix of a path), plus parent → child for every child.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let known: BTreeSet<&String> = mods.keys().collect();
    let mut g: BTreeMap<String, BTreeSet<String>> =
        mods.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (m, text) in &mods {
        for segs in references(m, text) {
            let target = (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|p| known.contains(p));
            if let Some(t) = target.filter(|t| t != m && !t.is_empty()) {
                g.get_mut(m).unwrap().insert(t);
            }
        }
        if let Some((parent, _)) = m.rsplit_once("::") {
            g.get_mut(parent).unwrap().insert(m.clone());
        }
    }
    g
}

#[test]
fn no_two_modules_import_each_other() {
    let g = graph(&common::root().join("host/src"));
    assert!(g.len() > 40, "found only {} modules", g.len());
    if let Some(c) = find_cycle(&g) {
        panic!("module cycle: {}", c.join(" → "));
    }
    // Top-level modules, with each one's submodules folded in.
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &g {
        for to in tos {
            if !from.is_empty() && top(from) != top(to) {
                t.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    if let Some(c) = find_cycle(&t) {
        panic!("top-level module cycle: {}", c.join(" → "));
    }
}

#[test]
fn the_check_finds_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "pub mod x;\n// crate::b is only mentioned here\n").unwrap();
    std::fs::write(src.join("a/x.rs"), "use crate::b::f;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub fn f() {}\n").unwrap();
    assert_eq!(find_cycle(&graph(src)), None);
    // b now uses a's child, which uses b.
    std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::x::g() }\n").unwrap();
    assert!(find_cycle(&graph(src)).is_some());
    // A child importing from its parent's mod.rs is a cycle too.
    std::fs::write(src.join("b.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(src.join("a/x.rs"), "use super::Thing;\n").unwrap();
    assert_eq!(find_cycle(&graph(src)).unwrap(), vec!["a", "a::x", "a"]);
}
