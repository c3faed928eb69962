//! [`PipeEngine`]: an [`Engine`] whose every call is a request to a child process.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use rand_core::RngCore;
use serde::de::DeserializeOwned;

use crate::json::{self, Answer, Call, Reply, Request};
use crate::{MAX_LINE, VERSION, intern_list};
use jabberwock_e2e::Ceremony;
use jabberwock_e2e::kit::codec::hex;
use jabberwock_e2e::{
    Content, Cx, E2eError, Engine, EngineConfig, IdentityMarks, OutOfBand, Output, Protocol, Theft, reason,
};

/// How much of the child's standard error a crash report quotes (its end).
const STDERR_TAIL: usize = 2048;

/// What the reader thread hands over: a line, or why there is none.
enum Line {
    Text(Vec<u8>),
    TooLong,
    Closed(String),
}

/// The running child: its pipes (each served by a thread, so that no call blocks past the
/// limit whatever the child does) and what its hello said.
struct Adapter {
    process: std::process::Child,
    to_child: Option<Sender<Vec<u8>>>,
    from_child: Receiver<Line>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Told when the child's standard error has ended (the tail is then complete).
    stderr_done: Receiver<()>,
    limit: Duration,
    next_id: u64,
    calls: BTreeSet<String>,
    failed: Option<E2eError>,
    implementation: String,
    /// The protocol whose reasons the child's errors and alerts must be.
    protocol: Protocol,
}

impl Drop for Adapter {
    fn drop(&mut self) {
        // Closing its input asks it to end, and it gets a second to do so (to clean up what it
        // made: key homes, agents); it is stopped either way (a child we started).
        self.to_child = None;
        for _ in 0..200 {
            match self.process.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn adapter_error(reason: &'static str, detail: String) -> E2eError {
    E2eError::Adapter { reason, detail }
}

impl Adapter {
    /// How the child ended, once its output closed: its exit status, waited for up to 5 s;
    /// past that it is stopped.
    fn exit_status(&mut self) -> String {
        // Wall-clock waiting, not simulated time: 1000 naps of 5 ms.
        for _ in 0..1000 {
            match self.process.try_wait() {
                Ok(Some(status)) => return format!(" ({status})"),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        " (it did not exit within 5 s of closing its output: stopped)".to_owned()
    }

    fn start(mut command: Command, limit: Duration, protocol: Protocol) -> Result<Adapter, E2eError> {
        let crashed =
            |e: std::io::Error| adapter_error(reason::ADAPTER_CRASHED.code, format!("cannot start: {e}"));
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(crashed)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (process.stdin.take(), process.stdout.take(), process.stderr.take())
        else {
            let _ = process.kill();
            let _ = process.wait();
            return Err(adapter_error(reason::ADAPTER_CRASHED.code, "no pipes to the child".into()));
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&tail);
        let (ended, stderr_done) = mpsc::channel();
        let threads = (|| {
            let to_child = writer(stdin)?;
            let from_child = reader(stdout)?;
            std::thread::Builder::new().name("pipe-stderr".into()).spawn(move || {
                let mut stderr = stderr;
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stderr.read(&mut buf) {
                    let mut t = keep.lock().unwrap_or_else(PoisonError::into_inner);
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
                let _ = ended.send(());
            })?;
            Ok((to_child, from_child))
        })();
        // A child we started is never left behind, however the start failed.
        let (to_child, from_child) = match threads {
            Ok(pipes) => pipes,
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                return Err(crashed(e));
            }
        };
        Ok(Adapter {
            process,
            to_child: Some(to_child),
            from_child,
            stderr: tail,
            stderr_done,
            limit,
            next_id: 0,
            calls: BTreeSet::from(["hello".to_owned()]),
            failed: None,
            implementation: String::new(),
            protocol,
        })
    }

    /// One request and its answer's `ok` value: `stamp` is the request's `now` and `seed`
    /// ([`stamp`]). A failure of the child stops it: every later call answers the same error.
    fn call(
        &mut self,
        engine: Option<&str>,
        call: Call,
        stamp: (Option<u64>, Option<String>),
    ) -> Result<serde_json::Value, E2eError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let name = call.name();
        if !self.calls.contains(name) {
            let detail = format!("{} does not list `{name}` in its hello", self.implementation);
            return Err(E2eError::Unimplemented { call: name, detail });
        }
        self.next_id += 1;
        let (now, seed) = stamp;
        let request = Request { id: self.next_id, call, engine: engine.map(str::to_owned), now, seed };
        match self.exchange(&request) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Error(w)) => {
                let protocol = self.protocol;
                Err(self.check(json::error(protocol, &w))?)
            }
            Ok(Reply::Unimplemented(detail)) => Err(E2eError::Unimplemented { call: name, detail }),
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// A translation of the child's answer: its failure is the child's garbage.
    fn check<T>(&mut self, r: Result<T, String>) -> Result<T, E2eError> {
        r.map_err(|detail| {
            let e = adapter_error(reason::ADAPTER_GARBAGE.code, detail);
            self.fail(e.clone());
            e
        })
    }

    fn fail(&mut self, e: E2eError) {
        self.failed = Some(e);
        self.to_child = None;
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    fn exchange(&mut self, request: &Request) -> Result<Reply, E2eError> {
        let garbage = |detail: String| adapter_error(reason::ADAPTER_GARBAGE.code, detail);
        let mut line =
            serde_json::to_vec(request).map_err(|e| garbage(format!("cannot write the request: {e}")))?;
        // Our own request past the line limit is refused here, not blamed on the child.
        if line.len() > MAX_LINE {
            return Err(E2eError::Policy {
                detail: format!(
                    "a `{}` request of {} bytes, more than {MAX_LINE}",
                    request.call.name(),
                    line.len()
                ),
            });
        }
        line.push(b'\n');
        if let Some(tx) = &self.to_child {
            // A closed channel means the writer stopped: the answer will not come either.
            let _ = tx.send(line);
        }
        let got = match self.from_child.recv_timeout(self.limit) {
            Ok(got) => got,
            Err(RecvTimeoutError::Timeout) => {
                return Err(adapter_error(
                    reason::ADAPTER_TIMEOUT.code,
                    format!(
                        "no answer to `{}` within {} ms: stopped",
                        request.call.name(),
                        self.limit.as_millis()
                    ),
                ));
            }
            Err(RecvTimeoutError::Disconnected) => Line::Closed("its output is gone".into()),
        };
        let text = match got {
            Line::Text(text) => text,
            Line::TooLong => return Err(garbage(format!("an answer longer than {MAX_LINE} bytes"))),
            Line::Closed(how) => {
                // Its exit and the end of its standard error, waited for (a little), so that
                // the report does not depend on which the caller happened to see first.
                let status = self.exit_status();
                let _ = self.stderr_done.recv_timeout(Duration::from_secs(1));
                let tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let tail = String::from_utf8_lossy(&tail);
                let said = tail.trim();
                let said = if said.is_empty() { String::new() } else { format!("; its stderr ends: {said}") };
                return Err(adapter_error(
                    reason::ADAPTER_CRASHED.code,
                    format!("{how} before answering `{}`{status}{said}", request.call.name()),
                ));
            }
        };
        let answer: Answer = serde_json::from_slice(&text).map_err(|e| {
            let shown = String::from_utf8_lossy(&text[..text.len().min(120)]).into_owned();
            garbage(format!("not an answer ({e}): {shown}"))
        })?;
        if answer.id != Some(request.id) {
            return Err(garbage(format!("answered id {:?} to request {}", answer.id, request.id)));
        }
        Ok(answer.reply)
    }
}

/// A call's `now` (milliseconds since the Unix epoch) and `seed` (32 bytes drawn from the
/// caller's stream, in hex).
fn stamp(cx: &mut Cx<'_>) -> (Option<u64>, Option<String>) {
    let mut seed = [0u8; 32];
    cx.rng.fill_bytes(&mut seed);
    (Some(u64::try_from(cx.now.as_millis()).unwrap_or(u64::MAX)), Some(hex(&seed)))
}

fn writer(mut stdin: ChildStdin) -> std::io::Result<Sender<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::Builder::new().name("pipe-stdin".into()).spawn(move || {
        for line in rx {
            if stdin.write_all(&line).and_then(|()| stdin.flush()).is_err() {
                break;
            }
        }
    })?;
    Ok(tx)
}

fn reader(stdout: ChildStdout) -> std::io::Result<Receiver<Line>> {
    // One line waits at most: a child that writes unasked stops on its full pipe instead of
    // filling our memory (and its line is the next answer's: not the one asked for, garbage).
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new().name("pipe-stdout".into()).spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX).saturating_add(1);
            let got = match (&mut stdout).take(limit).read_until(b'\n', &mut line) {
                Ok(0) => Line::Closed("it closed its output".into()),
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    Line::Text(line)
                }
                Ok(_) if line.len() > MAX_LINE => Line::TooLong,
                Ok(_) => Line::Closed("it closed its output in the middle of a line".into()),
                Err(e) => Line::Closed(format!("its output failed: {e}")),
            };
            let last = !matches!(got, Line::Text(_));
            if tx.send(got).is_err() || last {
                break;
            }
        }
    })?;
    Ok(rx)
}

/// An engine that runs in a child process and speaks the engine protocol
/// (`docs/engine-protocol.md`) on its standard input and output: each call is one request
/// line and one answer line. The call blocks until the answer comes, so simulated time stands
/// still while the child computes; a child that exits, hangs past the limit or answers what
/// the protocol does not allow gives [`E2eError::Adapter`], a call it does not implement
/// [`E2eError::Unimplemented`]. Calls that cannot return an error (`out_of_band`, `ceremony`,
/// `drain`, ...) answer as an engine with nothing to say; a failure there is reported by the
/// next call that can.
///
/// Stolen copies ([`Engine::steal`]) live in the same child, under another handle.
pub struct PipeEngine {
    protocol: Protocol,
    /// The child (`None` for an engine whose child could not be started: `broken` says why).
    adapter: Option<Arc<Mutex<Adapter>>>,
    handle: String,
    device_id: Option<String>,
    iq_namespaces: &'static [&'static str],
    /// Set on a stolen copy whose theft failed: every call answers it.
    broken: Option<E2eError>,
}

impl fmt::Debug for PipeEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeEngine")
            .field("protocol", &self.protocol)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Drop for PipeEngine {
    fn drop(&mut self) {
        // The child forgets this handle (the process itself ends with the last handle).
        if self.broken.is_none() && self.adapter.as_ref().is_some_and(|a| Arc::strong_count(a) > 1) {
            let _ = self.request::<serde_json::Value>(Call::Drop, None);
        }
    }
}

/// Starts the adapter and checks its hello: this protocol version, speaking `protocol`.
fn greet(command: Command, limit: Duration, protocol: Protocol) -> Result<Adapter, E2eError> {
    let mut adapter = Adapter::start(command, limit, protocol)?;
    let hello = adapter.call(None, Call::Hello { version: VERSION }, (None, None))?;
    let hello: json::HelloOk = adapter.check(parse(hello))?;
    let wrong = if hello.version != VERSION {
        Some(format!("speaks engine protocol version {}, not {VERSION}", hello.version))
    } else if hello.protocol != protocol.name() {
        Some(format!("speaks {}, not {protocol}", hello.protocol))
    } else {
        None
    };
    adapter.check(wrong.map_or(Ok(()), Err))?;
    adapter.implementation = format!("{} {}", hello.implementation, hello.implementation_version);
    adapter.calls = hello.calls.into_iter().collect();
    Ok(adapter)
}

fn parse<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("an answer of the wrong shape: {e}"))
}

impl PipeEngine {
    /// Starts `command`, checks its hello (this protocol version, speaking `protocol`), and
    /// has it build the engine of the device `me` (its randomness: 32 bytes drawn from `rng`).
    /// `limit` bounds every call in wall-clock time ([`super::DEFAULT_LIMIT`] unless the
    /// caller knows better).
    pub fn spawn(
        command: Command,
        limit: Duration,
        protocol: Protocol,
        me: &FullJid,
        rng: &mut dyn RngCore,
        config: &EngineConfig,
    ) -> Result<PipeEngine, E2eError> {
        let mut adapter = greet(command, limit, protocol)?;
        // `new` carries a seed and no time.
        let (_, seed) = stamp(&mut Cx { rng, now: Duration::ZERO });
        let new = Call::New { me: me.to_string(), config: json::config_wire(config) };
        let answer = adapter.call(None, new, (None, seed))?;
        let built: json::EngineOk = adapter.check(parse(answer))?;
        let namespaces = adapter
            .check(intern_list(&built.iq_namespaces).ok_or_else(|| "too many iq namespaces".to_owned()))?;
        Ok(PipeEngine {
            protocol,
            adapter: Some(Arc::new(Mutex::new(adapter))),
            handle: built.engine,
            device_id: built.device_id,
            iq_namespaces: namespaces,
            broken: None,
        })
    }

    /// [`PipeEngine::spawn`], for a caller that must have an engine: one whose child could not
    /// be started (or greeted) answers every call with that error, in the transcript.
    pub fn start(
        command: Command,
        limit: Duration,
        protocol: Protocol,
        me: &FullJid,
        rng: &mut dyn RngCore,
        config: &EngineConfig,
    ) -> PipeEngine {
        PipeEngine::spawn(command, limit, protocol, me, rng, config)
            .unwrap_or_else(|e| PipeEngine::broken(protocol, e))
    }

    /// An engine whose child could not be started: every call answers `error`.
    pub fn broken(protocol: Protocol, error: E2eError) -> PipeEngine {
        PipeEngine {
            protocol,
            adapter: None,
            handle: String::new(),
            device_id: None,
            iq_namespaces: &[],
            broken: Some(error),
        }
    }

    /// Starts `command` and checks its hello only: what it says it is (its implementation and
    /// exact version), or why it cannot serve `protocol` here (not installed, another protocol
    /// version, ...). The child ends when this returns.
    pub fn probe(command: Command, limit: Duration, protocol: Protocol) -> Result<String, E2eError> {
        greet(command, limit, protocol).map(|a| a.implementation.clone())
    }

    /// Who answers: the adapter's implementation and exact version, as its hello said.
    pub fn implementation(&self) -> String {
        self.adapter
            .as_ref()
            .map(|a| a.lock().unwrap_or_else(PoisonError::into_inner).implementation.clone())
            .unwrap_or_default()
    }

    fn request<T: DeserializeOwned>(&self, call: Call, cx: Option<&mut Cx<'_>>) -> Result<T, E2eError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let stamp = cx.map_or((None, None), stamp);
        let Some(adapter) = &self.adapter else {
            return Err(adapter_error(reason::ADAPTER_CRASHED.code, "no child".into()));
        };
        let mut adapter = adapter.lock().unwrap_or_else(PoisonError::into_inner);
        let v = adapter.call(Some(&self.handle), call, stamp)?;
        adapter.check(parse(v))
    }

    fn output(&self, call: Call, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        let w: json::OutputWire = self.request(call, Some(cx))?;
        let protocol = self.protocol;
        self.checked(json::output(protocol, w))
    }

    fn checked<T>(&self, r: Result<T, String>) -> Result<T, E2eError> {
        match &self.adapter {
            Some(a) => a.lock().unwrap_or_else(PoisonError::into_inner).check(r),
            None => r.map_err(|detail| adapter_error(reason::ADAPTER_GARBAGE.code, detail)),
        }
    }

    fn stanza(&self, s: Option<String>) -> Result<Option<Element>, E2eError> {
        self.checked(s.map(|s| json::element("a stanza", &s)).transpose())
    }

    /// A copy under another handle of the same child (`None`: a copy that answers every
    /// call with `broken`, what the theft failed with).
    fn sibling(&self, handle: Option<String>, broken: Option<E2eError>) -> PipeEngine {
        PipeEngine {
            protocol: self.protocol,
            adapter: self.adapter.clone(),
            handle: handle.unwrap_or_default(),
            device_id: self.device_id.clone(),
            iq_namespaces: self.iq_namespaces,
            broken,
        }
    }
}

impl Engine for PipeEngine {
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn publish(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        self.output(Call::Publish, cx)
    }

    fn going_offline(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        self.output(Call::GoingOffline, cx)
    }

    fn presence(&mut self, cx: &mut Cx<'_>) -> Result<Vec<Element>, E2eError> {
        let w: json::ElementsOk = self.request(Call::Presence, Some(cx))?;
        self.checked(w.elements.iter().map(|e| json::element("a presence extension", e)).collect())
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        self.iq_namespaces
    }

    fn receive_presence(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        self.output(Call::ReceivePresence { stanza: json::xml(stanza) }, cx)
    }

    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        self.output(Call::Send { to: to.to_string(), body: body.to_owned() }, cx)
    }

    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &Content) -> Result<Output, E2eError> {
        let parts = content.parts.iter().map(json::xml).collect();
        self.output(Call::SendMessage { to: to.to_string(), body: content.body.clone(), parts }, cx)
    }

    fn send_presence(&mut self, cx: &mut Cx<'_>, to: &Jid, status: &str) -> Result<Output, E2eError> {
        self.output(Call::SendPresence { to: to.to_string(), status: status.to_owned() }, cx)
    }

    fn send_iq(&mut self, cx: &mut Cx<'_>, to: &FullJid, payload: &Element) -> Result<Output, E2eError> {
        self.output(Call::SendIq { to: to.to_string(), payload: json::xml(payload) }, cx)
    }

    fn owns_part(&self, part: &Element) -> bool {
        self.request::<json::OwnsOk>(Call::OwnsPart { part: json::xml(part) }, None).is_ok_and(|o| o.owns)
    }

    fn message_id(&self, to: &BareJid) -> Option<String> {
        self.request::<json::MessageIdOk>(Call::MessageId { to: to.to_string() }, None)
            .ok()
            .and_then(|m| m.id)
    }

    fn receive(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        self.output(Call::Receive { stanza: json::xml(stanza) }, cx)
    }

    fn drain(&mut self, cx: &mut Cx<'_>) -> Output {
        self.output(Call::Drain, cx).unwrap_or_default()
    }

    fn fetch_failed(
        &mut self,
        cx: &mut Cx<'_>,
        owner: &BareJid,
        node: &str,
        condition: &str,
    ) -> Result<Output, E2eError> {
        let call = Call::FetchFailed {
            owner: owner.to_string(),
            node: node.to_owned(),
            condition: condition.to_owned(),
        };
        self.output(call, cx)
    }

    fn verify(&mut self, cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        self.output(Call::Verify { peer: peer.to_string(), peer_says: oob.peer_says.clone() }, cx)
    }

    fn out_of_band(&self) -> OutOfBand {
        let says = self.request::<json::OutOfBandOk>(Call::OutOfBand, None);
        OutOfBand { peer_says: says.map(|s| s.peer_says).unwrap_or_default() }
    }

    fn identity_marks(&self) -> IdentityMarks {
        let marks = self.request::<json::MarksOk>(Call::IdentityMarks, None);
        marks.and_then(|m| self.checked(json::marks(m))).unwrap_or_default()
    }

    fn peer_marks(&self, peer: &BareJid) -> IdentityMarks {
        let marks = self.request::<json::MarksOk>(Call::PeerMarks { peer: peer.to_string() }, None);
        marks.and_then(|m| self.checked(json::marks(m))).unwrap_or_default()
    }

    fn ceremony(&self, peer: &BareJid) -> Option<Ceremony> {
        let c = self.request::<json::CeremonyOk>(Call::Ceremony { peer: peer.to_string() }, None);
        c.ok().and_then(|c| c.ceremony).map(json::ceremony)
    }

    fn forge(&mut self, cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        let s: json::StanzaOk =
            self.request(Call::Forge { from: from.to_string(), body: body.to_owned() }, Some(cx))?;
        self.stanza(s.stanza)
    }

    fn forward(
        &mut self,
        cx: &mut Cx<'_>,
        recorded: &Element,
        to: &BareJid,
        body: &str,
    ) -> Result<Option<Output>, E2eError> {
        let call = Call::Forward { recorded: json::xml(recorded), to: to.to_string(), body: body.to_owned() };
        let w: json::ForwardOk = self.request(call, Some(cx))?;
        let protocol = self.protocol;
        self.checked(w.output.map(|o| json::output(protocol, o)).transpose())
    }

    fn reencrypt(
        &mut self,
        cx: &mut Cx<'_>,
        stanza: &Element,
        body: &str,
    ) -> Result<Option<Element>, E2eError> {
        let s: json::StanzaOk =
            self.request(Call::Reencrypt { stanza: json::xml(stanza), body: body.to_owned() }, Some(cx))?;
        self.stanza(s.stanza)
    }

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        match self.request::<json::EngineOk>(Call::Steal { what: json::theft_word(what).to_owned() }, None) {
            Ok(stolen) => Box::new(self.sibling(Some(stolen.engine), None)),
            Err(e) => Box::new(self.sibling(None, Some(e))),
        }
    }

    fn device_id(&self) -> Option<String> {
        self.device_id.clone()
    }
}
