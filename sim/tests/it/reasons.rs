//! The reasons devices report are the declared ones (`jabberwock_sim::reasons`).
//!
//! The test reads the code that reports them — `peers/e2e/src`, `peers/xmpp/src`, `sim/src` —
//! and finds every reason it can report: the value of a `reason:` field of an `Alert`,
//! `ClientAlert` or `Rejected` it builds (a string literal, the literals of an `if` or `match`
//! there, a declared `Reason` constant's `.code`, or an error's `.code()` passed on), the
//! literals a `let reason = ...` gives a shorthand `reason` field, and the first argument at
//! every call of a helper that takes `reason: &'static str`. Each must be declared where its
//! code lives: in a protocol's folder, by one of that folder's registry entries (or among the
//! reasons every engine reports); in the engines' shared code, in `peers/e2e/src/reason.rs`;
//! in the client, in `peers/xmpp/src/reasons.rs`. A reason value the test cannot read (any
//! other expression) fails it too, so a new way of reporting reasons comes with a way to read
//! it. Conversely, every reason a protocol declares as its own is reported somewhere in its
//! folder: the list holds no dead entries. And every reason an engine raises as an error (a
//! `Rejected`'s) is declared with who is at fault, not as a notice: the transcript line of an
//! error names the fault (`peers/e2e/src/error.rs`).
//!
//! Not scanned: comments, `tests.rs`, `testing.rs` and `#[cfg(test)]` modules (tests make up
//! reasons to test with).
//!
//! `committed_list_is_current` keeps `scenarios/reasons.md` equal to what
//! `jabberwock reasons` prints, and the scenario and matrix tests check at run time that every
//! reason a device logged is one its protocol (or every engine, or the client) declares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jabberwock_e2e::{Protocol, Reason, reason};
use jabberwock_xmpp::reasons as client;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---- a small Rust lexer: string literals, identifiers and punctuation, comments dropped -----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Ident(String),
    Punct(char),
}

fn lex(src: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"'
            || ((c == 'b' || c == 'r') && (at(i + 1) == '"' || at(i + 1) == '#' || at(i + 1) == 'r'))
                && is_string_start(&chars, i)
        {
            let start_line = line;
            let mut j = i;
            if chars[j] == 'b' {
                j += 1;
            }
            let raw = chars[j] == 'r';
            let mut text = String::new();
            if raw {
                j += 1;
                let mut hashes = 0;
                while at(j) == '#' {
                    hashes += 1;
                    j += 1;
                }
                j += 1; // the opening quote
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                        j += 1 + hashes;
                        break;
                    }
                    line += usize::from(chars[j] == '\n');
                    text.push(chars[j]);
                    j += 1;
                }
            } else {
                j += 1;
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' {
                        text.push(chars[j]);
                        j += 1;
                    }
                    line += usize::from(at(j) == '\n');
                    text.push(at(j));
                    j += 1;
                }
                j += 1;
            }
            out.push((Tok::Str(text), start_line));
            i = j;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('static).
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                let mut j = i + 1;
                while at(j).is_alphanumeric() || at(j) == '_' {
                    j += 1;
                }
                out.push((Tok::Ident(chars[i..j].iter().collect()), line));
                i = j;
            }
        } else if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while at(j).is_alphanumeric() || at(j) == '_' {
                j += 1;
            }
            out.push((Tok::Ident(chars[i..j].iter().collect()), line));
            i = j;
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// Whether a `b` or `r` at `i` starts a (byte, raw) string rather than an identifier.
fn is_string_start(chars: &[char], i: usize) -> bool {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) == Some(&'r') {
        j += 1;
        while chars.get(j) == Some(&'#') {
            j += 1;
        }
    }
    chars.get(j) == Some(&'"')
}

/// The tokens of a file's code: without its `#[cfg(test)]` items (test modules, test-only
/// functions).
fn code_tokens(text: &str) -> Vec<(Tok, usize)> {
    let toks = lex(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = ["#", "[", "cfg", "(", "test", ")", "]"];
        let is_cfg_test = cfg_test.iter().enumerate().all(|(k, want)| match toks.get(i + k) {
            Some((Tok::Punct(c), _)) => want.len() == 1 && want.starts_with(*c),
            Some((Tok::Ident(s), _)) => s == want,
            _ => false,
        });
        if !is_cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        // Skip the item: up to its `;` or the end of its `{ ... }`, at depth 0.
        let mut j = i + cfg_test.len();
        let mut depth = 0i32;
        while j < toks.len() {
            match toks[j].0 {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']') => depth -= 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        i = j + 1;
    }
    out
}

// ---- what a file reports -------------------------------------------------------------------

/// One reason a file reports, with its line, and whether it is an error's (the `reason` of an
/// `E2eError::Rejected`, built there or by a helper): an error must be declared with a fault.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    code: String,
    line: usize,
    error: bool,
}

/// What scanning a file gives: the reasons it reports, the helpers it defines (functions that
/// build a reporting struct from their first parameter, `reason`: their calls report it) and
/// what it could not read.
#[derive(Debug, Default)]
struct Scan {
    found: Vec<Found>,
    /// By name: whether the struct it builds is an error (`Rejected`).
    helpers: BTreeMap<String, bool>,
    unreadable: Vec<(usize, String)>,
}

/// Where a shorthand `reason` field gets its value.
enum Origin {
    /// `let reason = <expression at this token>;`
    Let(usize),
    /// The parameter of a helper (`fn rejected(reason: &'static str, ...)`), by name.
    Parameter(String),
    /// Neither.
    Nowhere,
}

/// The structs whose `reason` a device logs.
const REPORTING: &[&str] = &["Alert", "ClientAlert", "Rejected"];

fn is_punct(t: Option<&(Tok, usize)>, c: char) -> bool {
    matches!(t, Some((Tok::Punct(p), _)) if *p == c)
}

fn is_ident(t: Option<&(Tok, usize)>, s: &str) -> bool {
    matches!(t, Some((Tok::Ident(i), _)) if i == s)
}

/// The index of the `{` that opens the brace group around `i`, if any.
fn enclosing_brace(toks: &[(Tok, usize)], i: usize) -> Option<usize> {
    let mut depth = 0i32;
    for j in (0..i).rev() {
        match &toks[j].0 {
            Tok::Punct('}') => depth += 1,
            Tok::Punct('{') if depth == 0 => return Some(j),
            Tok::Punct('{') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The index of the bracket closing the one opened at `open`.
fn matching(toks: &[(Tok, usize)], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, (t, _)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The tokens of an expression starting at `start`, up to the first `stops` at depth 0 (or the
/// closing bracket of an enclosing group).
fn expression<'a>(toks: &'a [(Tok, usize)], start: usize, stops: &[char]) -> &'a [(Tok, usize)] {
    let mut depth = 0i32;
    for (j, (t, _)) in toks.iter().enumerate().skip(start) {
        match t {
            Tok::Punct(c) if depth == 0 && stops.contains(c) => return &toks[start..j],
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                if depth == 0 {
                    return &toks[start..j];
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    &toks[start..]
}

/// The reasons an expression can give: its string literals, or a declared constant's `.code`;
/// `None` when it is neither (an error's `.code()` passed on gives `Some` of nothing).
fn reasons_of(expr: &[(Tok, usize)], constants: &BTreeMap<String, &'static str>) -> Option<Vec<Found>> {
    let literals: Vec<Found> = expr
        .iter()
        .filter_map(|(t, line)| match t {
            Tok::Str(s) => Some(Found { code: s.clone(), line: *line, error: false }),
            _ => None,
        })
        .collect();
    if !literals.is_empty() {
        return Some(literals);
    }
    let n = expr.len();
    // `error.code()`: an error's code, itself a reported reason read where it is made.
    if n >= 4
        && is_punct(expr.get(n - 4), '.')
        && is_ident(expr.get(n - 3), "code")
        && is_punct(expr.get(n - 2), '(')
    {
        return Some(Vec::new());
    }
    // `path::CONSTANT.code`: a declared reason.
    if n >= 3
        && is_punct(expr.get(n - 2), '.')
        && is_ident(expr.get(n - 1), "code")
        && let Some((Tok::Ident(name), line)) = expr.get(n - 3)
        && let Some(code) = constants.get(name)
    {
        return Some(vec![Found { code: (*code).to_owned(), line: *line, error: false }]);
    }
    None
}

/// Whether the brace group opened at `open` is a pattern (`Alert { reason, .. } =>`), not a
/// value being built.
fn is_pattern(toks: &[(Tok, usize)], open: usize) -> bool {
    let close = matching(toks, open);
    let group = &toks[open..close];
    let rest = group.windows(2).any(|w| is_punct(Some(&w[0]), '.') && is_punct(Some(&w[1]), '.'));
    let next = toks.get(close + 1);
    let after = toks.get(close + 2);
    rest || (is_punct(next, '=') && !is_punct(after, '=')) || is_punct(next, '|')
}

fn scan(text: &str, constants: &BTreeMap<String, &'static str>) -> Scan {
    let toks = code_tokens(text);
    let mut out = Scan::default();
    // A field of a reporting struct being built (not its type's definition, not a pattern):
    // the struct's name.
    let reason_field_of = |i: usize| -> Option<&str> {
        let open = enclosing_brace(&toks, i)?;
        let Some((Tok::Ident(name), _)) = open.checked_sub(1).and_then(|k| toks.get(k)) else { return None };
        (REPORTING.contains(&name.as_str()) && !is_pattern(&toks, open)).then_some(name.as_str())
    };
    let errors = |found: Vec<Found>, error: bool| found.into_iter().map(move |f| Found { error, ..f });
    for (i, (t, line)) in toks.iter().enumerate() {
        if *t != Tok::Ident("reason".into()) || is_punct(i.checked_sub(1).and_then(|k| toks.get(k)), '.') {
            continue;
        }
        let Some(kind) = reason_field_of(i) else { continue };
        let error = kind == "Rejected";
        if is_punct(toks.get(i + 1), ':') && !is_punct(toks.get(i + 2), ':') {
            // `reason: <value>`, unless it is the field's type (`reason: &'static str`).
            let value = expression(&toks, i + 2, &[',']);
            if is_punct(value.first(), '&') || is_ident(value.first(), "String") {
                continue;
            }
            match reasons_of(value, constants) {
                Some(found) => out.found.extend(errors(found, error)),
                None => out.unreadable.push((*line, "a `reason:` value".into())),
            }
        } else if is_punct(toks.get(i + 1), ',') || is_punct(toks.get(i + 1), '}') {
            // Shorthand `reason`: from a `let reason = ...;` in the function around it, or the
            // function's parameter.
            let origin = (0..i).rev().find_map(|k| {
                if is_ident(toks.get(k), "let")
                    && is_ident(toks.get(k + 1), "reason")
                    && is_punct(toks.get(k + 2), '=')
                {
                    Some(Origin::Let(k + 3))
                } else if is_ident(toks.get(k), "fn") {
                    let helper = is_punct(toks.get(k + 2), '(') && is_ident(toks.get(k + 3), "reason");
                    match toks.get(k + 1) {
                        Some((Tok::Ident(name), _)) if helper => Some(Origin::Parameter(name.clone())),
                        _ => Some(Origin::Nowhere),
                    }
                } else {
                    None
                }
            });
            match origin {
                Some(Origin::Let(start)) => match reasons_of(expression(&toks, start, &[';']), constants) {
                    Some(found) => out.found.extend(errors(found, error)),
                    None => out.unreadable.push((*line, "a `let reason = ...` value".into())),
                },
                // A helper's parameter (`fn rejected(reason: &'static str, ...)`): its calls are read.
                Some(Origin::Parameter(name)) => {
                    *out.helpers.entry(name).or_default() |= error;
                }
                _ => out.unreadable.push((*line, "a shorthand `reason` from nowhere".into())),
            }
        }
    }
    out
}

/// The first arguments of every call of `helpers` in `text`.
fn helper_calls(
    text: &str,
    helpers: &BTreeMap<String, bool>,
    constants: &BTreeMap<String, &'static str>,
) -> Scan {
    let toks = code_tokens(text);
    let mut out = Scan::default();
    for (i, (t, line)) in toks.iter().enumerate() {
        let Tok::Ident(name) = t else { continue };
        let Some(&error) = helpers.get(name) else { continue };
        if !is_punct(toks.get(i + 1), '(') || is_ident(i.checked_sub(1).and_then(|k| toks.get(k)), "fn") {
            continue;
        }
        match reasons_of(expression(&toks, i + 2, &[',']), constants) {
            Some(found) => out.found.extend(found.into_iter().map(|f| Found { error, ..f })),
            None => out.unreadable.push((*line, format!("the reason passed to `{name}`"))),
        }
    }
    out
}

/// `const NAME: Reason = Reason::new("code", ...)` (or `Reason::engine("code", ...)`)
/// declarations in `text`.
fn declared_constants(text: &str, out: &mut BTreeMap<String, &'static str>, all: &[&'static str]) {
    let toks = lex(text);
    for w in toks.windows(11) {
        if is_ident(Some(&w[0]), "const")
            && let (Tok::Ident(name), _) = &w[1]
            && is_ident(Some(&w[3]), "Reason")
            && is_ident(Some(&w[5]), "Reason")
            && (is_ident(Some(&w[8]), "new") || is_ident(Some(&w[8]), "engine"))
            && is_punct(Some(&w[9]), '(')
            && let (Tok::Str(code), _) = &w[10]
            && let Some(code) = all.iter().find(|c| *c == code)
        {
            out.insert(name.clone(), code);
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path.file_name().is_some_and(|n| n == "tests.rs" || n == "testing.rs")
        {
            out.push(path);
        }
    }
}

/// The protocol folder (or single file) a file of `peers/e2e/src` belongs to.
fn folder_of(e2e_src: &Path, file: &Path) -> Option<&'static str> {
    let rel = file.strip_prefix(e2e_src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let first = first.strip_suffix(".rs").unwrap_or(first);
    Protocol::ALL.iter().map(|p| p.def().module.rsplit("::").next().unwrap_or_default()).find(|m| *m == first)
}

fn codes(lists: &[&[Reason]]) -> BTreeSet<&'static str> {
    lists.iter().flat_map(|l| l.iter().map(|r| r.code)).collect()
}

#[test]
fn code_reports_only_declared_reasons() {
    let root = root();
    let e2e_src = root.join("peers/e2e/src");
    let all: Vec<&'static str> = jabberwock_sim::reasons::all().iter().map(|k| k.code).collect();
    let mut constants = BTreeMap::new();
    for file in [e2e_src.join("reason.rs"), root.join("peers/xmpp/src/reasons.rs")] {
        declared_constants(&std::fs::read_to_string(&file).unwrap(), &mut constants, &all);
    }
    assert!(
        constants.contains_key("UNENCRYPTED") && constants.contains_key("FORGED_CARBON"),
        "{constants:?}"
    );

    let mut files = Vec::new();
    for dir in ["peers/e2e/src", "peers/xmpp/src", "sim/src"] {
        walk(&root.join(dir), &mut files);
    }
    assert!(files.len() > 40, "the walk found too little: {files:?}");
    let texts: Vec<(PathBuf, String)> =
        files.iter().map(|f| (f.clone(), std::fs::read_to_string(f).unwrap())).collect();

    // Helpers are known per protocol folder (or per crate outside them).
    let scope = |f: &Path| -> String {
        match folder_of(&e2e_src, f) {
            Some(folder) => folder.to_owned(),
            None => ["peers/e2e", "peers/xmpp", "sim"]
                .into_iter()
                .find(|d| f.starts_with(root.join(d)))
                .unwrap_or_default()
                .to_owned(),
        }
    };
    let mut scans = Vec::new();
    let mut helpers: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for (file, text) in &texts {
        let s = scan(text, &constants);
        let known = helpers.entry(scope(file)).or_default();
        for (name, error) in &s.helpers {
            *known.entry(name.clone()).or_default() |= *error;
        }
        scans.push((file.clone(), s));
    }
    for (file, text) in &texts {
        let calls = helper_calls(text, helpers.get(&scope(file)).unwrap_or(&BTreeMap::new()), &constants);
        let s = scans.iter_mut().find(|(f, _)| f == file).map(|(_, s)| s).unwrap();
        s.found.extend(calls.found);
        s.unreadable.extend(calls.unreadable);
    }

    let every_engine = codes(&[reason::EVERY_ENGINE]);
    let client_codes = codes(&[client::CLIENT_ALERTS, client::STANZA_ERRORS, client::STREAM_ERRORS]);
    let mut problems = Vec::new();
    let mut reported_in: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut total = 0;
    for (file, s) in &scans {
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        // The engine declarations that apply here (none outside peers/e2e).
        let mut declarations: Vec<&[Reason]> = Vec::new();
        let (allowed, whose): (BTreeSet<&str>, String) = if let Some(folder) = folder_of(&e2e_src, file) {
            let lists: Vec<&[Reason]> = Protocol::ALL
                .iter()
                .filter(|p| p.def().module.ends_with(&format!("::{folder}")))
                .map(|p| p.reasons())
                .collect();
            let mut allowed = codes(&lists);
            allowed.extend(&every_engine);
            declarations.extend(lists);
            declarations.push(reason::EVERY_ENGINE);
            (allowed, format!("the `reasons` of the registry entries in `{folder}`"))
        } else if file.starts_with(&e2e_src) {
            declarations.extend([reason::EVERY_ENGINE, reason::SHARED]);
            (codes(&[reason::EVERY_ENGINE, reason::SHARED]), "peers/e2e/src/reason.rs".into())
        } else if file.starts_with(root.join("peers/xmpp")) {
            (client_codes.clone(), "peers/xmpp/src/reasons.rs".into())
        } else {
            (all.iter().copied().collect(), "any declaration".into())
        };
        for (line, what) in &s.unreadable {
            problems.push(format!("{shown}:{line}: {what} this test cannot read: write a string literal or a declared constant's `.code`"));
        }
        for f in &s.found {
            total += 1;
            if !allowed.contains(f.code.as_str()) {
                problems.push(format!("{shown}:{}: reports `{}`, not declared in {whose}", f.line, f.code));
            }
            // An engine error says who is at fault: its reason is declared with a fault, never
            // as a notice (peers/e2e/src/error.rs, "Who is at fault").
            let notice =
                declarations.iter().flat_map(|l| l.iter()).any(|r| r.code == f.code && r.fault.is_none());
            if f.error && notice {
                problems.push(format!(
                    "{shown}:{}: raises `{}` as an error, but it is declared a notice, with no fault",
                    f.line, f.code
                ));
            }
            if let Some(folder) = folder_of(&e2e_src, file) {
                reported_in.entry(folder).or_default().insert(f.code.clone());
            }
        }
    }
    // Every protocol's own reason is reported in its folder: the lists hold no dead entries.
    let shared = codes(&[reason::SHARED]);
    for p in Protocol::ALL {
        let folder = p.def().module.rsplit("::").next().unwrap_or_default();
        for r in p.reasons().iter().filter(|r| !shared.contains(r.code)) {
            if !reported_in.get(folder).is_some_and(|s| s.contains(r.code)) {
                problems.push(format!(
                    "{p} declares `{}`, which nothing in peers/e2e/src/{folder} reports",
                    r.code
                ));
            }
        }
    }
    // And every shared reason somewhere.
    let everywhere: BTreeSet<String> =
        scans.iter().flat_map(|(_, s)| s.found.iter().map(|f| f.code.clone())).collect();
    for r in reason::SHARED.iter().chain(client::CLIENT_ALERTS) {
        if !everywhere.contains(r.code) {
            problems.push(format!("`{}` is declared, and nothing reports it", r.code));
        }
    }
    assert!(problems.is_empty(), "undeclared reasons:\n{}", problems.join("\n"));
    assert!(total > 150, "the scan found too few reasons ({total}): is it still reading the code?");
}

#[test]
fn the_scanner_reads_every_way_of_reporting_a_reason() {
    let mut constants = BTreeMap::new();
    constants.insert("UNENCRYPTED".to_owned(), "unencrypted");
    let src = r#"
        fn rejected(reason: &'static str, detail: &str) -> E2eError {
            E2eError::Rejected { reason, detail: detail.into() }
        }
        fn f() {
            let _ = '"'; // "not-a-reason"
            out.events.push(Event::Alert { reason: "a-literal", detail: String::new() });
            out.events.push(Event::Alert { reason: if x { "then" } else { "else" }, detail });
            out.events.push(Event::Alert { reason: crate::reason::UNENCRYPTED.code, detail });
            out.events.push(Event::Alert { reason: e.code(), detail });
            Err(rejected(
                "by-helper",
                format!("{}", "not-a-reason"),
            ))
        }
        fn g(e: &Error) -> E2eError {
            let reason = match e { A => "arm-one", _ => "arm-two" };
            E2eError::Rejected { reason, detail: e.to_string() }
        }
        fn h(e: &Event) {
            if let Event::Alert { reason, .. } = e {}
            match e { Event::Alert { reason, detail } => {} }
            Note::Lost { hop, reason: "not-a-device-reason" };
            /* Event::Alert { reason: "commented-out" } */
        }
        enum Note { ClientAlert { device: u8, reason: &'static str } }
        impl X {
            #[cfg(test)]
            fn only_in_tests(&self) { Event::Alert { reason: "test-only", detail }; }
            fn after(&self) { Event::Alert { reason: "after-a-test-item", detail }; }
        }
        #[cfg(test)]
        mod tests {
            fn t() { Event::Alert { reason: "made-up", detail }; }
        }
    "#;
    let s = scan(src, &constants);
    let calls = helper_calls(src, &s.helpers, &constants);
    let mut found: Vec<String> = s.found.iter().chain(&calls.found).map(|f| f.code.clone()).collect();
    found.sort();
    assert_eq!(
        found,
        ["a-literal", "after-a-test-item", "arm-one", "arm-two", "by-helper", "else", "then", "unencrypted"]
    );
    assert!(
        s.unreadable.is_empty() && calls.unreadable.is_empty(),
        "{:?} {:?}",
        s.unreadable,
        calls.unreadable
    );
    assert_eq!(s.helpers, BTreeMap::from([("rejected".to_owned(), true)]));
    // Which are errors' reasons (they must be declared with a fault).
    let mut errors: Vec<String> =
        s.found.iter().chain(&calls.found).filter(|f| f.error).map(|f| f.code.clone()).collect();
    errors.sort();
    assert_eq!(errors, ["arm-one", "arm-two", "by-helper"]);

    let bad = scan("fn f() { out.events.push(Event::Alert { reason: pick(), detail }); }", &constants);
    assert_eq!(bad.unreadable.len(), 1, "{bad:?}");
    let bad = scan("fn f() { E2eError::Rejected { reason, detail } }", &constants);
    assert_eq!(bad.unreadable.len(), 1, "{bad:?}");
    let bad =
        scan("fn h(reason: &'static str) {} fn f() { E2eError::Rejected { reason, detail } }", &constants);
    assert_eq!(bad.unreadable.len(), 1, "a helper's parameter does not reach another function: {bad:?}");
}

/// What the devices of a run logged that their protocol (with every engine and the client)
/// does not declare: the run-time side of `code_reports_only_declared_reasons`, for the
/// scenario and matrix tests.
pub(crate) fn undeclared_in(
    outcome: &jabberwock_sim::Outcome,
    protocol_of: impl Fn(&jabberwock_e2e::FullJid) -> Option<Protocol>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (jid, log) in &outcome.devices {
        for code in log.alerts.iter().chain(&log.errors) {
            let protocol = protocol_of(jid);
            if !protocol.is_some_and(|p| jabberwock_sim::reasons::reported_by(p, code)) {
                let p = protocol.map_or_else(|| "?".to_owned(), |p| p.to_string());
                out.push(format!(
                    "{}: {jid} ({p}) reported `{code}`, which is not declared for it",
                    outcome.name
                ));
            }
        }
    }
    out
}

#[test]
fn committed_list_is_current() {
    let path = root().join("scenarios/reasons.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = jabberwock_sim::reasons::markdown();
    if committed != current {
        if std::env::var_os("JABBERWOCK_UPDATE_REPORTS").is_some() {
            std::fs::write(&path, &current).unwrap();
        } else {
            let line = committed.lines().zip(current.lines()).position(|(a, b)| a != b).unwrap_or(0) + 1;
            panic!(
                "scenarios/reasons.md is stale (first difference at line {line}): run \
                 `cargo run -p jabberwock-tools -- reasons > scenarios/reasons.md` and review the diff"
            );
        }
    }
}
