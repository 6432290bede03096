//! SHA-256 (FIPS 180-4) in SIMD lanes: one block of each of [`Vector::LANES`] streams
//! at once. Used only where it beats SHA-NI's single stream (see [`super::lanes`]).

use super::vector::{Vector, MAX_LANES};

/// The first 32 bits of the fractional parts of the cube roots of the first 64 primes.
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Compresses `blocks` consecutive blocks into each lane's state; the lanes and
/// pointers work as in [`super::md5x::compress`].
///
/// # Safety
/// As for [`super::md5x::compress`].
#[inline(always)]
pub(super) unsafe fn compress<V: Vector>(
    state: &mut [V; 8],
    ptrs: &mut [*const u8; MAX_LANES],
    steps: &[usize; MAX_LANES],
    blocks: usize,
) {
    // Rotations right, as FIPS 180-4 writes them.
    macro_rules! rotr {
        ($x:expr, $n:literal) => {
            $x.rotl::<{ 32 - $n }, $n>()
        };
    }
    for _ in 0..blocks {
        // The message schedule, kept as a ring of the last sixteen words.
        let mut w: [V; 16] = V::load_block(ptrs, true);
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        macro_rules! round {
            ($t:expr, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident) => {
                if $t >= 16 {
                    let (x, y) = (w[($t + 1) % 16], w[($t + 14) % 16]);
                    let s0 = V::xor3(rotr!(x, 7), rotr!(x, 18), x.shr::<3>());
                    let s1 = V::xor3(rotr!(y, 17), rotr!(y, 19), y.shr::<10>());
                    w[$t % 16] = w[$t % 16].add(s0).add(w[($t + 9) % 16]).add(s1);
                }
                let t1 = $h
                    .add(V::xor3(rotr!($e, 6), rotr!($e, 11), rotr!($e, 25)))
                    .add(V::select($e, $f, $g))
                    .add(V::splat(K[$t]))
                    .add(w[$t % 16]);
                let t2 = V::xor3(rotr!($a, 2), rotr!($a, 13), rotr!($a, 22))
                    .add(V::majority($a, $b, $c));
                $d = $d.add(t1);
                $h = t1.add(t2);
            };
        }
        // Eight rounds, renaming the variables instead of moving them.
        macro_rules! eight {
            ($t:expr) => {
                round!($t, a, b, c, d, e, f, g, h);
                round!($t + 1, h, a, b, c, d, e, f, g);
                round!($t + 2, g, h, a, b, c, d, e, f);
                round!($t + 3, f, g, h, a, b, c, d, e);
                round!($t + 4, e, f, g, h, a, b, c, d);
                round!($t + 5, d, e, f, g, h, a, b, c);
                round!($t + 6, c, d, e, f, g, h, a, b);
                round!($t + 7, b, c, d, e, f, g, h, a);
            };
        }
        eight!(0);
        eight!(8);
        eight!(16);
        eight!(24);
        eight!(32);
        eight!(40);
        eight!(48);
        eight!(56);
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.add(v);
        }
        for (ptr, step) in ptrs.iter_mut().zip(steps).take(V::LANES) {
            *ptr = ptr.add(*step);
        }
    }
}
