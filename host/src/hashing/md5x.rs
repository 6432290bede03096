//! MD5 (RFC 1321) in SIMD lanes: one block of each of [`Vector::LANES`] streams at once.

use super::vector::{Vector, MAX_LANES};

/// `floor(abs(sin(i + 1)) * 2^32)`, RFC 1321 section 3.4.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// Compresses `blocks` consecutive blocks into each lane's state. Lane `l` reads its
/// blocks from `ptrs[l]` on, advancing `steps[l]` bytes after each (64, or 0 for a lane
/// that only pads the vector out).
///
/// # Safety
/// The CPU has `V`'s instruction set, and each lane's pointer stays readable for 64
/// bytes at every step.
#[inline(always)]
pub(super) unsafe fn compress<V: Vector>(
    state: &mut [V; 4],
    ptrs: &mut [*const u8; MAX_LANES],
    steps: &[usize; MAX_LANES],
    blocks: usize,
) {
    for _ in 0..blocks {
        let m: [V; 16] = V::load_block(ptrs, false);
        let [mut a, mut b, mut c, mut d] = *state;
        // a = b + rotl(a + K[i] + M[g] + f(b, c, d), s), f added last: a, K and M are
        // known early, f waits on the step before (the chain one stream cannot escape).
        macro_rules! step {
            ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr, $g:expr, $s:literal) => {
                $a = $b.add(
                    $a.add(V::splat(K[$i]))
                        .add(m[$g])
                        .opaque()
                        .add($f)
                        .rotl::<$s, { 32 - $s }>(),
                );
            };
        }
        macro_rules! round {
            ($func:ident, $i:expr, $g:expr, $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
                step!($func!(b, c, d), a, b, c, d, $i, $g[0], $s0);
                step!($func!(a, b, c), d, a, b, c, $i + 1, $g[1], $s1);
                step!($func!(d, a, b), c, d, a, b, $i + 2, $g[2], $s2);
                step!($func!(c, d, a), b, c, d, a, $i + 3, $g[3], $s3);
            };
        }
        macro_rules! f {
            ($x:ident, $y:ident, $z:ident) => {
                V::select($x, $y, $z)
            };
        }
        macro_rules! g {
            ($x:ident, $y:ident, $z:ident) => {
                V::select($z, $x, $y)
            };
        }
        macro_rules! h {
            ($x:ident, $y:ident, $z:ident) => {
                V::xor3($x, $y, $z)
            };
        }
        macro_rules! i {
            ($x:ident, $y:ident, $z:ident) => {
                V::md5_i($x, $y, $z)
            };
        }
        round!(f, 0, [0, 1, 2, 3], 7, 12, 17, 22);
        round!(f, 4, [4, 5, 6, 7], 7, 12, 17, 22);
        round!(f, 8, [8, 9, 10, 11], 7, 12, 17, 22);
        round!(f, 12, [12, 13, 14, 15], 7, 12, 17, 22);
        round!(g, 16, [1, 6, 11, 0], 5, 9, 14, 20);
        round!(g, 20, [5, 10, 15, 4], 5, 9, 14, 20);
        round!(g, 24, [9, 14, 3, 8], 5, 9, 14, 20);
        round!(g, 28, [13, 2, 7, 12], 5, 9, 14, 20);
        round!(h, 32, [5, 8, 11, 14], 4, 11, 16, 23);
        round!(h, 36, [1, 4, 7, 10], 4, 11, 16, 23);
        round!(h, 40, [13, 0, 3, 6], 4, 11, 16, 23);
        round!(h, 44, [9, 12, 15, 2], 4, 11, 16, 23);
        round!(i, 48, [0, 7, 14, 5], 6, 10, 15, 21);
        round!(i, 52, [12, 3, 10, 1], 6, 10, 15, 21);
        round!(i, 56, [8, 15, 6, 13], 6, 10, 15, 21);
        round!(i, 60, [4, 11, 2, 9], 6, 10, 15, 21);
        state[0] = state[0].add(a);
        state[1] = state[1].add(b);
        state[2] = state[2].add(c);
        state[3] = state[3].add(d);
        for (ptr, step) in ptrs.iter_mut().zip(steps).take(V::LANES) {
            *ptr = ptr.add(*step);
        }
    }
}
