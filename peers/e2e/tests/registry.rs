//! A protocol is its folder plus one registry line: no other code of the workspace names it.
//!
//! The test walks the code — `sim/src`, `tools/src`, `peers/xmpp/src`, `peers/external/src`, `peers/e2e/src` and the
//! property templates — and lists every line outside a protocol's own folder (another
//! protocol's folder included: no engine borrows another's code) that names it: its name or its module's name as a word of an
//! identifier, a path or a string (`Otr`, `otr::`, `"omemo-legacy"`), or one of the namespaces
//! its wire description labels (`urn:xmpp:omemo:2`). The answer must be the registry lines in
//! `peers/e2e/src/lib.rs` only.
//!
//! Not scanned, and why: comments and a template's `about:` (prose: docs may name anything);
//! `#[cfg(test)]` modules, `tests/` and `benches/` (a test picks the protocol it tests; a
//! protocol's interop test and bench are its own files); scenario files other than the
//! templates (data that picks protocols); generated files (`reports/`, `snapshots/`, the JSON
//! Schema, made from the protocols' declarations); Cargo.toml and `.ci/run` (they declare a
//! protocol's own test and bench files).

use std::path::{Path, PathBuf};

use jabberwock_e2e::Protocol;

/// Protocol names that are also ordinary words of the code around them (`transport: plain`):
/// for these, only a path into the protocol's module (`plain::`) counts as naming it.
const ORDINARY_WORDS: &[&str] = &["plain"];

/// A namespace one protocol's wire labels that another protocol's own specifications also
/// require, as (the other protocol's folder, the namespace, why): not borrowed knowledge.
const SHARED_FORMATS: &[(&str, &str, &str)] = &[(
    "esession",
    "http://www.w3.org/2000/09/xmldsig#",
    "XEP-0187 fetches the keys XEP-0189 publishes as XML Signature <KeyInfo/> elements",
)];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder (or file, without `.rs`) each protocol lives in: the last part of its module path.
fn module(p: Protocol) -> &'static str {
    p.def().module.rsplit("::").next().unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The words of a line: identifiers, paths and strings cut at every non-alphanumeric character
/// and at camel-case humps (`OtrConfig` → `otr`, `config`), lowercased.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    for part in line.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut word = String::new();
        let mut prev_lower = false;
        for c in part.chars() {
            if c.is_ascii_uppercase() && prev_lower && !word.is_empty() {
                words.push(core::mem::take(&mut word));
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            word.push(c.to_ascii_lowercase());
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words
}

/// What on this line names protocol `p`, if anything.
fn naming(line: &str, p: Protocol) -> Option<String> {
    for ns in p.wire().labels().iter().map(|(ns, _)| *ns) {
        // A W3C namespace ending in `#` also prefixes the identifiers of the algorithms its
        // specification defines (`xmldsig#rsa-sha256`), which other protocols reuse by name
        // (XEP-0116 signs with it): those are not the protocol.
        let named = line.match_indices(ns).any(|(at, _)| {
            let next = line[at + ns.len()..].chars().next();
            !(ns.ends_with('#') && next.is_some_and(|c| c.is_ascii_alphanumeric()))
        });
        if named {
            return Some(format!("namespace `{ns}`"));
        }
    }
    let module = module(p);
    if ORDINARY_WORDS.contains(&p.name()) {
        return line.contains(&format!("{module}::")).then(|| format!("path `{module}::`"));
    }
    let words = words(line);
    let name: Vec<String> = p.name().split('-').map(str::to_owned).collect();
    let module_words: Vec<String> = module.split('_').map(str::to_owned).collect();
    for wanted in [&name, &module_words] {
        if words.windows(wanted.len()).any(|w| w == wanted.as_slice()) {
            return Some(format!("word `{}`", wanted.join("-")));
        }
    }
    None
}

/// The lines of a file that are code (not comments, not test modules, not a template's prose),
/// with their numbers.
fn code_lines(path: &Path, text: &str) -> Vec<(usize, String)> {
    let template = path.extension().is_some_and(|e| e == "tmpl");
    let mut out = Vec::new();
    let mut in_about = false;
    let lines: Vec<&str> = text.lines().collect();
    // While skipping a test-only item: the brace depth inside it, once its body opened.
    let mut skipping: Option<(i64, bool)> = None;
    for (i, line) in lines.iter().copied().enumerate() {
        if let Some((depth, opened)) = skipping.as_mut() {
            *depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            *opened |= line.contains('{');
            if (*opened && *depth <= 0) || (!*opened && line.trim_end().ends_with(';')) {
                skipping = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        if template {
            // `about:` is the template's prose, on one line or continued on indented lines.
            if trimmed.starts_with("about:") {
                in_about = true;
                continue;
            }
            if in_about && line.starts_with(' ') {
                continue;
            }
            in_about = false;
            if trimmed.starts_with('#') {
                continue;
            }
            out.push((i + 1, line.to_owned()));
        } else {
            // A test-only item (`#[cfg(test)] mod tests { … }`, a test helper, `mod testing;`)
            // is skipped to its end: its braces balanced, or its `;`.
            if trimmed.starts_with("#[cfg(test)]") {
                skipping = Some((0, false));
                continue;
            }
            if trimmed.starts_with("//") {
                continue;
            }
            // A trailing comment is prose too.
            let code = match line.find(" //") {
                Some(k) if !line[..k].contains('"') => &line[..k],
                _ => line,
            };
            out.push((i + 1, code.to_owned()));
        }
    }
    out
}

#[test]
fn a_protocol_is_named_only_by_its_folder_and_its_registry_line() {
    let root = root();
    let e2e_src = root.join("peers/e2e/src");
    let mut files = Vec::new();
    for dir in ["sim/src", "tools/src", "peers/xmpp/src", "peers/external/src", "peers/e2e/src"] {
        walk(&root.join(dir), &mut files);
    }
    let mut templates = Vec::new();
    walk(&root.join("scenarios/properties"), &mut templates);
    files.extend(templates.into_iter().filter(|p| p.extension().is_some_and(|e| e == "tmpl")));
    assert!(files.len() > 20, "the walk found too little: {files:?}");

    let lib = e2e_src.join("lib.rs");
    let mut registry_lines = Vec::new();
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        let mut in_registry = false;
        for (n, line) in code_lines(file, &text) {
            if *file == lib {
                // The registry: the body of `protocols! { ... }`, one line per folder.
                if line.starts_with("protocols! {") {
                    in_registry = true;
                    continue;
                }
                if in_registry && line.starts_with('}') {
                    in_registry = false;
                }
                if in_registry {
                    registry_lines.push(line.trim().to_owned());
                    continue;
                }
            }
            for p in Protocol::ALL {
                // A protocol's own folder names it freely; every other file, another
                // protocol's folder included, may not.
                let m = module(*p);
                if file.starts_with(e2e_src.join(m)) || *file == e2e_src.join(format!("{m}.rs")) {
                    continue;
                }
                if let Some(what) = naming(&line, *p) {
                    let shared = SHARED_FORMATS.iter().any(|(folder, ns, _)| {
                        file.starts_with(e2e_src.join(folder)) && what == format!("namespace `{ns}`")
                    });
                    if !shared {
                        found.push(format!("{shown}:{n}: names {p} ({what}): {}", line.trim()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "protocol knowledge outside the protocols' folders:\n{}", found.join("\n"));

    // Every protocol is in the registry, by its folder, and the registry is nothing else.
    for p in Protocol::ALL {
        let line = format!("{} => [", module(*p));
        assert!(
            registry_lines.iter().filter(|l| l.starts_with(&line)).count() == 1,
            "{p}: no single registry line `{line}…` in {registry_lines:?}"
        );
    }
    let folders: std::collections::BTreeSet<&str> = Protocol::ALL.iter().map(|p| module(*p)).collect();
    assert_eq!(registry_lines.len(), folders.len(), "{registry_lines:?}");
}

#[test]
fn the_checker_sees_what_it_looks_for() {
    let otr: Protocol = "otr".parse().unwrap();
    let legacy: Protocol = "omemo-legacy".parse().unwrap();
    let plain: Protocol = "plain".parse().unwrap();
    assert!(naming("let c = OtrConfig::default();", otr).is_some());
    assert!(naming("use jabberwock_e2e::otr::forgeable_by_anyone;", otr).is_some());
    assert!(naming("if name == \"omemo-legacy\" {", legacy).is_some());
    assert!(naming("match: {namespace: \"urn:xmpp:otr:0\"}", otr).is_some());
    let xmlsec: Protocol = "xmlsec".parse().unwrap();
    assert!(naming("const NS: &str = \"http://www.w3.org/2000/09/xmldsig#\";", xmlsec).is_some());
    assert!(naming("const ALG: &str = \"http://www.w3.org/2000/09/xmldsig#rsa-sha256\";", xmlsec).is_none());
    assert!(naming("let x = crate::plain::PROTOCOL;", plain).is_some());
    assert!(naming("TransportSpec::Plain => {}", plain).is_none());
    assert!(naming("let motorcycle = potr;", otr).is_none());
    let lines = code_lines(Path::new("x.rs"), "let a = 1; // OTR\n// Otr\n#[cfg(test)]\nmod otr;\nb\n");
    assert_eq!(lines, vec![(1, "let a = 1;".to_owned()), (5, "b".to_owned())]);
    let lines = code_lines(Path::new("x.rs"), "a\n#[cfg(test)]\nmod tests {\nOtr {\n}\n}\nb\n");
    assert_eq!(lines, vec![(1, "a".to_owned()), (7, "b".to_owned())]);
    let lines = code_lines(Path::new("x.rs"), "#[cfg(test)]\nfn f(\n  x: u8,\n) -> Otr {\n}\nc\n");
    assert_eq!(lines, vec![(6, "c".to_owned())]);
    let lines = code_lines(Path::new("x.yaml.tmpl"), "about: OTR\n  more OTR\n# OTR\nname: x\n");
    assert_eq!(lines, vec![(4, "name: x".to_owned())]);
}
