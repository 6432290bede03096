//! PDQ, Meta's perceptual image hash, computed natively from luminance.
//!
//! Written from Meta's published description of the algorithm (the "PDQ hashing" paper
//! and the ThreatExchange reference's structure), step for step, so that a hash agrees
//! with the reference to the bit on the same pixels (`tests/pdq.rs` checks it against
//! hashes made by the C++ reference):
//!
//! 1. luminance `Y = 0.299 R + 0.587 G + 0.114 B`, as `f32`;
//! 2. two passes of a box filter along the rows, then the columns (a tent, "Jarosz"
//!    filter), each box `ceil(dimension / 128)` wide, so each of 64 x 64 output cells
//!    averages its share of the image;
//! 3. the 64 x 64 samples at the cells' centres;
//! 4. a quality score: the sum of the quantised gradients between neighbouring samples,
//!    divided by 90, at most 100 (featureless images score low);
//! 5. a two-dimensional DCT of the 64 x 64 samples, keeping coefficients 1..=16 on each
//!    axis (not the DC term);
//! 6. bit `16 i + j` set when coefficient `(i, j)` is above the median of the 256.
//!
//! The eight rotations and mirror images of the picture have hashes that follow from
//! the same 16 x 16 coefficients by sign changes and a transpose ([`Dihedral`]), at
//! almost no cost.
//!
//! The `pdqhash` crate (0.1.1) was looked at and not used: it depends on `image` 0.23 (we
//! use 0.25), and its default entry point downscales the image before hashing, which the
//! reference does not do.

use std::f64::consts::PI;
use std::fmt;
use std::sync::OnceLock;

/// Pixels on each axis of the downsampled image.
const CELLS: usize = 64;
/// DCT coefficients kept on each axis.
const COEFFS: usize = 16;
/// The lowest quality whose hash is matched: Meta's advice is to discard hashes of
/// quality 49 or less, since featureless pictures hash alike.
pub const MIN_QUALITY: u8 = 50;

/// The smallest image the reference hashes; smaller ones get the zero hash, quality 0.
pub const MIN_DIMENSION: usize = 5;

/// A 256-bit PDQ hash. Byte 0 is the first two digits of the hex form the reference
/// prints (its 16-bit words from the last to the first, each most significant digit
/// first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PdqHash(pub [u8; 32]);

impl PdqHash {
    /// The number of bits in which `self` and `other` differ (0 to 256). Two images
    /// match at 31 or less in Meta's recommendation.
    ///
    /// ```
    /// use hashgate_host::perceptual::PdqHash;
    /// let a = PdqHash([0; 32]);
    /// let mut b = [0; 32];
    /// b[0] = 0b1011;
    /// assert_eq!(a.distance(&PdqHash(b)), 3);
    /// ```
    pub fn distance(&self, other: &PdqHash) -> u32 {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// The hash from 64 hex digits, as lists and the reference write it; `None` for
    /// anything else.
    pub fn from_hex(text: &str) -> Option<PdqHash> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(PdqHash(bytes))
    }

    /// The hash as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Sets bit `k` (`16 i + j` for coefficient `(i, j)`): bit `k % 16` of the
    /// reference's 16-bit word `k / 16`, and word 15 is written first.
    fn set_bit(&mut self, k: usize) {
        let (word, bit) = (k / 16, k % 16);
        let byte = 2 * (15 - word) + usize::from(bit < 8);
        self.0[byte] |= 1 << (bit % 8);
    }
}

impl fmt::Debug for PdqHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PdqHash({})", self.to_hex())
    }
}

impl fmt::Display for PdqHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One of the eight symmetries of a rectangle: how a copy of a picture was turned or
/// mirrored. The names are the reference's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dihedral {
    /// As it is.
    Original,
    /// Turned a quarter counter-clockwise.
    Rotate90,
    /// Turned half way.
    Rotate180,
    /// Turned a quarter clockwise.
    Rotate270,
    /// Mirrored top to bottom.
    FlipX,
    /// Mirrored left to right.
    FlipY,
    /// Mirrored across the main diagonal (transposed).
    FlipPlus1,
    /// Mirrored across the other diagonal.
    FlipMinus1,
}

impl Dihedral {
    /// All eight, the original first.
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Original,
        Dihedral::Rotate90,
        Dihedral::Rotate180,
        Dihedral::Rotate270,
        Dihedral::FlipX,
        Dihedral::FlipY,
        Dihedral::FlipPlus1,
        Dihedral::FlipMinus1,
    ];

    /// A name for audit records and logs.
    pub fn name(self) -> &'static str {
        match self {
            Dihedral::Original => "original",
            Dihedral::Rotate90 => "rotate90",
            Dihedral::Rotate180 => "rotate180",
            Dihedral::Rotate270 => "rotate270",
            Dihedral::FlipX => "flipx",
            Dihedral::FlipY => "flipy",
            Dihedral::FlipPlus1 => "flipplus1",
            Dihedral::FlipMinus1 => "flipminus1",
        }
    }

    /// The coefficient at `(i, j)` of the transformed picture's DCT, from the original's
    /// `dct`: a mirror negates the odd-frequency terms along its axis (the cosines of odd
    /// frequency change sign under `x -> 63 - x`; coefficient `i` has frequency `i + 1`),
    /// and a quarter turn or a diagonal mirror transposes.
    fn coefficient(self, dct: &[[f32; COEFFS]; COEFFS], i: usize, j: usize) -> f32 {
        let (transposed, negate): (bool, fn(usize, usize) -> bool) = match self {
            Dihedral::Original => (false, |_, _| false),
            Dihedral::Rotate90 => (true, |_, j| j & 1 == 0),
            Dihedral::Rotate180 => (false, |i, j| (i + j) & 1 == 1),
            Dihedral::Rotate270 => (true, |i, _| i & 1 == 0),
            Dihedral::FlipX => (false, |i, _| i & 1 == 0),
            Dihedral::FlipY => (false, |_, j| j & 1 == 0),
            Dihedral::FlipPlus1 => (true, |_, _| false),
            Dihedral::FlipMinus1 => (true, |i, j| (i + j) & 1 == 1),
        };
        // (i, j) of the output is (j, i) of the original when transposed; the sign rule
        // is stated on the original's indices.
        let (si, sj) = if transposed { (j, i) } else { (i, j) };
        let value = dct[si][sj];
        if negate(si, sj) {
            -value
        } else {
            value
        }
    }
}

/// The PDQ of one picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdq {
    /// The hashes asked for, the original first ([`hash`] asks for the original only).
    pub hashes: Vec<(Dihedral, PdqHash)>,
    /// 0 to 100; Meta's advice is to discard hashes of quality 49 or less (featureless
    /// pictures, whose hashes match too much).
    pub quality: u8,
}

impl Pdq {
    /// The hash of the picture as it is.
    pub fn original(&self) -> PdqHash {
        self.hashes[0].1
    }
}

/// A picture's luminance, row by row: what PDQ hashes.
#[derive(Clone, Debug)]
pub struct Luma {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

impl Luma {
    /// From interleaved 8-bit RGB (`3 * rows * cols` bytes), with the reference's weights.
    ///
    /// # Panics
    /// If `rgb` is not `3 * rows * cols` bytes long.
    pub fn from_rgb8(rgb: &[u8], rows: usize, cols: usize) -> Luma {
        assert_eq!(rgb.len(), 3 * rows * cols, "RGB length");
        let values = rgb
            .chunks_exact(3)
            .map(|p| {
                0.299f32 * f32::from(p[0]) + 0.587f32 * f32::from(p[1]) + 0.114f32 * f32::from(p[2])
            })
            .collect();
        Luma { rows, cols, values }
    }

    /// From 8-bit grey levels (`rows * cols` bytes).
    ///
    /// # Panics
    /// If `grey` is not `rows * cols` bytes long.
    pub fn from_grey8(grey: &[u8], rows: usize, cols: usize) -> Luma {
        assert_eq!(grey.len(), rows * cols, "grey length");
        Luma {
            rows,
            cols,
            values: grey.iter().map(|&v| f32::from(v)).collect(),
        }
    }

    /// Rows (height) and columns (width).
    pub fn dimensions(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

/// The PDQ hash of `luma` as it is, with its quality.
///
/// ```
/// use hashgate_host::perceptual::{pdq, Luma};
/// // A picture with something in it: a diagonal gradient with a bright square.
/// let (rows, cols) = (100, 120);
/// let grey: Vec<u8> = (0..rows * cols)
///     .map(|k| {
///         let (i, j) = (k / cols, k % cols);
///         if (30..60).contains(&i) && (40..80).contains(&j) { 255 } else { ((i + j) % 256) as u8 }
///     })
///     .collect();
/// let a = pdq::hash(Luma::from_grey8(&grey, rows, cols));
/// // The same picture a little darker hashes the same or nearly so.
/// let darker: Vec<u8> = grey.iter().map(|v| v.saturating_sub(10)).collect();
/// let b = pdq::hash(Luma::from_grey8(&darker, rows, cols));
/// assert!(a.original().distance(&b.original()) <= 31);
/// assert!(a.quality > 49);
/// ```
pub fn hash(luma: Luma) -> Pdq {
    hashes(luma, &[Dihedral::Original])
}

/// The PDQ hashes of `luma` for each of `which` (all eight with [`Dihedral::ALL`]), with
/// the picture's quality. A picture under [`MIN_DIMENSION`] on either axis gets the zero
/// hash and quality 0, as in the reference.
pub fn hashes(mut luma: Luma, which: &[Dihedral]) -> Pdq {
    if luma.rows < MIN_DIMENSION || luma.cols < MIN_DIMENSION {
        return Pdq {
            hashes: which.iter().map(|&d| (d, PdqHash::default())).collect(),
            quality: 0,
        };
    }
    let cells = if luma.rows == CELLS && luma.cols == CELLS {
        let mut cells = [[0f32; CELLS]; CELLS];
        for (i, row) in cells.iter_mut().enumerate() {
            row.copy_from_slice(&luma.values[i * CELLS..(i + 1) * CELLS]);
        }
        cells
    } else {
        tent_filter(&mut luma);
        decimate(&luma)
    };
    let quality = quality(&cells);
    let dct = dct(&cells);
    Pdq {
        hashes: which.iter().map(|&d| (d, bits(&dct, d))).collect(),
        quality,
    }
}

/// The box width for an axis of `len` pixels: two passes of it together cover one of
/// the 64 cells.
fn window(len: usize) -> usize {
    len.div_ceil(2 * CELLS)
}

/// The two passes of row and column boxes, in place.
fn tent_filter(luma: &mut Luma) {
    let (rows, cols) = (luma.rows, luma.cols);
    let (along_rows, along_cols) = (window(cols), window(rows));
    let mut scratch = vec![0f32; luma.values.len()];
    for _ in 0..2 {
        for (input, output) in luma
            .values
            .chunks_exact(cols)
            .zip(scratch.chunks_exact_mut(cols))
        {
            box_row(input, output, along_rows);
        }
        box_columns(&scratch, &mut luma.values, cols, along_cols);
    }
}

/// The phases of a box of width `full` over a vector: how many inputs are summed before
/// the first output, how many outputs grow the window, how many slide it, how many
/// shrink it. Outputs are centred, so the first and last few average fewer inputs.
fn phases(len: usize, full: usize) -> (usize, usize, usize, usize) {
    let half = (full + 2) / 2;
    (
        half - 1,
        full - half + 1,
        len.saturating_sub(full),
        half - 1,
    )
}

/// One row's box filter (the reference's one-dimensional box, with stride 1).
fn box_row(input: &[f32], output: &mut [f32], full: usize) {
    let (grow_silent, grow, slide, shrink) = phases(input.len(), full);
    let (mut left, mut right, mut out) = (0, 0, 0);
    let mut sum = 0f32;
    let mut count = 0usize;
    for _ in 0..grow_silent {
        sum += input[right];
        count += 1;
        right += 1;
    }
    for _ in 0..grow {
        sum += input[right];
        count += 1;
        output[out] = sum / count as f32;
        right += 1;
        out += 1;
    }
    for _ in 0..slide {
        sum += input[right];
        sum -= input[left];
        output[out] = sum / count as f32;
        left += 1;
        right += 1;
        out += 1;
    }
    for _ in 0..shrink {
        sum -= input[left];
        count -= 1;
        output[out] = sum / count as f32;
        left += 1;
        out += 1;
    }
}

/// The box filter down every column at once: the same additions in the same order as
/// one column at a time (so the same bits as the reference), but row after row, so the
/// memory is read in order instead of one element per row.
fn box_columns(input: &[f32], output: &mut [f32], cols: usize, full: usize) {
    let rows = input.len() / cols;
    let (grow_silent, grow, slide, shrink) = phases(rows, full);
    let row = |k: usize| &input[k * cols..(k + 1) * cols];
    let mut sum = vec![0f32; cols];
    let (mut left, mut right, mut out) = (0, 0, 0);
    let mut count = 0usize;
    let mut write = |out: usize, sum: &[f32], count: usize| {
        let n = count as f32;
        for (o, s) in output[out * cols..(out + 1) * cols].iter_mut().zip(sum) {
            *o = s / n;
        }
    };
    for _ in 0..grow_silent {
        sum.iter_mut().zip(row(right)).for_each(|(s, v)| *s += v);
        count += 1;
        right += 1;
    }
    for _ in 0..grow {
        sum.iter_mut().zip(row(right)).for_each(|(s, v)| *s += v);
        count += 1;
        write(out, &sum, count);
        right += 1;
        out += 1;
    }
    for _ in 0..slide {
        sum.iter_mut()
            .zip(row(right).iter().zip(row(left)))
            .for_each(|(s, (add, sub))| *s = *s + add - sub);
        write(out, &sum, count);
        left += 1;
        right += 1;
        out += 1;
    }
    for _ in 0..shrink {
        sum.iter_mut().zip(row(left)).for_each(|(s, v)| *s -= v);
        count -= 1;
        write(out, &sum, count);
        left += 1;
        out += 1;
    }
}

/// The 64 x 64 samples at the cells' centres.
fn decimate(luma: &Luma) -> [[f32; CELLS]; CELLS] {
    let centre = |k: usize, len: usize| ((k as f64 + 0.5) * len as f64 / CELLS as f64) as usize;
    let mut cells = [[0f32; CELLS]; CELLS];
    for (i, row) in cells.iter_mut().enumerate() {
        let base = centre(i, luma.rows) * luma.cols;
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = luma.values[base + centre(j, luma.cols)];
        }
    }
    cells
}

/// The reference's quality heuristic: significant gradients between neighbours.
fn quality(cells: &[[f32; CELLS]; CELLS]) -> u8 {
    let step = |u: f32, v: f32| ((((u - v) * 100.0) / 255.0) as i32).unsigned_abs();
    let mut sum = 0u32;
    for pair in cells.windows(2) {
        for (above, below) in pair[0].iter().zip(&pair[1]) {
            sum += step(*above, *below);
        }
    }
    for row in cells {
        for pair in row.windows(2) {
            sum += step(pair[0], pair[1]);
        }
    }
    (sum / 90).min(100) as u8
}

/// Rows 1..=16 of the 64-point DCT-II matrix, in `f32` as the reference rounds it.
fn dct_matrix() -> &'static [[f32; CELLS]; COEFFS] {
    static MATRIX: OnceLock<[[f32; CELLS]; COEFFS]> = OnceLock::new();
    MATRIX.get_or_init(|| {
        let scale = (2.0f64 / CELLS as f64).sqrt() as f32;
        let mut d = [[0f32; CELLS]; COEFFS];
        for (i, row) in d.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let angle = (PI / 2.0 / CELLS as f64) * (i + 1) as f64 * (2 * j + 1) as f64;
                *v = (f64::from(scale) * angle.cos()) as f32;
            }
        }
        d
    })
}

/// `D A Dᵀ`: the 16 x 16 low-frequency coefficients of the 64 x 64 samples, each sum
/// taken in the reference's order (the same bits).
fn dct(cells: &[[f32; CELLS]; CELLS]) -> [[f32; COEFFS]; COEFFS] {
    let d = dct_matrix();
    let mut t = [[0f32; CELLS]; COEFFS];
    for (i, t_row) in t.iter_mut().enumerate() {
        for (j, t_ij) in t_row.iter_mut().enumerate() {
            let mut sum = 0f32;
            for k in 0..CELLS {
                sum += d[i][k] * cells[k][j];
            }
            *t_ij = sum;
        }
    }
    let mut b = [[0f32; COEFFS]; COEFFS];
    for (i, b_row) in b.iter_mut().enumerate() {
        for (j, b_ij) in b_row.iter_mut().enumerate() {
            let mut sum = 0f32;
            for k in 0..CELLS {
                sum += t[i][k] * d[j][k];
            }
            *b_ij = sum;
        }
    }
    b
}

/// The hash of the `which` transform: a bit per coefficient above the median (the 128th
/// smallest of the 256, as the reference's Torben median gives).
fn bits(dct: &[[f32; COEFFS]; COEFFS], which: Dihedral) -> PdqHash {
    let mut values = [0f32; COEFFS * COEFFS];
    for i in 0..COEFFS {
        for j in 0..COEFFS {
            values[i * COEFFS + j] = which.coefficient(dct, i, j);
        }
    }
    let mut sorted = values;
    let (_, median, _) = sorted.select_nth_unstable_by(COEFFS * COEFFS / 2 - 1, f32::total_cmp);
    let median = *median;
    let mut hash = PdqHash::default();
    for (k, v) in values.iter().enumerate() {
        if *v > median {
            hash.set_bit(k);
        }
    }
    hash
}
