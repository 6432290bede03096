//! PDQ sections (format v2, `docs/FORMAT.md` § "PDQ sections"): listed perceptual hashes,
//! found within a Hamming distance of a picture's hash.
//!
//! A section's payload is an array of 32-byte slots, each a listed hash or 32 zero bytes
//! (empty: the zero hash is what PDQ gives a picture too small or too flat to hash, and
//! is never listed). Writers place each hash near a *home* slot derived from it
//! ([`home`]), so an unchanged hash keeps its slot from version to version and a delta
//! carries only the churn.
//!
//! Matching is multi-index hashing: a hash is cut into eleven windows of 23 or 24 bits,
//! and two hashes within distance `T` agree to within a small radius on at least one
//! window ([`radius`]: at the usual `T` = 31, two bits in ten windows or one bit in the
//! eleventh). Per window, the index holds the listed hashes sorted by their value there,
//! in 65,536 buckets by the value's top 16 bits, each entry with the value's low bits and
//! the hash's slot. A query visits, in each window, the buckets whose top bits are within
//! the radius of its own (137 of them at radius 2), takes the entries whose low bits
//! make up the rest, and measures the full distance to their hashes. With 23-bit windows
//! a bucket holds `n / 65536` entries but a window value about `n / 2^23` (one at 10M),
//! so a query measures a few thousand hashes where sixteen 16-bit windows measure
//! `272 n / 65536` (41,000 at 10M).

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::Error;

/// Bytes in a PDQ hash.
pub const HASH_LEN: usize = 32;
/// The algorithm code of a PDQ section record.
pub const CODE: u8 = 4;
/// Meta's recommended match distance.
pub const DEFAULT_THRESHOLD: u8 = 31;
/// The largest threshold a section may carry: at 63 a query visits about 6,900 of a
/// window's 65,536 buckets; beyond it matching is closer to a scan than to an index, and
/// PDQ matches that far apart are noise.
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

/// The windows a hash is split into, as (first bit, width), most significant bit first.
/// Eleven windows suit a 10M list at the usual `T` = 31: with 23 or 24 bits a window
/// value is shared by about one listed hash, and the radii (two in ten windows, one in
/// the eleventh) keep a query to about 1,500 short buckets.
const WINDOWS: [(u32, u32); 11] = [
    (0, 24),
    (24, 24),
    (48, 24),
    (72, 23),
    (95, 23),
    (118, 23),
    (141, 23),
    (164, 23),
    (187, 23),
    (210, 23),
    (233, 23),
];
/// The bits of a window value that choose its bucket; the rest (at most 8) are kept in
/// the bucket beside each entry.
const TOP_BITS: u32 = 16;

/// A hash as four big-endian words, for cutting windows out of it.
fn words(hash: &[u8]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_be_bytes(hash[8 * i..8 * i + 8].try_into().expect("8 bytes")))
}

/// The `width` bits of `words` from bit `start` on (bit 0 is the first byte's highest).
fn bits(words: &[u64; 4], start: u32, width: u32) -> u32 {
    let i = (start / 64) as usize;
    let hi = u128::from(words[i]) << 64;
    let lo = words.get(i + 1).map_or(0, |&w| u128::from(w));
    (((hi | lo) << (start % 64)) >> (128 - width)) as u32
}

/// How far window `w` is searched at `threshold`, or `None` when it need not be.
///
/// Two hashes within `threshold` bits agree to within `radius[w]` bits on at least one
/// window whenever `sum(radius[w] + 1) > threshold`: if every window differed in more, the
/// hashes would differ in at least that sum. The radii are as even as that allows, the
/// smaller ones on the first (widest) windows.
fn radius(threshold: u32, w: usize) -> Option<u32> {
    let n = WINDOWS.len() as u32;
    let (q, wider) = ((threshold + 1) / n, (threshold + 1) % n);
    let r = if (w as u32) < n - wider { q } else { q + 1 };
    r.checked_sub(1)
}

/// One window of the index: the listed hashes sorted by their value in the window.
#[derive(Debug)]
struct Window {
    start: u32,
    width: u32,
    /// `buckets[t]..buckets[t + 1]`: the entries whose top [`TOP_BITS`] are `t`.
    buckets: Vec<u32>,
    /// Per entry, the window's low bits (sorted within a bucket).
    low: Vec<u8>,
    /// Per entry, the slot of its hash.
    slot: Vec<u32>,
}

impl Window {
    fn build(start: u32, width: u32, used: &[(u32, [u64; 4])]) -> Window {
        let low_bits = width - TOP_BITS;
        let value = |h: &[u64; 4]| bits(h, start, width);
        let mut buckets = vec![0u32; (1 << TOP_BITS) + 1];
        for (_, h) in used {
            buckets[(value(h) >> low_bits) as usize + 1] += 1;
        }
        for t in 0..1 << TOP_BITS {
            buckets[t + 1] += buckets[t];
        }
        let mut fill = buckets[..1 << TOP_BITS].to_vec();
        let mut entries = vec![(0u8, 0u32); used.len()];
        for (s, h) in used {
            let v = value(h);
            let at = &mut fill[(v >> low_bits) as usize];
            entries[*at as usize] = ((v & ((1 << low_bits) - 1)) as u8, *s);
            *at += 1;
        }
        for t in 0..1 << TOP_BITS {
            entries[buckets[t] as usize..buckets[t + 1] as usize].sort_unstable();
        }
        Window {
            start,
            width,
            buckets,
            low: entries.iter().map(|e| e.0).collect(),
            slot: entries.iter().map(|e| e.1).collect(),
        }
    }

    /// Adds to `out` the slot of every entry within `radius` bits of `query` in this
    /// window (and perhaps a few more: the caller measures the full distance).
    fn near(&self, query: &[u64; 4], radius: u32, tops: &mut Vec<(u32, u32)>, out: &mut Vec<u32>) {
        let low_bits = self.width - TOP_BITS;
        let value = bits(query, self.start, self.width);
        let (top, low) = (value >> low_bits, (value & ((1 << low_bits) - 1)) as u8);
        tops.clear();
        flips(top, radius, 0, 0, tops);
        for &(t, spent) in tops.iter() {
            let range = self.buckets[t as usize] as usize..self.buckets[t as usize + 1] as usize;
            let (lows, slots) = (&self.low[range.clone()], &self.slot[range]);
            let budget = radius - spent;
            if budget == 0 {
                // Only the query's own low bits: a run of the sorted bucket.
                let from = lows.partition_point(|&l| l < low);
                let to = from + lows[from..].partition_point(|&l| l == low);
                out.extend_from_slice(&slots[from..to]);
            } else {
                for (&l, &s) in lows.iter().zip(slots) {
                    if (l ^ low).count_ones() <= budget {
                        out.push(s);
                    }
                }
            }
        }
    }

    fn memory(&self) -> usize {
        self.buckets.len() * 4 + self.low.len() + self.slot.len() * 4
    }
}

/// The multi-index of one PDQ section, built when the filter loads (its layout is the
/// guest's own: the file carries only the slots).
#[derive(Debug)]
pub struct PdqIndex {
    /// The windows searched at the section's threshold.
    windows: Vec<(Window, u32)>,
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
        let used: Vec<(u32, [u64; 4])> = slots
            .chunks_exact(HASH_LEN)
            .enumerate()
            .filter(|(_, h)| h.iter().any(|&b| b != 0))
            .map(|(s, h)| (s as u32, words(h)))
            .collect();
        if used.len() as u64 != entries {
            return Err(invalid(format!(
                "a PDQ section says {entries} entries, its slots hold {}",
                used.len()
            )));
        }
        let threshold = u32::from(threshold);
        let windows: Vec<(Window, u32)> = WINDOWS
            .iter()
            .enumerate()
            .filter_map(|(w, &(start, width))| {
                radius(threshold, w).map(|r| (Window::build(start, width, &used), r))
            })
            .collect();
        // Equal hashes are equal in every window: each bucket of the first window is
        // sorted by its low bits, so they lie in one run of equal low bits.
        // (Some window is always searched: `radius` gives the last one at least 0.)
        let first = &windows[0].0;
        let hash = |s: u32| &slots[s as usize * HASH_LEN..(s as usize + 1) * HASH_LEN];
        for t in 0..1 << TOP_BITS {
            let range = first.buckets[t] as usize..first.buckets[t + 1] as usize;
            let (lows, bucket) = (&first.low[range.clone()], &first.slot[range]);
            let mut at = 0;
            while at < bucket.len() {
                let end = at + lows[at..].partition_point(|&l| l == lows[at]);
                if end - at > 1 {
                    let mut hashes: Vec<&[u8]> = bucket[at..end].iter().map(|&s| hash(s)).collect();
                    hashes.sort_unstable();
                    if hashes.windows(2).any(|p| p[0] == p[1]) {
                        return Err(invalid("a PDQ hash is listed twice in a section".into()));
                    }
                }
                at = end;
            }
        }
        Ok(PdqIndex { windows, threshold })
    }

    /// The listed hashes within the section's threshold of `query`, by slot, each once.
    pub fn find(&self, slots: &[u8], query: &[u8; HASH_LEN]) -> Vec<PdqMatch> {
        let q = words(query);
        let (mut candidates, mut tops) = (Vec::new(), Vec::new());
        for (window, radius) in &self.windows {
            window.near(&q, *radius, &mut tops, &mut candidates);
        }
        // Measured apart from the search, so that the candidates' hashes, at random
        // places in the slots, are loaded independently of each other.
        let mut found: Vec<PdqMatch> = candidates
            .iter()
            .filter_map(|&s| {
                let listed = &slots[s as usize * HASH_LEN..(s as usize + 1) * HASH_LEN];
                let d = distance(listed, query);
                (d <= self.threshold).then_some(PdqMatch {
                    slot: s,
                    distance: d,
                })
            })
            .collect();
        found.sort_unstable_by_key(|m| m.slot);
        found.dedup_by_key(|m| m.slot);
        found
    }

    /// Bytes the index takes beside the section's slots.
    pub fn memory(&self) -> usize {
        self.windows.iter().map(|(w, _)| w.memory()).sum()
    }
}

/// Every [`TOP_BITS`]-bit value within `radius` bits of `value`, with the bits it
/// differs in, flipping only bits at `from` and above (so each is listed once).
fn flips(value: u32, radius: u32, from: u32, spent: u32, out: &mut Vec<(u32, u32)>) {
    out.push((value, spent));
    if radius == 0 {
        return;
    }
    for bit in from..TOP_BITS {
        flips(value ^ (1 << bit), radius - 1, bit + 1, spent + 1, out);
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

    #[test]
    fn a_hash_at_the_threshold_is_found_however_its_bits_fall() {
        // The worst case for an index over windows: the bits spent where they hurt most,
        // one more than a window's radius in as many windows as the threshold allows.
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
            for k in 0..20 {
                let target = listed[k * 7];
                let mut q = target;
                let mut left = t;
                let first = next(WINDOWS.len() as u32) as usize;
                for w in (0..WINDOWS.len()).map(|i| (i + first) % WINDOWS.len()) {
                    let (start, width) = WINDOWS[w];
                    let over = radius(t, w).map_or(0, |r| r + 1).min(left);
                    let mut picked = Vec::new();
                    while (picked.len() as u32) < over {
                        let b = start + next(width);
                        if !picked.contains(&b) {
                            picked.push(b);
                            flip(&mut q, b);
                        }
                    }
                    left -= over;
                }
                let found = index.find(&slots, &q);
                let d = distance(&q, &target);
                assert!(d <= t);
                assert!(
                    found
                        .iter()
                        .any(|m| m.distance == d && slots_hold(&slots, m.slot, &target)),
                    "threshold {t}: a hash {d} bits away was missed"
                );
                // One more bit, where query and listed hash agree: past the threshold,
                // not a match.
                if d == t {
                    let mut far = q;
                    let b = (0..256).find(|&b| {
                        (target[(b / 8) as usize] ^ q[(b / 8) as usize]) & (0x80 >> (b % 8)) == 0
                    });
                    flip(&mut far, b.unwrap());
                    assert!(!index
                        .find(&slots, &far)
                        .iter()
                        .any(|m| slots_hold(&slots, m.slot, &target)));
                }
            }
        }
    }

    fn slots_hold(slots: &[u8], slot: u32, hash: &[u8; HASH_LEN]) -> bool {
        &slots[slot as usize * HASH_LEN..(slot as usize + 1) * HASH_LEN] == hash
    }

    #[test]
    fn radii_cover_every_threshold() {
        for t in 0..=u32::from(MAX_THRESHOLD) {
            let covered: u32 = (0..WINDOWS.len())
                .map(|w| radius(t, w).map_or(0, |r| r + 1))
                .sum();
            assert!(covered > t, "threshold {t}");
        }
        assert_eq!(WINDOWS.iter().map(|w| w.1).sum::<u32>(), 256);
        assert!(WINDOWS.windows(2).all(|p| p[0].0 + p[0].1 == p[1].0));
        assert!(WINDOWS
            .iter()
            .all(|w| (TOP_BITS..=TOP_BITS + 8).contains(&w.1)));
    }

    #[test]
    fn windows_are_cut_most_significant_bit_first() {
        let mut h = [0u8; HASH_LEN];
        h[0] = 0x80;
        h[31] = 0x01;
        let w = words(&h);
        assert_eq!(bits(&w, 0, 24), 1 << 23);
        assert_eq!(bits(&w, 233, 23), 1);
        h[7] = 0x01;
        h[8] = 0x80;
        assert_eq!(bits(&words(&h), 63, 2), 0b11);
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
