//! Bit-index derivation (format v1, `docs/FORMAT.md` § "Bit indices").
//!
//! For a digest `d` of algorithm `a` in a section of `m` bits, with the filter's 16-byte
//! `salt` and `k` hashes:
//!
//! 1. `(h1, h2)` = SipHash-1-3-128 keyed with `salt` over the message `code(a) || d`,
//!    its 16 output bytes read as two little-endian `u64` (bytes 0..8, then 8..16).
//!    The leading algorithm code separates the domains: an MD5 and a SHA-256 never
//!    derive their indices from the same message.
//! 2. For `i` in `0..k`: `g = h1 + i·h2 (mod 2^64)` and `index_i = (g · m) >> 64`
//!    (a 128-bit product: maps `g` onto `0..m` without a division).
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
    /// The second word: the step between indices.
    pub h2: u64,
}

impl Probe {
    /// Derives the probe for `digest` of `algorithm` under `salt`.
    pub fn new(salt: &[u8; 16], algorithm: Algorithm, digest: &[u8]) -> Probe {
        let mut sip = SipHasher13::new_with_key(salt);
        sip.write(&[algorithm.code()]);
        sip.write(digest);
        let out = sip.finish128().as_bytes();
        let (lo, hi) = out.split_at(8);
        Probe {
            h1: u64::from_le_bytes(lo.try_into().expect("8 bytes")),
            h2: u64::from_le_bytes(hi.try_into().expect("8 bytes")),
        }
    }

    /// The `i`-th bit index in a section of `bits` bits.
    #[inline]
    pub fn index(&self, i: u32, bits: u64) -> u64 {
        let g = self.h1.wrapping_add(u64::from(i).wrapping_mul(self.h2));
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
