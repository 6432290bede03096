//! What a snapshot file is.

use std::path::Path;

use hashgate_guest::{Filter, Header};
use hashgate_trust::keys::{self as trust, PublicKey};
use serde::Serialize;

use crate::Error;

/// The state of a snapshot's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// Signed by the given key, and the signature verifies.
    Valid {
        /// Hex key id.
        key_id: String,
    },
    /// The signature does not verify with the given key.
    Invalid {
        /// Why.
        reason: String,
    },
    /// No key was given; the trailer names this signer.
    Unchecked {
        /// Hex key id from the trailer, if there is a trailer.
        key_id: Option<String>,
    },
}

/// One section as measured.
#[derive(Clone, Debug, Serialize)]
pub struct SectionReport {
    /// `md5`, `sha1` or `sha256`.
    pub algorithm: String,
    /// The category label.
    pub category: Option<String>,
    /// Entries.
    pub entries: u64,
    /// Bits (m).
    pub bits: u64,
    /// Fraction of bits set.
    pub fill: f64,
    /// False-positive rate implied by the measured fill: `fill^k`.
    pub expected_fp_rate: f64,
}

/// What `hashgate inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Format version.
    pub format_version: u16,
    /// Series.
    pub series: String,
    /// Version.
    pub version: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Expiry time, Unix seconds.
    pub expires: u64,
    /// Entries over all sections.
    pub entries: u64,
    /// Hashes per digest (k).
    pub hashes: u32,
    /// Salt, hex.
    pub salt: String,
    /// Payload bytes.
    pub payload_len: u64,
    /// Payload SHA-256, hex.
    pub payload_sha256: String,
    /// File size in bytes.
    pub file_len: u64,
    /// The sections.
    pub sections: Vec<SectionReport>,
    /// The signature.
    pub signature: SignatureStatus,
}

/// Parses and measures the snapshot at `path`; checks its signature if `key` is given.
/// A snapshot that does not parse is an error; a bad signature is reported, not an error.
pub fn inspect(path: &Path, key: Option<&PublicKey>) -> Result<Report, Error> {
    let file = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let signature = match key {
        Some(key) => match trust::verify(&file, std::slice::from_ref(key)) {
            Ok(_) => SignatureStatus::Valid {
                key_id: hex::encode(key.id()),
            },
            Err(e) => SignatureStatus::Invalid {
                reason: e.to_string(),
            },
        },
        None => SignatureStatus::Unchecked {
            key_id: trust::signer_id(&file).map(hex::encode),
        },
    };
    let body_len = if trust::signer_id(&file).is_some() {
        file.len() - trust::TRAILER_LEN
    } else {
        file.len()
    };
    let file_len = file.len() as u64;
    let mut file = file;
    file.truncate(body_len);
    let filter = Filter::parse(file)?;
    let h: &Header = filter.header();
    let sections = filter
        .sections()
        .iter()
        .map(|s| {
            let fill = filter.fill(s);
            SectionReport {
                algorithm: s.algorithm.name().to_string(),
                category: s.category.clone(),
                entries: s.entries,
                bits: s.bits,
                fill,
                expected_fp_rate: fill.powi(h.hashes as i32),
            }
        })
        .collect();
    Ok(Report {
        format_version: hashgate_guest::format::FORMAT_VERSION,
        series: h.series.clone(),
        version: h.version,
        created: h.created,
        expires: h.expires,
        entries: h.entries,
        hashes: h.hashes,
        salt: hex::encode(h.salt),
        payload_len: h.payload_len,
        payload_sha256: hex::encode(h.payload_sha256),
        file_len,
        sections,
        signature,
    })
}
