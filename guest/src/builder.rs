use sha2::{Digest, Sha256};

use crate::canary;
use crate::format::{self, Header, PdqSectionHeader, SectionHeader, MAX_HASHES, MAX_PAYLOAD};
use crate::index::{set_bit, Probe};
use crate::pdq;
use crate::{Algorithm, Error};

/// What a new snapshot says about itself.
#[derive(Clone, Debug)]
pub struct BuildParams {
    /// The series name (see [`format::valid_series`]).
    pub series: String,
    /// The version within the series.
    pub version: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Expiry time, Unix seconds.
    pub expires: u64,
    /// Target false-positive rate per digest and section, in (0, 0.5].
    pub fp_rate: f64,
    /// Key of the bit-index derivation; [`BuildParams::new`] derives it from the series.
    pub salt: [u8; 16],
    /// The least bits to give a section (algorithm, category), whatever its entries:
    /// a publisher passes the previous version's sizes so that the geometry, and with it
    /// every unchanged entry's bits, stays put and deltas stay small.
    pub min_bits: Vec<(Algorithm, Option<String>, u64)>,
    /// The least slots to give a PDQ section (category), for the same reason.
    pub min_pdq_slots: Vec<(Option<String>, u64)>,
    /// The Hamming distance within which a picture matches a listed PDQ hash.
    pub pdq_threshold: u8,
}

impl BuildParams {
    /// Parameters with the salt derived from the series: the first 16 bytes of
    /// `SHA-256("hashgate-salt-v1\0" || series)`. A fixed salt per series keeps the bit
    /// positions of unchanged entries stable between versions, which keeps deltas small.
    pub fn new(series: &str, version: u64, created: u64, expires: u64, fp_rate: f64) -> Self {
        let mut sha = Sha256::new();
        sha.update(b"hashgate-salt-v1\0");
        sha.update(series.as_bytes());
        let salt = sha.finalize()[..16].try_into().expect("16 bytes");
        BuildParams {
            series: series.to_string(),
            version,
            created,
            expires,
            fp_rate,
            salt,
            min_bits: Vec::new(),
            min_pdq_slots: Vec::new(),
            pdq_threshold: pdq::DEFAULT_THRESHOLD,
        }
    }
}

/// How many entries of one algorithm and category a section must be sized for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionSpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The category label, if any.
    pub category: Option<String>,
    /// Entries that will be inserted (duplicates included).
    pub entries: u64,
}

/// How many PDQ hashes of one category a section must be sized for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdqSpec {
    /// The category label, if any.
    pub category: Option<String>,
    /// Hashes that will be inserted (duplicates included).
    pub entries: u64,
}

/// The slots the builder gives a PDQ section of `n` hashes: twice as many, rounded up to
/// a multiple of 64, so that runs of taken slots stay short ([`pdq::layout`]) and a
/// changed hash moves few others.
pub fn pdq_slots(n: u64) -> u64 {
    (2 * n).max(1).div_ceil(64) * 64
}

/// The number of hashes (k) that minimises false positives at rate `p`: `round(log2(1/p))`.
pub fn optimal_hashes(p: f64) -> u32 {
    ((-p.log2()).round() as u32).clamp(1, MAX_HASHES)
}

/// The Bloom optimum `m = ceil(-n·ln p / (ln 2)²)`, rounded up to a multiple of 64.
pub fn optimal_bits(n: u64, p: f64) -> u64 {
    let ln2 = std::f64::consts::LN_2;
    let m = (-(n as f64) * p.ln() / (ln2 * ln2)).ceil() as u64;
    m.max(1).div_ceil(64) * 64
}

/// The smallest section the builder makes: 2^16 bits (8 KiB). Below it, the few probe
/// sequences a small bitmap allows put a floor under the false-positive rate (about
/// `1/(k·m)²` with the derivation of [`crate::index`]), far above a 1e-9 target.
pub const MIN_SECTION_BITS: u64 = 1 << 16;

/// The bits the builder gives a section of `n` entries at rate `p`.
pub fn section_bits(n: u64, p: f64) -> u64 {
    optimal_bits(n, p).max(MIN_SECTION_BITS)
}

/// Builds a snapshot body in one buffer of its final size: sections are sized up front
/// from [`SectionSpec`]s, digests are inserted, and [`FilterBuilder::finish`] writes the
/// header in front of the bitmaps.
///
/// Every snapshot also holds the [`canary`] file's digest in a `canary` section for each
/// algorithm the list holds (SHA-256 if it holds none).
#[derive(Debug)]
pub struct FilterBuilder {
    header: Header,
    inserted: Vec<u64>,
    /// Per PDQ section, the hashes inserted (laid out by `finish`).
    pdq_hashes: Vec<Vec<[u8; pdq::HASH_LEN]>>,
    offsets: Vec<usize>,
    body: Vec<u8>,
    /// Bit positions (counted from the start of the payload) waiting to be set.
    pending: Vec<u64>,
    /// Scratch for [`FilterBuilder::flush`]'s bucketing, as long as `pending`.
    sorted: Vec<u64>,
    batch: usize,
}

/// Buckets a flush sorts positions into: each covers 1/1024 of the payload, small enough
/// to stay in the CPU's caches while its bits are set.
const BUCKET_BITS: u32 = 10;

impl FilterBuilder {
    /// Sizes a new filter. Specs for the same algorithm and category are merged.
    pub fn new(params: &BuildParams, specs: &[SectionSpec]) -> Result<FilterBuilder, Error> {
        FilterBuilder::new_in(params, specs, Vec::new())
    }

    /// Like [`FilterBuilder::new`], building the snapshot in `buffer` (cleared first).
    /// Lets the caller choose how a large snapshot's memory is allocated (e.g. with huge
    /// pages, which keep bit setting from being bound by TLB misses), and reserve room
    /// after the body for a signature trailer so that signing does not copy the snapshot.
    pub fn new_in(
        params: &BuildParams,
        specs: &[SectionSpec],
        buffer: Vec<u8>,
    ) -> Result<FilterBuilder, Error> {
        FilterBuilder::with_pdq(params, specs, &[], buffer)
    }

    /// Like [`FilterBuilder::new_in`], with PDQ sections too (a format v2 snapshot when
    /// `pdq_specs` holds any entries).
    ///
    /// ```
    /// use hashgate_guest::{BuildParams, Filter, FilterBuilder, PdqSpec};
    /// let params = BuildParams::new("example", 1, 1_700_000_000, 1_700_604_800, 1e-6);
    /// let spec = PdqSpec { category: Some("csam".into()), entries: 1 };
    /// let mut builder = FilterBuilder::with_pdq(&params, &[], &[spec], Vec::new())?;
    /// let listed = [0x5a; 32];
    /// builder.insert_pdq(Some("csam"), &listed)?;
    /// let filter = Filter::parse(builder.finish()?)?;
    /// let mut near = listed;
    /// near[0] ^= 0b111; // three bits away
    /// let matches = filter.check_pdq(&[near])?;
    /// assert_eq!(matches.len(), 1);
    /// assert_eq!((matches[0].distance, matches[0].listed), (3, listed));
    /// assert!(filter.check_pdq(&[[0xa5; 32]])?.is_empty());
    /// # Ok::<(), hashgate_guest::Error>(())
    /// ```
    pub fn with_pdq(
        params: &BuildParams,
        specs: &[SectionSpec],
        pdq_specs: &[PdqSpec],
        mut buffer: Vec<u8>,
    ) -> Result<FilterBuilder, Error> {
        if !format::valid_series(&params.series) {
            return Err(Error::InvalidParams(format!(
                "series {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
                params.series
            )));
        }
        if !(params.fp_rate > 0.0 && params.fp_rate <= 0.5) {
            return Err(Error::InvalidParams(format!(
                "false-positive rate {} is not in (0, 0.5]",
                params.fp_rate
            )));
        }
        if params.expires <= params.created {
            return Err(Error::InvalidParams("expires must be after created".into()));
        }
        let mut merged: Vec<SectionSpec> = Vec::new();
        for spec in specs {
            if let Some(category) = &spec.category {
                if !format::valid_category(category) {
                    return Err(Error::InvalidParams(format!(
                        "category {category:?} must be 1 to 24 of a-z 0-9 . _ -"
                    )));
                }
                if category == canary::CATEGORY {
                    return Err(Error::InvalidParams(format!(
                        "category {:?} is reserved for the canary",
                        canary::CATEGORY
                    )));
                }
            }
            if spec.entries == 0 {
                continue;
            }
            match merged
                .iter_mut()
                .find(|m| m.algorithm == spec.algorithm && m.category == spec.category)
            {
                Some(m) => m.entries += spec.entries,
                None => merged.push(spec.clone()),
            }
        }
        let mut canary_algorithms: Vec<Algorithm> = merged.iter().map(|s| s.algorithm).collect();
        canary_algorithms.sort();
        canary_algorithms.dedup();
        if canary_algorithms.is_empty() {
            canary_algorithms.push(Algorithm::Sha256);
        }
        for algorithm in canary_algorithms.iter().copied() {
            merged.push(SectionSpec {
                algorithm,
                category: Some(canary::CATEGORY.to_string()),
                entries: 1,
            });
        }
        merged.sort_by(|a, b| (a.algorithm, &a.category).cmp(&(b.algorithm, &b.category)));
        merged.dedup_by(|a, b| a.algorithm == b.algorithm && a.category == b.category);
        let mut pdq_merged: Vec<PdqSpec> = Vec::new();
        for spec in pdq_specs {
            if let Some(category) = &spec.category {
                if !format::valid_category(category) || category == canary::CATEGORY {
                    return Err(Error::InvalidParams(format!(
                        "PDQ category {category:?} must be 1 to 24 of a-z 0-9 . _ -, not {:?}",
                        canary::CATEGORY
                    )));
                }
            }
            if spec.entries == 0 {
                continue;
            }
            match pdq_merged.iter_mut().find(|m| m.category == spec.category) {
                Some(m) => m.entries += spec.entries,
                None => pdq_merged.push(spec.clone()),
            }
        }
        pdq_merged.sort_by(|a, b| a.category.cmp(&b.category));
        if params.pdq_threshold > pdq::MAX_THRESHOLD {
            return Err(Error::InvalidParams(format!(
                "PDQ threshold {} exceeds {}",
                params.pdq_threshold,
                pdq::MAX_THRESHOLD
            )));
        }
        if merged.len() + pdq_merged.len() > usize::from(format::MAX_SECTIONS) {
            return Err(Error::InvalidParams(format!(
                "{} sections (algorithm × category) exceed the format's {}",
                merged.len() + pdq_merged.len(),
                format::MAX_SECTIONS
            )));
        }
        let pdq_sections: Vec<PdqSectionHeader> = pdq_merged
            .iter()
            .map(|s| PdqSectionHeader {
                category: s.category.clone(),
                entries: s.entries,
                slots: pdq_slots(s.entries).max(
                    params
                        .min_pdq_slots
                        .iter()
                        .filter(|(c, _)| *c == s.category)
                        .map(|&(_, slots)| slots)
                        .max()
                        .unwrap_or(0),
                ),
                threshold: params.pdq_threshold,
            })
            .collect();

        let hashes = optimal_hashes(params.fp_rate);
        let sections: Vec<SectionHeader> = merged
            .iter()
            .map(|s| SectionHeader {
                algorithm: s.algorithm,
                category: s.category.clone(),
                entries: s.entries,
                bits: section_bits(s.entries, params.fp_rate).max(
                    params
                        .min_bits
                        .iter()
                        .filter(|(a, c, _)| *a == s.algorithm && *c == s.category)
                        .map(|&(_, _, bits)| bits.div_ceil(64) * 64)
                        .max()
                        .unwrap_or(0),
                ),
            })
            .collect();
        let payload_len: u64 = sections.iter().map(SectionHeader::bitmap_len).sum::<u64>()
            + pdq_sections
                .iter()
                .map(|s| s.slots * pdq::HASH_LEN as u64)
                .sum::<u64>();
        if payload_len > MAX_PAYLOAD {
            return Err(Error::InvalidParams(format!(
                "the filter would need {payload_len} bytes, over the format's {MAX_PAYLOAD}; \
                 shard the list by digest prefix or raise the false-positive rate"
            )));
        }
        let header = Header {
            series: params.series.clone(),
            version: params.version,
            created: params.created,
            expires: params.expires,
            entries: sections.iter().map(|s| s.entries).sum::<u64>()
                + pdq_sections.iter().map(|s| s.entries).sum::<u64>(),
            hashes,
            salt: params.salt,
            payload_len,
            payload_sha256: [0; 32],
            sections,
            pdq: pdq_sections,
        };
        let mut offsets = Vec::with_capacity(header.sections.len());
        let mut offset = header.body_offset();
        for s in &header.sections {
            offsets.push(offset);
            offset += s.bitmap_len() as usize;
        }
        let pdq_len: u64 = header
            .pdq
            .iter()
            .map(|s| s.slots * pdq::HASH_LEN as u64)
            .sum();
        buffer.clear();
        buffer.resize(offset + pdq_len as usize, 0);
        // Pending positions cost 16 bytes each (with the scratch copy): keep them within a
        // quarter of the payload, and at most 16 MiB.
        let batch = (header.payload_len as usize / 64).clamp(1024, 1 << 20);
        let mut builder = FilterBuilder {
            inserted: vec![0; header.sections.len()],
            pdq_hashes: vec![Vec::new(); header.pdq.len()],
            body: buffer,
            pending: Vec::with_capacity(batch + MAX_HASHES as usize),
            sorted: Vec::new(),
            batch,
            offsets,
            header,
        };
        for algorithm in canary_algorithms {
            let digest = canary::digest(algorithm);
            builder.insert(algorithm, Some(canary::CATEGORY), &digest)?;
        }
        Ok(builder)
    }

    /// The header as it stands (payload digest not yet computed).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Inserts one digest into the section of its algorithm and category.
    pub fn insert(
        &mut self,
        algorithm: Algorithm,
        category: Option<&str>,
        digest: &[u8],
    ) -> Result<(), Error> {
        if digest.len() != algorithm.digest_len() {
            return Err(Error::DigestLength {
                algorithm: algorithm.name(),
                len: digest.len(),
            });
        }
        let index = self
            .header
            .sections
            .iter()
            .position(|s| s.algorithm == algorithm && s.category.as_deref() == category)
            .ok_or_else(|| Error::NoSuchSection(format!("{algorithm} {category:?}")))?;
        let section = &self.header.sections[index];
        if self.inserted[index] == section.entries {
            return Err(Error::NoSuchSection(format!(
                "{algorithm} {category:?} was sized for {} entries",
                section.entries
            )));
        }
        self.inserted[index] += 1;
        let probe = Probe::new(&self.header.salt, algorithm, digest);
        // Bits are not set here: positions are collected and set in cache-friendly order
        // by `flush`. Setting k random bits per digest directly is bound by memory latency
        // (~20 ns a bit on a 54 MB filter); bucketed, the same work streams.
        let base = (self.offsets[index] - self.header.body_offset()) as u64 * 8;
        self.pending.extend(
            probe
                .indices(self.header.hashes, section.bits)
                .map(|i| base + i),
        );
        if self.pending.len() >= self.batch {
            self.flush();
        }
        Ok(())
    }

    /// Inserts one PDQ hash into the PDQ section of `category`. The zero hash (what PDQ
    /// gives a picture it cannot hash) is refused: it marks an empty slot.
    pub fn insert_pdq(
        &mut self,
        category: Option<&str>,
        hash: &[u8; pdq::HASH_LEN],
    ) -> Result<(), Error> {
        if hash.iter().all(|&b| b == 0) {
            return Err(Error::InvalidParams(
                "the zero PDQ hash (a picture too small or flat to hash) cannot be listed".into(),
            ));
        }
        let index = self
            .header
            .pdq
            .iter()
            .position(|s| s.category.as_deref() == category)
            .ok_or_else(|| Error::NoSuchSection(format!("pdq {category:?}")))?;
        if self.pdq_hashes[index].len() as u64 == self.header.pdq[index].entries {
            return Err(Error::NoSuchSection(format!(
                "pdq {category:?} was sized for {} entries",
                self.header.pdq[index].entries
            )));
        }
        self.pdq_hashes[index].push(*hash);
        Ok(())
    }

    /// Sets every pending bit: a counting sort by the position's top bits into 1024
    /// buckets, then each bucket's bits, whose bytes lie close together.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let payload = &mut self.body[self.header.body_offset()..];
        let total_bits = (payload.len() as u64 * 8).max(1);
        let shift = (64 - total_bits.leading_zeros()).saturating_sub(BUCKET_BITS);
        let mut starts = [0usize; (1 << BUCKET_BITS) + 1];
        for &p in &self.pending {
            starts[(p >> shift) as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        self.sorted.resize(self.pending.len(), 0);
        for &p in &self.pending {
            let slot = &mut starts[(p >> shift) as usize];
            self.sorted[*slot] = p;
            *slot += 1;
        }
        // The buckets cover the payload in order, so its two halves can be filled by two
        // threads without sharing a byte: the work is bound by memory latency, and a
        // second core brings its own outstanding misses.
        let half = 1u64 << (BUCKET_BITS - 1) << shift;
        let threaded = cfg!(not(target_arch = "wasm32"))
            && shift >= 3
            && half / 8 < payload.len() as u64
            && self.sorted.len() >= 1 << 16;
        if threaded {
            let split = self.sorted.partition_point(|&p| p < half);
            let (low_positions, high_positions) = self.sorted.split_at(split);
            let (low, high) = payload.split_at_mut((half / 8) as usize);
            std::thread::scope(|scope| {
                scope.spawn(|| set_bits(low, low_positions, 0));
                set_bits(high, high_positions, half);
            });
        } else {
            set_bits(payload, &self.sorted, 0);
        }
        self.pending.clear();
    }

    /// Writes the header and returns the finished snapshot body. Fails if a section got
    /// fewer entries than it was sized for (the two passes over the list disagreed).
    pub fn finish(mut self) -> Result<Vec<u8>, Error> {
        self.flush();
        self.pending = Vec::new();
        self.sorted = Vec::new();
        for (s, &n) in self.header.sections.iter().zip(&self.inserted) {
            if n != s.entries {
                return Err(Error::NoSuchSection(format!(
                    "{} {:?} was sized for {} entries but got {n}",
                    s.algorithm, s.category, s.entries
                )));
            }
        }
        let mut offset = self.header.body_offset()
            + self
                .header
                .sections
                .iter()
                .map(|s| s.bitmap_len() as usize)
                .sum::<usize>();
        for (s, hashes) in self.header.pdq.iter_mut().zip(&mut self.pdq_hashes) {
            if hashes.len() as u64 != s.entries {
                return Err(Error::NoSuchSection(format!(
                    "pdq {:?} was sized for {} entries but got {}",
                    s.category,
                    s.entries,
                    hashes.len()
                )));
            }
            // A hash listed twice is one entry.
            hashes.sort_unstable();
            hashes.dedup();
            self.header.entries -= s.entries - hashes.len() as u64;
            s.entries = hashes.len() as u64;
            let len = s.slots as usize * pdq::HASH_LEN;
            let slots = pdq::layout(&self.header.salt, hashes, s.slots);
            self.body[offset..offset + len].copy_from_slice(&slots);
            offset += len;
        }
        let start = self.header.body_offset();
        self.header.payload_sha256 = Sha256::digest(&self.body[start..]).into();
        self.header.write_to(&mut self.body[..start]);
        Ok(self.body)
    }
}

/// Sets the bits at `positions` (ascending by bucket), each counted from `base`.
fn set_bits(bitmap: &mut [u8], positions: &[u64], base: u64) {
    // Prefetching a few positions ahead keeps more cache misses in flight than the
    // out-of-order window alone would: 10.0 s -> 7.5 s for 10M entries at 1e-9.
    const AHEAD: usize = 32;
    for (n, &p) in positions.iter().enumerate() {
        if let Some(&ahead) = positions.get(n + AHEAD) {
            prefetch(bitmap, ahead - base);
        }
        set_bit(bitmap, p - base);
    }
}

/// Hints the CPU to fetch the byte holding bit `position` of `bitmap`.
#[inline(always)]
fn prefetch(bitmap: &[u8], position: u64) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = bitmap.get((position / 8) as usize) {
        // SAFETY: a prefetch is only a hint and cannot fault; the address is in bounds.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(byte as *const u8 as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bitmap, position);
}
