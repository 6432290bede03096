//! The guest's types as the host's domain types: generated from `wit/filter.wit`, with
//! the helpers front-ends need.

use std::fmt;
use std::str::FromStr;

pub use super::bindings::exports::hashgate::filter::filter::{
    Algorithm, Digest, FilterInfo, PdqSectionInfo, SectionInfo,
};

use super::bindings::exports::hashgate::filter::filter as wit;

/// A digest of the object that the filter (probably) holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hit {
    /// The digest's algorithm.
    pub algorithm: Algorithm,
    /// The digest.
    pub bytes: Vec<u8>,
    /// The category of the section that matched.
    pub category: Option<String>,
}

/// A listed PDQ hash near one of a picture's hashes: similarity, weaker evidence than a
/// digest [`Hit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdqHit {
    /// Which of the picture's hashes was near (0: the picture as it is; then its
    /// dihedral transforms, in the order they were asked for).
    pub query: usize,
    /// The listed hash.
    pub listed: crate::perceptual::PdqHash,
    /// Bits in which they differ.
    pub distance: u32,
    /// The category of the section that matched.
    pub category: Option<String>,
    /// The section's match distance.
    pub threshold: u8,
}

/// The verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No digest of the object is in the filter.
    Clean,
    /// These digests (probably) are.
    Hit(Vec<Hit>),
}

impl Verdict {
    /// Resolves the guest's index-based verdict against the digests it was about and the
    /// filter's sections. An index out of range is the guest breaking the contract.
    pub(crate) fn resolve(
        verdict: wit::Verdict,
        digests: &[Digest],
        info: &FilterInfo,
    ) -> Result<Verdict, crate::Error> {
        let hits = match verdict {
            wit::Verdict::Clean => return Ok(Verdict::Clean),
            wit::Verdict::Hit(hits) => hits,
        };
        let resolved = hits
            .into_iter()
            .map(|h| {
                let digest = digests.get(h.digest as usize);
                let section = info.sections.get(h.section as usize);
                match (digest, section) {
                    (Some(d), Some(s)) => Ok(Hit {
                        algorithm: d.algorithm,
                        bytes: d.bytes.clone(),
                        category: s.category.clone(),
                    }),
                    _ => Err(crate::Error::Check(format!(
                        "the guest named digest {} / section {} that do not exist",
                        h.digest, h.section
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Verdict::Hit(resolved))
    }
}

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

    /// The warning to print for a filter past its expiry now, if it is: it is still
    /// enforced, but may miss newly listed files.
    pub fn expiry_warning(&self) -> Option<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.is_expired(now).then(|| {
            let ago =
                humantime::format_duration(std::time::Duration::from_secs(now - self.expires));
            format!(
                "WARNING: filter {} version {} EXPIRED {ago} ago. It is still enforced, but it \
                 may miss newly listed files: fetch a current filter from your authority.",
                self.series, self.version
            )
        })
    }
}
