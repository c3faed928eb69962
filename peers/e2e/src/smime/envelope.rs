//! The two CMS layers of RFC 3923 §3/§6.5: SignedData (RFC 5652 §5) inside EnvelopedData
//! (RFC 5652 §6), with the algorithms of RFC 3923 §6.10 and RFC 3370.
//!
//! Built and opened by hand on the `cms` crate's types: the crate's builder reads the wall
//! clock for signing-time and holds the RNG across recipients, and it has no decryption.
//!
//! - Signing: RSA PKCS #1 v1.5 with SHA-256 over the DER of the signed attributes
//!   (content-type, signing-time from the simulated clock, message-digest). RFC 3923 §6.10
//!   makes SHA-1 mandatory to implement: it is accepted on receipt, never produced.
//! - Enveloping: AES-128-CBC (RFC 3565) content encryption, the key transported to each
//!   recipient with RSA PKCS #1 v1.5 (RFC 3370 §4.2.1) in a KeyTransRecipientInfo naming the
//!   certificate by issuer and serial number. The content type inside is id-data and the
//!   content the DER of the SignedData ContentInfo (what `openssl cms -sign | openssl cms
//!   -encrypt -binary` produces); id-signedData is accepted as well.
//! - No AuthEnvelopedData (RFC 5083): the era's S/MIME has none, and CBC malleability is part
//!   of what is measured. What a modified ciphertext does on receipt is documented at
//!   [`open`].

use core::time::Duration;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::AnyRef;
use der::asn1::{Null, OctetString, OctetStringRef, SetOfVec, UtcTime};
use der::{Any, Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use rand_core::RngCore;
use rsa::{Pkcs1v15Encrypt, Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
use x509_cert::attr::Attribute;
use x509_cert::time::Time;

use super::pki::{Cert, RSA_ENCRYPTION};
use crate::E2eError;
use crate::rng06::Rng06;

/// id-data.
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-signedData.
pub const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-envelopedData.
pub const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
/// id-aes128-CBC (RFC 3565).
pub const AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES192_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
const AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// The content of a DER `ContentInfo` (RFC 5652 §3) that must be of type `expected` (`what`
/// names it in errors).
pub fn content_of(der_bytes: &[u8], expected: ObjectIdentifier, what: &'static str) -> Result<Any, E2eError> {
    let ci = ContentInfo::from_der(der_bytes).map_err(asn1(what))?;
    if ci.content_type != expected {
        let detail = format!("content type {} where {what} was expected", ci.content_type);
        return Err(E2eError::Malformed { what, detail });
    }
    Ok(ci.content)
}

fn asn1(what: &'static str) -> impl Fn(der::Error) -> E2eError {
    move |e| E2eError::Malformed { what, detail: e.to_string() }
}

fn local(e: impl core::fmt::Display) -> E2eError {
    E2eError::Policy { detail: format!("building our own CMS: {e}") }
}

fn rejected(reason: &'static str, detail: impl Into<String>) -> E2eError {
    E2eError::Rejected { reason, detail: detail.into() }
}

fn rsa_alg() -> Result<AlgorithmIdentifierOwned, E2eError> {
    // RFC 3370 §2.2/§4.2.1: rsaEncryption with NULL parameters.
    Ok(AlgorithmIdentifierOwned { oid: RSA_ENCRYPTION, parameters: Some(Any::from(Null)) })
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, E2eError> {
    Ok(Attribute { oid, values: SetOfVec::try_from(vec![value]).map_err(local)? })
}

fn issuer_and_serial(cert: &Cert) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.cert.tbs_certificate.issuer.clone(),
        serial_number: cert.cert.tbs_certificate.serial_number.clone(),
    }
}

/// RFC 5652 §5: a SignedData ContentInfo over `content` (id-data, encapsulated), signed by
/// `key` whose certificate `cert` is included (RFC 3923 §6.6), with a signing-time attribute
/// from the simulated clock.
pub fn sign(key: &RsaPrivateKey, cert: &Cert, content: &[u8], now: Duration) -> Result<Vec<u8>, E2eError> {
    let digest = Sha256::digest(content);
    let signing_time =
        Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(now.as_secs())).map_err(local)?);
    let attrs = vec![
        attribute(ID_CONTENT_TYPE, Any::from(ID_DATA)).map_err(local)?,
        attribute(ID_SIGNING_TIME, Any::encode_from(&signing_time).map_err(local)?)?,
        attribute(ID_MESSAGE_DIGEST, Any::new(Tag::OctetString, digest.as_slice()).map_err(local)?)?,
    ];
    let signed_attrs = SetOfVec::try_from(attrs).map_err(local)?;
    // §5.4: the signature covers the DER of the attributes with the SET OF tag.
    let to_sign = signed_attrs.to_der().map_err(local)?;
    let signature = key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&to_sign))
        .map_err(|e| E2eError::Policy { detail: format!("RSA signing: {e}") })?;
    let sha256 = AlgorithmIdentifierOwned { oid: ID_SHA256, parameters: None };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(cert)),
        digest_alg: sha256.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: rsa_alg()?,
        signature: OctetString::new(signature).map_err(local)?,
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(local)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(Any::new(Tag::OctetString, content).map_err(local)?),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![cms::cert::CertificateChoices::Certificate(cert.cert.clone())])
                .map_err(local)?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).map_err(local)?),
    };
    let ci = ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&sd).map_err(local)? };
    ci.to_der().map_err(local)
}

/// What a verified SignedData carried.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The encapsulated content.
    pub content: Vec<u8>,
    /// The certificate whose key made the signature.
    pub signer: Cert,
    /// The signing-time attribute, if present.
    pub signing_time: Option<Duration>,
}

/// The first SignerInfo of a SignedData (`signed_data`, the ContentInfo's content) in the
/// order of the input, and its signed attributes as they were encoded there, re-tagged as SET
/// OF (RFC 5652 §5.4). Decoding the `cms` types sorts every SET OF, so both are read from the
/// encoding itself.
fn first_signer(signed_data: &Any) -> Result<(SignerInfo, Option<Vec<u8>>), E2eError> {
    let bad = asn1("signed-data");
    let mut fields = SliceReader::new(signed_data.value()).map_err(&bad)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls, signerInfos.
    let mut last = None;
    while !fields.is_finished() {
        last = Some(AnyRef::decode(&mut fields).map_err(&bad)?);
    }
    let infos = last.filter(|a| a.tag() == Tag::Set).ok_or(E2eError::Missing { what: "signerInfos" })?;
    let mut infos = SliceReader::new(infos.value()).map_err(&bad)?;
    if infos.is_finished() {
        return Err(E2eError::Missing { what: "signerInfo" });
    }
    let first = AnyRef::decode(&mut infos).map_err(&bad)?;
    let si = SignerInfo::from_der(&first.to_der().map_err(&bad)?).map_err(asn1("signerInfo"))?;
    // version, sid ([0] primitive when a key identifier), digestAlgorithm, then
    // signedAttrs [0] IMPLICIT SET OF, constructed.
    let attrs_tag = Tag::ContextSpecific { constructed: true, number: TagNumber::N0 };
    let mut parts = SliceReader::new(first.value()).map_err(&bad)?;
    let mut raw = None;
    while !parts.is_finished() {
        let part = AnyRef::decode(&mut parts).map_err(&bad)?;
        if part.tag() == attrs_tag {
            raw = Some(AnyRef::new(Tag::Set, part.value()).map_err(&bad)?.to_der().map_err(&bad)?);
            break;
        }
    }
    if raw.is_some() != si.signed_attrs.is_some() {
        return Err(E2eError::Malformed { what: "signerInfo", detail: "signed attributes not found".into() });
    }
    Ok((si, raw))
}

/// RFC 5652 §5.6: verifies the first SignerInfo of a SignedData ContentInfo. The signer's
/// certificate comes from the SignedData's own certificates or from `known`. Only the
/// signature is checked here; whether the certificate is to be believed is the caller's
/// business ([`super::pki::Ca::issued`], validity, xmppAddr).
pub fn verify(der_bytes: &[u8], known: &[Cert]) -> Result<Signed, E2eError> {
    let signed_data = content_of(der_bytes, ID_SIGNED_DATA, "signed-data")?;
    let sd: SignedData = signed_data.decode_as().map_err(asn1("signed-data"))?;
    // RFC 3923 §3.1/§6.5: what is signed is the CPIM object, plain data.
    if sd.encap_content_info.econtent_type != ID_DATA {
        return Err(E2eError::Malformed {
            what: "eContentType",
            detail: format!("{} where id-data was expected", sd.encap_content_info.econtent_type),
        });
    }
    let econtent = sd.encap_content_info.econtent.as_ref().ok_or(E2eError::Missing { what: "eContent" })?;
    let content = econtent.decode_as::<OctetStringRef<'_>>().map_err(asn1("eContent"))?.as_bytes().to_vec();
    let (signer_info, raw_attrs) = first_signer(&signed_data)?;
    let si = &signer_info;
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return Err(rejected("unknown-signer", "signer named by subjectKeyIdentifier"));
    };
    let mut candidates: Vec<Cert> = Vec::new();
    if let Some(set) = &sd.certificates {
        for c in set.0.iter() {
            if let cms::cert::CertificateChoices::Certificate(c) = c {
                candidates.push(Cert::from_der(&c.to_der().map_err(asn1("certificate"))?)?);
            }
        }
    }
    candidates.extend(known.iter().cloned());
    let signer = candidates
        .into_iter()
        .find(|c| {
            c.cert.tbs_certificate.issuer == ias.issuer
                && c.cert.tbs_certificate.serial_number == ias.serial_number
        })
        .ok_or_else(|| rejected("unknown-signer", "no certificate for the signer"))?;
    let public = signer.rsa_public()?;
    let sha1 = si.digest_alg.oid == ID_SHA1;
    if !sha1 && si.digest_alg.oid != ID_SHA256 {
        return Err(rejected("unsupported-algorithm", format!("digest {}", si.digest_alg.oid)));
    }
    let alg = si.signature_algorithm.oid;
    if !(alg == RSA_ENCRYPTION || alg == SHA256_WITH_RSA && !sha1 || alg == SHA1_WITH_RSA && sha1) {
        return Err(rejected("unsupported-algorithm", format!("signature algorithm {alg}")));
    }
    let digest = |bytes: &[u8]| -> Vec<u8> {
        if sha1 { sha1::Sha1::digest(bytes).to_vec() } else { Sha256::digest(bytes).to_vec() }
    };
    let scheme = || if sha1 { Pkcs1v15Sign::new::<sha1::Sha1>() } else { Pkcs1v15Sign::new::<Sha256>() };
    let content_digest = digest(&content);
    let mut signing_time = None;
    let signed_over = match &si.signed_attrs {
        Some(attrs) => {
            // §5.3/§11: content-type and message-digest are required when attributes exist.
            let value = |oid: ObjectIdentifier| -> Option<&Any> {
                attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next())
            };
            let ct = value(ID_CONTENT_TYPE).ok_or(E2eError::Missing { what: "content-type attribute" })?;
            if ct.decode_as::<ObjectIdentifier>().ok() != Some(sd.encap_content_info.econtent_type) {
                return Err(rejected("bad-signature", "content-type attribute does not match"));
            }
            let md =
                value(ID_MESSAGE_DIGEST).ok_or(E2eError::Missing { what: "message-digest attribute" })?;
            let md = md.decode_as::<OctetStringRef<'_>>().map_err(asn1("message-digest"))?;
            if md.as_bytes() != content_digest.as_slice() {
                return Err(rejected("bad-signature", "message digest does not match the content"));
            }
            if let Some(t) = value(ID_SIGNING_TIME) {
                let t = Time::from_der(&t.to_der().map_err(asn1("signing-time"))?)
                    .map_err(asn1("signing-time"))?;
                signing_time = Some(t.to_unix_duration());
            }
            // §5.4: over the attributes as the signer encoded them, with the SET OF tag — not
            // a re-encoding, which would sort them (and fail a signer that did not).
            digest(&raw_attrs.ok_or(E2eError::Missing { what: "signed attributes" })?)
        }
        None => content_digest,
    };
    public
        .verify(scheme(), &signed_over, si.signature.as_bytes())
        .map_err(|_| rejected("bad-signature", "RSA signature does not verify"))?;
    Ok(Signed { content, signer, signing_time })
}

/// RFC 5652 §6: an EnvelopedData ContentInfo of `content` (id-data) for every certificate in
/// `recipients`, AES-128-CBC, every random byte from `rng`.
pub fn envelope(content: &[u8], recipients: &[&Cert], rng: &mut dyn RngCore) -> Result<Vec<u8>, E2eError> {
    let mut cek = [0u8; 16];
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut cek);
    rng.fill_bytes(&mut iv);
    let ciphertext =
        cbc::Encryptor::<aes::Aes128>::new(&cek.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(content);
    let mut infos = Vec::new();
    for cert in recipients {
        let public = cert.rsa_public()?;
        let enc_key = public
            .encrypt(&mut Rng06(&mut *rng), Pkcs1v15Encrypt, &cek)
            .map_err(|e| E2eError::Policy { detail: format!("RSA key transport: {e}") })?;
        infos.push(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(cert)),
            key_enc_alg: rsa_alg()?,
            enc_key: OctetString::new(enc_key).map_err(local)?,
        }));
    }
    let ed = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(SetOfVec::try_from(infos).map_err(local)?),
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: AES128_CBC,
                parameters: Some(Any::new(Tag::OctetString, iv.as_slice()).map_err(local)?),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(local)?),
        },
        unprotected_attrs: None,
    };
    let ci = ContentInfo { content_type: ID_ENVELOPED_DATA, content: Any::encode_from(&ed).map_err(local)? };
    ci.to_der().map_err(local)
}

/// RFC 5652 §6.2.1 in reverse: finds our KeyTransRecipientInfo, unwraps the content key with
/// our RSA key and decrypts the content.
///
/// On a modified ciphertext (CBC malleability): a change in the last block, or in the IV
/// when the content is one block, almost always breaks the PKCS #7 padding (`bad-padding`);
/// a change elsewhere garbles one block and flips the chosen bits of the next, which the
/// padding check does not see: the modified SignedData is returned and fails in
/// [`verify`] (`malformed` when the DER breaks, `bad-signature` when the signed content or
/// signature changed, or a certificate error when the embedded certificate changed). The
/// outer layer authenticates nothing: only the inner signature stops the modification from
/// being shown. It does not stop it from being measured: `bad-padding` is a decryption
/// failure, the later errors are not, and RFC 3923 §7 answers the two differently
/// (`<bad-request/>`, `<not-acceptable/>`), which makes the receiver a CBC padding oracle
/// (module docs of [`super`], "What the §7 replies reveal").
pub fn open(
    der_bytes: &[u8],
    mine: &Cert,
    key: &RsaPrivateKey,
    rng: &mut dyn RngCore,
) -> Result<(ObjectIdentifier, Vec<u8>), E2eError> {
    let ed: EnvelopedData = content_of(der_bytes, ID_ENVELOPED_DATA, "enveloped-data")?
        .decode_as()
        .map_err(asn1("enveloped-data"))?;
    let ours = issuer_and_serial(mine);
    let ktri = ed
        .recip_infos
        .0
        .iter()
        .find_map(|ri| match ri {
            RecipientInfo::Ktri(k) => match &k.rid {
                RecipientIdentifier::IssuerAndSerialNumber(ias) if *ias == ours => Some(k),
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| rejected("not-for-this-device", "no recipient info for our certificate"))?;
    if ktri.key_enc_alg.oid != RSA_ENCRYPTION {
        return Err(rejected("unsupported-algorithm", format!("key transport {}", ktri.key_enc_alg.oid)));
    }
    let cek = key
        .decrypt_blinded(&mut Rng06(&mut *rng), Pkcs1v15Encrypt, ktri.enc_key.as_bytes())
        .map_err(|_| rejected("decryption-failed", "the content key does not unwrap"))?;
    let eci = &ed.encrypted_content;
    let iv = eci
        .content_enc_alg
        .parameters
        .as_ref()
        .ok_or(E2eError::Missing { what: "content encryption IV" })?
        .decode_as::<OctetStringRef<'_>>()
        .map_err(asn1("content encryption IV"))?;
    let iv: [u8; 16] = iv
        .as_bytes()
        .try_into()
        .map_err(|_| E2eError::Malformed { what: "content encryption IV", detail: "not 16 bytes".into() })?;
    let ciphertext =
        eci.encrypted_content.as_ref().ok_or(E2eError::Missing { what: "encryptedContent" })?.as_bytes();
    let bad_key = || rejected("decryption-failed", "content key has the wrong length");
    let bad_padding = |_| rejected("bad-padding", "CBC padding is invalid");
    let oid = eci.content_enc_alg.oid;
    let plain = if oid == AES128_CBC {
        let k: [u8; 16] = cek.as_slice().try_into().map_err(|_| bad_key())?;
        cbc::Decryptor::<aes::Aes128>::new(&k.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(bad_padding)?
    } else if oid == AES192_CBC {
        let k: [u8; 24] = cek.as_slice().try_into().map_err(|_| bad_key())?;
        cbc::Decryptor::<aes::Aes192>::new(&k.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(bad_padding)?
    } else if oid == AES256_CBC {
        let k: [u8; 32] = cek.as_slice().try_into().map_err(|_| bad_key())?;
        cbc::Decryptor::<aes::Aes256>::new(&k.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(bad_padding)?
    } else {
        return Err(rejected("unsupported-algorithm", format!("content encryption {oid}")));
    };
    Ok((eci.content_type, plain))
}
