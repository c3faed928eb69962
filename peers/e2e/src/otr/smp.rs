//! §"Socialist Millionaires' Protocol (SMP)" of OTR v3: the verification ceremony. Both users
//! type a secret; the protocol tells them whether the secrets — bound to both fingerprints and
//! the secure session id, so a man in the middle cannot pass — are equal, and nothing else.

use core::fmt;

use num_bigint::BigUint;
use rand_core::RngCore;

use super::crypto::{check_group_element, generator, modulus, order, random_bits};
use super::wire::{Reader, Writer};
use crate::E2eError;
use crate::kit::crypto::sha256;

/// TLV types (§"Data Message").
pub const TLV_SMP1: u16 = 2;
/// SMP message 2.
pub const TLV_SMP2: u16 = 3;
/// SMP message 3.
pub const TLV_SMP3: u16 = 4;
/// SMP message 4.
pub const TLV_SMP4: u16 = 5;
/// SMP abort.
pub const TLV_SMP_ABORT: u16 = 6;
/// SMP message 1 with a question.
pub const TLV_SMP1Q: u16 = 7;

/// §"Secret information": SHA256(version 1, initiator fingerprint, responder fingerprint,
/// ssid, user secret), as an integer.
pub fn secret(initiator_fp: &[u8; 20], responder_fp: &[u8; 20], ssid: &[u8; 8], user: &str) -> BigUint {
    BigUint::from_bytes_be(&sha256(&[&[1u8], initiator_fp, responder_fp, ssid, user.as_bytes()]))
}

/// §"SMP Hash function": SHA256(version, MPI, [MPI]).
fn hash(version: u8, a: &BigUint, b: Option<&BigUint>) -> BigUint {
    let mut w = Writer::default();
    w.byte(version).mpi(a);
    if let Some(b) = b {
        w.mpi(b);
    }
    BigUint::from_bytes_be(&sha256(&[w.bytes()]))
}

fn exp(b: &BigUint, e: &BigUint) -> BigUint {
    b.modpow(e, modulus())
}

fn mul(a: &BigUint, b: &BigUint) -> BigUint {
    (a * b) % modulus()
}

/// a / b mod p (p is prime: b^(p-2) is the inverse).
fn div(a: &BigUint, b: &BigUint) -> BigUint {
    mul(a, &exp(b, &(modulus() - 2u32)))
}

/// r - a·c mod q.
fn d(r: &BigUint, a: &BigUint, c: &BigUint) -> BigUint {
    let q = order();
    ((r % q) + q - ((a * c) % q)) % q
}

fn rand_exp(rng: &mut dyn RngCore) -> BigUint {
    random_bits(rng, 1536)
}

fn encode(values: &[&BigUint]) -> Vec<u8> {
    let mut w = Writer::default();
    // At most 11 values.
    w.int(u32::try_from(values.len()).unwrap_or(0));
    for v in values {
        w.mpi(v);
    }
    w.into_bytes()
}

fn decode(what: &'static str, bytes: &[u8], n: usize) -> Result<Vec<BigUint>, E2eError> {
    let mut r = Reader::new(what, bytes);
    let count = r.int()? as usize;
    if count != n {
        return Err(E2eError::Malformed { what, detail: format!("{count} MPIs, expected {n}") });
    }
    let values = (0..n).map(|_| r.mpi()).collect::<Result<Vec<_>, _>>()?;
    r.finish()?;
    // Every value is a group element (below p), a hash (256 bits) or a D (below q): anything
    // larger is malformed, and would only make the exponentiations expensive.
    if values.iter().any(|v| v >= modulus()) {
        return Err(E2eError::Malformed { what, detail: "a value beyond the group".into() });
    }
    Ok(values)
}

fn fail(detail: &str) -> E2eError {
    E2eError::Rejected { reason: "smp-proof", detail: detail.to_owned() }
}

/// The SMP state (§"The SMP state machine").
#[derive(Clone, Default)]
pub enum SmpState {
    /// SMPSTATE_EXPECT1.
    #[default]
    Expect1,
    /// SMPSTATE_EXPECT2 (we started): x, a2, a3.
    Expect2 {
        /// Our secret.
        x: BigUint,
        /// a2.
        a2: BigUint,
        /// a3.
        a3: BigUint,
    },
    /// SMPSTATE_EXPECT3 (we answered): g3a, g2, g3, b3, Pb, Qb.
    Expect3 {
        /// g3a.
        g3a: BigUint,
        /// g2.
        g2: BigUint,
        /// g3.
        g3: BigUint,
        /// b3.
        b3: BigUint,
        /// Pb.
        pb: BigUint,
        /// Qb.
        qb: BigUint,
    },
    /// SMPSTATE_EXPECT4: g3b, Pa/Pb, Qa/Qb, a3.
    Expect4 {
        /// g3b.
        g3b: BigUint,
        /// Pa / Pb.
        pa_pb: BigUint,
        /// Qa / Qb.
        qa_qb: BigUint,
        /// a3.
        a3: BigUint,
    },
}

impl fmt::Debug for SmpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmpState::Expect1 => "SMPSTATE_EXPECT1",
            SmpState::Expect2 { .. } => "SMPSTATE_EXPECT2",
            SmpState::Expect3 { .. } => "SMPSTATE_EXPECT3",
            SmpState::Expect4 { .. } => "SMPSTATE_EXPECT4",
        })
    }
}

/// What one SMP step produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SmpStep {
    /// A TLV to send (type, value).
    pub reply: Option<(u16, Vec<u8>)>,
    /// The protocol finished: whether the secrets matched.
    pub result: Option<bool>,
}

/// "User requests to begin SMP": SMP message 1 (type 2).
pub fn start(state: &mut SmpState, x: BigUint, rng: &mut dyn RngCore) -> (u16, Vec<u8>) {
    let g1 = generator();
    let (a2, a3, r2, r3) = (rand_exp(rng), rand_exp(rng), rand_exp(rng), rand_exp(rng));
    let (g2a, g3a) = (exp(&g1, &a2), exp(&g1, &a3));
    let c2 = hash(1, &exp(&g1, &r2), None);
    let d2 = d(&r2, &a2, &c2);
    let c3 = hash(2, &exp(&g1, &r3), None);
    let d3 = d(&r3, &a3, &c3);
    *state = SmpState::Expect2 { x, a2, a3 };
    (TLV_SMP1, encode(&[&g2a, &c2, &d2, &g3a, &c3, &d3]))
}

/// Handles an SMP TLV. `secret` gives our secret when we must answer an SMP message 1 (the
/// question, if any, is passed to it). Out-of-order messages abort (type 6 TLV), as the spec
/// says; a failed proof aborts too and is returned as an error after the state is reset.
pub fn receive(
    state: &mut SmpState,
    kind: u16,
    value: &[u8],
    secret: impl FnOnce(Option<&str>) -> BigUint,
    rng: &mut dyn RngCore,
) -> Result<SmpStep, E2eError> {
    let abort = SmpStep { reply: Some((TLV_SMP_ABORT, Vec::new())), result: None };
    let g1 = generator();
    match (kind, core::mem::take(state)) {
        (TLV_SMP_ABORT, _) => Ok(SmpStep::default()),
        (TLV_SMP1 | TLV_SMP1Q, SmpState::Expect1) => {
            let (question, value) = if kind == TLV_SMP1Q {
                let nul = value.iter().position(|b| *b == 0).ok_or(E2eError::Malformed {
                    what: "SMP message 1Q",
                    detail: "no NUL after the question".into(),
                })?;
                (Some(String::from_utf8_lossy(&value[..nul]).into_owned()), &value[nul + 1..])
            } else {
                (None, value)
            };
            let v = decode("SMP message 1", value, 6)?;
            let (g2a, c2, d2, g3a, c3, d3) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
            check_group_element("g2a", g2a)?;
            check_group_element("g3a", g3a)?;
            if hash(1, &mul(&exp(&g1, d2), &exp(g2a, c2)), None) != *c2 {
                return Err(fail("c2 of SMP message 1"));
            }
            if hash(2, &mul(&exp(&g1, d3), &exp(g3a, c3)), None) != *c3 {
                return Err(fail("c3 of SMP message 1"));
            }
            let y = secret(question.as_deref());
            let (b2, b3) = (rand_exp(rng), rand_exp(rng));
            let (r2, r3, r4, r5, r6) =
                (rand_exp(rng), rand_exp(rng), rand_exp(rng), rand_exp(rng), rand_exp(rng));
            let (g2b, g3b) = (exp(&g1, &b2), exp(&g1, &b3));
            let c2b = hash(3, &exp(&g1, &r2), None);
            let d2b = d(&r2, &b2, &c2b);
            let c3b = hash(4, &exp(&g1, &r3), None);
            let d3b = d(&r3, &b3, &c3b);
            let (g2, g3) = (exp(g2a, &b2), exp(g3a, &b3));
            let pb = exp(&g3, &r4);
            let qb = mul(&exp(&g1, &r4), &exp(&g2, &y));
            let cp = hash(5, &exp(&g3, &r5), Some(&mul(&exp(&g1, &r5), &exp(&g2, &r6))));
            let d5 = d(&r5, &r4, &cp);
            let d6 = d(&r6, &y, &cp);
            let reply = encode(&[&g2b, &c2b, &d2b, &g3b, &c3b, &d3b, &pb, &qb, &cp, &d5, &d6]);
            *state = SmpState::Expect3 { g3a: g3a.clone(), g2, g3, b3, pb, qb };
            Ok(SmpStep { reply: Some((TLV_SMP2, reply)), result: None })
        }
        (TLV_SMP2, SmpState::Expect2 { x, a2, a3 }) => {
            let v = decode("SMP message 2", value, 11)?;
            let (g2b, c2, d2, g3b, c3, d3, pb, qb, cp, d5, d6) =
                (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10]);
            for (n, e) in [("g2b", g2b), ("g3b", g3b), ("Pb", pb), ("Qb", qb)] {
                check_group_element(n, e)?;
            }
            if hash(3, &mul(&exp(&g1, d2), &exp(g2b, c2)), None) != *c2 {
                return Err(fail("c2 of SMP message 2"));
            }
            if hash(4, &mul(&exp(&g1, d3), &exp(g3b, c3)), None) != *c3 {
                return Err(fail("c3 of SMP message 2"));
            }
            let (g2, g3) = (exp(g2b, &a2), exp(g3b, &a3));
            let check = hash(
                5,
                &mul(&exp(&g3, d5), &exp(pb, cp)),
                Some(&mul(&mul(&exp(&g1, d5), &exp(&g2, d6)), &exp(qb, cp))),
            );
            if check != *cp {
                return Err(fail("cP of SMP message 2"));
            }
            let (r4, r5, r6, r7) = (rand_exp(rng), rand_exp(rng), rand_exp(rng), rand_exp(rng));
            let pa = exp(&g3, &r4);
            let qa = mul(&exp(&g1, &r4), &exp(&g2, &x));
            let cp = hash(6, &exp(&g3, &r5), Some(&mul(&exp(&g1, &r5), &exp(&g2, &r6))));
            let d5 = d(&r5, &r4, &cp);
            let d6 = d(&r6, &x, &cp);
            let qa_qb = div(&qa, qb);
            let ra = exp(&qa_qb, &a3);
            let cr = hash(7, &exp(&g1, &r7), Some(&exp(&qa_qb, &r7)));
            let d7 = d(&r7, &a3, &cr);
            let reply = encode(&[&pa, &qa, &cp, &d5, &d6, &ra, &cr, &d7]);
            *state = SmpState::Expect4 { g3b: g3b.clone(), pa_pb: div(&pa, pb), qa_qb, a3 };
            Ok(SmpStep { reply: Some((TLV_SMP3, reply)), result: None })
        }
        (TLV_SMP3, SmpState::Expect3 { g3a, g2, g3, b3, pb, qb }) => {
            let v = decode("SMP message 3", value, 8)?;
            let (pa, qa, cp, d5, d6, ra, cr, d7) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
            for (n, e) in [("Pa", pa), ("Qa", qa), ("Ra", ra)] {
                check_group_element(n, e)?;
            }
            let check = hash(
                6,
                &mul(&exp(&g3, d5), &exp(pa, cp)),
                Some(&mul(&mul(&exp(&g1, d5), &exp(&g2, d6)), &exp(qa, cp))),
            );
            if check != *cp {
                return Err(fail("cP of SMP message 3"));
            }
            let qa_qb = div(qa, &qb);
            let check =
                hash(7, &mul(&exp(&g1, d7), &exp(&g3a, cr)), Some(&mul(&exp(&qa_qb, d7), &exp(ra, cr))));
            if check != *cr {
                return Err(fail("cR of SMP message 3"));
            }
            let r7 = rand_exp(rng);
            let rb = exp(&qa_qb, &b3);
            let cr = hash(8, &exp(&g1, &r7), Some(&exp(&qa_qb, &r7)));
            let d7 = d(&r7, &b3, &cr);
            let rab = exp(ra, &b3);
            let matched = rab == div(pa, &pb);
            Ok(SmpStep { reply: Some((TLV_SMP4, encode(&[&rb, &cr, &d7]))), result: Some(matched) })
        }
        (TLV_SMP4, SmpState::Expect4 { g3b, pa_pb, qa_qb, a3 }) => {
            let v = decode("SMP message 4", value, 3)?;
            let (rb, cr, d7) = (&v[0], &v[1], &v[2]);
            check_group_element("Rb", rb)?;
            let check =
                hash(8, &mul(&exp(&g1, d7), &exp(&g3b, cr)), Some(&mul(&exp(&qa_qb, d7), &exp(rb, cr))));
            if check != *cr {
                return Err(fail("cR of SMP message 4"));
            }
            let rab = exp(rb, &a3);
            Ok(SmpStep { reply: None, result: Some(rab == pa_pb) })
        }
        // Any SMP message out of turn: abort and start over.
        (TLV_SMP1 | TLV_SMP1Q | TLV_SMP2 | TLV_SMP3 | TLV_SMP4, _) => Ok(abort),
        (_, previous) => {
            *state = previous;
            Ok(SmpStep::default())
        }
    }
}
