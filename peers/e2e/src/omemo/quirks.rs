//! Faults real OMEMO clients shipped, which our engine reproduces when a scenario's device asks
//! for them (`phone: {protocol: omemo-legacy, quirks: [iv-16]}`), so a scenario can ask how an
//! implementation copes with a peer that has one. Each is declared in the protocol's registry
//! entry ([`crate::ProtocolDef::quirks`]) with the client issue it reproduces, and reaches the
//! engine as a name in [`crate::EngineConfig::quirks`] ([`Quirks::from_names`]).
//!
//! The issues cited are GitHub threads, by repository and number; what each says is quoted or
//! summarised in the declaration. A quirk changes only what its device sends (and publishes):
//! how our engine receives is the same with or without quirks.

use std::collections::BTreeSet;

use crate::QuirkDecl;

/// A 16-byte IV for the AES-GCM payload (OMEMO 0.3).
pub const IV_16: QuirkDecl = QuirkDecl {
    name: "iv-16",
    reproduces: "The AES-128-GCM payload is encrypted under a 16-byte IV, and the <iv/> carries 16 bytes, \
        where clients since 2020 send 12 (XEP-0384 0.3.0 names no length; AES-GCM's own is 96 bits, \
        and a 16-byte IV is first hashed down to one).",
    issue: "What Conversations, ChatSecure, Smack and Profanity sent until 2020: Conversations' author: \
        \"We originally started using 16 because that is a common size for other AES standards\" and \
        clients whose crypto libraries accept only 12 (Apple's) could not read them \
        (ChatSecure/ChatSecure-iOS#1171; the switch: igniterealtime/Smack#365, \
        profanity-im/profanity#1272, ChatSecure/ChatSecure-iOS#1181, xsf/xeps#894).",
};

/// The GCM tag appended to the payload, a bare key in the `<key/>` (OMEMO 0.3).
pub const TAG_IN_PAYLOAD: QuirkDecl = QuirkDecl {
    name: "tag-in-payload",
    reproduces: "The ratchet carries the bare 16-byte AES key and the 16-byte GCM tag is appended to the \
        <payload/> (the pre-XEP \"siacs\" form), instead of key || tag (32 bytes) in each <key/> as \
        XEP-0384 0.3.0 §\"Sending a message\" says. Whoever holds the key can then re-encrypt and \
        re-tag the payload for the other recipients.",
    issue: "The legacy format: \"in 'siacs' OMEMO the auth tag is concatenated to the payload\"; Smack \
        dropped support for it and got bug reports about ChatSecure still sending it \
        (ChatSecure/ChatSecure-iOS#647); Dino sent it in 2018 and a new implementation failed to \
        decrypt (dino/dino#303); libomemo/lurch switched its sending side (gkdr/libomemo#7).",
};

/// No fallback `<body/>` beside the `<encrypted/>` (OMEMO 0.3).
pub const NO_FALLBACK_BODY: QuirkDecl = QuirkDecl {
    name: "no-fallback-body",
    reproduces: "The <message/> carries the <encrypted/> element (and the XEP-0380 hint) but no plaintext \
        fallback <body/>, which Conversations always adds.",
    issue: "Dino ignored encrypted messages without a <body/> until dino/dino#519 (\"Do not ignore \
        encrypted messages without a body tag\", a partial fix of dino/dino#473); whether to add \
        one at all was argued in gkdr/libomemo#5 and ChatSecure/ChatSecure-iOS#717.",
};

/// An empty key-transport message opening every new session.
pub const KEY_TRANSPORT_FIRST: QuirkDecl = QuirkDecl {
    name: "key-transport-first",
    reproduces: "Every session this device builds opens with an empty OMEMO message to that device: a \
        <header/> with the key exchange and no <payload/> (a key transport; 0.3: a 16-byte key \
        and no tag, as libsignal-era clients send it), sent before the message that needed the \
        session.",
    issue: "Empty messages broke receivers: Profanity showed a decryption error for <header/> without \
        <payload/> (profanity-im/profanity#2129, fixed by #2130) and failed on 0.3 key transports \
        without a tag (profanity-im/profanity#2147, \"Monal at least doesn't append the \
        authentication tag\"); Monal crashed on one (monal-im/Monal#622); Fluux showed them as \
        phantom messages, arriving \"in a burst ... right after an account announces a new OMEMO \
        device and each peer builds its session\" (processone/fluux-messenger#1082).",
};

/// The device is on the device list but publishes no bundle.
pub const UNPUBLISHED_BUNDLE: QuirkDecl = QuirkDecl {
    name: "unpublished-bundle",
    reproduces: "The device announces its id on its account's device list but never publishes its bundle \
        (nor republishes it after a PreKey is used): nobody can start a session with it, though \
        it can start one with others.",
    issue: "Reported from lurch as \"The device X owned by Y does not have a bundle and will be \
        skipped. The owner should fix this, or remove the device from the list\" with Gajim and \
        Conversations peers (gkdr/lurch#83, gkdr/lurch#106); Converse.js \"Could not fetch bundle \
        for device\" with item-not-found against Conversations (conversejs/converse.js#3769); \
        ChatSecure unable to fetch a re-added account's bundle (ChatSecure/ChatSecure-iOS#587).",
};

/// An OMEMO 2 device that also speaks OMEMO 0.3 to the same peer.
pub const ALSO_LEGACY: QuirkDecl = QuirkDecl {
    name: "also-legacy",
    reproduces: "An OMEMO 2 device in migration also runs OMEMO 0.3 under the same device id and \
        IdentityKey: it publishes both device lists and both bundles, and each message goes out \
        twice, an OMEMO 2 stanza and an OMEMO 0.3 stanza (with 0.3's fallback <body/>) to every \
        device of either version; it reads both. A version the peer has no device of is skipped \
        silently.",
    issue: "Clients in the 0.3-to-2 migration run both: slixmpp-omemo sent oldmemo and newmemo content \
        in separate stanzas (Syndace/slixmpp-omemo#11, \"Send oldmemo and newmemo content in the \
        same stanza\", still open); Converse.js publishes both device lists and bundles \
        (conversejs/converse.js#4077, which puts both <encrypted/> elements in one stanza).",
};

/// The quirks of OMEMO 0.3.
pub static LEGACY: &[QuirkDecl] = &[IV_16, TAG_IN_PAYLOAD, NO_FALLBACK_BODY, KEY_TRANSPORT_FIRST, UNPUBLISHED_BUNDLE];

/// The quirks of OMEMO 2.
pub static OMEMO2: &[QuirkDecl] = &[KEY_TRANSPORT_FIRST, UNPUBLISHED_BUNDLE, ALSO_LEGACY];

/// The quirks one device has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// [`IV_16`].
    pub iv_16: bool,
    /// [`TAG_IN_PAYLOAD`].
    pub tag_in_payload: bool,
    /// [`NO_FALLBACK_BODY`].
    pub no_fallback_body: bool,
    /// [`KEY_TRANSPORT_FIRST`].
    pub key_transport_first: bool,
    /// [`UNPUBLISHED_BUNDLE`].
    pub unpublished_bundle: bool,
    /// [`ALSO_LEGACY`].
    pub also_legacy: bool,
}

impl Quirks {
    /// The quirks named (names no quirk has are ignored: the scenario loader refused them).
    pub fn from_names(names: &BTreeSet<String>) -> Quirks {
        let has = |q: &QuirkDecl| names.contains(q.name);
        Quirks {
            iv_16: has(&IV_16),
            tag_in_payload: has(&TAG_IN_PAYLOAD),
            no_fallback_body: has(&NO_FALLBACK_BODY),
            key_transport_first: has(&KEY_TRANSPORT_FIRST),
            unpublished_bundle: has(&UNPUBLISHED_BUNDLE),
            also_legacy: has(&ALSO_LEGACY),
        }
    }

    /// The 0.3 half of an [`ALSO_LEGACY`] device: the quirks that apply to both versions.
    pub fn for_companion(self) -> Quirks {
        Quirks { also_legacy: false, ..self }
    }
}
