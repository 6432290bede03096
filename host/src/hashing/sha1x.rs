//! SHA-1 (FIPS 180-4) in SIMD lanes: one block of each of [`Vector::LANES`] streams at
//! once.

use super::vector::{Vector, MAX_LANES};

/// The round constants of each group of twenty rounds.
const K: [u32; 4] = [0x5a827999, 0x6ed9eba1, 0x8f1bbcdc, 0xca62c1d6];

/// Compresses `blocks` consecutive blocks into each lane's state; the lanes and
/// pointers work as in [`super::md5x::compress`].
///
/// # Safety
/// As for [`super::md5x::compress`].
#[inline(always)]
pub(super) unsafe fn compress<V: Vector>(
    state: &mut [V; 5],
    ptrs: &mut [*const u8; MAX_LANES],
    steps: &[usize; MAX_LANES],
    blocks: usize,
) {
    for _ in 0..blocks {
        // The message schedule, kept as a ring of the last sixteen words.
        let mut w: [V; 16] = V::load_block(ptrs, true);
        let [mut a, mut b, mut c, mut d, mut e] = *state;
        macro_rules! round {
            ($f:ident, $k:expr, $t:expr, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident) => {
                if $t >= 16 {
                    w[$t % 16] = V::xor3(w[($t + 13) % 16], w[($t + 8) % 16], w[($t + 2) % 16])
                        .xor(w[$t % 16])
                        .rotl::<1, 31>();
                }
                $e = $e
                    .add($a.rotl::<5, 27>())
                    .add($f!($b, $c, $d))
                    .add(V::splat($k))
                    .add(w[$t % 16]);
                $b = $b.rotl::<30, 2>();
            };
        }
        // Five rounds, renaming the variables instead of moving them.
        macro_rules! five {
            ($f:ident, $k:expr, $t:expr) => {
                round!($f, $k, $t, a, b, c, d, e);
                round!($f, $k, $t + 1, e, a, b, c, d);
                round!($f, $k, $t + 2, d, e, a, b, c);
                round!($f, $k, $t + 3, c, d, e, a, b);
                round!($f, $k, $t + 4, b, c, d, e, a);
            };
        }
        macro_rules! ch {
            ($x:ident, $y:ident, $z:ident) => {
                V::select($x, $y, $z)
            };
        }
        macro_rules! parity {
            ($x:ident, $y:ident, $z:ident) => {
                V::xor3($x, $y, $z)
            };
        }
        macro_rules! maj {
            ($x:ident, $y:ident, $z:ident) => {
                V::majority($x, $y, $z)
            };
        }
        five!(ch, K[0], 0);
        five!(ch, K[0], 5);
        five!(ch, K[0], 10);
        five!(ch, K[0], 15);
        five!(parity, K[1], 20);
        five!(parity, K[1], 25);
        five!(parity, K[1], 30);
        five!(parity, K[1], 35);
        five!(maj, K[2], 40);
        five!(maj, K[2], 45);
        five!(maj, K[2], 50);
        five!(maj, K[2], 55);
        five!(parity, K[3], 60);
        five!(parity, K[3], 65);
        five!(parity, K[3], 70);
        five!(parity, K[3], 75);
        state[0] = state[0].add(a);
        state[1] = state[1].add(b);
        state[2] = state[2].add(c);
        state[3] = state[3].add(d);
        state[4] = state[4].add(e);
        for (ptr, step) in ptrs.iter_mut().zip(steps).take(V::LANES) {
            *ptr = ptr.add(*step);
        }
    }
}
