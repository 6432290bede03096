//! The operator's feedback report to an authority: which listed entries hit how often,
//! which the operator allow-lists (its false positives), which filters are in force.
//! No customer data: no paths, no addresses, no times of single hits.
//!
//! A report is JSON signed like every other shared file (the [`crate::keys`] trailer),
//! with the operator's own key. The authority knows its operators' public keys and
//! accepts from each only reports whose `sequence` is above the last it took, so a
//! report replayed (by anyone) is refused.
//!
//! ```
//! use hashgate_trust::feedback::{self, EntryCount, Report};
//! use hashgate_trust::keys::SecretKey;
//!
//! let operator = SecretKey::from_seed(&[5; 32]);
//! let report = Report {
//!     hits: vec![EntryCount { entry: "sha256:ab".into(), hits: 3 }],
//!     ..Report::new(&operator.public_key(), 1_764_820_000_000)
//! };
//! let sealed = feedback::seal(&report, &operator);
//! let opened = feedback::open(&sealed, &[operator.public_key()]).unwrap();
//! assert_eq!(opened.1, report);
//! let stranger = SecretKey::from_seed(&[6; 32]);
//! assert!(feedback::open(&sealed, &[stranger.public_key()]).is_err());
//! ```

use serde::{Deserialize, Serialize};

use crate::keys::{self, PublicKey, SecretKey};
use crate::Error;

/// The `kind` every report carries.
pub const KIND: &str = "hashgate-feedback-v1";

/// One report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`KIND`].
    pub kind: String,
    /// The id of the operator's key (hex), which must be the key that signed it.
    pub operator: String,
    /// Above every earlier report's of this operator (the gateway uses the time in
    /// milliseconds, kept increasing).
    pub sequence: u64,
    /// Unix seconds: the period the counts cover.
    pub from: u64,
    /// Unix seconds.
    pub to: u64,
    /// The filters in force when it was made.
    pub filters: Vec<FilterInForce>,
    /// Hits per listed entry in the period (`sha256:HEX`, `pdq:HEX`, ...).
    pub hits: Vec<EntryCount>,
    /// Hits of entries beyond the ones counted one by one (the gateway's tally is
    /// bounded).
    pub uncounted: u64,
    /// The operator's allow-listed entries (its false positives).
    pub allowed: Vec<String>,
    /// The last checkpoint line of the operator's audit log, if it signs one: kept by
    /// the authority, it witnesses the log (a later cut before it is evident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// A filter a report names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterInForce {
    /// Series.
    pub series: String,
    /// Version.
    pub version: u64,
}

/// Hits of one listed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryCount {
    /// The entry (`algorithm:HEX`).
    pub entry: String,
    /// Its hits.
    pub hits: u64,
}

impl Report {
    /// An empty report by `operator` with `sequence`.
    pub fn new(operator: &PublicKey, sequence: u64) -> Report {
        Report {
            kind: KIND.into(),
            operator: hex::encode(operator.id()),
            sequence,
            from: 0,
            to: 0,
            filters: Vec::new(),
            hits: Vec::new(),
            uncounted: 0,
            allowed: Vec::new(),
            checkpoint: None,
        }
    }
}

/// The report as JSON, signed with `key`.
pub fn seal(report: &Report, key: &SecretKey) -> Vec<u8> {
    let mut body = serde_json::to_vec(report).expect("reports serialize");
    key.sign_append(&mut body);
    body
}

/// Checks a sealed report against the `operators`' keys; the key that signed it and
/// the report.
///
/// Fails with [`Error::Signature`] when no operator's key signed it (or the bytes were
/// changed), and [`Error::Document`] when it is not a report or names another operator
/// than its signer.
pub fn open(sealed: &[u8], operators: &[PublicKey]) -> Result<(PublicKey, Report), Error> {
    let body = keys::verify(sealed, operators)?;
    let signer = keys::signer_id(sealed).expect("verified files have a trailer");
    let key = operators
        .iter()
        .find(|k| k.id() == signer)
        .expect("verify found the key")
        .clone();
    let report: Report = serde_json::from_slice(body)
        .map_err(|e| Error::Document(format!("not a feedback report: {e}")))?;
    if report.kind != KIND {
        return Err(Error::Document(format!(
            "a report of kind {:?}, not {KIND:?}",
            report.kind
        )));
    }
    if report.operator != hex::encode(signer) {
        return Err(Error::Document(format!(
            "the report names operator {} but is signed by {}",
            report.operator,
            hex::encode(signer)
        )));
    }
    Ok((key, report))
}

/// The body of a sealed report, unchecked (for reading reports already accepted).
pub fn body(sealed: &[u8]) -> Option<&[u8]> {
    sealed
        .len()
        .checked_sub(keys::TRAILER_LEN)
        .map(|n| &sealed[..n])
}
