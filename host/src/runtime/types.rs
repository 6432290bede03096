//! The guest's types as the host's domain types: generated from `wit/filter.wit`, with
//! the helpers front-ends need.

use std::fmt;
use std::str::FromStr;

pub use super::bindings::exports::hashgate::filter::filter::{
    Algorithm, Digest, FilterInfo, Hit, SectionInfo, Verdict,
};

impl Algorithm {
    /// Every algorithm, in format code order.
    pub const ALL: [Algorithm; 3] = [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256];

    /// The lower-case name: `md5`, `sha1`, `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown algorithm {s:?}"))
    }
}

impl Hit {
    /// Whether this hit is on the canary file rather than on listed material.
    pub fn is_canary(&self) -> bool {
        self.category.as_deref() == Some(crate::CANARY_CATEGORY)
    }
}

impl Verdict {
    /// The hits, empty when clean.
    pub fn hits(&self) -> &[Hit] {
        match self {
            Verdict::Clean => &[],
            Verdict::Hit(hits) => hits,
        }
    }
}

impl FilterInfo {
    /// Whether the filter's expiry time has passed at `now` (Unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires
    }
}
