//! The SIMD vectors the multi-buffer kernels are written over: one 32-bit word of each of
//! [`Vector::LANES`] independent streams side by side.
//!
//! The kernels ([`super::md5x`], [`super::sha1x`]) are generic over [`Vector`] and
//! `#[inline(always)]`; each is instantiated inside one `#[target_feature]` function per
//! instruction set, so every operation below compiles to one or two instructions of that
//! set. A value of an implementing type exists only inside such a function, which the
//! dispatcher ([`super::lanes`]) calls only after detecting the features: that is why
//! the constructors are `unsafe` and the operations are not.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Room for the widest vector's lanes.
pub(super) const MAX_LANES: usize = 16;

/// One word of each lane, aligned for a vector load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Row(pub [u32; MAX_LANES]);

/// A vector of `LANES` 32-bit words.
pub(super) trait Vector: Copy {
    /// Streams side by side.
    const LANES: usize;

    /// `x` in every lane.
    ///
    /// # Safety
    /// The CPU has the instruction set of `Self`.
    unsafe fn splat(x: u32) -> Self;

    /// The first `LANES` words of `row`.
    ///
    /// # Safety
    /// The CPU has the instruction set of `Self`.
    unsafe fn load(row: &Row) -> Self;

    /// Writes the lanes to the first `LANES` words of `row`.
    fn store(self, row: &mut Row);

    /// Lane-wise wrapping addition.
    fn add(self, other: Self) -> Self;
    /// Lane-wise `self ^ other`.
    fn xor(self, other: Self) -> Self;
    /// Lane-wise `self & other`.
    fn and(self, other: Self) -> Self;
    /// Lane-wise `self | other`.
    fn or(self, other: Self) -> Self;
    /// Lane-wise `self | !other`.
    fn or_not(self, other: Self) -> Self;
    /// Lane-wise rotation left by `L` bits; `R` is `32 - L` (spelled out because
    /// stable Rust cannot compute it from a const parameter).
    fn rotl<const L: i32, const R: i32>(self) -> Self;
    /// Lane-wise logical shift right by `N` bits.
    fn shr<const N: i32>(self) -> Self;

    /// The next block of every lane as sixteen vectors, word `w` of each lane in vector
    /// `w`: MD5 reads its words little-endian, SHA-1 and SHA-256 big-endian.
    ///
    /// # Safety
    /// The CPU has the instruction set of `Self`, and each of the first `LANES`
    /// pointers can be read for 64 bytes.
    #[inline(always)]
    unsafe fn load_block(ptrs: &[*const u8; MAX_LANES], big_endian: bool) -> [Self; 16] {
        load_block_scalar(ptrs, big_endian)
    }

    /// `self`, hidden from the optimiser so that it keeps a sum in the order written
    /// (it otherwise reassociates integer additions, lengthening a dependency chain).
    #[inline(always)]
    fn opaque(self) -> Self {
        self
    }

    /// Bitwise `m ? a : b`.
    #[inline(always)]
    fn select(m: Self, a: Self, b: Self) -> Self {
        // (a ^ b) & m ^ b: three operations, no NOT.
        a.xor(b).and(m).xor(b)
    }

    /// `a ^ b ^ c`.
    #[inline(always)]
    fn xor3(a: Self, b: Self, c: Self) -> Self {
        a.xor(b).xor(c)
    }

    /// Bitwise majority of `a`, `b`, `c`.
    #[inline(always)]
    fn majority(a: Self, b: Self, c: Self) -> Self {
        a.and(b).or(c.and(a.or(b)))
    }

    /// MD5's fourth round function, `c ^ (b | !d)`.
    #[inline(always)]
    fn md5_i(b: Self, c: Self, d: Self) -> Self {
        c.xor(b.or_not(d))
    }
}

/// Eight lanes of AVX2.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx2(__m256i);

// SAFETY (for every `unsafe` block in this impl): an `Avx2` is only made by `splat` or
// `load`, whose callers promise the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
impl Vector for Avx2 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn load_block(ptrs: &[*const u8; MAX_LANES], big_endian: bool) -> [Self; 16] {
        // Two 8x8 transposes (words 0-7, then 8-15) of 32-bit words, in three stages:
        // interleave pairs of rows, then pairs of pairs, then the 128-bit halves.
        let swap = _mm256_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10,
            9, 8, 15, 14, 13, 12,
        );
        let mut out = [Avx2(_mm256_setzero_si256()); 16];
        for half in 0..2 {
            let mut r = [_mm256_setzero_si256(); 8];
            for (lane, row) in r.iter_mut().enumerate() {
                *row = _mm256_loadu_si256(ptrs[lane].add(32 * half).cast());
                if big_endian {
                    *row = _mm256_shuffle_epi8(*row, swap);
                }
            }
            let mut t = [_mm256_setzero_si256(); 8];
            for i in 0..4 {
                t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
            }
            // u[4g + j]: word j (low half) and j + 4 (high half) of rows 4g..4g+3.
            let mut u = [_mm256_setzero_si256(); 8];
            for g in 0..2 {
                let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                u[4 * g] = _mm256_unpacklo_epi64(a, c);
                u[4 * g + 1] = _mm256_unpackhi_epi64(a, c);
                u[4 * g + 2] = _mm256_unpacklo_epi64(b, d);
                u[4 * g + 3] = _mm256_unpackhi_epi64(b, d);
            }
            for j in 0..4 {
                out[8 * half + j] = Avx2(_mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]));
                out[8 * half + j + 4] = Avx2(_mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]));
            }
        }
        out
    }

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        Avx2(_mm256_set1_epi32(x as i32))
    }
    #[inline(always)]
    unsafe fn load(row: &Row) -> Self {
        Avx2(_mm256_load_si256(row.0.as_ptr().cast()))
    }
    #[inline(always)]
    fn store(self, row: &mut Row) {
        unsafe { _mm256_store_si256(row.0.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_add_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_xor_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_and_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_or_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn or_not(self, o: Self) -> Self {
        unsafe {
            Avx2(_mm256_or_si256(
                self.0,
                _mm256_xor_si256(o.0, _mm256_set1_epi32(-1)),
            ))
        }
    }
    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(self) -> Self {
        unsafe {
            Avx2(_mm256_or_si256(
                _mm256_slli_epi32::<L>(self.0),
                _mm256_srli_epi32::<R>(self.0),
            ))
        }
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        Avx2(unsafe { _mm256_srli_epi32::<N>(self.0) })
    }
}

/// Sixteen lanes of AVX-512 (F, and BW for the byte shuffle), with its rotate and
/// three-input logic instructions.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx512(__m512i);

// SAFETY (for every `unsafe` block in this impl): an `Avx512` is only made by `splat`,
// `load` or `load_block`, whose callers promise the CPU has AVX-512F and BW.
#[cfg(target_arch = "x86_64")]
impl Vector for Avx512 {
    const LANES: usize = 16;

    // Compiled for the features itself: in the huge SHA-256 kernel the optimiser left
    // `_mm512_shuffle_epi8` a call once this was inlined there.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn load_block(ptrs: &[*const u8; MAX_LANES], big_endian: bool) -> [Self; 16] {
        // A 16x16 transpose of 32-bit words in four stages: interleave pairs of rows,
        // pairs of pairs, then 128-bit lanes twice.
        let swap = _mm512_set_epi8(
            12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11, 4,
            5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14,
            15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3,
        );
        let mut r = [_mm512_setzero_si512(); 16];
        for (lane, row) in r.iter_mut().enumerate() {
            *row = _mm512_loadu_si512(ptrs[lane].cast());
            if big_endian {
                *row = _mm512_shuffle_epi8(*row, swap);
            }
        }
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + j]: of rows 4g..4g+3, words j, j + 4, j + 8, j + 12 in 128-bit lanes 0-3.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_unpacklo_epi64(a, c);
            u[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
            u[4 * g + 2] = _mm512_unpacklo_epi64(b, d);
            u[4 * g + 3] = _mm512_unpackhi_epi64(b, d);
        }
        let mut out = [Avx512(_mm512_setzero_si512()); 16];
        for j in 0..4 {
            // Row groups 0 and 1, then 2 and 3: words j and j + 8, then j + 4 and j + 12.
            let v0 = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
            let v1 = _mm512_shuffle_i32x4::<0xDD>(u[j], u[4 + j]);
            let v2 = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
            let v3 = _mm512_shuffle_i32x4::<0xDD>(u[8 + j], u[12 + j]);
            out[j] = Avx512(_mm512_shuffle_i32x4::<0x88>(v0, v2));
            out[j + 8] = Avx512(_mm512_shuffle_i32x4::<0xDD>(v0, v2));
            out[j + 4] = Avx512(_mm512_shuffle_i32x4::<0x88>(v1, v3));
            out[j + 12] = Avx512(_mm512_shuffle_i32x4::<0xDD>(v1, v3));
        }
        out
    }

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        Avx512(_mm512_set1_epi32(x as i32))
    }
    #[inline(always)]
    unsafe fn load(row: &Row) -> Self {
        Avx512(_mm512_load_si512(row.0.as_ptr().cast()))
    }
    #[inline(always)]
    fn store(self, row: &mut Row) {
        unsafe { _mm512_store_si512(row.0.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Avx512(unsafe { _mm512_add_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        Avx512(unsafe { _mm512_xor_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        Avx512(unsafe { _mm512_and_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        Avx512(unsafe { _mm512_or_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn or_not(self, o: Self) -> Self {
        // Truth table of a | !c over (a, b, c) = (self, self, o).
        Avx512(unsafe { _mm512_ternarylogic_epi32::<0xF5>(self.0, self.0, o.0) })
    }
    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(self) -> Self {
        Avx512(unsafe { _mm512_rol_epi32::<L>(self.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        // The variable-count form: `_mm512_srli_epi32` takes its count as a `u32`.
        Avx512(unsafe { _mm512_srlv_epi32(self.0, _mm512_set1_epi32(N)) })
    }
    #[inline(always)]
    fn select(m: Self, a: Self, b: Self) -> Self {
        Avx512(unsafe { _mm512_ternarylogic_epi32::<0xCA>(m.0, a.0, b.0) })
    }
    #[inline(always)]
    fn xor3(a: Self, b: Self, c: Self) -> Self {
        Avx512(unsafe { _mm512_ternarylogic_epi32::<0x96>(a.0, b.0, c.0) })
    }
    #[inline(always)]
    fn majority(a: Self, b: Self, c: Self) -> Self {
        Avx512(unsafe { _mm512_ternarylogic_epi32::<0xE8>(a.0, b.0, c.0) })
    }
    #[inline(always)]
    fn md5_i(b: Self, c: Self, d: Self) -> Self {
        // Truth table of c ^ (b | !d) over (b, c, d).
        Avx512(unsafe { _mm512_ternarylogic_epi32::<0x39>(b.0, c.0, d.0) })
    }
}

/// One lane of AVX-512VL: a single MD5 stream in an XMM register, for its rotate and
/// three-input logic instructions, which shorten the chain of dependent operations of
/// each MD5 step from five to four.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx512One(__m128i);

// SAFETY (for every `unsafe` block in this impl): an `Avx512One` is only made by `splat`
// or `load`, whose callers promise the CPU has AVX-512F and AVX-512VL.
#[cfg(target_arch = "x86_64")]
impl Vector for Avx512One {
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        Avx512One(_mm_cvtsi32_si128(x as i32))
    }
    #[inline(always)]
    unsafe fn load(row: &Row) -> Self {
        Avx512One(_mm_cvtsi32_si128(row.0[0] as i32))
    }
    #[inline(always)]
    fn store(self, row: &mut Row) {
        row.0[0] = unsafe { _mm_cvtsi128_si32(self.0) } as u32;
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Avx512One(unsafe { _mm_add_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn opaque(self) -> Self {
        let mut v = self.0;
        // SAFETY: an empty template: the register is left as it is.
        unsafe { std::arch::asm!("/* {0} */", inout(xmm_reg) v, options(pure, nomem, nostack)) };
        Avx512One(v)
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        Avx512One(unsafe { _mm_xor_si128(self.0, o.0) })
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        Avx512One(unsafe { _mm_and_si128(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        Avx512One(unsafe { _mm_or_si128(self.0, o.0) })
    }
    #[inline(always)]
    fn or_not(self, o: Self) -> Self {
        Avx512One(unsafe { _mm_ternarylogic_epi32::<0xF5>(self.0, self.0, o.0) })
    }
    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(self) -> Self {
        Avx512One(unsafe { _mm_rol_epi32::<L>(self.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        Avx512One(unsafe { _mm_srlv_epi32(self.0, _mm_set1_epi32(N)) })
    }
    #[inline(always)]
    fn select(m: Self, a: Self, b: Self) -> Self {
        Avx512One(unsafe { _mm_ternarylogic_epi32::<0xCA>(m.0, a.0, b.0) })
    }
    #[inline(always)]
    fn xor3(a: Self, b: Self, c: Self) -> Self {
        Avx512One(unsafe { _mm_ternarylogic_epi32::<0x96>(a.0, b.0, c.0) })
    }
    #[inline(always)]
    fn majority(a: Self, b: Self, c: Self) -> Self {
        Avx512One(unsafe { _mm_ternarylogic_epi32::<0xE8>(a.0, b.0, c.0) })
    }
    #[inline(always)]
    fn md5_i(b: Self, c: Self, d: Self) -> Self {
        Avx512One(unsafe { _mm_ternarylogic_epi32::<0x39>(b.0, c.0, d.0) })
    }
}

/// [`Vector::load_block`] by a scalar transpose through an aligned buffer: 16 loads and
/// stores a lane, small beside one stream's 64 rounds, not beside sixteen streams'.
///
/// # Safety
/// As for [`Vector::load_block`].
#[inline(always)]
unsafe fn load_block_scalar<V: Vector>(ptrs: &[*const u8; MAX_LANES], big_endian: bool) -> [V; 16] {
    let mut rows = [Row([0; MAX_LANES]); 16];
    for (lane, &ptr) in ptrs.iter().enumerate().take(V::LANES) {
        for (w, row) in rows.iter_mut().enumerate() {
            let word = ptr.add(4 * w).cast::<u32>().read_unaligned();
            row.0[lane] = if big_endian {
                u32::from_be(word)
            } else {
                u32::from_le(word)
            };
        }
    }
    let mut out = [V::splat(0); 16];
    for (v, row) in out.iter_mut().zip(&rows) {
        *v = V::load(row);
    }
    out
}
