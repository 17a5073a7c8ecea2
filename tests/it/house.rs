//! The shape of the source: no import cycle between files of `src/` (counting `crate::` paths,
//! each name resolved to the file that defines it, so a re-export cannot hide a cycle), and no
//! file over 800 lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::common::external;

const MAX_LINES: usize = 800;

struct Source {
    /// File path relative to `src/`.
    files: BTreeMap<String, String>,
    /// Module path (`["cache", "entry"]`) to file.
    modules: HashMap<Vec<String>, String>,
    /// Public item name to the files defining one.
    defs: HashMap<String, BTreeSet<String>>,
}

fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Source {
    fn read(src: &Path) -> Source {
        let mut paths = Vec::new();
        paths.extend(external::files(src, "rs"));
        let mut files = BTreeMap::new();
        for p in paths {
            let rel = p
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            let lines = text.lines().count();
            assert!(
                lines <= MAX_LINES,
                "src/{rel} has {lines} lines; split it (at most {MAX_LINES})"
            );
            // Unit tests may import anything; comments are not imports.
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            files.insert(rel, code);
        }
        let modules = files.keys().map(|r| (module_path(r), r.clone())).collect();
        let mut defs: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (rel, code) in &files {
            for line in code.lines() {
                let t = line.trim_start();
                let Some(rest) = t.strip_prefix("pub") else {
                    continue;
                };
                let rest = match rest.strip_prefix('(') {
                    Some(r) => r.split_once(')').map_or("", |(_, r)| r),
                    None => rest,
                };
                let mut words = rest.split_whitespace();
                let mut kw = words.next().unwrap_or_default();
                if kw == "async" {
                    kw = words.next().unwrap_or_default();
                }
                if matches!(
                    kw,
                    "struct" | "enum" | "fn" | "trait" | "type" | "const" | "static"
                ) {
                    let name: String = words
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take_while(|c| is_ident(*c))
                        .collect();
                    defs.entry(name).or_default().insert(rel.clone());
                }
            }
        }
        Source {
            files,
            modules,
            defs,
        }
    }

    /// The file `crate::<parts>::<name>` comes from.
    fn target(&self, parts: &[String], name: Option<&str>) -> Option<String> {
        let base = (1..=parts.len())
            .rev()
            .map(|i| &parts[..i])
            .find(|p| self.modules.contains_key(*p))?;
        if let Some(n) = name {
            let mut child = base.to_vec();
            child.push(n.to_owned());
            if let Some(f) = self.modules.get(&child) {
                return Some(f.clone());
            }
            let under: Vec<&String> = self
                .files
                .keys()
                .filter(|r| module_path(r).starts_with(base))
                .filter(|r| self.defs.get(n).is_some_and(|d| d.contains(*r)))
                .collect();
            let own = &self.modules[base];
            if under.contains(&own) {
                return Some(own.clone());
            }
            if let Some(f) = under.first() {
                return Some((*f).clone());
            }
        }
        Some(self.modules[base].clone())
    }

    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (rel, code) in &self.files {
            let mut add = |parts: &[String], name: Option<&str>| {
                if let Some(t) = self.target(parts, name) {
                    if &t != rel {
                        edges.entry(rel.clone()).or_default().insert(t);
                    }
                }
            };
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| is_ident(*c) || *c == ':')
                    .collect();
                let mut parts: Vec<String> = path
                    .split("::")
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                let after = &rest[path.len()..];
                if let Some(group) = after.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    for item in group.split(',') {
                        let item = item.split_whitespace().next().unwrap_or_default();
                        let first = item.split("::").next().unwrap_or_default();
                        match first {
                            "" => {}
                            "self" => add(&parts, None),
                            n => add(&parts, Some(n)),
                        }
                    }
                } else if let Some(name) = parts.pop() {
                    if parts.is_empty() {
                        add(&[name], None);
                    } else {
                        add(&parts, Some(&name));
                    }
                }
            }
        }
        edges
    }
}

/// Tarjan's strongly connected components with more than one file.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                if !t.index.contains_key(w.as_str()) {
                    visit(t, w);
                    let lw = t.low[w.as_str()];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w.as_str()) {
                    let iw = t.index[w.as_str()];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn src_has_no_import_cycle_between_files_and_no_file_over_800_lines() {
    let src = Source::read(&external::repo().join("src"));
    let edges = src.edges();
    // The reader works: it resolves names through re-exports to their files.
    let of = |f: &str| edges.get(f).cloned().unwrap_or_default();
    assert!(
        of("facade/mod.rs").contains("store/tiered.rs"),
        "{:?}",
        of("facade/mod.rs")
    );
    assert!(
        of("metrics/mod.rs").contains("types.rs"),
        "{:?}",
        of("metrics/mod.rs")
    );
    let found = cycles(&edges);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let arrows: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    edges[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("{c:?}: {}", arrows.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles in src/: {described:#?}");
    if std::env::var_os("TIERD_PRINT_LAYERS").is_some() {
        print!("{}", layers(&edges));
    }
}

/// Files by depth, bottom to top: depth 0 imports nothing of the crate; a file's depth is one
/// more than the deepest file it imports (the house's layering, as the imports make it).
fn layers(edges: &BTreeMap<String, BTreeSet<String>>) -> String {
    fn depth(
        f: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        memo: &mut HashMap<String, usize>,
    ) -> usize {
        if let Some(d) = memo.get(f) {
            return *d;
        }
        let d = edges
            .get(f)
            .map(|to| {
                to.iter()
                    .filter(|t| t.as_str() != f)
                    .map(|t| depth(t, edges, memo) + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        memo.insert(f.to_owned(), d);
        d
    }
    let mut memo = HashMap::new();
    let mut by: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let all: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    for f in all {
        by.entry(depth(f, edges, &mut memo))
            .or_default()
            .push(f.clone());
    }
    by.iter()
        .map(|(d, fs)| format!("{d:>2}  {}\n", fs.join(" ")))
        .collect()
}

/// The checker sees a cycle that goes through a re-export.
#[test]
fn the_cycle_check_sees_a_cycle_through_a_reexport() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("low")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod low;\nmod high;\n").unwrap();
    std::fs::write(
        src.join("low/mod.rs"),
        "mod inner;\npub use inner::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("low/inner.rs"),
        "use crate::high::Top;\npub struct Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("high.rs"),
        "use crate::low::Thing;\npub struct Top;\n",
    )
    .unwrap();
    let found = cycles(&Source::read(src).edges());
    assert_eq!(
        found,
        vec![vec!["high.rs".to_owned(), "low/inner.rs".to_owned()]]
    );
}
