//! PDQ sections (format v2, `docs/FORMAT.md` § "PDQ sections"): listed perceptual hashes,
//! found within a Hamming distance of a picture's hash.
//!
//! A section's payload is an array of 32-byte slots, each a listed hash or 32 zero bytes
//! (empty: the zero hash is what PDQ gives a picture too small or too flat to hash, and
//! is never listed). Writers place each hash near a *home* slot derived from it
//! ([`home`]), so an unchanged hash keeps its slot from version to version and a delta
//! carries only the churn.
//!
//! Matching is multi-index hashing: a hash is 16 windows of 16 bits, and two hashes
//! within distance `T` agree to within `T / 16` bits on at least one window (if every
//! window differed in more, they would differ in at least `16 (T / 16 + 1) > T` bits).
//! The index lists, for each window and each of its 65,536 values, the slots whose hash
//! has that value there. A query visits, in each window, the buckets of the values
//! within `T / 16` bits of its own (17 buckets at the usual `T` = 31) and measures the
//! full distance to each hash found there.

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::Error;

/// Bytes in a PDQ hash.
pub const HASH_LEN: usize = 32;
/// Windows a hash is split into for the index.
const WINDOWS: usize = 16;
/// Values of one 16-bit window.
const VALUES: usize = 1 << 16;
/// The algorithm code of a PDQ section record.
pub const CODE: u8 = 4;
/// Meta's recommended match distance.
pub const DEFAULT_THRESHOLD: u8 = 31;
/// The largest threshold a section may carry: at 64 a query visits 697 buckets per
/// window; beyond it matching is closer to a scan than to an index, and PDQ matches
/// that far apart are noise.
pub const MAX_THRESHOLD: u8 = 63;

/// The slot a writer tries first for `hash` in a section of `slots` slots:
/// `floor(lo · slots / 2^64)`, where `lo` is the first word of SipHash-1-3-128 keyed with
/// the snapshot's salt over the byte `4` (the PDQ code) and the hash.
pub fn home(salt: &[u8; 16], hash: &[u8; HASH_LEN], slots: u64) -> u64 {
    let mut message = [0u8; 1 + HASH_LEN];
    message[0] = CODE;
    message[1..].copy_from_slice(hash);
    let mut sip = SipHasher13::new_with_key(salt);
    sip.write(&message);
    let lo = sip.finish128().h1;
    ((u128::from(lo) * u128::from(slots)) >> 64) as u64
}

/// Lays `hashes` (distinct, none zero) out in `slots` slots: in order of home slot (then
/// of the hash's bytes), each in the first free slot at or after its home, wrapping
/// around at the end. The layout depends on the set alone, so adding or removing a hash
/// moves only the hashes of its run.
pub fn layout(salt: &[u8; 16], hashes: &[[u8; HASH_LEN]], slots: u64) -> Vec<u8> {
    assert!(hashes.len() as u64 <= slots, "more hashes than slots");
    let mut homed: Vec<(u64, &[u8; HASH_LEN])> =
        hashes.iter().map(|h| (home(salt, h, slots), h)).collect();
    homed.sort_unstable();
    let mut out = vec![0u8; slots as usize * HASH_LEN];
    let mut taken = vec![false; slots as usize];
    let mut overflow = Vec::new();
    let mut next = 0u64;
    for (home, hash) in homed {
        let at = home.max(next);
        if at >= slots {
            overflow.push(hash);
            continue;
        }
        put(&mut out, &mut taken, at, hash);
        next = at + 1;
    }
    // The runs that reached the end continue from the start.
    let free: Vec<u64> = (0..slots).filter(|&s| !taken[s as usize]).collect();
    for (hash, at) in overflow.into_iter().zip(free) {
        put(&mut out, &mut taken, at, hash);
    }
    out
}

fn put(out: &mut [u8], taken: &mut [bool], at: u64, hash: &[u8; HASH_LEN]) {
    let at = at as usize;
    out[at * HASH_LEN..(at + 1) * HASH_LEN].copy_from_slice(hash);
    taken[at] = true;
}

/// The Hamming distance between two hashes.
pub fn distance(a: &[u8], b: &[u8]) -> u32 {
    a.chunks_exact(8)
        .zip(b.chunks_exact(8))
        .map(|(x, y)| {
            let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
            let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
            (x ^ y).count_ones()
        })
        .sum()
}

fn window(hash: &[u8], w: usize) -> usize {
    usize::from(u16::from_be_bytes([hash[2 * w], hash[2 * w + 1]]))
}

/// The multi-index of one PDQ section, built when the filter loads.
#[derive(Debug)]
pub struct PdqIndex {
    /// `offsets[w * (VALUES + 1) + v]`: where window `w`'s bucket for value `v` starts in
    /// `postings[w]`.
    offsets: Vec<u32>,
    /// Per window, the slots of the listed hashes, grouped by the window's value.
    postings: Vec<Vec<u32>>,
    threshold: u32,
}

/// A listed hash near a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PdqMatch {
    /// The slot of the listed hash in its section.
    pub slot: u32,
    /// Bits in which it differs from the query.
    pub distance: u32,
}

impl PdqIndex {
    /// Indexes a section's `slots` bytes (a multiple of 32), checking that exactly
    /// `entries` slots are used and that no hash is listed twice.
    pub fn build(slots: &[u8], entries: u64, threshold: u8) -> Result<PdqIndex, Error> {
        let invalid = |reason: String| Error::InvalidField {
            field: "payload",
            reason,
        };
        let used: Vec<u32> = slots
            .chunks_exact(HASH_LEN)
            .enumerate()
            .filter(|(_, h)| h.iter().any(|&b| b != 0))
            .map(|(s, _)| s as u32)
            .collect();
        if used.len() as u64 != entries {
            return Err(invalid(format!(
                "a PDQ section says {entries} entries, its slots hold {}",
                used.len()
            )));
        }
        let hash = |s: u32| &slots[s as usize * HASH_LEN..(s as usize + 1) * HASH_LEN];
        let mut offsets = vec![0u32; WINDOWS * (VALUES + 1)];
        let mut postings = Vec::with_capacity(WINDOWS);
        for w in 0..WINDOWS {
            let starts = &mut offsets[w * (VALUES + 1)..(w + 1) * (VALUES + 1)];
            for &s in &used {
                starts[window(hash(s), w) + 1] += 1;
            }
            for v in 0..VALUES {
                starts[v + 1] += starts[v];
            }
            let mut fill = starts[..VALUES].to_vec();
            let mut list = vec![0u32; used.len()];
            for &s in &used {
                let v = window(hash(s), w);
                list[fill[v] as usize] = s;
                fill[v] += 1;
            }
            postings.push(list);
        }
        // Equal hashes share every bucket: compare within window 0's.
        let starts = &offsets[..VALUES + 1];
        for v in 0..VALUES {
            let bucket = &postings[0][starts[v] as usize..starts[v + 1] as usize];
            if bucket.len() > 1 {
                let mut hashes: Vec<&[u8]> = bucket.iter().map(|&s| hash(s)).collect();
                hashes.sort_unstable();
                if hashes.windows(2).any(|p| p[0] == p[1]) {
                    return Err(invalid("a PDQ hash is listed twice in a section".into()));
                }
            }
        }
        Ok(PdqIndex {
            offsets,
            postings,
            threshold: u32::from(threshold),
        })
    }

    /// The listed hashes within the section's threshold of `query`, by slot, each once.
    pub fn find(&self, slots: &[u8], query: &[u8; HASH_LEN]) -> Vec<PdqMatch> {
        let radius = self.threshold / WINDOWS as u32;
        let mut found = Vec::new();
        let mut flips = Vec::new();
        for w in 0..WINDOWS {
            let own = window(query, w);
            flips.clear();
            near(own, radius, 0, &mut flips);
            let starts = &self.offsets[w * (VALUES + 1)..(w + 1) * (VALUES + 1)];
            for &v in &flips {
                for &s in &self.postings[w][starts[v] as usize..starts[v + 1] as usize] {
                    let listed = &slots[s as usize * HASH_LEN..(s as usize + 1) * HASH_LEN];
                    let d = distance(listed, query);
                    if d <= self.threshold {
                        found.push(PdqMatch {
                            slot: s,
                            distance: d,
                        });
                    }
                }
            }
        }
        found.sort_unstable_by_key(|m| m.slot);
        found.dedup_by_key(|m| m.slot);
        found
    }

    /// Bytes the index takes beside the section's slots.
    pub fn memory(&self) -> usize {
        4 * (self.offsets.len() + self.postings.iter().map(Vec::len).sum::<usize>())
    }
}

/// Every 16-bit value within `radius` bits of `value`, flipping only bits at `from` and
/// above (so each is listed once).
fn near(value: usize, radius: u32, from: u32, out: &mut Vec<usize>) {
    out.push(value);
    if radius == 0 {
        return;
    }
    for bit in from..16 {
        near(value ^ (1 << bit), radius - 1, bit + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_hashes(n: usize, seed: u64) -> Vec<[u8; HASH_LEN]> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                let mut h = [0u8; HASH_LEN];
                for b in h.iter_mut() {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    *b = (state >> 56) as u8;
                }
                h
            })
            .collect()
    }

    #[test]
    fn finds_exactly_what_a_scan_finds() {
        let salt = [3u8; 16];
        let listed = random_hashes(2000, 1);
        let slots = layout(&salt, &listed, 4096);
        for threshold in [0u8, 15, 31, 47] {
            let index = PdqIndex::build(&slots, 2000, threshold).unwrap();
            // Queries near listed hashes (a few bits flipped) and random ones.
            let mut queries = random_hashes(200, 2);
            for (k, l) in listed.iter().take(200).enumerate() {
                let mut q = *l;
                for f in 0..(k % 40) {
                    q[(f * 7) % 32] ^= 1 << (f % 8);
                }
                queries.push(q);
            }
            for q in &queries {
                let mut expected: Vec<PdqMatch> = slots
                    .chunks_exact(HASH_LEN)
                    .enumerate()
                    .filter(|(_, h)| h.iter().any(|&b| b != 0))
                    .map(|(s, h)| PdqMatch {
                        slot: s as u32,
                        distance: distance(h, q),
                    })
                    .filter(|m| m.distance <= u32::from(threshold))
                    .collect();
                expected.sort_unstable_by_key(|m| m.slot);
                assert_eq!(index.find(&slots, q), expected, "threshold {threshold}");
            }
        }
    }

    /// Flips bit `b` (0 = the first byte's highest) of `hash`.
    fn flip(hash: &mut [u8; HASH_LEN], b: u32) {
        hash[(b / 8) as usize] ^= 0x80 >> (b % 8);
    }

    fn slots_hold(slots: &[u8], slot: u32, hash: &[u8; HASH_LEN]) -> bool {
        &slots[slot as usize * HASH_LEN..(slot as usize + 1) * HASH_LEN] == hash
    }

    #[test]
    fn a_hash_at_the_threshold_is_found_however_its_bits_fall() {
        // The worst case for an index over windows: one bit more than the radius in as
        // many windows as the threshold allows, the rest in the last window reached.
        let salt = [4u8; 16];
        let listed = random_hashes(300, 11);
        let slots = layout(&salt, &listed, 512);
        let mut state = 99u64;
        let mut next = |n: u32| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % u64::from(n)) as u32
        };
        for threshold in 0..=MAX_THRESHOLD {
            let index = PdqIndex::build(&slots, 300, threshold).unwrap();
            let t = u32::from(threshold);
            let over = t / WINDOWS as u32 + 1;
            for k in 0..20 {
                let target = listed[k * 7];
                let (mut q, mut left) = (target, t);
                let first = next(WINDOWS as u32) as usize;
                for w in (0..WINDOWS).map(|i| (i + first) % WINDOWS) {
                    let mut picked = Vec::new();
                    while (picked.len() as u32) < over.min(left) {
                        let b = 16 * w as u32 + next(16);
                        if !picked.contains(&b) {
                            picked.push(b);
                            flip(&mut q, b);
                        }
                    }
                    left -= picked.len() as u32;
                }
                let d = distance(&q, &target);
                assert_eq!(d, t);
                assert!(
                    index
                        .find(&slots, &q)
                        .iter()
                        .any(|m| m.distance == d && slots_hold(&slots, m.slot, &target)),
                    "threshold {t}: a hash {d} bits away was missed"
                );
                // One more bit, where the two agree: past the threshold, not a match.
                let b = (0..256)
                    .find(|&b| (target[b / 8] ^ q[b / 8]) & (0x80 >> (b % 8)) == 0)
                    .expect("fewer than 256 bits differ");
                flip(&mut q, b as u32);
                assert!(!index
                    .find(&slots, &q)
                    .iter()
                    .any(|m| slots_hold(&slots, m.slot, &target)));
            }
        }
    }

    #[test]
    fn the_layout_keeps_unchanged_hashes_in_their_slots() {
        let salt = [9u8; 16];
        let listed = random_hashes(1000, 5);
        let before = layout(&salt, &listed, 2048);
        let after = layout(&salt, &listed[1..], 2048);
        let moved = before
            .chunks_exact(HASH_LEN)
            .zip(after.chunks_exact(HASH_LEN))
            .filter(|(a, b)| a != b)
            .count();
        // The removed hash's slot, and the few of its run that move up.
        assert!((1..=8).contains(&moved), "{moved} slots changed");
    }

    #[test]
    fn a_section_is_refused_for_a_wrong_count_or_a_duplicate() {
        let salt = [1u8; 16];
        let listed = random_hashes(10, 7);
        let slots = layout(&salt, &listed, 64);
        assert!(PdqIndex::build(&slots, 9, 31).is_err());
        let mut twice = listed.clone();
        twice[1] = twice[0];
        let mut slots = vec![0u8; 64 * HASH_LEN];
        for (k, h) in twice.iter().enumerate() {
            slots[k * 5 * HASH_LEN..(k * 5 + 1) * HASH_LEN].copy_from_slice(h);
        }
        assert!(PdqIndex::build(&slots, 10, 31).is_err());
    }
}
