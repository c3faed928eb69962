//! The result of one interop test, written where `jabberwock interop` (tools/src/interop.rs)
//! reads it to render `reports/interop.md`, the table of our engines against the independent
//! implementations.
//!
//! A test takes a [`Recorder`] first thing, which removes the result an earlier run of the
//! same test left, and calls [`Recorder::passed`] after its last assertion, which writes
//! `$CARGO_TARGET_TMPDIR/interop/<test binary>-<test name>.json`. A test that fails writes
//! nothing, so its row in the table goes missing and `jabberwock interop --check` fails.
//!
//! The version of the independent implementation is asked from the installed tool while the
//! test runs, so the file says what this machine ran; the table shows only major.minor.
//!
//! Included by each `interop_*.rs` with `#[path = "common/interop_record.rs"] mod interop_record;`.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

use jabberwock_e2e::Protocol;
use serde_json::{Value, json};

/// Which way an exchange went: who made it, and who read or verified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Our engine produced it; the independent implementation read or verified it.
    OursToTheirs,
    /// The independent implementation produced it; our engine read or verified it.
    TheirsToOurs,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::OursToTheirs => "ours → theirs",
            Direction::TheirsToOurs => "theirs → ours",
        }
    }
}

/// One piece of the independent implementation and the version its tool reported: the first
/// piece names the implementation (the table's column), any others what of it was used (the
/// OMEMO backend).
#[derive(Debug, Clone)]
pub struct Part {
    name: String,
    version: String,
}

impl Part {
    pub fn new(name: &str, version: &str) -> Part {
        Part { name: name.to_owned(), version: version.to_owned() }
    }

    fn json(&self) -> Value {
        json!({"name": self.name, "version": self.version})
    }
}

/// Taken at the start of an interop test; [`Recorder::passed`] at its end writes the result.
#[derive(Debug)]
#[must_use = "call .passed(..) after the test's last assertion"]
pub struct Recorder {
    test: String,
    path: PathBuf,
    finished: bool,
}

impl Recorder {
    /// Names the result after the running test (libtest names each test's thread after it)
    /// and removes the one an earlier run left.
    pub fn start() -> Recorder {
        let thread = std::thread::current();
        let test = thread.name().filter(|n| *n != "main").expect("run by libtest, one thread per test");
        let file = format!("{}-{}.json", env!("CARGO_CRATE_NAME"), test.replace("::", "."));
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop").join(file);
        if let Err(e) = std::fs::remove_file(&path) {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{}: {e}", path.display());
        }
        Recorder { test: test.to_owned(), path, finished: false }
    }

    /// The test passed: writes its result. `theirs` is the independent implementation (the
    /// first part names it), `exchanged` says for each direction what went across, in short
    /// phrases.
    pub fn passed(mut self, protocol: Protocol, theirs: &[Part], exchanged: &[(Direction, &[&str])]) {
        assert!(!theirs.is_empty() && !exchanged.is_empty());
        let record = json!({
            "binary": env!("CARGO_CRATE_NAME"),
            "test": self.test,
            "source": concat!("peers/e2e/tests/", env!("CARGO_CRATE_NAME"), ".rs"),
            "protocol": protocol.name(),
            "ours": format!("jabberwock {}", protocol.name()),
            "theirs": theirs.iter().map(Part::json).collect::<Vec<_>>(),
            "exchanged": exchanged
                .iter()
                .map(|(d, what)| json!({"direction": d.label(), "what": what}))
                .collect::<Vec<_>>(),
        });
        let dir = self.path.parent().expect("the results directory");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let text = serde_json::to_string_pretty(&record).expect("a JSON value serialises") + "\n";
        std::fs::write(&self.path, text).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()));
        self.finished = true;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A test that returns without recording would silently drop out of the table.
        if !self.finished && !std::thread::panicking() {
            panic!("{}: the test ended without Recorder::passed", self.test);
        }
    }
}

/// What `program args…` printed on standard output (standard error if that was empty).
pub fn tool_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?} runs (for its version): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).into_owned()
}

/// The output of a tool run that had to succeed (`what` names the run): if it did not, the
/// test fails showing what the tool printed.
#[allow(dead_code)] // Not every interop test runs its tool to completion.
pub fn succeeded(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `cmd` started with its standard input and output piped, its standard error as `stderr`
/// says; `what` says how to make it run.
#[allow(dead_code)] // Not every interop test starts a process it talks to.
pub fn start(cmd: &mut Command, stderr: Stdio, what: &str) -> Child {
    let piped = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
    piped.spawn().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A harness process talked to in lines: the child, its standard input and its buffered
/// standard output (standard error is dropped). `what` says how to make it run.
#[allow(dead_code)] // Only the harness-driven interop tests have one.
pub fn spawn_harness(cmd: &mut Command, what: &str) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = start(cmd, Stdio::null(), what);
    let stdin = child.stdin.take().expect("a piped standard input");
    let stdout = BufReader::new(child.stdout.take().expect("a piped standard output"));
    (child, stdin, stdout)
}

/// The first dotted version number in `text` ("gpg (GnuPG) 2.2.40" → "2.2.40").
pub fn version_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|t| t.trim_matches('.'))
        .find(|t| t.contains('.') && t.split('.').all(|n| !n.is_empty()))
        .map(str::to_owned)
}
