//! Native hashing: the hot loop of every front-end.
//!
//! Only the algorithms the loaded filter holds are computed. One stream at a time, the
//! RustCrypto compressors do the work (`sha1` and `sha2` pick SHA-NI at run time; MD5
//! has no instruction of its own and costs ~3x a SHA-256 here). Every algorithm is
//! serial within one stream, but the streams of many objects are independent, so
//! [`ObjectHasher::update_many`] feeds several objects in one pass, their blocks side by
//! side in SIMD lanes ([`lanes`]).
//!
//! ```
//! use hashgate_host::hashing::ObjectHasher;
//! use hashgate_host::Algorithm;
//!
//! let algorithms = [Algorithm::Md5, Algorithm::Sha1];
//! let (mut one, mut two) = (ObjectHasher::new(&algorithms), ObjectHasher::new(&algorithms));
//! ObjectHasher::update_many(&mut [(&mut one, b"ab".as_slice()), (&mut two, b"abc")]);
//! one.update(b"c");
//! assert_eq!(one.finish(), two.finish());
//! ```

pub mod lanes;
mod md5x;
pub mod pool;
mod sha1x;
mod sha256x;
pub mod split;
mod vector;

use crate::{Algorithm, Digest};
use lanes::{Engine, Job};

/// One stream of a 64-byte-block hash (MD5 or SHA-1) whose blocks we compress
/// ourselves, so that they can go through [`lanes`].
#[derive(Clone, Debug)]
struct BlockStream<const W: usize> {
    state: [u32; W],
    /// Bytes of an incomplete block.
    buffer: [u8; 64],
    buffered: usize,
    /// Bytes fed, for the length in the padding.
    len: u64,
}

impl<const W: usize> BlockStream<W> {
    fn new(state: [u32; W]) -> Self {
        BlockStream {
            state,
            buffer: [0; 64],
            buffered: 0,
            len: 0,
        }
    }

    /// Takes `data` in: returns the block it completes from the buffer (copied out), if
    /// any, and its whole blocks after that, to be compressed in that order; keeps the
    /// rest in the buffer.
    fn split<'d>(&mut self, mut data: &'d [u8]) -> Split<'d> {
        self.len += data.len() as u64;
        let mut head = None;
        if self.buffered > 0 {
            let take = (64 - self.buffered).min(data.len());
            self.buffer[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 64 {
                return (None, &[]);
            }
            head = Some(self.buffer);
            self.buffered = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        self.buffer[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
        (head, blocks)
    }

    /// Feeds `data`, one stream on its own.
    fn update(&mut self, data: &[u8], compress: fn(&mut [u32; W], &[[u8; 64]])) {
        let (head, blocks) = self.split(data);
        if let Some(head) = head {
            compress(&mut self.state, std::slice::from_ref(&head));
        }
        compress(&mut self.state, blocks);
    }

    /// Pads the last block with the bit length, `big_endian` (SHA-1) or not (MD5), and
    /// returns the final state.
    fn finish(mut self, big_endian: bool, compress: fn(&mut [u32; W], &[[u8; 64]])) -> [u32; W] {
        let bits = self.len.wrapping_mul(8);
        let mut block = [0u8; 64];
        block[..self.buffered].copy_from_slice(&self.buffer[..self.buffered]);
        block[self.buffered] = 0x80;
        if self.buffered >= 56 {
            compress(&mut self.state, &[block]);
            block = [0; 64];
        }
        block[56..].copy_from_slice(&if big_endian {
            bits.to_be_bytes()
        } else {
            bits.to_le_bytes()
        });
        compress(&mut self.state, &[block]);
        self.state
    }
}

/// What [`BlockStream::split`] returns: a block completed from the buffer, then whole
/// blocks of the input.
type Split<'d> = (Option<[u8; 64]>, &'d [[u8; 64]]);
/// The split of no input.
const NOTHING: Split<'static> = (None, &[]);

/// MD5's initial state (RFC 1321 section 3.3).
const MD5_INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
/// SHA-1's initial state (FIPS 180-4 section 5.3.1).
const SHA1_INIT: [u32; 5] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
/// SHA-256's initial state (FIPS 180-4 section 5.3.3).
const SHA256_INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Hashes one object with the chosen algorithms as its bytes stream by.
#[derive(Clone, Debug)]
pub struct ObjectHasher {
    md5: Option<BlockStream<4>>,
    sha1: Option<BlockStream<5>>,
    sha256: Option<BlockStream<8>>,
    len: u64,
}

impl ObjectHasher {
    /// A hasher for `algorithms`.
    pub fn new(algorithms: &[Algorithm]) -> ObjectHasher {
        let has = |a| algorithms.contains(&a);
        ObjectHasher {
            md5: has(Algorithm::Md5).then(|| BlockStream::new(MD5_INIT)),
            sha1: has(Algorithm::Sha1).then(|| BlockStream::new(SHA1_INIT)),
            sha256: has(Algorithm::Sha256).then(|| BlockStream::new(SHA256_INIT)),
            len: 0,
        }
    }

    /// Feeds the next bytes.
    #[inline]
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if let Some(h) = &mut self.sha256 {
            h.update(chunk, sha2::block_api::compress256);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(chunk, sha1::block_api::compress);
        }
        if let Some(h) = &mut self.md5 {
            h.update(chunk, lanes::compress_md5_one);
        }
    }

    /// Feeds each hasher its bytes, compressing the MD5 and SHA-1 blocks of all of them
    /// side by side in SIMD lanes: the same digests as calling [`ObjectHasher::update`]
    /// on each, for a fraction of the work when several streams have blocks.
    pub fn update_many(batch: &mut [(&mut ObjectHasher, &[u8])]) {
        ObjectHasher::update_many_on(Engine::detect(), batch);
    }

    /// [`ObjectHasher::update_many`] on a chosen engine (for tests and benchmarks).
    pub fn update_many_on(engine: Engine, batch: &mut [(&mut ObjectHasher, &[u8])]) {
        // Each stream's split input, for MD5, SHA-1 and SHA-256: the block completed from its
        // buffer (copied out before the jobs borrow the states) and its whole blocks.
        let mut splits: Vec<[Split<'_>; 3]> = Vec::with_capacity(batch.len());
        for (hasher, data) in batch.iter_mut() {
            let data: &[u8] = data;
            hasher.len += data.len() as u64;
            splits.push([
                hasher.md5.as_mut().map_or(NOTHING, |s| s.split(data)),
                hasher.sha1.as_mut().map_or(NOTHING, |s| s.split(data)),
                hasher.sha256.as_mut().map_or(NOTHING, |s| s.split(data)),
            ]);
        }
        let mut md5_jobs = Vec::with_capacity(batch.len());
        let mut sha1_jobs = Vec::with_capacity(batch.len());
        let mut sha256_jobs = Vec::with_capacity(batch.len());
        for (
            (hasher, _),
            [(md5_head, md5_blocks), (sha1_head, sha1_blocks), (sha256_head, sha256_blocks)],
        ) in batch.iter_mut().zip(&splits)
        {
            let ObjectHasher {
                md5, sha1, sha256, ..
            } = &mut **hasher;
            if let Some(s) = md5 {
                md5_jobs.push(Job::new(&mut s.state, md5_head.as_ref(), md5_blocks));
            }
            if let Some(s) = sha1 {
                sha1_jobs.push(Job::new(&mut s.state, sha1_head.as_ref(), sha1_blocks));
            }
            if let Some(s) = sha256 {
                sha256_jobs.push(Job::new(&mut s.state, sha256_head.as_ref(), sha256_blocks));
            }
        }
        lanes::compress_md5(engine, &mut md5_jobs);
        lanes::compress_sha1(engine, &mut sha1_jobs);
        lanes::compress_sha256(engine, &mut sha256_jobs);
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
            let state = h.finish(false, lanes::compress_md5_one);
            out.push(digest(
                Algorithm::Md5,
                state.iter().flat_map(|w| w.to_le_bytes()),
            ));
        }
        if let Some(h) = self.sha1 {
            let state = h.finish(true, sha1::block_api::compress);
            out.push(digest(
                Algorithm::Sha1,
                state.iter().flat_map(|w| w.to_be_bytes()),
            ));
        }
        if let Some(h) = self.sha256 {
            let state = h.finish(true, sha2::block_api::compress256);
            out.push(digest(
                Algorithm::Sha256,
                state.iter().flat_map(|w| w.to_be_bytes()),
            ));
        }
        out
    }
}

fn digest(algorithm: Algorithm, bytes: impl IntoIterator<Item = u8>) -> Digest {
    Digest {
        algorithm,
        bytes: bytes.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests;
