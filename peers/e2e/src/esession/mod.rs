//! Encrypted Session Negotiation (XEP-0116, 4-message SIGMA-R variant, over XEP-0155 stanza
//! session negotiation) with XEP-0200 stanza encryption, and offline ESessions (XEP-0187): the
//! engine `esession`.
//!
//! - [`forms`]: data forms and the §sign-normal normalization;
//! - [`crypto`]: groups, key derivation, identity hiding, SAS, CTR counters, RSA;
//! - `offline`: XEP-0187, the options published before going offline and the offline
//!   ESessions started from them;
//! - `stanzas`: XEP-0200 §content, the stanza types an ESession protects (message, presence,
//!   iq) and what of each travels inside `<c/>`.
//!
//! Choices where the texts are ambiguous (README "Protocol choices" lists them): 4-message
//! negotiation only (§init-variants: "SHOULD be used to establish client-to-client sessions");
//! `aes128-ctr`, `sha256`, `rsa-sha256` with `key` identities both ways, `sas28x5`, no
//! compression, `message`, `presence` and `iq` stanzas; the cipher key is the low 16 bytes of
//! its HMAC, MAC and SIGMA keys the whole HMAC; a CTR counter's first block is the counter
//! itself and counters run on from the handshake into the stanzas, never reset; counters in
//! MACs are stripped MPIs; Bob's final message uses the `#ns-init` wrapper; the SAS is five
//! base-28 digits, most significant first. Every encrypted message also carries `<private/>`
//! (XEP-0280) so carbons do not copy what no other resource can read.

pub mod crypto;
pub mod forms;
mod offline;
mod seam;
mod stanzas;

use core::fmt;
use std::collections::{BTreeMap, VecDeque};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use num_bigint::BigUint;
use rand_core::RngCore;

use self::crypto::{Identity, Keys, check_public, counter_mpi, ctr, mpi};
use self::forms::{FORM_TYPE, Field, Form, NS_DATA, NS_FEATURE, form_content};
use self::stanzas::{Kind, Outgoing, body_xml, escape};
use crate::kit;
use crate::kit::codec::{b64, hex, unb64};
use crate::kit::crypto::{equal, hmac_sha256, sha256};
use crate::kit::trust;
use crate::EngineConfig;
use crate::xml::{ElementExt, NS_CARBONS, NS_CLIENT, NS_STANZAS, el, sender, text_el};
use crate::content::Directed;
use crate::{
    Action, Cx, E2eError, Engine, Event, OutOfBand, Output, Protocol, Theft, Trust, VerificationResult,
};

/// The registry entry.
pub static PROTOCOL: crate::ProtocolDef =
    crate::ProtocolDef::new("esession", module_path!(), build, &seam::WIRE, include_str!("reasons.txt"));

/// Builds its engine for a device.
fn build(me: &FullJid, rng: &mut dyn RngCore, config: &EngineConfig) -> Box<dyn Engine> {
    let _ = (rng, config);
    Box::new(Esession::new(me.clone()))
}

/// XEP-0200 stanza encryption.
pub const NS_C: &str = "http://www.xmpp.org/extensions/xep-0200.html#ns";
/// The wrapper of Bob's final negotiation message (§init-acceptbob-send).
pub const NS_INIT: &str = "http://www.xmpp.org/extensions/xep-0116.html#ns-init";
/// How many stanzas a party sends before it rekeys (the `rekey_freq` we offer).
const REKEY_FREQ: u32 = 50;

/// A negotiation in progress with one peer.
#[derive(Clone)]
enum Negotiation {
    /// Alice sent M1.
    AwaitM2 { thread: String, dh: Vec<(u32, BigUint, BigUint)>, n_a: Vec<u8>, form_a: Vec<u8> },
    /// Bob sent M2.
    AwaitM3(Box<BobState>),
    /// Alice sent M3.
    AwaitM4(Box<AliceState>),
}

#[derive(Clone)]
struct BobState {
    thread: String,
    peer: Jid,
    group: u32,
    y: BigUint,
    d: BigUint,
    he: Vec<u8>,
    n_a: Vec<u8>,
    n_b: Vec<u8>,
    c_a: u128,
    form_a: Vec<u8>,
    form_b: Vec<u8>,
    stanzas: Vec<Kind>,
}

#[derive(Clone)]
struct AliceState {
    thread: String,
    peer: Jid,
    group: u32,
    x: BigUint,
    d: BigUint,
    k: [u8; 32],
    n_a: Vec<u8>,
    n_b: Vec<u8>,
    c_a: u128,
    c_b: u128,
    form_b: Vec<u8>,
    m_a: Vec<u8>,
    stanzas: Vec<Kind>,
}

/// An established ESession.
#[derive(Clone)]
struct Session {
    thread: String,
    peer: Jid,
    group: u32,
    /// Our current DH private value, and the peer's current public one (for rekeys).
    own_secret: BigUint,
    peer_public: BigUint,
    send: Keys,
    recv: Keys,
    /// Receiving keys from before a rekey we started, until the peer uses the new ones.
    old_recv: Option<Keys>,
    send_ctr: u128,
    recv_ctr: u128,
    sent_since_rekey: u32,
    rekey_freq: u32,
    /// `<key/>` stanzas received since we last sent.
    keys_received: u32,
    sas: String,
    verified: bool,
    /// The peer's client shares none of the secrets we retained from our last session with
    /// it (§init-finalbob, §init-finalalice): not the same chain, so not the same party as far
    /// as the retained secrets can tell (§sec: "the Man in the Middle would need to be
    /// present for every session"). Its messages show as untrusted until the SAS is verified.
    chain_broken: bool,
    their_key: String,
    /// Whether we started the negotiation: only that side starts rekeys, so two rekeys never
    /// cross (XEP-0200 allows either side; crossing rekeys need several key sets kept).
    initiator: bool,
    /// The MACs of the last stanzas read, to recognise a replay (XEP-0200 §sec-replay).
    seen_macs: VecDeque<Vec<u8>>,
    /// After we ended the session on a stanza we could not read: the counter the peer's next
    /// stanza starts at if that stanza was the peer's own, changed in place.
    skip: Option<u128>,
    /// An offline ESession (XEP-0187) the peer started from our published options: we read
    /// in it and never send (§exchange).
    offline: bool,
    /// The stanza types agreed in the 'stanzas' field (XEP-0116 §init-online-request): the
    /// only ones encrypted and decrypted in it.
    stanzas: Vec<Kind>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("thread", &self.thread)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Negotiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Negotiation::AwaitM2 { .. } => "AwaitM2",
            Negotiation::AwaitM3(_) => "AwaitM3",
            Negotiation::AwaitM4(_) => "AwaitM4",
        })
    }
}

/// One device's ESessions state.
#[derive(Debug, Clone)]
pub struct Esession {
    me: FullJid,
    identity: Option<Identity>,
    negotiations: BTreeMap<BareJid, Negotiation>,
    sessions: BTreeMap<BareJid, Session>,
    /// What the user sent while no ESession existed, in order, until one does.
    stored: BTreeMap<BareJid, Vec<Outgoing>>,
    /// Retained secrets per peer account and peer client (§init-finalbob).
    retained: BTreeMap<BareJid, BTreeMap<String, [u8; 32]>>,
    /// Public keys seen per peer account, with their trust.
    keys: BTreeMap<BareJid, BTreeMap<String, Trust>>,
    /// Sessions we asked to terminate, kept to verify the peer's acknowledgement (§terminate).
    closing: BTreeMap<BareJid, Session>,
    /// Sessions that ended, by peer and thread: their leftovers are refused without an answer.
    ended: VecDeque<(BareJid, String)>,
    /// What a `receive` that failed still has to send (handed out by `drain`).
    pending: Output,
    /// XEP-0187: the private values of the options we published, while we are offline
    /// (stored: long-term), and once we are back (in memory only).
    offline_stored: Option<offline::OfflineSecrets>,
    offline_retrieved: Option<offline::OfflineSecrets>,
    /// XEP-0187 as a sender: fetches in flight, and the verified options of peers found
    /// offline.
    lookups: BTreeMap<BareJid, offline::Lookup>,
    peer_options: BTreeMap<BareJid, offline::PeerOptions>,
}

fn random_vec(rng: &mut dyn RngCore, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    // A non-zero first byte, so nonces read the same as bytes and as stripped integers (A14).
    v[0] |= 1;
    v
}

fn random_counter(rng: &mut dyn RngCore) -> u128 {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[0] = (b[0] | 1) & 0x7f;
    u128::from_be_bytes(b)
}

/// C_B = C_A XOR 2^(n-1) (§init-online-bobprep, the `&CBeCAx2n1;` entity).
fn counter_b(c_a: u128) -> u128 {
    c_a ^ (1u128 << 127)
}

fn parse_counter(text: &str) -> Result<u128, E2eError> {
    let bytes = unb64("counter", text)?;
    if bytes.len() > 16 || bytes.is_empty() {
        return Err(E2eError::Malformed { what: "counter", detail: format!("{} bytes", bytes.len()) });
    }
    let mut b = [0u8; 16];
    b[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(u128::from_be_bytes(b))
}

fn mac_of(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    hmac_sha256(key, parts).to_vec()
}

impl Esession {
    /// A new device. Its RSA key is made on first use (2048-bit generation is slow), from the
    /// device's RNG at that moment.
    pub fn new(me: FullJid) -> Self {
        Esession {
            me,
            identity: None,
            negotiations: BTreeMap::new(),
            sessions: BTreeMap::new(),
            stored: BTreeMap::new(),
            retained: BTreeMap::new(),
            keys: BTreeMap::new(),
            closing: BTreeMap::new(),
            ended: VecDeque::new(),
            pending: Output::default(),
            offline_stored: None,
            offline_retrieved: None,
            lookups: BTreeMap::new(),
            peer_options: BTreeMap::new(),
        }
    }

    fn identity(&mut self, rng: &mut dyn RngCore) -> Result<Identity, E2eError> {
        if let Some(i) = &self.identity {
            return Ok(i.clone());
        }
        let id = Identity::generate(rng)?;
        self.identity = Some(id.clone());
        Ok(id)
    }

    /// A failed MAC over an identity fails the whole negotiation (§init-online-reject: "both
    /// MUST consider it failed"); other errors leave it to the peer to answer again.
    fn negotiation_step<T>(&mut self, peer: &BareJid, step: Result<T, E2eError>) -> Result<T, E2eError> {
        if step.as_ref().is_err_and(|e| e.code() == "bad-mac") {
            self.negotiations.remove(peer);
        }
        step
    }

    /// The SAS of the session with `peer`, once negotiated.
    pub fn sas(&self, peer: &BareJid) -> Option<&str> {
        self.sessions.get(peer).map(|s| s.sas.as_str())
    }

    fn negotiation_stanza(to: &Jid, thread: &str, wrapper: Element) -> Element {
        el("message", NS_CLIENT)
            .with("to", to.to_string())
            .child(text_el("thread", NS_CLIENT, thread))
            .child(wrapper)
    }

    // ---- M1 ---------------------------------------------------------------------------------

    /// §init-online-request: the ESession Request to the peer's bare JID.
    fn request(&mut self, cx: &mut Cx<'_>, to: &BareJid, out: &mut Output) {
        let thread = hex(&random_vec(cx.rng, 16));
        let n_a = random_vec(cx.rng, 16);
        let offered = [14u32, 5];
        let mut dh = Vec::new();
        let mut hashes = Vec::new();
        for g in offered {
            let Some(p) = crypto::group_prime(g) else { continue };
            let x = crypto::secret_exponent(cx.rng);
            let e = BigUint::from(2u32).modpow(&x, p);
            hashes.push(b64(&sha256(&[&mpi(&e)])));
            dh.push((g, x, e));
        }
        let groups: Vec<String> = offered.iter().map(u32::to_string).collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let hashes: Vec<&str> = hashes.iter().map(String::as_str).collect();
        let n_a_b64 = b64(&n_a);
        let freq = REKEY_FREQ.to_string();
        let form = Form {
            kind: "form".into(),
            fields: [
                vec![
                    Field::values("FORM_TYPE", Some("hidden"), &[FORM_TYPE]),
                    Field { required: true, ..Field::values("accept", Some("boolean"), &["1"]) },
                ],
                offered_options(&groups),
                vec![
                Field::options("init_pubkey", "list-single", &["key"], false),
                Field::options("resp_pubkey", "list-single", &["key"], false),
                Field::options("ver", "list-single", &["1.0"], false),
                Field::values("rekey_freq", Some("text-single"), &[&freq]),
                Field::values("my_nonce", Some("hidden"), &[&n_a_b64]),
                Field::options("sas_algs", "list-single", &["sas28x5"], false),
                Field::values("dhhashes", Some("hidden"), &hashes),
                ],
            ]
            .concat(),
        };
        let x = form.to_element();
        let form_a = form_content(&x, &[]);
        let stanza =
            Self::negotiation_stanza(&Jid::from(to.clone()), &thread, el("feature", NS_FEATURE).child(x));
        out.actions.push(Action::Send(stanza));
        self.negotiations.insert(to.clone(), Negotiation::AwaitM2 { thread, dh, n_a, form_a });
    }

    // ---- M1 → M2 (Bob) ------------------------------------------------------------------------

    /// §init-online-bobprep / §init-online-form.
    fn respond(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        thread: &str,
        x: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let form = Form::parse(x)?;
        // Both asked at once: the request from the lower JID goes on, the other is dropped
        // (our stored messages go out once the surviving session exists).
        if matches!(self.negotiations.get(&from.to_bare()), Some(Negotiation::AwaitM2 { .. }))
            && self.me.to_bare() < from.to_bare()
        {
            return Ok(());
        }
        let choose = |var: &'static str, ours: &[&str]| -> Result<String, E2eError> {
            let f = form.field(var).ok_or(E2eError::Missing { what: var })?;
            let offered = if f.options.is_empty() { &f.values } else { &f.options };
            offered.iter().find(|o| ours.contains(&o.as_str())).cloned().ok_or(E2eError::Rejected {
                reason: "not-acceptable",
                detail: format!("no acceptable option in `{var}`"),
            })
        };
        if form.field("dhkeys").is_some() && form.field("dhhashes").is_none() {
            return Err(E2eError::Rejected {
                reason: "feature-not-implemented",
                detail: "3-message negotiation (we only answer the 4-message variant)".into(),
            });
        }
        let modp_field = form.field("modp").ok_or(E2eError::Missing { what: "modp" })?;
        let groups: Vec<String> = crypto::GROUPS.iter().map(u32::to_string).collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let group_s = choose("modp", &groups)?;
        let group: u32 =
            group_s.parse().map_err(|_| E2eError::Malformed { what: "modp", detail: group_s.clone() })?;
        let index = modp_field.options.iter().position(|o| *o == group_s).unwrap_or(0);
        let he = form
            .field("dhhashes")
            .and_then(|f| f.values.get(index))
            .ok_or(E2eError::Missing { what: "dhhashes" })?;
        let he = unb64("dhhashes", he)?;
        let choices = [
            ("logging", choose("logging", &["mustnot", "may", "false", "true"])?),
            ("disclosure", choose("disclosure", &["never"])?),
            ("security", choose("security", &["e2e"])?),
            ("crypt_algs", choose("crypt_algs", &["aes128-ctr"])?),
            ("hash_algs", choose("hash_algs", &["sha256"])?),
            ("sign_algs", choose("sign_algs", &[crypto::RSA_SHA256])?),
            ("compress", choose("compress", &["none"])?),
            ("init_pubkey", choose("init_pubkey", &["key"])?),
            ("resp_pubkey", choose("resp_pubkey", &["key"])?),
            ("ver", choose("ver", &["1.0"])?),
            ("sas_algs", choose("sas_algs", &["sas28x5"])?),
        ];
        // The 'stanzas' field is list-multi: every offered type we accept (XEP-0116
        // §init-online-request, option 6).
        let stanza_field = form.field("stanzas").ok_or(E2eError::Missing { what: "stanzas" })?;
        let offered = if stanza_field.options.is_empty() { &stanza_field.values } else { &stanza_field.options };
        let stanzas = stanzas::accept_offer(offered)?;
        let their_freq: u32 = form.value("rekey_freq")?.trim().parse().unwrap_or(REKEY_FREQ);
        let freq = their_freq.max(REKEY_FREQ).to_string();
        let n_a = unb64("my_nonce", form.value("my_nonce")?)?;
        let p = crypto::group_prime(group).ok_or(E2eError::Missing { what: "group" })?;
        let n_b = random_vec(cx.rng, 16);
        let c_a = random_counter(cx.rng);
        let y = crypto::secret_exponent(cx.rng);
        let d = BigUint::from(2u32).modpow(&y, p);
        let mut fields = vec![
            Field::values("FORM_TYPE", None, &[FORM_TYPE]),
            Field::values("accept", None, &["1"]),
            Field::values("modp", None, &[&group_s]),
        ];
        for (var, v) in &choices {
            fields.push(Field::values(var, None, &[v]));
            if *var == "compress" {
                let names: Vec<&str> = stanzas.iter().map(|k| k.name()).collect();
                fields.push(Field::values("stanzas", None, &names));
            }
        }
        fields.push(Field::values("rekey_freq", None, &[&freq]));
        fields.push(Field::values("my_nonce", None, &[&b64(&n_b)]));
        fields.push(Field::values("dhkeys", None, &[&b64(&mpi(&d))]));
        fields.push(Field::values("nonce", None, &[&b64(&n_a)]));
        fields.push(Field::values("counter", None, &[&b64(&counter_mpi(c_a))]));
        let response = Form { kind: "submit".into(), fields }.to_element();
        let form_b = form_content(&response, &["identity", "mac"]);
        out.actions.push(Action::Send(Self::negotiation_stanza(
            from,
            thread,
            el("feature", NS_FEATURE).child(response),
        )));
        let state = BobState {
            thread: thread.to_owned(),
            peer: from.clone(),
            group,
            y,
            d,
            he,
            n_a,
            n_b,
            c_a,
            form_a: form_content(x, &[]),
            form_b,
            stanzas,
        };
        self.negotiations.insert(from.to_bare(), Negotiation::AwaitM3(Box::new(state)));
        Ok(())
    }

    // ---- M2 → M3 (Alice) ----------------------------------------------------------------------

    /// §init-acceptalice-prep, §init-acceptalice-hide, §init-acceptalice-send.
    fn accept(&mut self, cx: &mut Cx<'_>, from: &Jid, x: &Element, out: &mut Output) -> Result<(), E2eError> {
        let peer = from.to_bare();
        let Some(Negotiation::AwaitM2 { thread, dh, n_a, form_a }) = self.negotiations.get(&peer).cloned()
        else {
            return Err(E2eError::Rejected {
                reason: "unexpected",
                detail: "an ESession response we did not ask for".into(),
            });
        };
        let form = Form::parse(x)?;
        if !matches!(form.value("accept")?, "1" | "true") {
            self.negotiations.remove(&peer);
            return Err(E2eError::Rejected {
                reason: "declined",
                detail: format!("{from} declined the ESession"),
            });
        }
        if unb64("nonce", form.value("nonce")?)? != n_a {
            return Err(E2eError::Rejected {
                reason: "bad-nonce",
                detail: "response to another request".into(),
            });
        }
        // Step 1: the options must be ones we offered.
        for (var, ours) in [
            ("crypt_algs", "aes128-ctr"),
            ("hash_algs", "sha256"),
            ("sign_algs", crypto::RSA_SHA256),
            ("sas_algs", "sas28x5"),
            ("init_pubkey", "key"),
            ("resp_pubkey", "key"),
            ("security", "e2e"),
            ("compress", "none"),
            ("ver", "1.0"),
        ] {
            if form.value(var)? != ours {
                return Err(E2eError::Rejected {
                    reason: "not-acceptable",
                    detail: format!("`{var}` we did not offer"),
                });
            }
        }
        let stanzas = stanzas::check_answer(
            &form.field("stanzas").ok_or(E2eError::Missing { what: "stanzas" })?.values,
        )?;
        // §init-online-form: Bob's rekey frequency is at least ours and below 2^32.
        if form.value("rekey_freq")?.trim().parse::<u32>().map_or(true, |f| f < REKEY_FREQ) {
            return Err(E2eError::Rejected {
                reason: "not-acceptable",
                detail: "`rekey_freq` below ours".into(),
            });
        }
        let group: u32 = form
            .value("modp")?
            .trim()
            .parse()
            .map_err(|_| E2eError::Malformed { what: "modp", detail: "not a group number".into() })?;
        let (_, x_secret, e) =
            dh.iter().find(|(g, _, _)| *g == group).cloned().ok_or(E2eError::Rejected {
                reason: "not-acceptable",
                detail: format!("group {group} was not offered"),
            })?;
        let p = crypto::group_prime(group).ok_or(E2eError::Missing { what: "group" })?;
        let d = BigUint::from_bytes_be(&unb64("dhkeys", form.value("dhkeys")?)?);
        check_public("d", &d, p)?;
        let c_a = parse_counter(form.value("counter")?)?;
        let c_b = counter_b(c_a);
        let n_b = unb64("my_nonce", form.value("my_nonce")?)?;
        let form_b = form_content(x, &["identity", "mac"]);
        let k = sha256(&[&mpi(&d.modpow(&x_secret, p))]);
        let (a_keys, _, ks_a, _) = crypto::session_keys(&k);
        // rshashes: our retained secrets for the peer's clients, keyed with N_A, plus random
        // values so an observer cannot tell how many there are.
        let mut rshashes: Vec<String> = self
            .retained
            .get(&peer)
            .map(|m| m.values().map(|rs| b64(&mac_of(&n_a, &[rs]))).collect())
            .unwrap_or_default();
        rshashes.push(b64(&random_vec(cx.rng, 32)));
        rshashes.push(b64(&random_vec(cx.rng, 32)));
        let rs: Vec<&str> = rshashes.iter().map(String::as_str).collect();
        let n_b_b64 = b64(&n_b);
        let e_b64 = b64(&mpi(&e));
        let mut result = Form {
            kind: "result".into(),
            fields: vec![
                Field::values("FORM_TYPE", None, &[FORM_TYPE]),
                Field::values("accept", None, &["1"]),
                Field::values("nonce", None, &[&n_b_b64]),
                Field::values("dhkeys", Some("hidden"), &[&e_b64]),
                Field::values("rshashes", Some("hidden"), &rs),
            ],
        };
        let form_a2 = form_content(&result.to_element(), &[]);
        let identity = self.identity(cx.rng)?;
        let (id_a, m_a, c) = hide_identity(
            &identity,
            &a_keys,
            &ks_a,
            c_a,
            [&n_b, &n_a, &mpi(&e)],
            [&form_a, &form_a2],
            cx.rng,
        );
        result.fields.push(Field::values("identity", None, &[&b64(&id_a)]));
        result.fields.push(Field::values("mac", None, &[&b64(&m_a)]));
        out.actions.push(Action::Send(Self::negotiation_stanza(
            from,
            &thread,
            el("feature", NS_FEATURE).child(result.to_element()),
        )));
        let state = AliceState {
            thread,
            peer: from.clone(),
            group,
            x: x_secret,
            d,
            k,
            n_a,
            n_b,
            c_a: c,
            c_b,
            form_b,
            m_a,
            stanzas,
        };
        self.negotiations.insert(peer, Negotiation::AwaitM4(Box::new(state)));
        Ok(())
    }

    // ---- M3 → M4 (Bob) ------------------------------------------------------------------------

    /// §init-acceptbob-verify, §init-finalbob, §init-acceptbob-send.
    fn finish_bob(
        &mut self,
        cx: &mut Cx<'_>,
        from: &Jid,
        x: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let peer = from.to_bare();
        let Some(Negotiation::AwaitM3(st)) = self.negotiations.get(&peer).cloned() else {
            return Err(E2eError::Rejected {
                reason: "unexpected",
                detail: "an ESession accept we did not ask for".into(),
            });
        };
        let form = Form::parse(x)?;
        if unb64("nonce", form.value("nonce")?)? != st.n_b {
            return Err(E2eError::Rejected {
                reason: "bad-nonce",
                detail: "accept for another response".into(),
            });
        }
        let p = crypto::group_prime(st.group).ok_or(E2eError::Missing { what: "group" })?;
        let e_bytes = unb64("dhkeys", form.value("dhkeys")?)?;
        // The hash commitment: SHA256(e) must be what M1 promised.
        if !equal(&sha256(&[&e_bytes]), &st.he) {
            self.negotiations.remove(&peer);
            return Err(E2eError::Rejected {
                reason: "bad-commitment",
                detail: "e does not match its hash".into(),
            });
        }
        let e = BigUint::from_bytes_be(&e_bytes);
        check_public("e", &e, p)?;
        let k = sha256(&[&mpi(&e.modpow(&st.y, p))]);
        let (a_keys, _, ks_a, _) = crypto::session_keys(&k);
        let id_a = unb64("identity", form.value("identity")?)?;
        let m_a = unb64("mac", form.value("mac")?)?;
        let form_a2 = form_content(x, &["identity", "mac"]);
        let opened = open_identity(
            &a_keys,
            &ks_a,
            st.c_a,
            (&id_a, &m_a, "M_A"),
            [&st.n_b, &st.n_a, &e_bytes],
            [&st.form_a, &form_a2],
        );
        let (pub_a, c_a) = self.negotiation_step(&peer, opened)?;
        let sas = crypto::sas(&m_a, &st.form_b);
        // Retained secrets: find the SRS among the rshashes.
        let rshashes: Vec<Vec<u8>> = form
            .field("rshashes")
            .map(|f| f.values.iter().filter_map(|v| unb64("rshashes", v).ok()).collect())
            .unwrap_or_default();
        let client = st.peer.to_string();
        let srs = self.retained.get(&peer).and_then(|m| {
            m.values()
                .find(|rs| rshashes.iter().any(|h| equal(h, &mac_of(&st.n_a, &[rs.as_slice()]))))
                .copied()
        });
        let chain_broken = srs.is_none() && self.retained.get(&peer).is_some_and(|m| m.contains_key(&client));
        let k_final = match &srs {
            Some(rs) => sha256(&[&k, rs]),
            None => sha256(&[&k]),
        };
        let (fa, fb, _, ks_b) = crypto::session_keys(&k_final);
        let srshash = match &srs {
            Some(rs) => mac_of(rs, &[b"Shared Retained Secret"]),
            None => random_vec(cx.rng, 32),
        };
        let mut m4 = Form {
            kind: "result".into(),
            fields: vec![
                Field::values("FORM_TYPE", None, &[FORM_TYPE]),
                Field::values("nonce", None, &[&b64(&st.n_a)]),
                Field::values("srshash", None, &[&b64(&srshash)]),
            ],
        };
        let form_b2 = form_content(&m4.to_element(), &[]);
        let identity = self.identity(cx.rng)?;
        let (id_b, m_b, c_b) = hide_identity(
            &identity,
            &fb,
            &ks_b,
            counter_b(st.c_a),
            [&st.n_a, &st.n_b, &mpi(&st.d)],
            [&st.form_b, &form_b2],
            cx.rng,
        );
        m4.fields.push(Field::values("identity", None, &[&b64(&id_b)]));
        m4.fields.push(Field::values("mac", None, &[&b64(&m_b)]));
        out.actions.push(Action::Send(Self::negotiation_stanza(
            from,
            &st.thread,
            el("init", NS_INIT).child(m4.to_element()),
        )));
        self.negotiations.remove(&peer);
        self.observe_key(&peer, &pub_a, out);
        let session = Session {
            thread: st.thread.clone(),
            peer: from.clone(),
            group: st.group,
            own_secret: st.y.clone(),
            peer_public: e,
            send: fb,
            recv: fa,
            old_recv: None,
            send_ctr: c_b,
            recv_ctr: c_a,
            sent_since_rekey: 0,
            rekey_freq: form_rekey_freq(&st.form_b),
            keys_received: 0,
            sas,
            verified: false,
            chain_broken,
            their_key: pub_a,
            initiator: false,
            seen_macs: VecDeque::new(),
            skip: None,
            offline: false,
            stanzas: st.stanzas.clone(),
        };
        // The new retained secret replaces the old one for this client, once the session is
        // accepted (§init-finalbob, §init-finalalice).
        if self.established(peer.clone(), session, out) {
            self.retained
                .entry(peer)
                .or_default()
                .insert(client, hmac_sha256(&k_final, &[b"New Retained Secret"]));
        }
        Ok(())
    }

    // ---- M4 (Alice) ---------------------------------------------------------------------------

    /// §init-finalalice, §init-complete-verify.
    fn finish_alice(&mut self, from: &Jid, x: &Element, out: &mut Output) -> Result<(), E2eError> {
        let peer = from.to_bare();
        let Some(Negotiation::AwaitM4(st)) = self.negotiations.get(&peer).cloned() else {
            return Err(E2eError::Rejected {
                reason: "unexpected",
                detail: "an ESession identity we did not ask for".into(),
            });
        };
        let form = Form::parse(x)?;
        if unb64("nonce", form.value("nonce")?)? != st.n_a {
            return Err(E2eError::Rejected {
                reason: "bad-nonce",
                detail: "identity for another request".into(),
            });
        }
        let srshash = unb64("srshash", form.value("srshash")?)?;
        let srs = self.retained.get(&peer).and_then(|m| {
            m.values()
                .find(|rs| equal(&mac_of(rs.as_slice(), &[b"Shared Retained Secret"]), &srshash))
                .copied()
        });
        let k_final = match &srs {
            Some(rs) => sha256(&[&st.k, rs]),
            None => sha256(&[&st.k]),
        };
        let (fa, fb, _, ks_b) = crypto::session_keys(&k_final);
        let id_b = unb64("identity", form.value("identity")?)?;
        let m_b = unb64("mac", form.value("mac")?)?;
        let form_b2 = form_content(x, &["identity", "mac"]);
        let opened = open_identity(
            &fb,
            &ks_b,
            st.c_b,
            (&id_b, &m_b, "M_B"),
            [&st.n_a, &st.n_b, &mpi(&st.d)],
            [&st.form_b, &form_b2],
        );
        let (pub_b, c_b) = self.negotiation_step(&peer, opened)?;
        let client = st.peer.to_string();
        let chain_broken = srs.is_none() && self.retained.get(&peer).is_some_and(|m| m.contains_key(&client));
        self.negotiations.remove(&peer);
        self.observe_key(&peer, &pub_b, out);
        let session = Session {
            thread: st.thread.clone(),
            peer: from.clone(),
            group: st.group,
            own_secret: st.x.clone(),
            peer_public: st.d.clone(),
            send: fa,
            recv: fb,
            old_recv: None,
            send_ctr: st.c_a,
            recv_ctr: c_b,
            sent_since_rekey: 0,
            rekey_freq: form_rekey_freq(&st.form_b),
            keys_received: 0,
            sas: crypto::sas(&st.m_a, &st.form_b),
            verified: false,
            chain_broken,
            their_key: pub_b,
            initiator: true,
            seen_macs: VecDeque::new(),
            skip: None,
            offline: false,
            stanzas: st.stanzas.clone(),
        };
        // The new retained secret replaces the old one for this client, once the session is
        // accepted (§init-finalbob, §init-finalalice).
        if self.established(peer.clone(), session, out) {
            self.retained
                .entry(peer)
                .or_default()
                .insert(client, hmac_sha256(&k_final, &[b"New Retained Secret"]));
        }
        Ok(())
    }

    fn observe_key(&mut self, peer: &BareJid, key_value: &str, out: &mut Output) {
        let known = self.keys.entry(peer.clone()).or_default();
        if known.contains_key(key_value) {
            return;
        }
        // §sec-associations: a JID with a stored key that now uses another MUST alert.
        if !known.is_empty() {
            out.events.push(Event::Alert {
                reason: "key-changed",
                detail: format!("{peer} presents a public key never seen before"),
            });
        }
        known.insert(key_value.to_owned(), Trust::Unverified);
        out.events.push(Event::TrustChanged {
            peer: peer.clone(),
            device: "esession".into(),
            fingerprint: hex(&crypto::fingerprint(key_value)),
            trust: Trust::Unverified,
        });
    }

    /// Makes the session current, unless its key failed a SAS before; returns whether it did.
    fn established(&mut self, peer: BareJid, session: Session, out: &mut Output) -> bool {
        // A key whose SAS failed before (someone in the middle) gets no session again.
        if self.keys.get(&peer).and_then(|k| k.get(&session.their_key)) == Some(&Trust::Untrusted) {
            out.events.push(Event::Alert {
                reason: "untrusted-key",
                detail: format!(
                    "{} presents a key whose SAS did not match before: no session, nothing sent",
                    session.peer
                ),
            });
            return false;
        }
        out.events.push(Event::Alert {
            reason: "esession",
            detail: format!(
                "encrypted session with {} (thread {}), SAS {}",
                session.peer, session.thread, session.sas
            ),
        });
        if session.chain_broken {
            // §init-sas: "they SHOULD confirm out-of-band that their SAS match as soon as they
            // realise that the two clients have no retained secret in common".
            out.events.push(Event::Alert {
                reason: "retained-secret-lost",
                detail: format!(
                    "{} shares none of the secrets retained from our last ESession with it: compare the SAS {}; until then its messages show as untrusted",
                    session.peer, session.sas
                ),
            });
        }
        self.sessions.insert(peer.clone(), session);
        for item in self.stored.remove(&peer).unwrap_or_default() {
            if let Err(e) = self.send_in_session(&peer, &item, None, out) {
                out.events.push(Event::Alert { reason: "not-sent", detail: e.to_string() });
            }
        }
        true
    }

    /// [`Engine::receive`]'s work; what it pushes to `out` before an error still goes out.
    fn receive_stanza(&mut self, cx: &mut Cx<'_>, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        let kind = Kind::of(stanza);
        if kind == Some(Kind::Iq) && stanza.attr("type") == Some("result") && !stanza.has_child("c", NS_C) {
            return self.pep_result(cx, stanza, out);
        }
        if stanza.attr("type") == Some("error") {
            return Ok(());
        }
        if matches!(kind, Some(Kind::Presence | Kind::Iq)) {
            return self.receive_other(stanza, out);
        }
        if kind != Some(Kind::Message) {
            return Ok(());
        }
        let from: Jid = sender(stanza)?;
        let thread = stanza.get_child("thread", NS_CLIENT).map(Element::text).unwrap_or_default();
        let esession = stanza.has_child("feature", NS_FEATURE)
            || stanza.has_child("init", NS_INIT)
            || stanza.has_child("c", NS_C);
        if esession {
            // The peer writes: it is online, and the options it left are no longer for us
            // (XEP-0187 §terminate).
            self.peer_options.remove(&from.to_bare());
        }
        if let Some(x) = stanza.get_child("feature", NS_FEATURE).and_then(|f| f.get_child("x", NS_DATA)) {
            if Form::parse(x)?.value("FORM_TYPE").ok() != Some(FORM_TYPE) {
                return Ok(());
            }
            match x.attr("type") {
                Some("form") => self.respond(cx, &from, &thread, x, out)?,
                Some("submit") => self.accept(cx, &from, x, out)?,
                Some("result") => self.finish_bob(cx, &from, x, out)?,
                other => {
                    return Err(E2eError::Malformed { what: "form", detail: format!("form type {other:?}") });
                }
            }
            return Ok(());
        }
        if let Some(x) = stanza.get_child("init", NS_INIT).and_then(|i| i.get_child("x", NS_DATA)) {
            // XEP-0187 §init-offline-start: an offline ESession's form is a `submit`; Bob's
            // final online message (§init-acceptbob-send) a `result`.
            if x.attr("type") == Some("submit") {
                return self.accept_offline(cx, &from, &thread, stanza, x, out);
            }
            self.finish_alice(&from, x, out)?;
            return Ok(());
        }
        if let Some(c) = stanza.get_child("c", NS_C) {
            return self.decrypt(&from, &thread, stanza, c, out);
        }
        if let Some(body) = stanza.get_child("body", NS_CLIENT) {
            out.unencrypted(from, body, "outside an ESession");
        }
        Ok(())
    }

    /// XEP-0200 §content: a presence or iq whose content is encrypted, from the device of one
    /// of our ESessions. An iq request is answered as the client answers a payload it does
    /// not process (RFC 6120 §8.4, `service-unavailable`): the engine shows the payload to
    /// the user and processes nothing; the error carries no content to encrypt (§content: an
    /// `<error/>` is never encrypted).
    fn receive_other(&mut self, stanza: &Element, out: &mut Output) -> Result<(), E2eError> {
        let Some(c) = stanza.get_child("c", NS_C) else { return Ok(()) };
        let from: Jid = sender(stanza)?;
        // The peer writes: it is online (XEP-0187 §terminate).
        self.peer_options.remove(&from.to_bare());
        let thread = self.thread_with(&from).unwrap_or_default();
        let read = self.decrypt(&from, &thread, stanza, c, out);
        let request = matches!(stanza.attr("type"), Some("get" | "set"));
        if stanza.name() == "iq" && request && read.is_ok() {
            out.actions.push(Action::Send(iq_refusal(&from, stanza)));
        }
        read
    }

    // ---- XEP-0200 -----------------------------------------------------------------------------

    /// §encrypt in the session with `peer`, as a message stanza to the peer, with a rekey
    /// (§rekey-init) when an RNG is given.
    fn encrypt_content(
        &mut self,
        peer: &BareJid,
        content: &str,
        rekey_rng: Option<&mut dyn RngCore>,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let s = self.sessions.get_mut(peer).ok_or(E2eError::Missing { what: "ESession" })?;
        let c = seal(s, content, rekey_rng)?;
        out.actions.push(Action::Send(session_message(s, vec![c])));
        Ok(())
    }

    /// XEP-0200 §send: `item` encrypted in the session with `peer` (its content in place of
    /// the original, §content), as the stanza of its type to the peer's device — the one the
    /// ESession was negotiated with: XEP-0200 covers "one-to-one" stanzas — with a rekey
    /// (§rekey-init) when an RNG is given. A stanza type the session did not agree on
    /// (XEP-0116 'stanzas'), or an iq or presence for another device of the peer, is not sent
    /// (alert `not-sent`): never in clear.
    fn send_in_session(
        &mut self,
        peer: &BareJid,
        item: &Outgoing,
        rekey_rng: Option<&mut dyn RngCore>,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let s = self.sessions.get_mut(peer).ok_or(E2eError::Missing { what: "ESession" })?;
        let kind = item.kind();
        let not_sent = |detail: String| Event::Alert { reason: crate::reason::NOT_SENT.code, detail };
        if !s.stanzas.contains(&kind) {
            out.events.push(not_sent(format!(
                "the ESession with {} encrypts no {kind} stanzas (XEP-0116 `stanzas`): the {kind} is not sent",
                s.peer
            )));
            return Ok(());
        }
        let addressed = match item {
            Outgoing::Message(_) => None,
            Outgoing::Directed(d) => Some(d.addressee()),
        };
        if let Some(to) = addressed.filter(|to| to.resource().is_some() && *to != s.peer) {
            out.events.push(not_sent(format!(
                "the ESession with {peer} is with {}, not {to}: the {kind} is not sent",
                s.peer
            )));
            return Ok(());
        }
        let c = seal(s, &item.content(), rekey_rng)?;
        let stanza = match kind {
            Kind::Message => session_message(s, vec![c]),
            Kind::Presence => el("presence", NS_CLIENT).with("to", s.peer.to_string()).child(c),
            Kind::Iq => el("iq", NS_CLIENT).with("type", "set").with("to", s.peer.to_string()).child(c),
        };
        out.actions.push(Action::Send(stanza));
        Ok(())
    }

    /// Sends `item` to `to`: in the ESession with it, or once one is negotiated (never in
    /// clear).
    fn send_item(&mut self, cx: &mut Cx<'_>, to: &BareJid, item: Outgoing) -> Result<Output, E2eError> {
        let mut out = Output::default();
        if self.sessions.get(to).is_some_and(|s| s.offline) {
            // XEP-0187 §exchange: "she MUST terminate the offline ESession and start a new
            // online ESession first".
            self.end_offline(to, &mut out);
        }
        if let Some(s) = self.sessions.get(to) {
            // §rekey: every `rekey_freq` stanzas (at most as often as negotiated).
            let due = s.initiator && s.old_recv.is_none() && s.sent_since_rekey + 1 >= s.rekey_freq;
            let rng: Option<&mut dyn RngCore> = if due { Some(&mut *cx.rng) } else { None };
            self.send_in_session(to, &item, rng, &mut out)?;
            return Ok(out);
        }
        // No session: store what the user sent and negotiate one (never send in clear).
        self.stored.entry(to.clone()).or_default().push(item);
        if self.peer_options.get(to).is_some_and(|o| o.usable(cx.now)) {
            // XEP-0187: the peer is offline and its options are known.
            self.send_offline(cx, to, &mut out);
            return Ok(out);
        }
        self.peer_options.remove(to);
        if !self.negotiations.contains_key(to) {
            self.request(cx, to, &mut out);
        }
        // XEP-0187 §init-offline-request: if the peer is offline, its options say so.
        self.look_up(to, &mut out);
        Ok(out)
    }

    /// The thread of our ESession with the device `from` (current, or closing): XEP-0200 names
    /// no thread for presence and iq stanzas (§content's presence example carries none, RFC
    /// 6121 gives them none), so theirs is the one-to-one session between the two devices.
    fn thread_with(&self, from: &Jid) -> Option<String> {
        let peer = from.to_bare();
        [self.sessions.get(&peer), self.closing.get(&peer)]
            .into_iter()
            .flatten()
            .find(|s| s.peer == *from)
            .map(|s| s.thread.clone())
    }

    /// §decrypt: an XEP-0200 stanza from `from` on `thread`.
    ///
    /// Which session it belongs to is its thread's (XEP-0155 §terminate: the session is named by
    /// its `<thread/>`; XEP-0200 §content leaves the thread in clear for that routing): a stanza
    /// of another thread — a session that ended, or a replay from one — leaves the current
    /// session alone. A stanza whose MAC this session already accepted is a replay (§sec-replay:
    /// the counters make every MAC of a session different) and is refused without ending
    /// anything: it is no tampered content. Any other MAC that fails, or content that does not
    /// parse, ends the session as §decrypt requires ("Bob MUST terminate the encrypted
    /// session"), and terminating is XEP-0116 §terminate: an encrypted `terminate` form tells
    /// the peer, whose client sees it; we may also send §decrypt's `not-acceptable` error. Until
    /// the peer's acknowledgement comes, what the peer sent before it saw the termination is
    /// still read.
    fn decrypt(
        &mut self,
        from: &Jid,
        thread: &str,
        stanza: &Element,
        c: &Element,
        out: &mut Output,
    ) -> Result<(), E2eError> {
        let peer = from.to_bare();
        let sealed = Sealed::read(c)?;
        let live = self.sessions.get(&peer).is_some_and(|s| s.thread == thread);
        let closing = !live && self.closing.get(&peer).is_some_and(|s| s.thread == thread);
        if !live && !closing {
            let ended = self.ended.iter().any(|(p, t)| *p == peer && t == thread);
            if !ended {
                // Nothing the sender could know of ended here: tell it its stanza was not read.
                out.actions.push(Action::Send(not_acceptable(from, thread, stanza)));
            }
            return Err(E2eError::Rejected {
                reason: "no-session",
                detail: if ended {
                    format!("an encrypted stanza from {from} in an ESession that has ended")
                } else {
                    format!("an encrypted stanza from {from} outside an ESession")
                },
            });
        }
        let s = if live { self.sessions.get_mut(&peer) } else { self.closing.get_mut(&peer) };
        let Some(s) = s else { return Err(E2eError::Missing { what: "ESession" }) };
        if s.seen_macs.iter().any(|m| equal(m, &sealed.mac)) {
            return Err(E2eError::Rejected {
                reason: "replayed-stanza",
                detail: format!("{from} sent this stanza before (the ESession goes on)"),
            });
        }
        let mut read = Err(Unreadable::Mac);
        for at in [Some(s.recv_ctr), s.skip.filter(|_| closing)].into_iter().flatten() {
            read = open(s, &sealed, at);
            if !matches!(read, Err(Unreadable::Mac)) {
                break;
            }
        }
        match read {
            Ok(opened) => {
                s.consumed(&sealed.mac, opened.counter);
                let kind = Kind::of(stanza).unwrap_or(Kind::Message);
                if !s.stanzas.contains(&kind) {
                    // XEP-0116 §init-complete-verify: only the stanza types agreed upon. The
                    // counter moved on (the session goes on); the sender is told, as §decrypt
                    // allows for content it refuses (an iq request must be answered anyway).
                    out.actions.push(Action::Send(not_acceptable(from, thread, stanza)));
                    return Err(E2eError::Rejected {
                        reason: "not-acceptable",
                        detail: format!("{from} encrypted a {kind} stanza: the ESession agreed on none"),
                    });
                }
                if live {
                    self.read_live(from, kind, opened, out);
                } else {
                    self.read_closing(from, kind, &opened, out);
                }
                Ok(())
            }
            Err(Unreadable::Content(error, counter)) => {
                // Authenticated, but unusable: §decrypt step 6 ("If the parser returns an XML
                // format error then Bob MUST terminate").
                s.consumed(&sealed.mac, counter);
                if live {
                    self.end_after_fault(&peer, None, out);
                } else {
                    self.closing.remove(&peer);
                    self.remember_ended(peer, thread);
                }
                out.actions.push(Action::Send(not_acceptable(from, thread, stanza)));
                Err(error)
            }
            Err(Unreadable::Mac) => {
                let refused = not_acceptable(from, thread, stanza);
                if live {
                    // A stanza whose data was changed in place keeps its length: the peer's
                    // next one starts that many blocks on (read only until the acknowledgement).
                    let skip = sealed.blocks.and_then(|b| self.sessions.get(&peer).map(|s| s.recv_ctr.wrapping_add(b)));
                    self.end_after_fault(&peer, skip, out);
                    out.actions.push(Action::Send(refused));
                    return Err(E2eError::Rejected {
                        reason: "bad-mac",
                        detail: format!(
                            "XEP-0200 stanza MAC: the ESession is over (§decrypt) and {from} is told (XEP-0116 §terminate)"
                        ),
                    });
                }
                out.actions.push(Action::Send(refused));
                Err(E2eError::Rejected {
                    reason: "bad-mac",
                    detail: format!("XEP-0200 stanza MAC, after the end of the ESession: {from}'s stanza is not read"),
                })
            }
        }
    }

    /// An authenticated stanza of a current session: §rekey-accept, §terminate, or content.
    fn read_live(&mut self, from: &Jid, kind: Kind, mut opened: Opened, out: &mut Output) {
        let peer = from.to_bare();
        let Some(s) = self.sessions.get_mut(&peer) else { return };
        if opened.newest {
            // The peer uses our newest keys: older ones can go.
            s.old_recv = None;
        }
        // §rekey-accept: a new e from the peer; with one key set, both directions change.
        if let Some((e, (theirs, mine))) = opened.rekey.take() {
            s.recv = theirs;
            s.send = mine;
            s.peer_public = e;
            s.keys_received += 1;
        }
        let trust = s.trust();
        if let Some(request) = termination(&opened.text) {
            // §terminate: the MAC verified, so every stanza of the session arrived; a request is
            // acknowledged at once, encrypted, and then the keys go. An offline ESession is not
            // acknowledged (XEP-0187 §terminate: "SHOULD NOT send a termination stanza back").
            if request && !s.offline {
                let ack = seal(s, &terminate_form("result"), None);
                if let Ok(c) = ack {
                    out.actions.push(Action::Send(session_message(s, vec![c])));
                }
            }
            let thread = s.thread.clone();
            self.sessions.remove(&peer);
            self.remember_ended(peer, &thread);
            out.events.push(Event::Alert {
                reason: "esession-terminated",
                detail: format!("{from} ended the ESession"),
            });
            return;
        }
        opened.show(from, kind, trust, out);
    }

    /// An authenticated stanza of a session we ended, before the peer's acknowledgement: the
    /// acknowledgement (or the peer's own termination, crossing ours) closes it; a message the
    /// peer sent before it saw our termination is still shown.
    fn read_closing(&mut self, from: &Jid, kind: Kind, opened: &Opened, out: &mut Output) {
        let peer = from.to_bare();
        let Some(s) = self.closing.get(&peer) else { return };
        if termination(&opened.text).is_some() {
            let thread = s.thread.clone();
            self.closing.remove(&peer);
            self.remember_ended(peer, &thread);
            out.events.push(Event::Alert {
                reason: "esession-terminated",
                detail: format!("{from} acknowledged the end of the ESession"),
            });
            return;
        }
        let trust = s.trust();
        opened.show(from, kind, trust, out);
    }

    /// XEP-0200 §decrypt's MUST, carried out as XEP-0116 §terminate: an encrypted `terminate`
    /// form to the peer (our sending keys are intact), then only what verifies the peer's last
    /// stanzas is kept (`skip`: where the peer's next stanza starts if the refused one was its
    /// own, changed in place). An offline ESession we received is not ours to send in (XEP-0187
    /// §exchange): its keys just go.
    fn end_after_fault(&mut self, peer: &BareJid, skip: Option<u128>, out: &mut Output) {
        let Some(mut s) = self.sessions.remove(peer) else { return };
        if s.offline {
            self.remember_ended(peer.clone(), &s.thread);
            return;
        }
        if let Ok(c) = seal(&mut s, &terminate_form("submit"), None) {
            out.actions.push(Action::Send(session_message(&s, vec![c])));
        }
        s.skip = skip;
        self.closing.insert(peer.clone(), s);
    }

    /// XEP-0187 §exchange: an offline ESession the peer started is ended before we write to it:
    /// a termination in it (the only stanza we send in it), then its keys go; no
    /// acknowledgement is awaited (§terminate).
    fn end_offline(&mut self, peer: &BareJid, out: &mut Output) {
        let Some(mut s) = self.sessions.remove(peer) else { return };
        if let Ok(c) = seal(&mut s, &terminate_form("submit"), None) {
            out.actions.push(Action::Send(session_message(&s, vec![c])));
        }
        self.remember_ended(peer.clone(), &s.thread);
    }

    /// Remembers that the session on `thread` with `peer` ended, so that its leftovers (and
    /// replays of it) are told apart from stanzas of a session we never had.
    fn remember_ended(&mut self, peer: BareJid, thread: &str) {
        if self.ended.len() >= MAX_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back((peer, thread.to_owned()));
    }

    /// §terminate: an encrypted `terminate` form; the session is over on our side.
    pub fn terminate(&mut self, peer: &BareJid) -> Result<Output, E2eError> {
        let mut out = Output::default();
        self.encrypt_content(peer, &terminate_form("submit"), None, &mut out)?;
        if let Some(session) = self.sessions.remove(peer) {
            self.closing.insert(peer.clone(), session);
        }
        Ok(out)
    }
}

/// At most this many MACs of accepted stanzas are kept per session to recognise replays.
const MAX_SEEN_MACS: usize = 256;
/// At most this many ended sessions are remembered (their leftovers are not answered).
const MAX_ENDED: usize = 64;

/// What an ESession request offers (XEP-0116 §init-request), in the form's order: the policy
/// fields, then the algorithms. XEP-0187's offline options offer the same
/// (§init-offline-publish: "in exactly the same way as … an online ESession request").
pub(super) fn offered_options(groups: &[&str]) -> Vec<Field> {
    vec![
        Field::options("logging", "list-single", &["mustnot", "may"], true),
        Field::options("disclosure", "list-single", &["never"], true),
        Field::options("security", "list-single", &["e2e"], true),
        Field::options("modp", "list-single", groups, false),
        Field::options("crypt_algs", "list-single", &["aes128-ctr"], false),
        Field::options("hash_algs", "list-single", &["sha256"], false),
        Field::options("sign_algs", "list-single", &[crypto::RSA_SHA256], false),
        Field::options("compress", "list-single", &["none"], false),
        Field::options("stanzas", "list-multi", &stanzas::offered_names(), false),
    ]
}

impl Session {
    /// The trust its messages show: verified by the SAS, untrusted when it broke the chain
    /// of retained secrets (until verified), unverified otherwise.
    pub(super) fn trust(&self) -> Trust {
        match (self.verified, self.chain_broken) {
            (true, _) => Trust::Verified,
            (false, true) => Trust::Untrusted,
            (false, false) => Trust::Unverified,
        }
    }

    /// A stanza was read: the counter moves on and its MAC is remembered (replays).
    fn consumed(&mut self, mac: &[u8], counter: u128) {
        self.recv_ctr = counter;
        self.skip = None;
        if self.seen_macs.len() >= MAX_SEEN_MACS {
            self.seen_macs.pop_front();
        }
        self.seen_macs.push_back(mac.to_vec());
    }
}

/// §encrypt: `<c><data/>[<key/>][<new/>]<mac/></c>` under the session's sending keys, with a
/// rekey (§rekey-init) when an RNG is given.
fn seal(s: &mut Session, content: &str, rekey_rng: Option<&mut dyn RngCore>) -> Result<Element, E2eError> {
    let c_before = s.send_ctr;
    let mut data = content.as_bytes().to_vec();
    ctr(&s.send.kc, &mut s.send_ctr, &mut data);
    let data_b64 = b64(&data);
    let mut m_content = format!("<data>{data_b64}</data>");
    let mut c = el("c", NS_C).child(text_el("data", NS_C, data_b64));
    let mut new_keys = None;
    if let Some(rng) = rekey_rng {
        let p = crypto::group_prime(s.group).ok_or(E2eError::Missing { what: "group" })?;
        let x = crypto::secret_exponent(rng);
        let e = BigUint::from(2u32).modpow(&x, p);
        let k = s.peer_public.modpow(&x, p);
        let key = b64(&mpi(&e));
        m_content.push_str(&format!("<key>{key}</key>"));
        c.append_child(text_el("key", NS_C, key));
        new_keys = Some((x, crypto::rekey_keys(&k)));
    }
    if s.keys_received > 0 {
        m_content.push_str(&format!("<new>{}</new>", s.keys_received));
        c.append_child(text_el("new", NS_C, s.keys_received.to_string()));
        s.keys_received = 0;
    }
    let a_mac = mac_of(&s.send.km, &[m_content.as_bytes(), &counter_mpi(c_before)]);
    c.append_child(text_el("mac", NS_C, b64(&a_mac)));
    s.sent_since_rekey += 1;
    if let Some((x, (mine, theirs))) = new_keys {
        // The stanza carrying <key/> went out under the old keys; from now on ours are new,
        // and the old receiving keys stay until the peer uses the new ones.
        s.own_secret = x;
        s.send = mine;
        s.old_recv = Some(s.recv);
        s.recv = theirs;
        s.sent_since_rekey = 0;
    }
    Ok(c)
}

/// §send: the message stanza of a session, `children` (the `<c/>`, after an offline
/// ESession's `<init/>`) after its `<thread/>`, and `<private/>` (XEP-0280) so carbons do not
/// copy what no other resource can read.
fn session_message(s: &Session, children: Vec<Element>) -> Element {
    let mut m = el("message", NS_CLIENT)
        .with("to", s.peer.to_string())
        .with("type", "chat")
        .child(text_el("thread", NS_CLIENT, s.thread.clone()));
    for c in children {
        m.append_child(c);
    }
    m.child(el("private", NS_CARBONS))
}

/// XEP-0200 §decrypt's `not-acceptable` error for a stanza we could not read (RFC 6120 §8.3:
/// a stanza of the same kind, the same id, back to the sender; a message's thread names the
/// session).
fn not_acceptable(to: &Jid, thread: &str, stanza: &Element) -> Element {
    let kind = Kind::of(stanza).unwrap_or(Kind::Message);
    let mut m = error_reply(kind, to, stanza);
    if kind == Kind::Message {
        m.append_child(text_el("thread", NS_CLIENT, thread));
    }
    m.child(el("error", NS_CLIENT).with("type", "cancel").child(el("not-acceptable", NS_STANZAS)))
}

/// RFC 6120 §8.4: the `service-unavailable` answer to an iq request whose payload nothing
/// here processes (the clear payload would get the same from the client).
fn iq_refusal(to: &Jid, stanza: &Element) -> Element {
    error_reply(Kind::Iq, to, stanza)
        .child(el("error", NS_CLIENT).with("type", "cancel").child(el("service-unavailable", NS_STANZAS)))
}

/// An error stanza of `kind` answering `stanza` (RFC 6120 §8.3: the same id), without its
/// `<error/>`.
fn error_reply(kind: Kind, to: &Jid, stanza: &Element) -> Element {
    let mut m = el(kind.name(), NS_CLIENT).with("to", to.to_string()).with("type", "error");
    if let Some(id) = stanza.attr("id") {
        m.set("id", id);
    }
    m
}

/// The parts of a received `<c/>`: its MAC, the normalized content the MAC covers, and how
/// many cipher blocks its data fills.
struct Sealed<'a> {
    c: &'a Element,
    mac: Vec<u8>,
    m_content: String,
    blocks: Option<u128>,
}

impl<'a> Sealed<'a> {
    fn read(c: &'a Element) -> Result<Sealed<'a>, E2eError> {
        // The MAC covers names and text only: anything else in <c/> would be unauthenticated.
        for child in c.children() {
            if child.ns() != NS_C || child.attrs().iter().next().is_some() || child.children().next().is_some() {
                return Err(E2eError::Malformed {
                    what: "c",
                    detail: format!("<{}/> is not a plain XEP-0200 child", child.name()),
                });
            }
        }
        let mac = unb64("mac", &c.get_child("mac", NS_C).ok_or(E2eError::Missing { what: "mac" })?.text())?;
        let mut m_content = String::new();
        for child in c.children().filter(|ch| ch.name() != "mac") {
            m_content.push_str(&format!("<{0}>{1}</{0}>", child.name(), escape(&child.text())));
        }
        let blocks = c
            .get_child("data", NS_C)
            .and_then(|d| unb64("data", &d.text()).ok())
            .map(|d| d.len().div_ceil(16).max(1) as u128);
        Ok(Sealed { c, mac, m_content, blocks })
    }
}

/// What reading a `<c/>` gave.
struct Opened {
    /// The receiving counter after it.
    counter: u128,
    /// The decrypted content.
    text: String,
    /// Its `<body/>`.
    body: Option<String>,
    /// Its elements (none for an SSN form: a termination).
    children: Vec<Element>,
    /// A `<key/>`: the peer's new public value and the keys it makes.
    rekey: Option<(BigUint, (Keys, Keys))>,
    /// Whether it came under our newest receiving keys.
    newest: bool,
}

impl Opened {
    /// What the user is shown of an authenticated `kind` stanza: a message's body, then the
    /// parts of any stanza (XEP-0210 §4.1), as [`Event::Parts`].
    fn show(&self, from: &Jid, kind: Kind, trust: Trust, out: &mut Output) {
        // XEP-0200's MAC covers the content, not the stanza around it: content that cannot be
        // the kind it arrived in was moved there (a server putting a message's `<c/>` in a
        // presence): refused, nothing shown.
        if let Err(error) = stanzas::fits(kind, &self.children) {
            out.events.push(Event::Rejected { from: from.clone(), error });
            return;
        }
        if let (Kind::Message, Some(body)) = (kind, &self.body) {
            let body = body.clone();
            out.events.push(Event::Plaintext { from: from.clone(), body, trust, delay: None, carbon: None });
        }
        let parts = stanzas::parts(kind, &self.children);
        if !parts.is_empty() {
            out.events.push(Event::Parts { from: from.clone(), stanza: kind.name(), parts });
        }
    }
}

/// Why a `<c/>` could not be read.
enum Unreadable {
    /// The MAC does not verify under the session's receiving keys at that counter.
    Mac,
    /// The MAC verified (the counter after it is given) but the content is unusable.
    Content(E2eError, u128),
}

/// §decrypt steps 2–6 for the session's receiving keys at counter `at`; the session is not
/// changed.
fn open(s: &Session, sealed: &Sealed<'_>, at: u128) -> Result<Opened, Unreadable> {
    let expected = |k: &Keys| mac_of(&k.km, &[sealed.m_content.as_bytes(), &counter_mpi(at)]);
    let (keys, newest) = if equal(&expected(&s.recv), &sealed.mac) {
        (s.recv, true)
    } else {
        match s.old_recv {
            Some(old) if equal(&expected(&old), &sealed.mac) => (old, false),
            _ => return Err(Unreadable::Mac),
        }
    };
    let mut counter = at;
    let decoded = (|| {
        let mut data = match sealed.c.get_child("data", NS_C) {
            Some(d) => unb64("data", &d.text())?,
            None => Vec::new(),
        };
        ctr(&keys.kc, &mut counter, &mut data);
        let rekey = match sealed.c.get_child("key", NS_C) {
            Some(key) => {
                let p = crypto::group_prime(s.group).ok_or(E2eError::Missing { what: "group" })?;
                let e = BigUint::from_bytes_be(&unb64("key", &key.text())?);
                check_public("rekey e", &e, p)?;
                let k = e.modpow(&s.own_secret, p);
                Some((e, crypto::rekey_keys(&k)))
            }
            None => None,
        };
        let text =
            String::from_utf8(data).map_err(|e| E2eError::Malformed { what: "content", detail: e.to_string() })?;
        let children = if text.starts_with("<feature>") { Vec::new() } else { parse_content(&text)? };
        Ok::<_, E2eError>((rekey, text, children))
    })();
    match decoded {
        Ok((rekey, text, children)) => {
            let body = children.iter().find(|c| c.is("body", NS_CLIENT)).map(Element::text);
            Ok(Opened { counter, text, body, children, rekey, newest })
        }
        Err(e) => Err(Unreadable::Content(e, counter)),
    }
}

/// Whether decrypted content is an SSN termination form (XEP-0155 §terminate) as
/// [`terminate_form`] writes it: `Some(true)` for a request, `Some(false)` for an
/// acknowledgement.
fn termination(text: &str) -> Option<bool> {
    let terminate = ["1", "true"]
        .iter()
        .any(|v| text.contains(&format!("<field var=\"terminate\"><value>{v}</value></field>")));
    if !text.starts_with("<feature>") || !terminate {
        return None;
    }
    Some(text.starts_with("<feature><x type=\"submit\">"))
}

/// §init-hide for the side that proves itself: `mac = HMAC(KS, nonces | DH value | pubKey |
/// forms)`, signed; `ID = CIPHER(KC, C, pubKey | sign)`; `M = HMAC(KM, C | ID)`. Returns ID,
/// M and the counter after ID.
fn hide_identity(
    identity: &Identity,
    keys: &Keys,
    ks: &[u8; 32],
    counter: u128,
    head: [&[u8]; 3],
    forms: [&[u8]; 2],
    rng: &mut dyn RngCore,
) -> (Vec<u8>, Vec<u8>, u128) {
    let key_value = identity.key_value();
    let mac = mac_of(ks, &[head[0], head[1], head[2], key_value.as_bytes(), forms[0], forms[1]]);
    let sign = identity.sign(&mac, rng);
    let mut id = format!("{key_value}{sign}").into_bytes();
    let mut after = counter;
    ctr(&keys.kc, &mut after, &mut id);
    let m = mac_of(&keys.km, &[&counter_mpi(counter), &id]);
    (id, m, after)
}

/// §init-online-bobid / §init-acceptbob-verify, the mirror of [`hide_identity`]: checks M,
/// decrypts ID from the counter, recomputes the SIGMA MAC over the received `<KeyValue/>` and
/// verifies the signature. Returns the key and the counter after ID.
fn open_identity(
    keys: &Keys,
    ks: &[u8; 32],
    counter: u128,
    (id, m, what): (&[u8], &[u8], &'static str),
    head: [&[u8]; 3],
    forms: [&[u8]; 2],
) -> Result<(String, u128), E2eError> {
    if !equal(&mac_of(&keys.km, &[&counter_mpi(counter), id]), m) {
        return Err(E2eError::Rejected { reason: "bad-mac", detail: what.into() });
    }
    let mut plain = id.to_vec();
    let mut after = counter;
    ctr(&keys.kc, &mut after, &mut plain);
    let plain = String::from_utf8(plain)
        .map_err(|e| E2eError::Malformed { what: "identity", detail: e.to_string() })?;
    let split = plain.find("<SignatureValue>").unwrap_or(plain.len());
    let mac = mac_of(ks, &[head[0], head[1], head[2], &plain.as_bytes()[..split], forms[0], forms[1]]);
    Ok((crypto::verify_identity(&plain, &mac)?, after))
}

/// The SSN termination form (XEP-0155 §terminate), as encrypted content: `submit` to end,
/// `result` to acknowledge.
fn terminate_form(kind: &str) -> String {
    let form = Form {
        kind: kind.into(),
        fields: vec![
            Field::values("FORM_TYPE", None, &[FORM_TYPE]),
            Field::values("terminate", None, &["1"]),
        ],
    };
    let mut content = String::from("<feature>");
    forms::normalize(&form.to_element(), &mut content);
    content.push_str("</feature>");
    content
}

fn form_rekey_freq(form_b: &[u8]) -> u32 {
    let s = String::from_utf8_lossy(form_b);
    s.split("<field var=\"rekey_freq\"><value>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(REKEY_FREQ)
}

/// Parses decrypted content as stanza children in `jabber:client` (XEP-0200 §decrypt step 6).
/// The content comes from the peer, who may be the attacker: its nesting is checked before
/// the recursive parser sees it.
fn parse_content(text: &str) -> Result<Vec<Element>, E2eError> {
    if !crate::xml::nesting_within(text, crate::xml::MAX_DEPTH) {
        return Err(E2eError::Malformed { what: "decrypted content", detail: "nested too deep".into() });
    }
    let wrapped = format!("<content xmlns='{NS_CLIENT}'>{text}</content>");
    let root: Element = wrapped.parse().map_err(|e: minidom::Error| E2eError::Malformed {
        what: "decrypted content",
        detail: e.to_string(),
    })?;
    Ok(root.children().cloned().collect())
}

impl Engine for Esession {
    fn protocol(&self) -> Protocol {
        Protocol::of(&PROTOCOL)
    }

    /// XEP-0155 names a session by the `<thread/>` of its messages: the client does not show
    /// it as a message part.
    fn owns_part(&self, part: &Element) -> bool {
        part.is("thread", NS_CLIENT)
    }

    fn publish(&mut self, _cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        // Keys travel inside the negotiation; back from offline, the options go (XEP-0187).
        let mut out = Output::default();
        self.back_online(&mut out);
        Ok(out)
    }

    fn going_offline(&mut self, cx: &mut Cx<'_>) -> Result<Output, E2eError> {
        // XEP-0116 §terminate: "Entities MUST terminate all open ESessions before they go
        // offline"; then XEP-0187 §init-offline-publish.
        let mut out = Output::default();
        let peers: Vec<BareJid> = self.sessions.keys().cloned().collect();
        for peer in peers {
            if self.sessions.get(&peer).is_some_and(|s| s.offline) {
                self.end_offline(&peer, &mut out);
            } else if let Ok(more) = self.terminate(&peer) {
                out.actions.extend(more.actions);
            }
        }
        self.publish_offline(cx, &mut out)?;
        Ok(out)
    }

    fn fetch_failed(
        &mut self,
        _cx: &mut Cx<'_>,
        owner: &BareJid,
        node: &str,
        _condition: &str,
    ) -> Result<Output, E2eError> {
        self.lookup_failed(owner, node);
        Ok(Output::default())
    }

    fn send(&mut self, cx: &mut Cx<'_>, to: &BareJid, body: &str) -> Result<Output, E2eError> {
        self.send_item(cx, to, Outgoing::Message(crate::Content::body(body)))
    }

    /// XEP-0200 §content: the message's whole content goes inside `<c/>` — body, subject,
    /// XHTML, out-of-band URL, chat state, correction —, but its `<thread/>`: "She MUST NOT
    /// encrypt ... <thread/> elements", and the stanza's one `<thread/>` in clear names the
    /// ESession (XEP-0155). Neither text gives the user's own thread a place: it is not sent,
    /// and the user is told (`not-sent`).
    fn send_message(&mut self, cx: &mut Cx<'_>, to: &BareJid, content: &crate::Content) -> Result<Output, E2eError> {
        let thread = stanzas::user_thread(content);
        let mut out = self.send_item(cx, to, Outgoing::Message(content.clone()))?;
        if let Some(thread) = thread {
            out.events.push(Event::Alert {
                reason: crate::reason::NOT_SENT.code,
                detail: format!(
                    "the message's thread {thread:?} is not sent: XEP-0200 §content forbids encrypting a <thread/>, and the stanza's thread names the ESession (XEP-0155)"
                ),
            });
        }
        Ok(out)
    }

    /// XEP-0200 §content covers one-to-one `<presence/>`: directed presence goes encrypted in
    /// the ESession with `to`'s account, to the device it was negotiated with, once the
    /// negotiated 'stanzas' include `presence` (XEP-0116); it waits for a negotiation like a
    /// message.
    fn send_presence(&mut self, cx: &mut Cx<'_>, to: &Jid, status: &str) -> Result<Output, E2eError> {
        let item = Outgoing::Directed(Directed::Presence { to: to.clone(), status: status.to_owned() });
        self.send_item(cx, &to.to_bare(), item)
    }

    /// XEP-0200 §content covers one-to-one `<iq/>`: the payload goes encrypted in the ESession
    /// with `to` (the device it was negotiated with), once the negotiated 'stanzas' include
    /// `iq` (XEP-0116); it waits for a negotiation like a message.
    fn send_iq(&mut self, cx: &mut Cx<'_>, to: &FullJid, payload: &Element) -> Result<Output, E2eError> {
        let item = Outgoing::Directed(Directed::Iq { to: to.clone(), payload: payload.clone() });
        self.send_item(cx, &to.to_bare(), item)
    }

    /// The client hands us iq requests carrying XEP-0200's `<c/>` (§content: iq content is
    /// encrypted too), and the answers to ours.
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS_C]
    }

    /// Presence carrying XEP-0200's `<c/>` is decrypted like a message.
    fn receive_presence(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        if !stanza.has_child("c", NS_C) {
            return Ok(Output::default());
        }
        self.receive(cx, stanza)
    }

    fn receive(&mut self, cx: &mut Cx<'_>, stanza: &Element) -> Result<Output, E2eError> {
        let mut out = Output::default();
        match self.receive_stanza(cx, stanza, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                // What a refusal still sends (a termination, an error) goes out through `drain`.
                self.pending.actions.append(&mut out.actions);
                self.pending.events.append(&mut out.events);
                Err(e)
            }
        }
    }

    fn drain(&mut self, _cx: &mut Cx<'_>) -> Output {
        core::mem::take(&mut self.pending)
    }


    fn verify(&mut self, _cx: &mut Cx<'_>, peer: &BareJid, oob: &OutOfBand) -> Result<Output, E2eError> {
        // §sas: both users read their SAS to each other over a channel the attacker cannot
        // touch; the peer's device announced the SAS of its session with us.
        let mut out = Output::default();
        let me = self.me.to_bare();
        // An offline ESession has no SAS (XEP-0187 negotiates in three messages).
        let Some(s) = self.sessions.get_mut(peer).filter(|s| !s.offline) else {
            out.events.push(Event::Alert {
                reason: "nothing-to-verify",
                detail: format!("no ESession with {peer}"),
            });
            out.events.push(Event::Verification { peer: peer.clone(), result: VerificationResult::NothingToCompare });
            return Ok(out);
        };
        let said = format!("sas {me}: {}", s.sas);
        let matched = oob.peer_says.contains(&said);
        s.verified = matched;
        let key = s.their_key.clone();
        if !matched {
            // Someone is in the middle: end the session; nothing more goes through it.
            self.sessions.remove(peer);
        }
        let mismatch = || Event::Alert {
            reason: crate::reason::SAS_MISMATCH.code,
            detail: format!("the SAS {peer} reads out is not ours: the session is closed"),
        };
        let seen = ("esession", hex(&crypto::fingerprint(&key)));
        let trust = trust::settle(peer, seen, matched, mismatch, &mut out);
        self.keys.entry(peer.clone()).or_default().insert(key, trust);
        Ok(out)
    }

    fn forge(&mut self, _cx: &mut Cx<'_>, from: &Jid, body: &str) -> Result<Option<Element>, E2eError> {
        // The receiver holds the sender's cipher and MAC keys: it can make the next stanza.
        let Some(s) = self.sessions.get(&from.to_bare()) else { return Ok(None) };
        let mut counter = s.recv_ctr;
        let mut data = body_xml(body).into_bytes();
        ctr(&s.recv.kc, &mut counter, &mut data);
        let m_content = format!("<data>{}</data>", b64(&data));
        let a_mac = mac_of(&s.recv.km, &[m_content.as_bytes(), &counter_mpi(s.recv_ctr)]);
        Ok(Some(
            el("message", NS_CLIENT)
                .with("from", from.to_string())
                .with("to", self.me.to_string())
                .with("type", "chat")
                .child(text_el("thread", NS_CLIENT, s.thread.clone()))
                .child(el("c", NS_C).child(text_el("data", NS_C, b64(&data))).child(text_el(
                    "mac",
                    NS_C,
                    b64(&a_mac),
                ))),
        ))
    }

    fn identity_marks(&self) -> crate::IdentityMarks {
        // The public key (its <KeyValue/>'s modulus, sent encrypted in the identity field,
        // §init-hide) and the fingerprint the trust book names it by.
        let Some(identity) = &self.identity else { return Vec::new() };
        let fingerprint = crypto::fingerprint(&identity.key_value()).to_vec();
        vec![("RSA modulus", identity.modulus()), ("fingerprint", fingerprint)]
    }

    fn peer_marks(&self, peer: &BareJid) -> crate::IdentityMarks {
        // The keys the peer proved in its identity field (§init-hide), named as the trust
        // book names them.
        let keys = self.keys.get(peer).map(|k| k.keys()).into_iter().flatten();
        keys.map(|kv| ("fingerprint", crypto::fingerprint(kv).to_vec())).collect()
    }

    fn ceremony(&self, peer: &BareJid) -> Option<crate::Ceremony> {
        // §sas: the users compare the SAS of their session.
        self.sessions.get(peer).map(|s| crate::Ceremony::Compare(s.sas.clone()))
    }

    fn out_of_band(&self) -> OutOfBand {
        OutOfBand {
            peer_says: self
                .sessions
                .iter()
                .filter(|(_, s)| !s.offline)
                .map(|(peer, s)| format!("sas {peer}: {}", s.sas))
                .collect(),
        }
    }

    fn steal(&self, what: Theft) -> Box<dyn Engine> {
        // The identity key and the retained secrets are long-term; sessions are not.
        let mut copy = self.clone();
        if what == Theft::IdentityKey {
            // The retained secrets are what the identity key alone does not give (§sec).
            copy.retained.clear();
        }
        kit::stolen(copy, what, |copy| {
            copy.sessions.clear();
            copy.closing.clear();
            copy.negotiations.clear();
            copy.stored.clear();
            copy.pending = Output::default();
            // Back online, the offline values live in memory only; stored, they are taken.
            copy.offline_retrieved = None;
            copy.lookups.clear();
            copy.peer_options.clear();
        })
    }
}

#[cfg(test)]
mod tests;
