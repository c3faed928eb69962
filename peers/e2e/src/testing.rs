//! Helpers shared by the engines' unit tests (compiled for tests only).

#![allow(clippy::expect_used)]

use minidom::Element;
use rand_core::RngCore;

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
