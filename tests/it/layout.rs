//! The house rules of the code, checked: the modules import in one
//! direction (no circle between the crate's top-level modules), no source
//! file passes 500 lines (the generated `schema.rs` aside), and no function
//! passes 80 lines, in `src/` and `bench/src/`. A newcomer reads small
//! rooms; a change that breaks a rule fails here with the place named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The text with comments and the insides of string and char literals
/// blanked out (newlines kept), so that braces and paths are code only.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && raw_string_at(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            out.push('r');
            i += 1 + hashes + 1;
            out.push_str(&" ".repeat(hashes + 1));
            while i < chars.len() {
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&c| c == '#') {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && char_literal_len(&chars, i).is_some() {
            let len = char_literal_len(&chars, i).unwrap();
            out.push_str(&" ".repeat(len));
            i += len;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether a raw string (`r"`, `r#"`) starts at `i` (not an identifier
/// ending in `r`).
fn raw_string_at(chars: &[char], i: usize) -> bool {
    let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    starts_word && chars.get(i + 1 + hashes) == Some(&'"')
}

/// The length of a char literal at `i` (`'a'`, `'\n'`, `'\u{7f}'`), or
/// `None` for a lifetime (`'a`).
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            let end = chars[i + 2..].iter().position(|&c| c == '\'')?;
            Some(end + 3)
        }
        _ => (chars.get(i + 2) == Some(&'\'')).then_some(3),
    }
}

/// The crate's top-level module a source file belongs to (`db` for
/// `src/db/queries/ack.rs`); `None` for the crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.trim_end_matches(".rs");
    (!matches!(module, "lib" | "main")).then(|| module.to_owned())
}

/// The top-level modules `code` names as `crate::x` (or in `crate::{x, y}`).
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                named.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.insert(name);
        }
    }
    named
}

#[test]
fn the_modules_import_in_one_direction() {
    let src = root().join("src");
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = sources(&src)
        .iter()
        .filter_map(|f| top_module(&src, f))
        .collect();
    for file in sources(&src) {
        let Some(module) = top_module(&src, &file) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let named: Vec<String> = named_modules(&code)
            .into_iter()
            .filter(|m| *m != module && modules.contains(m))
            .collect();
        uses.entry(module).or_default().extend(named);
    }
    // A depth-first walk; a module met again on the current path closes a
    // circle, which is named in full.
    fn visit(
        module: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            panic!("the modules import in a circle: {}", circle.join(" -> "));
        }
        if done.contains(module) {
            return;
        }
        path.push(module.to_owned());
        for next in uses.get(module).into_iter().flatten() {
            visit(next, uses, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in uses.keys() {
        visit(module, &uses, &mut Vec::new(), &mut done);
    }
    // The leaves every layer may import import nothing of the crate.
    for leaf in ["clock", "erasure", "video_id"] {
        let used = uses.get(leaf).cloned().unwrap_or_default();
        assert!(used.is_empty(), "{leaf} is a leaf but imports {used:?}");
    }
    // The configuration knows the database only by its URL.
    let config = &uses["config"];
    assert!(
        !config.contains("storage") && !config.contains("pipeline"),
        "config imports {config:?}"
    );
}

/// Files of `src/` and `bench/src/` (the product's code; tests aside).
fn product_sources() -> Vec<PathBuf> {
    let mut files = sources(&root().join("src"));
    files.extend(sources(&root().join("bench/src")));
    files
}

#[test]
fn no_source_file_passes_500_lines() {
    let too_long: Vec<String> = product_sources()
        .into_iter()
        .filter(|f| !f.ends_with("src/db/schema.rs"))
        .filter_map(|f| {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "over {MAX_FILE_LINES} lines: {too_long:#?}"
    );
}

/// Each function of `code`: its name, first line and length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let bytes: Vec<char> = code.chars().collect();
    let line_of = |at: usize| bytes[..at].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    let text: String = bytes.iter().collect();
    let mut search = 0;
    while let Some(offset) = text[search..].find("fn ") {
        let at = search + offset;
        search = at + 3;
        let starts_word =
            at == 0 || !text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        if !starts_word {
            continue;
        }
        let name: String = text[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first `{` before any `;` (a declaration
        // without a body has none).
        let Some(open) = text[at..].find(['{', ';']).map(|o| at + o) else {
            continue;
        };
        if text[open..].starts_with(';') {
            continue;
        }
        let mut depth = 0;
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => continue,
            }
            if depth == 0 {
                let (first, last) = (
                    line_of(text[..at].chars().count()),
                    line_of(text[..open + i].chars().count()),
                );
                found.push((name.clone(), first, last - first + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_passes_80_lines() {
    let mut too_long = Vec::new();
    for file in product_sources() {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (name, line, lines) in functions(&code) {
            if lines > MAX_FN_LINES {
                too_long.push(format!("{}:{line} {name}: {lines} lines", file.display()));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_FN_LINES} lines: {too_long:#?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // Blanked: comments, strings, raw strings and chars; kept: code.
    let code = code_only("let a = \"{ // }\"; // }\nlet b = r#\"}\"#; let c = '}'; 'l: loop {}\n");
    assert_eq!(code.matches('{').count(), code.matches('}').count());
    assert!(code.contains("'l: loop"));
    assert_eq!(
        named_modules("use crate::db::Db; use crate::{clock, paths::PathSpec};"),
        BTreeSet::from(["db".into(), "clock".into(), "paths".into()])
    );
    let body = "fn short() {\n}\nfn long() {\n".to_owned() + &"x;\n".repeat(90) + "}\n";
    let found = functions(&body);
    assert_eq!(found[0], ("short".into(), 1, 2));
    assert_eq!(found[1], ("long".into(), 3, 92));
}
