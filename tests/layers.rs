//! The rule of `src/server/mod.rs`, kept: the server's rooms import only downwards
//! (control -> state -> data -> spec; the building, `server/mod.rs`, `config.rs` and
//! `upgrade.rs`, may use them all and none uses it), and no module of the crate is in a
//! circle with a sibling (two files or folders of one folder that use each other, however
//! indirectly).
//!
//! Read from the sources as a reader would: every path that starts with `crate::`,
//! `super::` or `self::`, in `use` lines and in code, resolved to the module it names. A
//! module and its own submodules are one unit (a folder is one module to its siblings).
//! Test code (a `#[cfg(test)]` module, inline at the end of a file or a file of its own)
//! is left out: a test may reach across to check what it tests, as the store's contract
//! tests check the table that follows a store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's path from the crate root (`["server", "data", "forward"]`).
type ModPath = Vec<String>;

/// Every source file's module path, and its text without comments.
fn sources() -> BTreeMap<ModPath, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<ModPath, String>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("read src/").path();
            if path.is_dir() {
                walk(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).unwrap();
            let mut module: ModPath = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            let file = module.pop().unwrap();
            match file.as_str() {
                "lib.rs" | "main.rs" | "mod.rs" => {}
                other => module.push(other.trim_end_matches(".rs").to_owned()),
            }
            if file == "main.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // The file's own tests: from `#[cfg(test)]` before `mod tests {` to the end.
            let text = match text.find("#[cfg(test)]\nmod tests {") {
                Some(at) => &text[..at],
                None => &text[..],
            };
            let code: String =
                text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            out.insert(module, code);
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), &mut out);
    // Files that are test modules of their parent (`#[cfg(test)]` then `mod NAME;`).
    let tests: Vec<ModPath> = out
        .iter()
        .flat_map(|(module, code)| {
            code.split("#[cfg(test)]").skip(1).filter_map(move |after| {
                let name = after.trim_start().strip_prefix("mod ")?.split(';').next()?.trim();
                let mut child = module.clone();
                child.push(name.to_owned());
                Some(child)
            })
        })
        .collect();
    for module in tests {
        out.remove(&module);
    }
    out
}

/// The paths a file names: `crate::a::b`, `super::x::{y, z}` (expanded), `self::c`.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let bytes: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["crate::", "super::", "self::"].iter().find(|p| code_at(&bytes, i, p));
        let boundary =
            i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        match starts {
            Some(_) if boundary => {
                let (paths, end) = parse_path(&bytes, i);
                out.extend(paths);
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

fn code_at(chars: &[char], at: usize, pattern: &str) -> bool {
    pattern.chars().enumerate().all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// Reads a path at `at` (with one level of `{…}` groups, possibly nested), answering the
/// paths it expands to and where it ends.
fn parse_path(chars: &[char], mut at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let start = at;
        while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
            at += 1;
        }
        if at > start {
            prefix.push(chars[start..at].iter().collect::<String>());
        }
        if code_at(chars, at, "::{") {
            at += 3;
            let mut paths = Vec::new();
            loop {
                while at < chars.len() && chars[at].is_whitespace() {
                    at += 1;
                }
                if at >= chars.len() || chars[at] == '}' {
                    break;
                }
                let (inner, end) = parse_path(chars, at);
                for p in inner {
                    let mut full = prefix.clone();
                    full.extend(p.into_iter().filter(|s| s != "self"));
                    paths.push(full);
                }
                at = end;
                while at < chars.len() && chars[at] != ',' && chars[at] != '}' {
                    at += 1;
                }
                if at < chars.len() && chars[at] == ',' {
                    at += 1;
                }
            }
            return (paths, at + 1);
        }
        if code_at(chars, at, "::") {
            at += 2;
            continue;
        }
        return (vec![prefix], at);
    }
}

/// The absolute path `path` names from `module` (whose file is a folder's `mod.rs` when
/// `folder`).
fn resolve(module: &ModPath, path: &[String]) -> Option<ModPath> {
    let mut base = module.clone();
    let mut rest = path;
    match rest.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The edges between siblings: for each file and each path it names, the two children of
/// their deepest common folder that they fall in (none when one contains the other).
fn sibling_edges(sources: &BTreeMap<ModPath, String>) -> BTreeSet<(ModPath, ModPath, String)> {
    let modules: BTreeSet<&ModPath> = sources.keys().collect();
    let mut edges = BTreeSet::new();
    for (module, code) in sources {
        for path in named_paths(code) {
            let Some(target) = resolve(module, &path) else { continue };
            // The longest prefix of the target that is a module of the crate.
            let Some(target) =
                (0..=target.len()).rev().map(|n| target[..n].to_vec()).find(|p| modules.contains(p))
            else {
                continue;
            };
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == target.len() && target.len() < module.len() {
                // A module uses an item of a folder it is in: kept as (module, folder), the
                // one kind of upward edge the rooms' rule must see (`crate::server::x`).
                edges.insert((
                    module.clone(),
                    target,
                    format!("{} uses {}", module.join("/"), path.join("::")),
                ));
                continue;
            }
            if common == module.len() || common == target.len() {
                continue; // a module and its own submodule
            }
            let from = module[..=common].to_vec();
            let to = target[..=common].to_vec();
            edges.insert((from, to, format!("{} uses {}", module.join("/"), path.join("::"))));
        }
    }
    edges
}

/// The server's rooms, lowest first: a room may use only the rooms below it.
const ROOMS: [&str; 4] = ["spec", "data", "state", "control"];

#[test]
fn the_server_rooms_import_only_downwards() {
    let edges = sibling_edges(&sources());
    let rank = |m: &ModPath| match m.as_slice() {
        [server, room] if server == "server" => ROOMS.iter().position(|r| r == room),
        _ => None,
    };
    let mut wrong = Vec::new();
    for (from, to, why) in &edges {
        let in_room = from.len() > 2 && from[0] == "server" && ROOMS.contains(&from[1].as_str());
        if in_room && to.as_slice() == ["server"] {
            wrong.push(format!("a room uses the building: {why}"));
        }
        if from.first().is_some_and(|s| s == "server") && from.len() == 2 && to.len() == 2 {
            match (rank(from), rank(to)) {
                (Some(a), Some(b)) if b < a => {}
                (Some(_), Some(_)) => wrong.push(format!("an arrow up: {why}")),
                (Some(_), None) => wrong.push(format!("a room uses the building: {why}")),
                (None, _) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "control -> state -> data -> spec only:\n{}", wrong.join("\n"));
    // The rule must see the arrows that exist, or it holds nothing.
    let seen = |a: &str, b: &str| {
        edges.iter().any(|(f, t, _)| {
            f == &["server".to_owned(), a.to_owned()] && t == &["server".to_owned(), b.to_owned()]
        })
    };
    assert!(seen("control", "state") && seen("state", "data") && seen("data", "spec"), "{edges:#?}");
}

#[test]
fn no_module_is_in_a_circle_with_a_sibling() {
    let edges = sibling_edges(&sources());
    // Edges to a folder a module is in are not between siblings.
    let edges: BTreeSet<_> = edges.into_iter().filter(|(from, to, _)| !from.starts_with(to)).collect();
    let mut graph: BTreeMap<&ModPath, BTreeSet<&ModPath>> = BTreeMap::new();
    for (from, to, _) in &edges {
        graph.entry(from).or_default().insert(to);
    }
    // A circle is a pair (a, b) where b reaches a and a uses b.
    let reaches = |from: &ModPath, goal: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(m) = todo.pop() {
            if m == goal {
                return true;
            }
            if seen.insert(m) {
                todo.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
        false
    };
    let circles: Vec<String> =
        edges.iter().filter(|(from, to, _)| reaches(to, from)).map(|(_, _, why)| why.clone()).collect();
    assert!(
        circles.is_empty(),
        "modules in a circle (each line is one arrow of it):\n{}",
        circles.join("\n")
    );
    assert!(edges.len() > 50, "the sources name too few paths to check: {}", edges.len());
}
