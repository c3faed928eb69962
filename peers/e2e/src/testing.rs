//! Helpers shared by the engines' unit tests (compiled for tests only).

#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use minidom::Element;
use rand_core::RngCore;

use crate::kit::codec::{b64, unb64};
use crate::time::EPOCH;
use crate::{Cx, E2eError, Engine, Event, Jid, Output};

/// The path (child indices from the root) of every element of `e`, `e` itself first.
pub(crate) fn paths(e: &Element, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    out.push(path.clone());
    for (i, c) in e.children().enumerate() {
        path.push(i);
        paths(c, path, out);
        path.pop();
    }
}

/// The element at `path` (one that [`paths`] listed).
pub(crate) fn at<'a>(e: &'a mut Element, path: &[usize]) -> &'a mut Element {
    match path.split_first() {
        None => e,
        Some((i, rest)) => at(e.children_mut().nth(*i).expect("a path from paths()"), rest),
    }
}

/// An element of `s` (the root or any descendant) picked by the seeded stream, for the
/// mutation tests: one `next_u32` draw.
pub(crate) fn random_element<'a, R: RngCore + ?Sized>(s: &'a mut Element, rng: &mut R) -> &'a mut Element {
    let mut all = Vec::new();
    paths(s, &mut Vec::new(), &mut all);
    let pick = all[(rng.next_u32() as usize) % all.len()].clone();
    at(s, &pick)
}

/// Flips one bit of `bytes` (which must not be empty) chosen by the seeded stream: two
/// `next_u32` draws, byte then bit.
pub(crate) fn flip_bit<R: RngCore + ?Sized>(bytes: &mut [u8], rng: &mut R) {
    let i = (rng.next_u32() as usize) % bytes.len();
    bytes[i] ^= 1 << (rng.next_u32() % 8);
}

/// The frame of the mutation tests: `rounds` times, the next recorded stanza (in turn, with
/// what says who sent it) gets one seeded `damage` and is `read` by its recipient (on a copy
/// of its state); the error codes that come back. The tests assert these are typed errors:
/// nothing panics.
pub(crate) fn damaged_codes<W, R: RngCore>(
    recorded: &[(W, Element)],
    rounds: usize,
    rng: &mut R,
    mut damage: impl FnMut(&mut Element, &mut R),
    mut read: impl FnMut(&W, &Element, &mut R) -> Result<Output, E2eError>,
) -> BTreeSet<&'static str> {
    let mut codes = BTreeSet::new();
    for round in 0..rounds {
        let (who, stanza) = &recorded[round % recorded.len()];
        let mut s = stanza.clone();
        damage(&mut s, rng);
        if let Err(e) = read(who, &s, rng) {
            codes.insert(e.code());
        }
    }
    codes
}

/// Replaces the content of `e` with `text`.
pub(crate) fn set_text(e: &mut Element, text: &str) {
    let _ = e.take_nodes();
    e.append_text(text);
}

/// Flips one bit ([`flip_bit`]) of the base64 text of `e`; text that is not base64, or
/// decodes to nothing, is left as it is (no draw).
pub(crate) fn flip_base64<R: RngCore + ?Sized>(e: &mut Element, rng: &mut R) {
    if let Ok(mut b) = unb64("x", &e.text())
        && !b.is_empty()
    {
        flip_bit(&mut b, rng);
        set_text(e, &b64(&b));
    }
}

/// The deniability check of a protocol whose recipient holds the sender's keys: what the
/// recipient forges in `from`'s name (from a copy of its own state), it reads as a message
/// from `from`.
pub(crate) fn reads_own_forgery<E: Engine + Clone, R: RngCore>(recipient: &mut E, rng: &mut R, from: &Jid) {
    let forged = recipient.clone().forge(&mut Cx { rng, now: EPOCH }, from, "forged");
    let forged = forged.expect("forge works").expect("the protocol lets the recipient forge");
    let events = recipient.receive(&mut Cx { rng, now: EPOCH }, &forged).expect("the forgery reads").events;
    assert!(
        events.iter().any(|e| matches!(e, Event::Plaintext { body, .. } if body == "forged")),
        "{events:?}"
    );
}

/// The reasons of the alerts that `who` was shown, in order, from a test network's log of
/// (device, event).
pub(crate) fn alerts_of(events: &[(String, Event)], who: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter(|(w, _)| w == who)
        .filter_map(|(_, e)| if let Event::Alert { reason, .. } = e { Some(*reason) } else { None })
        .collect()
}
