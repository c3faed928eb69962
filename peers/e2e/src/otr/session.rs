//! An encrypted OTR conversation: §"Key Management", §"Computing AES keys, MAC keys …"
//! (the data-message part), §"Data Message" and §"Revealing MAC keys".

use std::collections::BTreeMap;

use num_bigint::BigUint;
use rand_core::RngCore;

use super::ake::{Established, secbytes};
use super::crypto::{DhKey, PublicKey, check_group_element};
use crate::kit::crypto::{aes_ctr, equal, hmac_sha1, sha1, sha256};
use super::wire::DataMessage;
use crate::E2eError;

/// The keys of one (our key, their key) pair.
#[derive(Debug, Clone, Copy)]
struct PairKeys {
    send_aes: [u8; 16],
    send_mac: [u8; 20],
    recv_aes: [u8; 16],
    recv_mac: [u8; 20],
}

fn pair_keys(ours: &DhKey, theirs: &BigUint) -> Result<PairKeys, E2eError> {
    let sb = secbytes(&ours.shared(theirs)?);
    // "If Alice's public key is numerically greater than Bob's public key, then she is the
    // high end": sendbyte 0x01, recvbyte 0x02; the low end the other way round.
    let (send_byte, recv_byte) = if ours.public > *theirs { (1u8, 2u8) } else { (2u8, 1u8) };
    let h1 = |b: u8| sha1(&[&[b], &sb]);
    let mut send_aes = [0u8; 16];
    send_aes.copy_from_slice(&h1(send_byte)[..16]);
    let mut recv_aes = [0u8; 16];
    recv_aes.copy_from_slice(&h1(recv_byte)[..16]);
    Ok(PairKeys { send_aes, send_mac: sha1(&[&send_aes]), recv_aes, recv_mac: sha1(&[&recv_aes]) })
}

/// The extra symmetric key of a pair (§"Extra symmetric key"): h2(0xFF).
pub fn extra_symmetric_key(ours: &DhKey, theirs: &BigUint) -> Result<[u8; 32], E2eError> {
    Ok(sha256(&[&[0xFF], &secbytes(&ours.shared(theirs)?)]))
}

/// The message state of one correspondent instance in MSGSTATE_ENCRYPTED.
#[derive(Debug, Clone)]
pub struct Session {
    our_keyid: u32,
    our_cur: DhKey,
    our_prev: DhKey,
    their_keyid: u32,
    their_y: BigUint,
    their_old: Option<BigUint>,
    /// Per (sender keyid, recipient keyid) as we send: the last counter top half used.
    sent_ctr: BTreeMap<(u32, u32), u64>,
    /// Per (their keyid, our keyid) as we receive: the last counter seen.
    seen_ctr: BTreeMap<(u32, u32), u64>,
    /// Receiving MAC keys actually used, per (our keyid, their keyid).
    used_mac_keys: BTreeMap<(u32, u32), [u8; 20]>,
    /// MAC keys to reveal in the next Data Message.
    to_reveal: Vec<u8>,
    /// The keys of each (our keyid, their keyid) pair in use, so a D-H computation is done
    /// once per pair, not per message (libotr keeps the same four session-key slots).
    cache: BTreeMap<(u32, u32), PairKeys>,
    /// Their long-term key.
    pub their_pub: PublicKey,
    /// The secure session id.
    pub ssid: [u8; 8],
    /// Whether we sent the Reveal Signature (the bold half of the ssid is the first).
    pub we_revealed: bool,
}

impl Session {
    /// §"Key Management", "Upon completing the AKE": the AKE key becomes `our_dh[keyid]` and
    /// a fresh key `our_dh[keyid+1]` is made (libotr does the same in `go_encrypted`).
    pub fn new(e: Established, rng: &mut dyn RngCore) -> Self {
        Session {
            our_keyid: e.our_keyid + 1,
            our_prev: e.our_dh,
            our_cur: DhKey::generate(rng),
            their_keyid: e.their_keyid,
            their_y: e.their_y,
            their_old: None,
            sent_ctr: BTreeMap::new(),
            seen_ctr: BTreeMap::new(),
            used_mac_keys: BTreeMap::new(),
            to_reveal: Vec::new(),
            cache: BTreeMap::new(),
            their_pub: e.their_pub,
            ssid: e.ssid,
            we_revealed: e.we_revealed,
        }
    }

    /// "When you send a Data Message": sender keyid `our_keyid-1`, recipient keyid
    /// `their_keyid`, the next key `our_dh[our_keyid]`.
    pub fn encrypt(
        &mut self,
        plaintext: &[u8],
        flags: u8,
        tags: (u32, u32),
    ) -> Result<DataMessage, E2eError> {
        let (sk, rk) = (self.our_keyid - 1, self.their_keyid);
        let keys = match self.cache.get(&(sk, rk)) {
            Some(k) => *k,
            None => {
                let k = pair_keys(&self.our_prev, &self.their_y)?;
                self.cache.insert((sk, rk), k);
                k
            }
        };
        let ctr = self.sent_ctr.entry((sk, rk)).or_insert(0);
        *ctr += 1;
        let ctr = ctr.to_be_bytes();
        let mut counter = [0u8; 16];
        counter[..8].copy_from_slice(&ctr);
        let mut encrypted = plaintext.to_vec();
        aes_ctr(&keys.send_aes, &counter, &mut encrypted);
        let mut msg = DataMessage {
            flags,
            sender_keyid: sk,
            recipient_keyid: rk,
            next_dh: self.our_cur.public.clone(),
            ctr,
            encrypted,
            mac: [0; 20],
            old_mac_keys: core::mem::take(&mut self.to_reveal),
        };
        msg.mac = hmac_sha1(&keys.send_mac, &[&msg.authenticated(tags.0, tags.1)]);
        Ok(msg)
    }

    /// "When you receive a Data Message": key selection, MAC, counter, decryption, then key
    /// rotation. On any error the state is unchanged.
    pub fn decrypt(
        &mut self,
        msg: &DataMessage,
        tags: (u32, u32),
        rng: &mut dyn RngCore,
    ) -> Result<Vec<u8>, E2eError> {
        let reject = |detail: String| E2eError::Rejected { reason: "unknown-keyid", detail };
        let ours = if msg.recipient_keyid == self.our_keyid {
            &self.our_cur
        } else if msg.recipient_keyid == self.our_keyid.wrapping_sub(1) {
            &self.our_prev
        } else {
            return Err(reject(format!(
                "recipient keyid {} (ours: {})",
                msg.recipient_keyid, self.our_keyid
            )));
        };
        let theirs = if msg.sender_keyid == self.their_keyid {
            &self.their_y
        } else if msg.sender_keyid == self.their_keyid.wrapping_sub(1) && self.their_old.is_some() {
            self.their_old.as_ref().ok_or_else(|| reject("no previous key".into()))?
        } else {
            return Err(reject(format!("sender keyid {} (theirs: {})", msg.sender_keyid, self.their_keyid)));
        };
        let pair = (msg.recipient_keyid, msg.sender_keyid);
        let keys = match self.cache.get(&pair) {
            Some(k) => *k,
            None => pair_keys(ours, theirs)?,
        };
        if !equal(&hmac_sha1(&keys.recv_mac, &[&msg.authenticated(tags.0, tags.1)]), &msg.mac) {
            return Err(E2eError::Rejected { reason: "bad-mac", detail: "Data Message MAC".into() });
        }
        let ctr = u64::from_be_bytes(msg.ctr);
        let pair = (msg.sender_keyid, msg.recipient_keyid);
        if ctr == 0 || self.seen_ctr.get(&pair).is_some_and(|last| ctr <= *last) {
            return Err(E2eError::Rejected {
                reason: "replayed-counter",
                detail: format!("counter {ctr} is not above the last one seen with these keys"),
            });
        }
        check_group_element("next D-H key", &msg.next_dh)?;
        let exhausted = || E2eError::Rejected { reason: "keyid-exhausted", detail: "key ids ran out".into() };
        let next_ours = self.our_keyid.checked_add(1).ok_or_else(exhausted)?;
        let next_theirs = self.their_keyid.checked_add(1).ok_or_else(exhausted)?;
        if ctr == u64::MAX {
            return Err(E2eError::Rejected {
                reason: "replayed-counter",
                detail: "counter at its maximum".into(),
            });
        }
        let mut counter = [0u8; 16];
        counter[..8].copy_from_slice(&msg.ctr);
        let mut plaintext = msg.encrypted.clone();
        aes_ctr(&keys.recv_aes, &counter, &mut plaintext);
        self.seen_ctr.insert(pair, ctr);
        self.used_mac_keys.insert((msg.recipient_keyid, msg.sender_keyid), keys.recv_mac);
        self.cache.insert((msg.recipient_keyid, msg.sender_keyid), keys);
        // Rotation.
        if msg.recipient_keyid == self.our_keyid {
            // Forget our_dh[our_keyid-1], revealing the MAC keys it generated.
            let old = self.our_keyid - 1;
            self.reveal(|(o, _)| o == old);
            self.cache.retain(|(o, _), _| *o != old);
            self.our_prev = core::mem::replace(&mut self.our_cur, DhKey::generate(rng));
            self.our_keyid = next_ours;
        }
        if msg.sender_keyid == self.their_keyid {
            let old = self.their_keyid.wrapping_sub(1);
            self.reveal(|(_, t)| t == old);
            self.cache.retain(|(_, t), _| *t != old);
            self.their_old = Some(core::mem::replace(&mut self.their_y, msg.next_dh.clone()));
            self.their_keyid = next_theirs;
        }
        Ok(plaintext)
    }

    fn reveal(&mut self, which: impl Fn((u32, u32)) -> bool) {
        let keys: Vec<(u32, u32)> = self.used_mac_keys.keys().copied().filter(|k| which(*k)).collect();
        for k in keys {
            if let Some(mac) = self.used_mac_keys.remove(&k) {
                self.to_reveal.extend_from_slice(&mac);
            }
        }
    }

    /// MAC keys waiting to be revealed.
    pub fn pending_reveal(&self) -> usize {
        self.to_reveal.len() / 20
    }

    /// A message the *receiver* of this session could have made as the peer's: the keys of
    /// the current pair are symmetric. Used by the deniability judge.
    pub fn forge_incoming(&self, plaintext: &[u8], tags: (u32, u32)) -> Result<DataMessage, E2eError> {
        let keys = pair_keys(&self.our_cur, &self.their_y)?;
        let ctr =
            self.seen_ctr.get(&(self.their_keyid, self.our_keyid)).copied().unwrap_or(0).saturating_add(1);
        let mut counter = [0u8; 16];
        counter[..8].copy_from_slice(&ctr.to_be_bytes());
        let mut encrypted = plaintext.to_vec();
        aes_ctr(&keys.recv_aes, &counter, &mut encrypted);
        let mut msg = DataMessage {
            flags: 0,
            sender_keyid: self.their_keyid,
            recipient_keyid: self.our_keyid,
            next_dh: self.their_y.clone(),
            ctr: ctr.to_be_bytes(),
            encrypted,
            mac: [0; 20],
            old_mac_keys: Vec::new(),
        };
        msg.mac = hmac_sha1(&keys.recv_mac, &[&msg.authenticated(tags.0, tags.1)]);
        Ok(msg)
    }
}
