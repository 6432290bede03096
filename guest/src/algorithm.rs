use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A digest algorithm a filter section holds.
///
/// The discriminant is the algorithm's code in the format (`docs/FORMAT.md`) and the
/// domain-separation byte of its bit-index derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// MD5, 16-byte digests.
    Md5 = 1,
    /// SHA-1, 20-byte digests.
    Sha1 = 2,
    /// SHA-256, 32-byte digests.
    Sha256 = 3,
}

impl Algorithm {
    /// Every algorithm, in code order.
    pub const ALL: [Algorithm; 3] = [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256];

    /// The format code of this algorithm.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The algorithm with format code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// The algorithm whose digests are `len` bytes long.
    pub fn from_digest_len(len: usize) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.digest_len() == len)
    }

    /// The lower-case name used in lists, reports and the CLI: `md5`, `sha1`, `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Parses `md5`, `sha1` or `sha256`, also with a dash (`sha-256`) and in any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Ok(Algorithm::Md5),
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            _ => Err(Error::UnknownAlgorithm(s.to_string())),
        }
    }
}
