//! The documents name code that exists: every file path, relative link
//! (and the heading its `#anchor` names), `Type::member` and test
//! (`suite › test_name`) that the Markdown files at the root and in
//! `docs/` cite must be found in the repository, so that a
//! rename or a removal cannot leave the compliance map, the storage notes
//! or the API guide pointing at nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every file of the repository's own trees, as paths relative to the
/// root with `/` separators. Build output and hidden directories (the git
/// store, the install cache `.cache/`, a service's `.data/`) are left out,
/// but for the project's own `.ci/` and `.cargo/`.
fn repo_files(root: &Path) -> Vec<String> {
    const SKIP: &[&str] = &["target", "node_modules", "__pycache__"];
    const HIDDEN_KEPT: &[&str] = &[".ci", ".cargo", ".github"];
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if path.is_dir() {
                let hidden = name.starts_with('.') && !HIDDEN_KEPT.contains(&name.as_str());
                if !hidden && !SKIP.contains(&name.as_str()) && !name.starts_with("target") {
                    todo.push(path);
                }
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

/// What the Rust sources declare: `fn` names, type names (`struct`,
/// `enum`, `trait`, `type`), and every identifier they use.
#[derive(Default)]
struct Names {
    fns: BTreeSet<String>,
    types: BTreeSet<String>,
    words: BTreeSet<String>,
}

fn names(root: &Path, files: &[String]) -> Names {
    let mut n = Names::default();
    for f in files.iter().filter(|f| f.ends_with(".rs")) {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_default();
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            match pair[0] {
                "fn" => {
                    n.fns.insert(pair[1].to_owned());
                }
                "struct" | "enum" | "trait" | "type" => {
                    n.types.insert(pair[1].to_owned());
                }
                _ => {}
            }
        }
        n.words.extend(words.into_iter().map(str::to_owned));
    }
    n
}

/// A reference to a member of a type: `Type::member` or `Type::member()`.
fn type_member(s: &str) -> Option<(&str, &str)> {
    let (ty, member) = s.trim_end_matches("()").split_once("::")?;
    let is_ident =
        |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (ty.starts_with(|c: char| c.is_ascii_uppercase()) && is_ident(ty) && is_ident(member))
        .then_some((ty, member))
}

/// The spans between backticks of a Markdown text (code blocks included;
/// their contents rarely look like a reference).
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Targets of inline links `[text](target)`.
fn link_targets(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(&rest[..end]);
        }
    }
    out
}

const EXTENSIONS: &[&str] = &[
    ".rs", ".sh", ".toml", ".json", ".yml", ".yaml", ".md", ".py", ".txt",
];

fn looks_like_path(s: &str) -> bool {
    // A leading `/` is a route of the service (`/openapi.json`).
    !s.is_empty()
        && !s.starts_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && EXTENSIONS.iter().any(|e| s.ends_with(e))
        // A bare file name is a reference only for Rust sources; `prometheus.yml`
        // and the like name the reader's own files.
        && (s.contains('/') || s.ends_with(".rs"))
}

/// A test reference: `suite › test_name`.
fn test_name(s: &str) -> Option<&str> {
    let (suite, name) = s.split_once(" › ")?;
    let ok = |x: &str| {
        !x.is_empty()
            && x.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'))
    };
    (ok(suite) && ok(name)).then_some(name)
}

fn resolves(files: &[String], path: &str) -> bool {
    let p = path.trim_start_matches("./");
    files
        .iter()
        .any(|f| f == p || f.ends_with(&format!("/{p}")))
}

fn broken_references(root: &Path, doc: &str, files: &[String], names: &Names) -> Vec<String> {
    let text = std::fs::read_to_string(root.join(doc)).unwrap();
    let mut broken = Vec::new();
    for span in code_spans(&text) {
        if let Some(name) = test_name(span) {
            if !names.fns.contains(name) {
                broken.push(format!("{doc}: no test `{span}`"));
            }
        } else if let Some((ty, member)) = type_member(span) {
            if !names.types.contains(ty) || !names.words.contains(member) {
                broken.push(format!("{doc}: no `{span}`"));
            }
        } else if looks_like_path(span) && !resolves(files, span) {
            broken.push(format!("{doc}: no file `{span}`"));
        }
    }
    let dir = Path::new(doc).parent().unwrap_or(Path::new(""));
    for link in link_targets(&text) {
        let (target, anchor) = match link.split_once('#') {
            Some((target, anchor)) => (target, Some(anchor)),
            None => (link, None),
        };
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let joined = if target.is_empty() {
            root.join(doc)
        } else {
            root.join(dir).join(target)
        };
        if !target.is_empty() && !joined.exists() {
            broken.push(format!("{doc}: broken link ({target})"));
            continue;
        }
        // An anchor into a Markdown file names one of its headings.
        let Some(anchor) = anchor else { continue };
        if joined.extension().is_some_and(|e| e == "md") {
            let headings = anchors(&std::fs::read_to_string(&joined).unwrap_or_default());
            if !headings.contains(anchor) {
                broken.push(format!("{doc}: no heading for ({link})"));
            }
        }
    }
    broken
}

/// The anchors of a Markdown text's headings as GitHub makes them: the
/// heading lower-cased, every character but letters, digits, `_`, `-` and
/// spaces dropped, each space made `-`; a repeated heading's anchor gets
/// `-1`, `-2`, … Lines in fenced code blocks are not headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if fenced || !(1..=6).contains(&level) {
            continue;
        }
        let Some(title) = line[level..].strip_prefix(' ') else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let times = seen.entry(slug.clone()).or_insert(0);
        out.insert(match *times {
            0 => slug,
            n => format!("{slug}-{n}"),
        });
        *times += 1;
    }
    out
}

/// The Markdown files at the root and in `docs/`.
fn documents(root: &Path) -> Vec<String> {
    let mut docs = Vec::new();
    for (dir, prefix) in [(root.to_path_buf(), ""), (root.join("docs"), "docs/")] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".md") {
                docs.push(format!("{prefix}{name}"));
            }
        }
    }
    docs.sort();
    docs
}

#[test]
fn every_file_link_and_test_the_documents_cite_exists() {
    let root = root();
    let files = repo_files(&root);
    let names = names(&root, &files);
    let docs = documents(&root);
    assert!(docs.len() >= 5, "{docs:?}");
    let broken: Vec<String> = docs
        .iter()
        .flat_map(|d| broken_references(&root, d, &files, &names))
        .collect();
    assert!(
        broken.is_empty(),
        "{} stale references:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn a_stale_reference_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("apps/x/src")).unwrap();
    std::fs::write(
        root.join("apps/x/src/lib.rs"),
        "#[test]\nfn it_binds() {}\nasync fn helper() {}\n\
         pub struct Store { pub monitor: bool }\nimpl Store { pub fn open() {} }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/a.md"),
        "# Top\n\
         Where: `apps/x/src/lib.rs`, `lib.rs`, `apps/x/`.\n\
         Tests: `x › it_binds`, `x › helper`. API: `Store::open`, `Store::open()`, `Store::monitor`.\n\
         Stale: `apps/x/src/gone.rs`, `old.rs`, `x › it_unbinds`, `Store::close`, `Vault::open`, [link](missing.md).\n\
         Not references: `prometheus.yml`, `/openapi.json`, `cargo test -p x`, [site](https://example.com#top), [a](#top).\n\
         Anchors: [b](b.md#upgrading-what-it-meets), [c](b.md#twice-1), [d](#top), [e](b.md).\n\
         Stale anchors: [f](#upgrading), [g](b.md#twice-2), [h](b.md#in-code).\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/b.md"),
        "## Upgrading: what it meets\n## Twice\n### Twice\n```sh\n# in code\n```\n",
    )
    .unwrap();
    let files = repo_files(root);
    let names = names(root, &files);
    let broken = broken_references(root, "docs/a.md", &files, &names);
    assert_eq!(
        broken,
        vec![
            "docs/a.md: no file `apps/x/src/gone.rs`",
            "docs/a.md: no file `old.rs`",
            "docs/a.md: no test `x › it_unbinds`",
            "docs/a.md: no `Store::close`",
            "docs/a.md: no `Vault::open`",
            "docs/a.md: broken link (missing.md)",
            "docs/a.md: no heading for (#upgrading)",
            "docs/a.md: no heading for (b.md#twice-2)",
            "docs/a.md: no heading for (b.md#in-code)",
        ]
    );
}
