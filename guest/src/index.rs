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
        scale(g, bits)
    }

    /// All `k` bit indices in a section of `bits` bits.
    pub fn indices(&self, k: u32, bits: u64) -> impl Iterator<Item = u64> + '_ {
        (0..k).map(move |i| self.index(i, bits))
    }
}

/// `floor(g · m / 2^64)`: maps `g` onto `0..m`.
#[inline]
fn scale(g: u64, m: u64) -> u64 {
    // wasm32 has no 64x64->128 multiply: a u128 product there is a long emulation, paid
    // k times per lookup. For m < 2^32 the same floor is exact with two 64-bit products:
    // g·m = (g_hi·m)·2^32 + g_lo·m, and flooring g_lo·m / 2^32 early cannot change the
    // floor of the whole over 2^64, since g_hi·m is an integer.
    #[cfg(target_arch = "wasm32")]
    if m <= u64::from(u32::MAX) {
        let high = (g >> 32) * m;
        let low = ((g & 0xffff_ffff) * m) >> 32;
        return (high + low) >> 32;
    }
    ((u128::from(g) * u128::from(m)) >> 64) as u64
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

#[cfg(test)]
mod tests {
    /// The 64-bit form used on wasm32 equals the 128-bit product for every m < 2^32.
    #[test]
    fn split_multiply_is_exact() {
        let split = |g: u64, m: u64| ((g >> 32) * m + (((g & 0xffff_ffff) * m) >> 32)) >> 32;
        let mut g = 0x9e37_79b9_7f4a_7c15u64;
        for m in [
            1u64,
            2,
            3,
            64,
            1000,
            65_536,
            431_327_680,
            u64::from(u32::MAX),
        ] {
            for _ in 0..100_000 {
                g = g
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                assert_eq!(split(g, m), super::scale(g, m), "g={g} m={m}");
            }
            assert_eq!(split(u64::MAX, m), super::scale(u64::MAX, m));
            assert_eq!(split(0, m), 0);
        }
    }
}
