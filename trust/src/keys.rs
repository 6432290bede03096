//! Keys and signatures: nothing the authority publishes reaches the guest unverified.
//!
//! A signed file is its body followed by an 80-byte trailer (`docs/FORMAT.md`,
//! "Signature trailer"):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `HGSIGv1\n` |
//! | 8 | 8 | key id: the first 8 bytes of SHA-256 of the 32-byte public key |
//! | 16 | 64 | Ed25519 signature over `magic || key id || SHA-256(body)` (48 bytes) |
//!
//! Signing the body's SHA-256 rather than the body lets the host check a 54 MB filter
//! with one native SHA-256 (SHA-NI, ~2 GB/s) instead of Ed25519's SHA-512 over all of
//! it (~0.5 GB/s), and lets the signer stream the body.
//!
//! Verification uses `verify_strict` (no small-order keys, canonical signatures only).
//! Keys are stored as PEM: PKCS#8 for secret keys (mode 0600), SPKI for public keys, the
//! same forms `openssl pkey` reads.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Error;

/// The first bytes of a signature trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"HGSIGv1\n";
/// Length of the signature trailer.
pub const TRAILER_LEN: usize = 80;

/// An authority's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// An authority's secret signing key.
pub struct SecretKey(SigningKey);

impl PublicKey {
    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<PublicKey, Error> {
        let pem = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        VerifyingKey::from_public_key_pem(&pem)
            .map(PublicKey)
            .map_err(|e| Error::Key {
                path: path.to_path_buf(),
                kind: "public",
                reason: e.to_string(),
            })
    }

    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, Error> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|e| Error::Signature(format!("invalid public key: {e}")))
    }

    /// The key's 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key in PEM (SPKI) form.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(Default::default())
            .expect("an Ed25519 key always encodes")
    }

    /// Whether `signature` is this key's valid Ed25519 signature of `message`
    /// (`verify_strict`: canonical signatures, no small-order keys).
    pub fn verify_message(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.0
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }

    /// The key id: the first 8 bytes of SHA-256 of the raw public key.
    pub fn id(&self) -> [u8; 8] {
        Sha256::digest(self.0.as_bytes())[..8]
            .try_into()
            .expect("8 bytes")
    }
}

impl SecretKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> SecretKey {
        SecretKey(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key from a 32-byte seed (tests and known-answer vectors only).
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// Reads a PEM (PKCS#8) secret key file.
    pub fn read(path: &Path) -> Result<SecretKey, Error> {
        let pem = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        SigningKey::from_pkcs8_pem(&pem)
            .map(SecretKey)
            .map_err(|e| Error::Key {
                path: path.to_path_buf(),
                kind: "secret",
                reason: e.to_string(),
            })
    }

    /// The key in PEM (PKCS#8) form.
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(Default::default())
            .expect("an Ed25519 key always encodes")
            .to_string()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Appends the signature trailer to `body`, making it a signed file.
    pub fn sign_append(&self, body: &mut Vec<u8>) {
        let head = trailer_head(&self.public_key().id());
        let signature = self.0.sign(&signed_message(&head, body));
        body.reserve(TRAILER_LEN);
        body.extend_from_slice(&head);
        body.extend_from_slice(&signature.to_bytes());
    }
}

fn trailer_head(key_id: &[u8; 8]) -> [u8; 16] {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&TRAILER_MAGIC);
    head[8..].copy_from_slice(key_id);
    head
}

/// What the signature covers: the trailer's magic and key id, then SHA-256 of the body.
fn signed_message(head: &[u8], body: &[u8]) -> [u8; 48] {
    let mut message = [0u8; 48];
    message[..16].copy_from_slice(head);
    message[16..].copy_from_slice(&Sha256::digest(body));
    message
}

/// The id of the key that claims to have signed `file`, if it has a trailer.
pub fn signer_id(file: &[u8]) -> Option<[u8; 8]> {
    let trailer = file.get(file.len().checked_sub(TRAILER_LEN)?..)?;
    (trailer[..8] == TRAILER_MAGIC).then(|| trailer[8..16].try_into().expect("8 bytes"))
}

/// Verifies `file`'s trailer against the trusted `keys` and returns the signed body.
pub fn verify<'a>(file: &'a [u8], keys: &[PublicKey]) -> Result<&'a [u8], Error> {
    let split = file
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or_else(|| Error::Signature("file too short to hold a signature".into()))?;
    let (body, trailer) = file.split_at(split);
    if trailer[..8] != TRAILER_MAGIC {
        return Err(Error::Signature(
            "no signature trailer (unsigned or truncated file)".into(),
        ));
    }
    let id = &trailer[8..16];
    let key = keys.iter().find(|k| k.id() == id).ok_or_else(|| {
        Error::Signature(format!(
            "signed by key {}, which is not a trusted key (trusted: {})",
            hex::encode(id),
            keys.iter()
                .map(|k| hex::encode(k.id()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let signature = Signature::from_bytes(trailer[16..].try_into().expect("64 bytes"));
    key.0
        .verify_strict(&signed_message(&trailer[..16], body), &signature)
        .map_err(|_| Error::Signature(format!("bad signature by key {}", hex::encode(id))))?;
    Ok(body)
}
