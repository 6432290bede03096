//! Deltas: the bits that changed between two snapshots of a series, Rice-coded.
//!
//! A delta turns one snapshot body (the *base*) into the next (the *target*) when both
//! have the same geometry: the same header length and payload length. The publisher keeps
//! a series' section sizes fixed while its lists fit them, and the salt is fixed per
//! series, so an unchanged entry keeps its bits and a delta carries only what churned:
//! about 15 flipped bits per added or removed entry at 1e-9, each coded in about 13 bits.
//!
//! The byte layout is specified in `docs/FORMAT.md`, "Deltas". [`diff`] writes one;
//! [`crate::Filter::apply_delta`] applies one, checking the base first.
//!
//! ```
//! use hashgate_guest::{delta, Algorithm, BuildParams, Filter, FilterBuilder, SectionSpec};
//!
//! let spec = |n| [SectionSpec { algorithm: Algorithm::Sha256, category: None, entries: n }];
//! let build = |version, digests: &[[u8; 32]]| {
//!     let mut params = BuildParams::new("example", version, 1_700_000_000, 1_800_000_000, 1e-6);
//!     params.min_bits = vec![(Algorithm::Sha256, None, 1 << 20)];
//!     let mut b = FilterBuilder::new(&params, &spec(digests.len() as u64))?;
//!     for d in digests {
//!         b.insert(Algorithm::Sha256, None, d)?;
//!     }
//!     b.finish()
//! };
//! let v1 = build(1, &[[1; 32], [2; 32]])?;
//! let v2 = build(2, &[[2; 32], [3; 32]])?; // [1; 32] removed, [3; 32] added
//!
//! let patch = delta::diff(&v1, &v2)?;
//! assert!(patch.len() < v2.len() / 10);
//! let mut filter = Filter::parse(v1)?;
//! filter.apply_delta(&patch)?;
//! assert_eq!(filter.as_bytes(), &v2[..]);
//! assert!(filter.check(&[(Algorithm::Sha256, &[1; 32][..])])?.is_empty());
//! # Ok::<(), hashgate_guest::Error>(())
//! ```

use sha2::{Digest, Sha256};

use crate::format::Header;
use crate::Error;

/// The first bytes of a delta.
pub const MAGIC: [u8; 8] = *b"HGDELTA1";
/// The delta format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the fixed part of a delta, before the target's header.
pub const FIXED_LEN: usize = 104;
/// The largest Rice parameter a reader accepts.
pub const MAX_RICE: u32 = 48;

/// A parsed delta: its fields, with the target head and coded positions as views.
#[derive(Clone, Debug)]
pub struct Delta<'a> {
    /// SHA-256 of the base's header and section records. The header holds the payload's
    /// SHA-256 (checked whenever a snapshot is loaded), so this names the whole base body
    /// at the cost of hashing a few hundred bytes instead of the payload.
    pub base_head_sha256: [u8; 32],
    /// SHA-256 of the target's header and section records (of [`Delta::head`]).
    pub target_head_sha256: [u8; 32],
    /// Rice parameter of the position coding.
    pub rice: u32,
    /// Number of payload bits that differ.
    pub flips: u64,
    /// The target's header and section records, verbatim.
    pub head: &'a [u8],
    /// The Rice-coded bit positions.
    pub coded: &'a [u8],
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a> Delta<'a> {
    /// Parses and validates a delta's framing (not yet its positions, which are checked
    /// against the base's payload length as they are decoded).
    pub fn parse(bytes: &'a [u8]) -> Result<Delta<'a>, Error> {
        if bytes.len() < FIXED_LEN {
            return Err(Error::Truncated {
                field: "delta header",
                needed: FIXED_LEN as u64,
                available: bytes.len() as u64,
            });
        }
        if bytes[..8] != MAGIC {
            return Err(invalid("delta magic", "not a hashgate delta"));
        }
        let version = le_u16(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if le_u16(bytes, 10) != 0 || le_u32(bytes, 100) != 0 {
            return Err(invalid("delta reserved", "must be zero"));
        }
        let rice = le_u32(bytes, 12);
        if rice > MAX_RICE {
            return Err(invalid("rice", format!("{rice} is over {MAX_RICE}")));
        }
        let flips = le_u64(bytes, 80);
        let coded_len = le_u64(bytes, 88);
        let head_len = u64::from(le_u32(bytes, 96));
        let expected = (FIXED_LEN as u64)
            .checked_add(head_len)
            .and_then(|n| n.checked_add(coded_len))
            .ok_or_else(|| invalid("coded_len", "lengths overflow"))?;
        if (bytes.len() as u64) < expected {
            return Err(Error::Truncated {
                field: "delta body",
                needed: expected,
                available: bytes.len() as u64,
            });
        }
        if bytes.len() as u64 > expected {
            return Err(invalid(
                "coded_len",
                format!(
                    "{} bytes follow the coded positions",
                    bytes.len() as u64 - expected
                ),
            ));
        }
        let head_end = FIXED_LEN + head_len as usize;
        Ok(Delta {
            base_head_sha256: bytes[16..48].try_into().expect("32 bytes"),
            target_head_sha256: bytes[48..80].try_into().expect("32 bytes"),
            rice,
            flips,
            head: &bytes[FIXED_LEN..head_end],
            coded: &bytes[head_end..],
        })
    }

    /// Decodes the flipped bit positions, each below `payload_bits`, strictly
    /// increasing, exactly [`Delta::flips`] of them, with nothing but zero padding after.
    pub fn positions(&self, payload_bits: u64) -> Result<Vec<u64>, Error> {
        if self.flips > payload_bits {
            return Err(invalid("flips", "more flips than payload bits"));
        }
        let mut reader = BitReader::new(self.coded);
        // Reserve for what the coded bytes can hold at most (each gap takes >= 1 bit).
        let bound = (self.coded.len() as u64 * 8).min(self.flips);
        let mut positions = Vec::with_capacity(bound as usize);
        let mut next = 0u64; // the smallest position the next gap can name
        for _ in 0..self.flips {
            // The quotient is at most what still fits in the payload: a bound on the
            // unary run, so a hostile delta cannot make us read forever.
            let limit = (payload_bits - next) >> self.rice;
            let mut q = 0u64;
            while reader.bit()? {
                q += 1;
                if q > limit {
                    return Err(invalid("coded positions", "a position beyond the payload"));
                }
            }
            let gap = (q << self.rice) | reader.bits(self.rice)?;
            let position = next
                .checked_add(gap)
                .filter(|&p| p < payload_bits)
                .ok_or_else(|| invalid("coded positions", "a position beyond the payload"))?;
            positions.push(position);
            next = position + 1;
        }
        if !reader.rest_is_zero() {
            return Err(invalid("coded positions", "bits after the last position"));
        }
        Ok(positions)
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    at: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, at: 0 }
    }

    fn bit(&mut self) -> Result<bool, Error> {
        let byte = self
            .bytes
            .get((self.at / 8) as usize)
            .ok_or_else(|| invalid("coded positions", "ended before the last position"))?;
        let bit = byte >> (self.at % 8) & 1 == 1;
        self.at += 1;
        Ok(bit)
    }

    /// `n` bits, least significant first.
    fn bits(&mut self, n: u32) -> Result<u64, Error> {
        let mut value = 0u64;
        for i in 0..n {
            value |= u64::from(self.bit()?) << i;
        }
        Ok(value)
    }

    fn rest_is_zero(&self) -> bool {
        let byte = (self.at / 8) as usize;
        let used = (self.at % 8) as u32;
        if used != 0 && self.bytes[byte] >> used != 0 {
            return false;
        }
        let whole = byte + usize::from(used != 0);
        self.bytes[whole..].iter().all(|&b| b == 0) && whole == self.bytes.len()
    }
}

struct BitWriter {
    bytes: Vec<u8>,
    at: u64,
}

impl BitWriter {
    fn push(&mut self, bit: bool) {
        if self.at.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit {
            *self.bytes.last_mut().expect("pushed above") |= 1 << (self.at % 8);
        }
        self.at += 1;
    }
}

/// The Rice parameter that codes `gaps` in the fewest bits, and that size in bits.
fn best_rice(gaps: &[u64]) -> (u32, u64) {
    (0..=MAX_RICE)
        .map(|k| {
            let bits: u64 = gaps.iter().map(|g| (g >> k) + 1 + u64::from(k)).sum();
            (k, bits)
        })
        .min_by_key(|&(_, bits)| bits)
        .expect("a non-empty range")
}

/// Writes the delta that turns snapshot body `base` into snapshot body `target`.
///
/// Fails with [`Error::DeltaMismatch`] if the two do not share a geometry (header length
/// and payload length): then only the full snapshot can carry the change.
pub fn diff(base: &[u8], target: &[u8]) -> Result<Vec<u8>, Error> {
    let base_head = Header::parse(base)?;
    let target_head = Header::parse(target)?;
    let (base_start, target_start) = (base_head.body_offset(), target_head.body_offset());
    if base_start != target_start
        || base_head.payload_len != target_head.payload_len
        || base.len() != target.len()
        || base.len() != base_start + base_head.payload_len as usize
    {
        return Err(Error::DeltaMismatch(
            "the snapshots' geometries differ (sections or their sizes changed)".into(),
        ));
    }
    let (old, new) = (&base[base_start..], &target[target_start..]);
    let mut gaps = Vec::new();
    let mut next = 0u64;
    // Eight bytes at a time: almost every word is unchanged.
    for (w, (a, b)) in old.chunks(8).zip(new.chunks(8)).enumerate() {
        let mut word = [0u8; 8];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            word[i] = x ^ y;
        }
        let mut changed = u64::from_le_bytes(word);
        while changed != 0 {
            let position = w as u64 * 64 + u64::from(changed.trailing_zeros());
            gaps.push(position - next);
            next = position + 1;
            changed &= changed - 1;
        }
    }
    let (rice, bits) = best_rice(&gaps);
    let mut coded = BitWriter {
        bytes: Vec::with_capacity(bits.div_ceil(8) as usize),
        at: 0,
    };
    for &gap in &gaps {
        for _ in 0..gap >> rice {
            coded.push(true);
        }
        coded.push(false);
        for i in 0..rice {
            coded.push(gap >> i & 1 == 1);
        }
    }
    let mut out = Vec::with_capacity(FIXED_LEN + target_start + coded.bytes.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&rice.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&base[..base_start]));
    out.extend_from_slice(&Sha256::digest(&target[..target_start]));
    out.extend_from_slice(&(gaps.len() as u64).to_le_bytes());
    out.extend_from_slice(&(coded.bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&(target_start as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&target[..target_start]);
    out.extend_from_slice(&coded.bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, BuildParams, Filter, FilterBuilder, SectionSpec};

    fn build(version: u64, digests: &[[u8; 32]], min_bits: u64) -> Vec<u8> {
        let mut params = BuildParams::new("t", version, 10, 20, 1e-6);
        params.min_bits = vec![(Algorithm::Sha256, Some("x".into()), min_bits)];
        let spec = SectionSpec {
            algorithm: Algorithm::Sha256,
            category: Some("x".into()),
            entries: digests.len() as u64,
        };
        let mut b = FilterBuilder::new(&params, &[spec]).unwrap();
        for d in digests {
            b.insert(Algorithm::Sha256, Some("x"), d).unwrap();
        }
        b.finish().unwrap()
    }

    fn digests(range: std::ops::Range<u32>) -> Vec<[u8; 32]> {
        range
            .map(|i| Sha256::digest(i.to_le_bytes()).into())
            .collect()
    }

    #[test]
    fn applying_a_delta_gives_the_target_byte_for_byte() {
        let v1 = build(1, &digests(0..1000), 1 << 16);
        let v2 = build(2, &digests(10..1010), 1 << 16);
        let patch = diff(&v1, &v2).unwrap();
        let mut f = Filter::parse(v1.clone()).unwrap();
        f.apply_delta(&patch).unwrap();
        assert_eq!(f.as_bytes(), &v2[..]);
        // And back: deltas work in either direction.
        let back = diff(&v2, &v1).unwrap();
        f.apply_delta(&back).unwrap();
        assert_eq!(f.as_bytes(), &v1[..]);
    }

    #[test]
    fn an_identical_target_gives_an_empty_position_list() {
        let v1 = build(1, &digests(0..50), 1 << 16);
        let patch = diff(&v1, &v1).unwrap();
        assert_eq!(Delta::parse(&patch).unwrap().flips, 0);
        let mut f = Filter::parse(v1.clone()).unwrap();
        f.apply_delta(&patch).unwrap();
        assert_eq!(f.as_bytes(), &v1[..]);
    }

    #[test]
    fn a_delta_for_another_base_is_refused_and_changes_nothing() {
        let v1 = build(1, &digests(0..100), 1 << 16);
        let v2 = build(2, &digests(5..105), 1 << 16);
        let other = build(7, &digests(500..600), 1 << 16);
        let patch = diff(&v1, &v2).unwrap();
        let mut f = Filter::parse(other.clone()).unwrap();
        assert!(matches!(f.apply_delta(&patch), Err(Error::DeltaBase)));
        assert_eq!(f.as_bytes(), &other[..]);
    }

    #[test]
    fn different_geometries_have_no_delta() {
        let v1 = build(1, &digests(0..100), 1 << 16);
        let v2 = build(2, &digests(0..100), 1 << 17);
        assert!(matches!(diff(&v1, &v2), Err(Error::DeltaMismatch(_))));
    }

    #[test]
    fn every_corruption_is_an_error_and_the_filter_stays() {
        let v1 = build(1, &digests(0..300), 1 << 16);
        let v2 = build(2, &digests(30..330), 1 << 16);
        let patch = diff(&v1, &v2).unwrap();
        let mut f = Filter::parse(v1.clone()).unwrap();
        for cut in [0, 50, FIXED_LEN, patch.len() - 1] {
            assert!(f.apply_delta(&patch[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = patch.clone();
        longer.push(0);
        assert!(f.apply_delta(&longer).is_err());
        // Flip every bit in turn in a sample of positions: never a panic, never a change
        // unless the result is exactly the target.
        for at in (0..patch.len()).step_by(7) {
            for bit in [0, 3, 7] {
                let mut bad = patch.clone();
                bad[at] ^= 1 << bit;
                let mut g = Filter::parse(v1.clone()).unwrap();
                match g.apply_delta(&bad) {
                    Ok(()) => assert_eq!(g.as_bytes(), &v2[..], "byte {at} bit {bit}"),
                    Err(_) => assert_eq!(g.as_bytes(), &v1[..], "byte {at} bit {bit}"),
                }
            }
        }
        assert_eq!(f.as_bytes(), &v1[..]);
    }

    #[test]
    fn a_hostile_unary_run_is_bounded() {
        let v1 = build(1, &digests(0..10), 1 << 16);
        let mut patch = diff(&v1, &v1).unwrap();
        // Claim one flip and give a run of ones longer than the payload.
        patch[80..88].copy_from_slice(&1u64.to_le_bytes());
        let ones = vec![0xffu8; 20_000];
        patch[88..96].copy_from_slice(&(ones.len() as u64).to_le_bytes());
        patch.extend_from_slice(&ones);
        let mut f = Filter::parse(v1).unwrap();
        assert!(f.apply_delta(&patch).is_err());
    }
}
