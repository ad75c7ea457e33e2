//! The maps a newcomer reads first stay true, checked on the source files
//! (no database needed):
//!
//! - every `lib.rs` and `mod.rs` of core, the extension and the worker
//!   names each module it declares (`mod x;`, `pub mod x;`) in its `//!`
//!   map, as `` `x` `` or `` [`x`] ``;
//! - docs/ARCHITECTURE.md links only to files that exist and to headings
//!   it has, and every `docs/ARCHITECTURE.md#anchor` the code and the
//!   README cite is one of its headings;
//! - nothing in the code or the README points at the design document
//!   outside the repository any more (the release history in
//!   CHANGELOG.md and migrations/ keeps its words).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every file under `dir` (recursively) whose name passes `keep`.
fn files(dir: &Path, keep: &dyn Fn(&Path) -> bool, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, keep, found);
        } else if keep(&path) {
            found.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The modules a file declares out of line: `mod x;`, `pub mod x;`,
/// `pub(crate) mod x;` (not `mod tests { ... }`).
fn declared_modules(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = if let Some(rest) = line.strip_prefix("pub") {
                let rest = rest.trim_start();
                match rest.strip_prefix('(') {
                    Some(scoped) => scoped.split_once(')')?.1.trim_start(),
                    None => rest,
                }
            } else {
                line
            };
            let name = rest.strip_prefix("mod ")?.trim().strip_suffix(';')?.trim();
            let identifier =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            identifier.then(|| name.to_owned())
        })
        .collect()
}

/// The file's `//!` lines, joined.
fn module_docs(source: &str) -> String {
    source
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_module_is_on_its_map() {
    let mut maps = Vec::new();
    let is_map = |p: &Path| {
        matches!(
            p.file_name().and_then(|n| n.to_str()),
            Some("lib.rs" | "mod.rs")
        )
    };
    for crate_dir in ["core/src", "extension/src", "worker/src", "tests/src"] {
        files(&root().join(crate_dir), &is_map, &mut maps);
    }
    assert!(maps.len() >= 8, "found only {maps:?}");
    let mut missing = Vec::new();
    for path in &maps {
        let source = read(path);
        let docs = module_docs(&source);
        for module in declared_modules(&source) {
            if !docs.contains(&format!("`{module}`")) {
                missing.push(format!("{}: `{module}`", shown(path)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules missing from their file's `//!` map (name each as [`module`] \
         with a line on what it does):\n  {}",
        missing.join("\n  ")
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped,
/// spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of docs/ARCHITECTURE.md's headings.
fn architecture_anchors() -> BTreeSet<String> {
    read(&root().join("docs/ARCHITECTURE.md"))
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn architecture_md_links_resolve() {
    let doc_path = root().join("docs/ARCHITECTURE.md");
    let doc = read(&doc_path);
    let anchors = architecture_anchors();
    let mut broken = Vec::new();
    for target in link_targets(&doc) {
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let (file, fragment) = match target.split_once('#') {
            Some((file, fragment)) => (file, Some(fragment)),
            None => (target.as_str(), None),
        };
        if file.is_empty() {
            if !fragment.is_some_and(|f| anchors.contains(f)) {
                broken.push(format!("{target}: no such heading"));
            }
            continue;
        }
        let path = doc_path.parent().expect("docs/").join(file);
        if !path.exists() {
            broken.push(format!("{target}: no such file"));
        }
    }
    assert!(
        broken.is_empty(),
        "docs/ARCHITECTURE.md has links that lead nowhere (a file moved or a \
         heading changed? update the link):\n  {}",
        broken.join("\n  ")
    );
}

/// The files the code and the README are made of.
fn sources() -> Vec<PathBuf> {
    let mut found = vec![root().join("README.md"), root().join("Makefile")];
    let is_source = |p: &Path| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("rs" | "sql" | "sh" | "toml" | "md" | "service" | "env")
        )
    };
    for dir in [
        "core",
        "extension",
        "worker",
        "tests",
        "sql",
        "fuzz",
        "scripts",
        "packaging",
        "docs",
    ] {
        files(&root().join(dir), &is_source, &mut found);
    }
    found.retain(|p| !p.components().any(|c| c.as_os_str() == "target"));
    found
}

#[test]
fn design_references_point_into_the_repository() {
    let anchors = architecture_anchors();
    // Spelt in two halves so that this file does not name it.
    let outside = concat!("DESIGN", ".md");
    let cited = "docs/ARCHITECTURE.md#";
    let mut wrong = Vec::new();
    for path in sources() {
        if path.ends_with("tests/tests/module_maps.rs") {
            continue; // names what it looks for
        }
        let text = read(&path);
        for (number, line) in text.lines().enumerate() {
            let at = format!("{}:{}", shown(&path), number + 1);
            if line.contains(outside) {
                wrong.push(format!(
                    "{at}: cites {outside}, which is not in the repository"
                ));
            }
            let mut rest = line;
            while let Some(start) = rest.find(cited) {
                rest = &rest[start + cited.len()..];
                let fragment: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                if !anchors.contains(&fragment) {
                    wrong.push(format!(
                        "{at}: docs/ARCHITECTURE.md has no heading #{fragment}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references to the design that lead nowhere (point them at a heading of \
         docs/ARCHITECTURE.md, or at the README):\n  {}",
        wrong.join("\n  ")
    );
}
