use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::Algorithm;

/// Hashes one object's bytes with a chosen set of algorithms at once.
#[derive(Clone, Debug, Default)]
pub struct ObjectDigests {
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
    len: u64,
}

impl ObjectDigests {
    /// A hasher for `algorithms`; the others are not computed.
    pub fn new(algorithms: &[Algorithm]) -> ObjectDigests {
        let has = |a| algorithms.contains(&a);
        ObjectDigests {
            md5: has(Algorithm::Md5).then(Md5::new),
            sha1: has(Algorithm::Sha1).then(Sha1::new),
            sha256: has(Algorithm::Sha256).then(Sha256::new),
            len: 0,
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if let Some(h) = &mut self.md5 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha256 {
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

    /// The digests, in algorithm code order.
    pub fn finish(self) -> Vec<(Algorithm, Vec<u8>)> {
        let mut out = Vec::with_capacity(3);
        if let Some(h) = self.md5 {
            out.push((Algorithm::Md5, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha1 {
            out.push((Algorithm::Sha1, h.finalize().to_vec()));
        }
        if let Some(h) = self.sha256 {
            out.push((Algorithm::Sha256, h.finalize().to_vec()));
        }
        out
    }
}
