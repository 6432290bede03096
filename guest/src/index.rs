//! Bit-index derivation (format v1, `docs/FORMAT.md` § "Bit indices").
//!
//! For a digest `d` of algorithm `a` in a section of `m` bits, with the filter's 16-byte
//! `salt` and `k` hashes:
//!
//! 1. `(h1, h2)` = SipHash-1-3-128 keyed with `salt` over `code(a) || d`, its 16 output
//!    bytes read as two little-endian `u64` (bytes 0..8, then 8..16); `h3` = the first
//!    word of SipHash-1-3-128 keyed with `salt` over `(code(a) | 0x80) || d`. The leading
//!    algorithm code separates the domains: an MD5 and a SHA-256 never derive their
//!    indices from the same message.
//! 2. For `i` in `0..k`: `g = h1 + i·h2 + i²·h3 (mod 2^64)` and `index_i = (g · m) >> 64`
//!    (a 128-bit product: maps `g` onto `0..m` without a division).
//!
//! Why three words, not the usual two: with plain double hashing (`h1 + i·h2`) every
//! step `h2` close to a fraction with a small denominator (say `h2 ≈ 0`) sends all `k`
//! probes to a few bits, which floors the false-positive rate near `1/(k·m)`; that is
//! above 1e-9 for sections under ~10^8 bits. The quadratic term removes that floor.
//!
//! Bit `i` of a section is bit `i % 8` (mask `1 << (i % 8)`) of byte `i / 8`.

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::Algorithm;

/// The two 64-bit words every bit index of one digest is derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The first word: where the sequence starts.
    pub h1: u64,
    /// The second word: the linear step.
    pub h2: u64,
    /// The third word: the quadratic step.
    pub h3: u64,
}

impl Probe {
    /// Derives the probe for `digest` of `algorithm` under `salt`.
    pub fn new(salt: &[u8; 16], algorithm: Algorithm, digest: &[u8]) -> Probe {
        // One contiguous message per call (the domain byte, then the digest) is faster
        // than two writes; digests longer than any supported algorithm's take the slow way.
        let mut message = [0u8; 1 + 32];
        let short = digest.len() <= 32;
        let len = if short { 1 + digest.len() } else { 1 };
        if short {
            message[1..len].copy_from_slice(digest);
        }
        let mut words = |domain: u8| {
            message[0] = domain;
            let mut sip = SipHasher13::new_with_key(salt);
            sip.write(&message[..len]);
            if !short {
                sip.write(digest);
            }
            // `Hash128` holds the output's two little-endian words: h1 = bytes 0..8.
            let out = sip.finish128();
            (out.h1, out.h2)
        };
        let (h1, h2) = words(algorithm.code());
        let (h3, _) = words(algorithm.code() | 0x80);
        Probe { h1, h2, h3 }
    }

    /// The `i`-th bit index in a section of `bits` bits.
    #[inline]
    pub fn index(&self, i: u32, bits: u64) -> u64 {
        let i = u64::from(i);
        let g = self
            .h1
            .wrapping_add(i.wrapping_mul(self.h2))
            .wrapping_add((i * i).wrapping_mul(self.h3));
        ((u128::from(g) * u128::from(bits)) >> 64) as u64
    }

    /// All `k` bit indices in a section of `bits` bits.
    pub fn indices(&self, k: u32, bits: u64) -> impl Iterator<Item = u64> + '_ {
        (0..k).map(move |i| self.index(i, bits))
    }
}

/// Whether bit `i` of `bitmap` is set.
#[inline]
pub fn bit_is_set(bitmap: &[u8], i: u64) -> bool {
    bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0
}

/// Sets bit `i` of `bitmap`.
#[inline]
pub fn set_bit(bitmap: &mut [u8], i: u64) {
    bitmap[(i / 8) as usize] |= 1 << (i % 8);
}
