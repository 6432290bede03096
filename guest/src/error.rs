use std::fmt;

/// Every way building, parsing or matching a filter can fail.
///
/// Parsing never panics: each malformed input maps to one of these variants, naming the
/// field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Occurs when the input ends before a field that the header says is there.
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs, counted from the start of the snapshot.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// Occurs when the snapshot does not start with the format's magic bytes.
    BadMagic,
    /// Occurs when the snapshot's format version is not one this code knows.
    UnsupportedVersion(u16),
    /// Occurs when a header field holds a value the format forbids (zero bits, an absurd
    /// number of hashes, a non-zero reserved field, a bad label, ...).
    InvalidField {
        /// The field, as named in `docs/FORMAT.md`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Occurs when the payload's SHA-256 differs from the one in the header.
    PayloadDigest,
    /// Occurs when a digest's length does not fit its algorithm.
    DigestLength {
        /// The algorithm the digest claims.
        algorithm: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Occurs when an algorithm name is not `md5`, `sha1` or `sha256`.
    UnknownAlgorithm(String),
    /// Occurs when a builder is asked to insert into a section it was not sized for, or
    /// more entries than it was sized for.
    NoSuchSection(String),
    /// Occurs when build parameters are out of range (false-positive rate, sizes, series).
    InvalidParams(String),
    /// Occurs when a delta was made for another base snapshot than the loaded one.
    DeltaBase,
    /// Occurs when a delta cannot carry a change (the geometry differs) or its result is
    /// not the target it names.
    DeltaMismatch(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated {
                field,
                needed,
                available,
            } => write!(
                f,
                "snapshot truncated: field {field} needs {needed} bytes, only {available} present"
            ),
            Error::BadMagic => f.write_str("not a hashgate filter snapshot (bad magic)"),
            Error::UnsupportedVersion(v) => write!(f, "unsupported filter format version {v}"),
            Error::InvalidField { field, reason } => write!(f, "invalid field {field}: {reason}"),
            Error::PayloadDigest => {
                f.write_str("payload SHA-256 does not match the header (corrupt snapshot)")
            }
            Error::DigestLength { algorithm, len } => {
                write!(f, "a {algorithm} digest cannot be {len} bytes long")
            }
            Error::UnknownAlgorithm(name) => write!(f, "unknown digest algorithm {name:?}"),
            Error::NoSuchSection(s) => write!(f, "no such section: {s}"),
            Error::InvalidParams(s) => write!(f, "invalid build parameters: {s}"),
            Error::DeltaBase => f.write_str("the delta was made for another base snapshot"),
            Error::DeltaMismatch(s) => write!(f, "the delta does not fit: {s}"),
        }
    }
}

impl std::error::Error for Error {}
