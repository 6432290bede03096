//! Native hashing: the hot loop of every front-end.
//!
//! sha2, sha1 and md-5 pick SHA-NI and other CPU extensions at run time. Only the
//! algorithms the loaded filter holds are computed: an MD5 costs ~3x a SHA-256 here.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::{Algorithm, Digest};

/// Hashes one object with the chosen algorithms as its bytes stream by.
#[derive(Clone, Debug)]
pub struct ObjectHasher {
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
    len: u64,
}

impl ObjectHasher {
    /// A hasher for `algorithms`.
    pub fn new(algorithms: &[Algorithm]) -> ObjectHasher {
        let has = |a| algorithms.contains(&a);
        ObjectHasher {
            md5: has(Algorithm::Md5).then(Md5::new),
            sha1: has(Algorithm::Sha1).then(Sha1::new),
            sha256: has(Algorithm::Sha256).then(Sha256::new),
            len: 0,
        }
    }

    /// Feeds the next bytes.
    #[inline]
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if let Some(h) = &mut self.sha256 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.md5 {
            h.update(chunk);
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes were fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object's digests, ready for [`crate::FilterEngine::check`].
    pub fn finish(self) -> Vec<Digest> {
        let mut out = Vec::with_capacity(3);
        if let Some(h) = self.md5 {
            out.push(digest(Algorithm::Md5, &h.finalize()));
        }
        if let Some(h) = self.sha1 {
            out.push(digest(Algorithm::Sha1, &h.finalize()));
        }
        if let Some(h) = self.sha256 {
            out.push(digest(Algorithm::Sha256, &h.finalize()));
        }
        out
    }
}

fn digest(algorithm: Algorithm, bytes: &[u8]) -> Digest {
    Digest {
        algorithm,
        bytes: bytes.to_vec(),
    }
}
