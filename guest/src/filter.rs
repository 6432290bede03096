use sha2::{Digest, Sha256};

use crate::delta::Delta;
use crate::format::Header;
use crate::index::{bit_is_set, Probe};
use crate::pdq::{PdqIndex, HASH_LEN};
use crate::{Algorithm, Error};

/// A parsed, validated snapshot, ready to match digests.
///
/// Owns the snapshot bytes; sections are views into them, so loading a filter costs no
/// copy of its bitmaps.
#[derive(Debug)]
pub struct Filter {
    header: Header,
    bytes: Vec<u8>,
    sections: Vec<Section>,
    pdq: Vec<PdqSection>,
}

/// One PDQ section: where its slots live, and their index.
#[derive(Debug)]
pub struct PdqSection {
    /// The section's category label.
    pub category: Option<String>,
    /// Listed hashes.
    pub entries: u64,
    /// Slots (listed hashes and empty ones).
    pub slots: u64,
    /// The match distance.
    pub threshold: u8,
    offset: usize,
    len: usize,
    index: PdqIndex,
}

impl PdqSection {
    /// Bytes its index takes in memory, beside the section's `32 * slots` bytes of slots.
    pub fn index_bytes(&self) -> usize {
        self.index.memory()
    }
}

/// A listed PDQ hash near a picture's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdqHit {
    /// Index of the query (the picture's hash) in the list checked.
    pub query: usize,
    /// Index of the section in [`Filter::pdq_sections`].
    pub section: usize,
    /// The listed hash.
    pub listed: [u8; HASH_LEN],
    /// Bits in which it differs from the query.
    pub distance: u32,
}

/// Where one section's bitmap lives in the snapshot.
#[derive(Clone, Debug)]
pub struct Section {
    /// The section's algorithm.
    pub algorithm: Algorithm,
    /// The section's category label.
    pub category: Option<String>,
    /// Entries the section holds.
    pub entries: u64,
    /// Bits in the bitmap (m).
    pub bits: u64,
    offset: usize,
    len: usize,
}

/// A digest the filter (probably) holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The digest's algorithm.
    pub algorithm: Algorithm,
    /// The digest's bytes.
    pub digest: Vec<u8>,
    /// The category of the section that matched.
    pub category: Option<String>,
}

impl Filter {
    /// Parses a snapshot body (without the signature trailer), checks every header field,
    /// the exact length, the payload's SHA-256, and that the unused bits at the end of
    /// each bitmap are zero.
    pub fn parse(bytes: Vec<u8>) -> Result<Filter, Error> {
        let (header, sections, pdq) = Filter::validate(&bytes)?;
        Ok(Filter {
            header,
            bytes,
            sections,
            pdq,
        })
    }

    /// Applies a delta (`docs/FORMAT.md`, "Deltas") to this filter in place: checks that
    /// the delta's base is this very snapshot, flips the listed payload bits, puts the
    /// target's header in, and validates the result like [`Filter::parse`] (the new
    /// header's payload SHA-256 covers every flipped bit). On any error the filter is
    /// left exactly as it was.
    pub fn apply_delta(&mut self, delta: &[u8]) -> Result<(), Error> {
        let delta = Delta::parse(delta)?;
        let start = self.header.body_offset();
        // The header holds the payload's SHA-256, checked when this snapshot was loaded:
        // hashing the header names the whole body.
        if Sha256::digest(&self.bytes[..start]).as_slice() != delta.base_head_sha256 {
            return Err(Error::DeltaBase);
        }
        if Sha256::digest(delta.head).as_slice() != delta.target_head_sha256 {
            return Err(Error::DeltaMismatch(
                "the target header is not the one the delta names".into(),
            ));
        }
        if delta.head.len() != start {
            return Err(Error::DeltaMismatch(format!(
                "the target's header is {} bytes, this snapshot's {start}",
                delta.head.len()
            )));
        }
        let positions = delta.positions(self.header.payload_len * 8)?;
        let old_head = self.bytes[..start].to_vec();
        self.flip(start, &positions);
        self.bytes[..start].copy_from_slice(delta.head);
        // Validation checks the flipped payload against the SHA-256 in the new header.
        match Filter::validate(&self.bytes) {
            Ok((header, sections, pdq)) => {
                self.header = header;
                self.sections = sections;
                self.pdq = pdq;
                Ok(())
            }
            Err(e) => {
                // XOR is its own inverse: flipping again restores the base exactly.
                self.flip(start, &positions);
                self.bytes[..start].copy_from_slice(&old_head);
                Err(e)
            }
        }
    }

    fn flip(&mut self, start: usize, positions: &[u64]) {
        let payload = &mut self.bytes[start..];
        for &p in positions {
            payload[(p / 8) as usize] ^= 1 << (p % 8);
        }
    }

    /// Everything [`Filter::parse`] checks, on borrowed bytes.
    #[allow(clippy::type_complexity)]
    fn validate(bytes: &[u8]) -> Result<(Header, Vec<Section>, Vec<PdqSection>), Error> {
        let header = Header::parse(bytes)?;
        let start = header.body_offset();
        let expected = start as u64 + header.payload_len;
        if (bytes.len() as u64) < expected {
            return Err(Error::Truncated {
                field: "payload",
                needed: expected,
                available: bytes.len() as u64,
            });
        }
        if bytes.len() as u64 > expected {
            return Err(Error::InvalidField {
                field: "payload_len",
                reason: format!(
                    "{} bytes follow the payload's {} bytes",
                    bytes.len() as u64 - expected,
                    header.payload_len
                ),
            });
        }
        let payload = &bytes[start..];
        if Sha256::digest(payload).as_slice() != header.payload_sha256 {
            return Err(Error::PayloadDigest);
        }
        let mut offset = start;
        let mut sections = Vec::with_capacity(header.sections.len());
        for s in &header.sections {
            let len = s.bitmap_len() as usize;
            let last = bytes[offset + len - 1];
            let used = s.bits % 8;
            if used != 0 && last >> used != 0 {
                return Err(Error::InvalidField {
                    field: "payload",
                    reason: "bits set beyond the end of a section".into(),
                });
            }
            sections.push(Section {
                algorithm: s.algorithm,
                category: s.category.clone(),
                entries: s.entries,
                bits: s.bits,
                offset,
                len,
            });
            offset += len;
        }
        let mut pdq = Vec::with_capacity(header.pdq.len());
        for s in &header.pdq {
            let len = s.slots as usize * HASH_LEN;
            let index = PdqIndex::build(&bytes[offset..offset + len], s.entries, s.threshold)?;
            pdq.push(PdqSection {
                category: s.category.clone(),
                entries: s.entries,
                slots: s.slots,
                threshold: s.threshold,
                offset,
                len,
                index,
            });
            offset += len;
        }
        Ok((header, sections, pdq))
    }

    /// The PDQ sections, in payload order.
    pub fn pdq_sections(&self) -> &[PdqSection] {
        &self.pdq
    }

    /// The listed PDQ hashes within each section's threshold of each of `queries` (a
    /// picture's hash, or its eight dihedral hashes), each listed hash once per query.
    /// Empty when nothing is near, or the filter has no PDQ section.
    pub fn check_pdq(&self, queries: &[[u8; HASH_LEN]]) -> Result<Vec<PdqHit>, Error> {
        let mut hits = Vec::new();
        for (q, query) in queries.iter().enumerate() {
            for (s, section) in self.pdq.iter().enumerate() {
                let slots = &self.bytes[section.offset..section.offset + section.len];
                for m in section.index.find(slots, query) {
                    let at = m.slot as usize * HASH_LEN;
                    hits.push(PdqHit {
                        query: q,
                        section: s,
                        listed: slots[at..at + HASH_LEN].try_into().expect("32 bytes"),
                        distance: m.distance,
                    });
                }
            }
        }
        Ok(hits)
    }

    /// The snapshot's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The sections, in payload order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The snapshot bytes this filter was parsed from.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The algorithms the filter holds, without repeats, in code order.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| self.sections.iter().any(|s| s.algorithm == *a))
            .collect()
    }

    /// The bitmap of `section`.
    pub fn bitmap(&self, section: &Section) -> &[u8] {
        &self.bytes[section.offset..section.offset + section.len]
    }

    /// The fraction of `section`'s bits that are set.
    pub fn fill(&self, section: &Section) -> f64 {
        let ones: u64 = self
            .bitmap(section)
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum();
        ones as f64 / section.bits as f64
    }

    /// Which of one object's digests the filter holds. Digests of algorithms the filter
    /// does not hold are ignored; an empty result means clean.
    pub fn check(&self, digests: &[(Algorithm, &[u8])]) -> Result<Vec<Hit>, Error> {
        Ok(self
            .check_indexed(digests)?
            .into_iter()
            .map(|(d, s)| Hit {
                algorithm: digests[d].0,
                digest: digests[d].1.to_vec(),
                category: self.sections[s].category.clone(),
            })
            .collect())
    }

    /// Like [`Filter::check`], naming each hit by the index of the digest in `digests`
    /// and of the matching section in [`Filter::sections`].
    pub fn check_indexed(
        &self,
        digests: &[(Algorithm, &[u8])],
    ) -> Result<Vec<(usize, usize)>, Error> {
        let mut hits = Vec::new();
        for (d, &(algorithm, digest)) in digests.iter().enumerate() {
            if digest.len() != algorithm.digest_len() {
                return Err(Error::DigestLength {
                    algorithm: algorithm.name(),
                    len: digest.len(),
                });
            }
            let mut probe = None;
            for (s, section) in self.sections.iter().enumerate() {
                if section.algorithm != algorithm {
                    continue;
                }
                let probe =
                    *probe.get_or_insert_with(|| Probe::new(&self.header.salt, algorithm, digest));
                if self.section_contains(section, &probe) {
                    hits.push((d, s));
                }
            }
        }
        Ok(hits)
    }

    /// Like [`Filter::check_indexed`] for many digests of one algorithm packed back to
    /// back (a catalog re-check): each hit names the digest's index in `packed` and the
    /// matching section.
    ///
    /// ```
    /// # use hashgate_guest::{Algorithm, BuildParams, FilterBuilder, Filter, SectionSpec};
    /// let params = BuildParams::new("example", 1, 1_700_000_000, 1_700_604_800, 1e-6);
    /// let spec = SectionSpec { algorithm: Algorithm::Md5, category: None, entries: 1 };
    /// let mut builder = FilterBuilder::new(&params, &[spec])?;
    /// builder.insert(Algorithm::Md5, None, &[7; 16])?;
    /// let filter = Filter::parse(builder.finish()?)?;
    /// let packed = [[0u8; 16], [7; 16], [1; 16]].concat();
    /// assert_eq!(filter.check_packed(Algorithm::Md5, &packed)?, [(1, 0)]);
    /// assert!(filter.check_packed(Algorithm::Md5, &packed[..20]).is_err());
    /// # Ok::<(), hashgate_guest::Error>(())
    /// ```
    pub fn check_packed(
        &self,
        algorithm: Algorithm,
        packed: &[u8],
    ) -> Result<Vec<(usize, usize)>, Error> {
        let width = algorithm.digest_len();
        if !packed.len().is_multiple_of(width) {
            return Err(Error::DigestLength {
                algorithm: algorithm.name(),
                len: packed.len() % width,
            });
        }
        let sections: Vec<(usize, &Section)> = self
            .sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.algorithm == algorithm)
            .collect();
        let mut hits = Vec::new();
        if sections.is_empty() {
            return Ok(hits);
        }
        for (d, digest) in packed.chunks_exact(width).enumerate() {
            let probe = Probe::new(&self.header.salt, algorithm, digest);
            for &(s, section) in &sections {
                if self.section_contains(section, &probe) {
                    hits.push((d, s));
                }
            }
        }
        Ok(hits)
    }

    fn section_contains(&self, section: &Section, probe: &Probe) -> bool {
        let bitmap = self.bitmap(section);
        probe
            .indices(self.header.hashes, section.bits)
            .all(|i| bit_is_set(bitmap, i))
    }
}
