//! The signed documents of a feed (`docs/PROTOCOL.md`): the root, which names the
//! authority's keys and thresholds, and the manifest, which names a version's files.
//!
//! Both travel in a DSSE envelope (the payload as base64, its type, and signatures over
//! DSSE's pre-authentication encoding), so signatures cover exact bytes and no JSON
//! canonicalisation is needed. A signature counts once per distinct key of the role: a
//! key listed twice, or one key signing twice, never meets a threshold alone.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};
use crate::Error;

/// Largest root or manifest file a host reads: metadata is small, and a hostile server
/// must not make a gateway download much before anything is verified.
pub const MAX_DOCUMENT: usize = 64 * 1024;
/// The envelope payload type of a root.
pub const ROOT_TYPE: &str = "application/vnd.hashgate.root+json";
/// The envelope payload type of a manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.hashgate.manifest+json";

fn feed_error(m: impl Into<String>) -> Error {
    Error::Document(m.into())
}

/// A signed document as it is stored and served.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// What the payload is ([`ROOT_TYPE`] or [`MANIFEST_TYPE`]).
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload's bytes, base64.
    pub payload: String,
    /// Signatures over the payload's pre-authentication encoding.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The signer's key id (16 hex digits, as in the snapshot trailer).
    pub keyid: String,
    /// The Ed25519 signature, base64.
    pub sig: String,
}

/// DSSE's pre-authentication encoding: what a signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m
}

impl Envelope {
    /// An unsigned envelope around `payload`.
    pub fn new(payload_type: &str, payload: &[u8]) -> Envelope {
        Envelope {
            payload_type: payload_type.to_string(),
            payload: B64.encode(payload),
            signatures: Vec::new(),
        }
    }

    /// Parses an envelope file (at most [`MAX_DOCUMENT`] bytes).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, Error> {
        if bytes.len() > MAX_DOCUMENT {
            return Err(feed_error(format!(
                "a signed document of {} bytes is over the {MAX_DOCUMENT}-byte cap",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| feed_error(format!("not an envelope: {e}")))
    }

    /// The envelope as a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("an envelope serialises");
        out.push(b'\n');
        out
    }

    /// The payload's bytes.
    pub fn payload(&self) -> Result<Vec<u8>, Error> {
        B64.decode(&self.payload)
            .map_err(|e| feed_error(format!("payload is not base64: {e}")))
    }

    /// Adds (or replaces) `key`'s signature.
    pub fn sign(&mut self, key: &SecretKey) -> Result<(), Error> {
        let message = pae(&self.payload_type, &self.payload()?);
        let id = hex::encode(key.public_key().id());
        self.signatures.retain(|s| s.keyid != id);
        self.signatures.push(EnvelopeSignature {
            keyid: id,
            sig: B64.encode(key.sign(&message)),
        });
        Ok(())
    }

    /// Checks that the payload is of `payload_type` and that at least `role.threshold`
    /// distinct keys of `role` signed it; returns the payload.
    pub fn verify(
        &self,
        payload_type: &str,
        keys: &BTreeMap<String, PublicKey>,
        role: &Role,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        if self.payload_type != payload_type {
            return Err(Error::Signature(format!(
                "{what}: payload type {:?}, expected {payload_type:?}",
                self.payload_type
            )));
        }
        let payload = self.payload()?;
        let message = pae(payload_type, &payload);
        let mut good = BTreeSet::new();
        for s in &self.signatures {
            if !role.keys.contains(&s.keyid) {
                continue;
            }
            let (Some(key), Ok(sig)) = (keys.get(&s.keyid), B64.decode(&s.sig)) else {
                continue;
            };
            if key.verify_message(&message, &sig) {
                good.insert(s.keyid.clone());
            }
        }
        if (good.len() as u32) < role.threshold {
            return Err(Error::Signature(format!(
                "{what}: {} valid signature(s) by distinct trusted keys, {} needed",
                good.len(),
                role.threshold
            )));
        }
        Ok(payload)
    }
}

/// Which keys may sign a kind of document, and how many must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Key ids.
    pub keys: BTreeSet<String>,
    /// Distinct signatures needed, at least 1 and at most the number of keys.
    pub threshold: u32,
}

/// The root of trust: the authority's keys and who signs what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Always `hashgate-root`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Starts at 1; each rotation adds one.
    pub version: u64,
    /// Every key the roles name: id (16 hex digits) to raw public key (base64).
    pub keys: BTreeMap<String, String>,
    /// Who signs roots: the next root needs this role of this root *and* its own.
    pub root: Role,
    /// Who signs manifests.
    pub manifest: Role,
}

/// A root that has been checked, with its keys decoded.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    /// The document.
    pub root: Root,
    /// Its keys.
    pub keys: BTreeMap<String, PublicKey>,
    /// The envelope it came in (kept so it can be persisted as received).
    pub envelope: Envelope,
}

impl Root {
    /// A version-1 root (unsigned until [`Envelope::sign`]).
    pub fn new(root: (&[PublicKey], u32), manifest: (&[PublicKey], u32)) -> Result<Root, Error> {
        let mut keys = BTreeMap::new();
        let mut role = |list: &[PublicKey], threshold| {
            let mut ids = BTreeSet::new();
            for k in list {
                let id = hex::encode(k.id());
                keys.insert(id.clone(), B64.encode(k.to_bytes()));
                ids.insert(id);
            }
            Role {
                keys: ids,
                threshold,
            }
        };
        let root_role = role(root.0, root.1);
        let manifest_role = role(manifest.0, manifest.1);
        let r = Root {
            kind: "hashgate-root".into(),
            version: 1,
            keys,
            root: root_role,
            manifest: manifest_role,
        };
        r.decoded_keys()?;
        Ok(r)
    }

    /// Checks the document's own consistency and decodes its keys.
    pub fn decoded_keys(&self) -> Result<BTreeMap<String, PublicKey>, Error> {
        if self.kind != "hashgate-root" {
            return Err(feed_error(format!("not a root: type {:?}", self.kind)));
        }
        if self.version == 0 {
            return Err(feed_error("root version 0: versions start at 1"));
        }
        let mut keys = BTreeMap::new();
        let mut raw_seen = BTreeSet::new();
        for (id, raw) in &self.keys {
            let bytes: [u8; 32] = B64
                .decode(raw)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| feed_error(format!("root key {id}: not 32 base64 bytes")))?;
            let key = PublicKey::from_bytes(&bytes)?;
            if hex::encode(key.id()) != *id {
                return Err(feed_error(format!(
                    "root key {id}: the id is not the key's"
                )));
            }
            if !raw_seen.insert(bytes) {
                return Err(feed_error(format!("root key {id} is listed twice")));
            }
            keys.insert(id.clone(), key);
        }
        for (name, role) in [("root", &self.root), ("manifest", &self.manifest)] {
            if role.threshold == 0 || role.threshold as usize > role.keys.len() {
                return Err(feed_error(format!(
                    "the {name} role needs 1 to {} signatures, not {}",
                    role.keys.len(),
                    role.threshold
                )));
            }
            if let Some(missing) = role.keys.iter().find(|k| !keys.contains_key(*k)) {
                return Err(feed_error(format!(
                    "the {name} role names key {missing}, which the root does not list"
                )));
            }
        }
        Ok(keys)
    }

    /// The document as an unsigned envelope.
    pub fn envelope(&self) -> Envelope {
        Envelope::new(
            ROOT_TYPE,
            &serde_json::to_vec(self).expect("a root serialises"),
        )
    }
}

impl TrustedRoot {
    /// Trusts a root given by the operator (`--root FILE`): it must be well formed and
    /// signed by its own root role's threshold.
    pub fn bootstrap(bytes: &[u8]) -> Result<TrustedRoot, Error> {
        let envelope = Envelope::parse(bytes)?;
        let root = parse_root(&envelope)?;
        let keys = root.decoded_keys()?;
        envelope.verify(ROOT_TYPE, &keys, &root.root, "root")?;
        Ok(TrustedRoot {
            root,
            keys,
            envelope,
        })
    }

    /// The next root, if `bytes` is one: version exactly one more, signed by this
    /// root's root role *and* its own.
    pub fn rotate(&self, bytes: &[u8]) -> Result<TrustedRoot, Error> {
        let envelope = Envelope::parse(bytes)?;
        let next = parse_root(&envelope)?;
        let keys = next.decoded_keys()?;
        if next.version != self.root.version + 1 {
            return Err(feed_error(format!(
                "root version {} does not follow {}",
                next.version, self.root.version
            )));
        }
        envelope.verify(
            ROOT_TYPE,
            &self.keys,
            &self.root.root,
            "new root (old keys)",
        )?;
        envelope.verify(ROOT_TYPE, &keys, &next.root, "new root (its own keys)")?;
        Ok(TrustedRoot {
            root: next,
            keys,
            envelope,
        })
    }

    /// Verifies a manifest envelope with this root's manifest role and parses it.
    pub fn manifest(&self, bytes: &[u8]) -> Result<Manifest, Error> {
        let envelope = Envelope::parse(bytes)?;
        let payload =
            envelope.verify(MANIFEST_TYPE, &self.keys, &self.root.manifest, "manifest")?;
        let manifest: Manifest = serde_json::from_slice(&payload)
            .map_err(|e| feed_error(format!("manifest payload: {e}")))?;
        manifest.check()?;
        Ok(manifest)
    }
}

fn parse_root(envelope: &Envelope) -> Result<Root, Error> {
    if envelope.payload_type != ROOT_TYPE {
        return Err(feed_error(format!(
            "payload type {:?} is not a root",
            envelope.payload_type
        )));
    }
    serde_json::from_slice(&envelope.payload()?)
        .map_err(|e| feed_error(format!("root payload: {e}")))
}

/// A file the manifest names: where it is, how long, its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Path relative to the feed's base URL.
    pub path: String,
    /// Exact length in bytes: a host downloads no more.
    pub length: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// A delta the manifest names: from which state to this version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaRef {
    /// The version it applies to.
    pub from: u64,
    /// The version it produces: the manifest's.
    pub to: u64,
    /// SHA-256 of the snapshot body it applies to, hex: a host uses the delta only if
    /// its own state has exactly this hash.
    pub from_sha256: String,
    /// The file.
    #[serde(flatten)]
    pub file: FileRef,
}

/// A version of a series, as the authority signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `hashgate-manifest`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The series.
    pub series: String,
    /// Monotonic within the series (and the root version).
    pub version: u64,
    /// The root version whose manifest keys signed this.
    pub root_version: u64,
    /// When it was signed, Unix seconds.
    pub published: u64,
    /// Until when it vouches for freshness, Unix seconds.
    pub expires: u64,
    /// Hosts poll no more often than this.
    pub min_poll_seconds: u64,
    /// SHA-256 of the snapshot body of this version, hex: the state a host must end in.
    pub state_sha256: String,
    /// The full snapshot (a signed `.hgf` file).
    pub snapshot: FileRef,
    /// Deltas from recent versions to this one.
    #[serde(default)]
    pub deltas: Vec<DeltaRef>,
    /// A new filter guest component, if the authority ships one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<FileRef>,
}

fn check_path(path: &str) -> Result<(), Error> {
    let ok = !path.is_empty()
        && path.len() <= 256
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(feed_error(format!(
            "file path {path:?} is not a plain relative path"
        )))
    }
}

fn check_sha(hex_sha: &str, what: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sha, &mut out)
        .map_err(|_| feed_error(format!("{what}: {hex_sha:?} is not a hex SHA-256")))?;
    Ok(out)
}

impl FileRef {
    /// The SHA-256 as bytes.
    pub fn sha256(&self) -> [u8; 32] {
        check_sha(&self.sha256, "file").expect("checked when the manifest was parsed")
    }
}

impl Manifest {
    fn check(&self) -> Result<(), Error> {
        if self.kind != "hashgate-manifest" {
            return Err(feed_error(format!("not a manifest: type {:?}", self.kind)));
        }
        if self.expires <= self.published {
            return Err(feed_error("manifest expires before it was published"));
        }
        check_sha(&self.state_sha256, "state_sha256")?;
        let files = std::iter::once(&self.snapshot)
            .chain(self.deltas.iter().map(|d| &d.file))
            .chain(self.guest.as_ref());
        for file in files {
            check_path(&file.path)?;
            check_sha(&file.sha256, &file.path)?;
        }
        for d in &self.deltas {
            check_sha(&d.from_sha256, "from_sha256")?;
            if d.to != self.version || d.from >= d.to {
                return Err(feed_error(format!(
                    "a delta from {} to {} in the manifest of version {}",
                    d.from, d.to, self.version
                )));
            }
        }
        Ok(())
    }

    /// The state hash as bytes.
    pub fn state_sha256(&self) -> [u8; 32] {
        check_sha(&self.state_sha256, "state").expect("checked when the manifest was parsed")
    }

    /// The manifest as an unsigned envelope.
    pub fn envelope(&self) -> Envelope {
        Envelope::new(
            MANIFEST_TYPE,
            &serde_json::to_vec(self).expect("a manifest serialises"),
        )
    }
}
