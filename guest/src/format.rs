//! The byte layout of a snapshot (`docs/FORMAT.md`): format v1, and v2, which adds PDQ
//! sections.
//!
//! A snapshot body is a fixed 176-byte header, `section_count` 48-byte section records,
//! then the payload: each section's bitmap of `ceil(bits / 8)` bytes, in section order,
//! then each PDQ section's slots (`bits / 8` bytes, 32 per slot).
//! All integers are little-endian. The signature trailer that follows the body in a
//! `.hgf` file belongs to the host's envelope, not to this layout.

use crate::{Algorithm, Error};

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"HASHGATE";
/// The format version of a snapshot of digest sections only (every v1 reader reads it).
pub const FORMAT_VERSION: u16 = 1;
/// The format version of a snapshot with PDQ sections.
pub const FORMAT_VERSION_PDQ: u16 = 2;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 176;
/// Length of one section record.
pub const SECTION_LEN: usize = 48;
/// Most sections a snapshot may have.
pub const MAX_SECTIONS: u16 = 64;
/// Most hashes (bit probes) per digest.
pub const MAX_HASHES: u32 = 64;
/// Longest series name.
pub const MAX_SERIES_LEN: usize = 64;
/// Longest category label.
pub const MAX_CATEGORY_LEN: usize = 24;
/// Largest payload: 3 GiB, so that a snapshot fits a wasm32 guest's 4 GiB memory.
/// Larger lists are sharded by digest prefix into several filters (`docs/FORMAT.md`).
pub const MAX_PAYLOAD: u64 = 3 << 30;

/// The header of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Names the list this filter is a version of, e.g. `nl-atkm-csam`.
    pub series: String,
    /// Monotonic version within the series.
    pub version: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Expiry time, Unix seconds; later than `created`.
    pub expires: u64,
    /// Entries over all sections (duplicates in the input counted once per line).
    pub entries: u64,
    /// Bit probes per digest (k).
    pub hashes: u32,
    /// Key of the bit-index derivation.
    pub salt: [u8; 16],
    /// Length of the payload in bytes.
    pub payload_len: u64,
    /// SHA-256 of the payload.
    pub payload_sha256: [u8; 32],
    /// The digest sections, in payload order.
    pub sections: Vec<SectionHeader>,
    /// The PDQ sections (format v2), in payload order, after every digest section.
    pub pdq: Vec<PdqSectionHeader>,
}

/// One PDQ section record: the perceptual hashes of one category, and how near a
/// picture's hash must be to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdqSectionHeader {
    /// The category label, if the list gave one.
    pub category: Option<String>,
    /// Listed hashes (used slots).
    pub entries: u64,
    /// Slots of 32 bytes in the section's payload.
    pub slots: u64,
    /// A picture matches a listed hash within this Hamming distance.
    pub threshold: u8,
}

/// One section record: the digests of one algorithm in one category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// The algorithm of the section's digests.
    pub algorithm: Algorithm,
    /// The category label, if the list gave one.
    pub category: Option<String>,
    /// Entries inserted.
    pub entries: u64,
    /// Bits in the section's bitmap (m).
    pub bits: u64,
}

impl SectionHeader {
    /// Length of this section's bitmap in bytes.
    pub fn bitmap_len(&self) -> u64 {
        self.bits.div_ceil(8)
    }
}

/// Whether `s` is a valid series name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_series(s: &str) -> bool {
    (1..=MAX_SERIES_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `s` is a valid category label: 1 to 24 of `a-z 0-9 . _ -`.
pub fn valid_category(s: &str) -> bool {
    (1..=MAX_CATEGORY_LEN).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// Reads fields in order, failing with the field's name when the input runs out.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos + n;
        let slice = self.bytes.get(self.pos..end).ok_or(Error::Truncated {
            field,
            needed: end as u64,
            available: self.bytes.len() as u64,
        })?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        Ok(self.take(field, N)?.try_into().expect("length checked"))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.take(field, 1)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
}

/// Decodes a NUL-padded text field: the text, then only NULs.
fn padded_text(field: &'static str, raw: &[u8]) -> Result<String, Error> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if raw[len..].iter().any(|&b| b != 0) {
        return Err(invalid(field, "bytes after the terminating NUL"));
    }
    String::from_utf8(raw[..len].to_vec()).map_err(|_| invalid(field, "not UTF-8"))
}

impl Header {
    /// Length of the header plus section records, i.e. where the payload starts.
    pub fn body_offset(&self) -> usize {
        HEADER_LEN + SECTION_LEN * (self.sections.len() + self.pdq.len())
    }

    /// The format version this header is written with: 2 if it has PDQ sections.
    pub fn format_version(&self) -> u16 {
        if self.pdq.is_empty() {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_PDQ
        }
    }

    /// Parses and validates the header and section records at the start of `bytes`.
    ///
    /// Checks every field before it is used; does not look at the payload beyond its
    /// length (see [`crate::Filter::parse`] for the digest check).
    pub fn parse(bytes: &[u8]) -> Result<Header, Error> {
        let mut r = Reader { bytes, pos: 0 };
        if r.array::<8>("magic")? != MAGIC {
            return Err(Error::BadMagic);
        }
        let format_version = r.u16("format_version")?;
        if format_version != FORMAT_VERSION && format_version != FORMAT_VERSION_PDQ {
            return Err(Error::UnsupportedVersion(format_version));
        }
        let section_count = r.u16("section_count")?;
        if section_count == 0 || section_count > MAX_SECTIONS {
            return Err(invalid(
                "section_count",
                format!("{section_count} is not in 1..={MAX_SECTIONS}"),
            ));
        }
        if r.u32("flags")? != 0 {
            return Err(invalid("flags", "must be zero"));
        }
        let series = padded_text("series", r.take("series", MAX_SERIES_LEN)?)?;
        if !valid_series(&series) {
            return Err(invalid("series", format!("{series:?} is not a valid name")));
        }
        let version = r.u64("version")?;
        let created = r.u64("created")?;
        let expires = r.u64("expires")?;
        if expires <= created {
            return Err(invalid(
                "expires",
                format!("{expires} is not after created {created}"),
            ));
        }
        let entries = r.u64("entries")?;
        let hashes = r.u32("hashes")?;
        if hashes == 0 || hashes > MAX_HASHES {
            return Err(invalid(
                "hashes",
                format!("{hashes} is not in 1..={MAX_HASHES}"),
            ));
        }
        if r.u32("reserved")? != 0 {
            return Err(invalid("reserved", "must be zero"));
        }
        let salt = r.array::<16>("salt")?;
        let payload_len = r.u64("payload_len")?;
        if payload_len > MAX_PAYLOAD {
            return Err(invalid(
                "payload_len",
                format!("{payload_len} exceeds the maximum {MAX_PAYLOAD}"),
            ));
        }
        let payload_sha256 = r.array::<32>("payload_sha256")?;

        let mut sections = Vec::with_capacity(usize::from(section_count));
        let mut pdq: Vec<PdqSectionHeader> = Vec::new();
        let mut entry_sum: u64 = 0;
        let mut bitmap_sum: u64 = 0;
        for _ in 0..section_count {
            let code = r.u8("section.algorithm")?;
            let is_pdq = code == crate::pdq::CODE && format_version == FORMAT_VERSION_PDQ;
            let algorithm =
                if is_pdq {
                    None
                } else {
                    Some(Algorithm::from_code(code).ok_or_else(|| {
                        invalid("section.algorithm", format!("unknown code {code}"))
                    })?)
                };
            if algorithm.is_some() && !pdq.is_empty() {
                return Err(invalid(
                    "section.algorithm",
                    "a digest section after a PDQ section",
                ));
            }
            let category_len = usize::from(r.u8("section.category_len")?);
            if category_len > MAX_CATEGORY_LEN {
                return Err(invalid(
                    "section.category_len",
                    format!("{category_len} exceeds {MAX_CATEGORY_LEN}"),
                ));
            }
            let reserved = r.take("section.reserved", 6)?;
            let (threshold, reserved) = if is_pdq {
                (reserved[0], &reserved[1..])
            } else {
                (0, reserved)
            };
            if reserved.iter().any(|&b| b != 0) {
                return Err(invalid("section.reserved", "must be zero"));
            }
            if threshold > crate::pdq::MAX_THRESHOLD {
                return Err(invalid(
                    "section.threshold",
                    format!("{threshold} exceeds {}", crate::pdq::MAX_THRESHOLD),
                ));
            }
            let section_entries = r.u64("section.entries")?;
            let bits = r.u64("section.bits")?;
            let raw_category = r.take("section.category", MAX_CATEGORY_LEN)?;
            let category = padded_text("section.category", raw_category)?;
            if category.len() != category_len {
                return Err(invalid(
                    "section.category_len",
                    format!("says {category_len}, label is {} bytes", category.len()),
                ));
            }
            let category = if category.is_empty() {
                None
            } else if valid_category(&category) {
                Some(category)
            } else {
                return Err(invalid(
                    "section.category",
                    format!("{category:?} is not a valid label"),
                ));
            };
            if bits == 0 {
                return Err(invalid("section.bits", "must not be zero"));
            }
            let Some(algorithm) = algorithm else {
                let slot_bits = 8 * crate::pdq::HASH_LEN as u64;
                if !bits.is_multiple_of(slot_bits) {
                    return Err(invalid(
                        "section.bits",
                        format!("{bits} is not a whole number of 256-bit slots"),
                    ));
                }
                let slots = bits / slot_bits;
                if section_entries == 0 || section_entries > slots {
                    return Err(invalid(
                        "section.entries",
                        format!("{section_entries} is not in 1..={slots} (the section's slots)"),
                    ));
                }
                if pdq.iter().any(|s| s.category == category) {
                    return Err(invalid(
                        "section",
                        format!("two PDQ sections for {category:?}"),
                    ));
                }
                entry_sum = entry_sum.saturating_add(section_entries);
                bitmap_sum = bitmap_sum.saturating_add(bits / 8);
                pdq.push(PdqSectionHeader {
                    category,
                    entries: section_entries,
                    slots,
                    threshold,
                });
                continue;
            };
            if section_entries == 0 || section_entries > bits {
                return Err(invalid(
                    "section.entries",
                    format!("{section_entries} is not in 1..={bits} (the section's bits)"),
                ));
            }
            let section = SectionHeader {
                algorithm,
                category,
                entries: section_entries,
                bits,
            };
            if sections.iter().any(|s: &SectionHeader| {
                s.algorithm == section.algorithm && s.category == section.category
            }) {
                return Err(invalid(
                    "section",
                    format!("two sections for {algorithm} {:?}", section.category),
                ));
            }
            entry_sum = entry_sum.saturating_add(section_entries);
            bitmap_sum = bitmap_sum.saturating_add(section.bitmap_len());
            sections.push(section);
        }
        if (format_version == FORMAT_VERSION_PDQ) == pdq.is_empty() {
            return Err(invalid(
                "format_version",
                format!("{format_version}, but the snapshot has {} PDQ sections (version 2 if and only if it has any)", pdq.len()),
            ));
        }
        if entry_sum != entries {
            return Err(invalid(
                "entries",
                format!("{entries}, but the sections hold {entry_sum}"),
            ));
        }
        if bitmap_sum != payload_len {
            return Err(invalid(
                "payload_len",
                format!("{payload_len}, but the sections' bitmaps need {bitmap_sum}"),
            ));
        }
        Ok(Header {
            series,
            version,
            created,
            expires,
            entries,
            hashes,
            salt,
            payload_len,
            payload_sha256,
            sections,
            pdq,
        })
    }

    /// Writes the header and section records into `out`, which must be exactly
    /// [`Header::body_offset`] bytes long.
    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.body_offset(), "header buffer length");
        let mut w = Vec::with_capacity(out.len());
        w.extend_from_slice(&MAGIC);
        w.extend_from_slice(&self.format_version().to_le_bytes());
        w.extend_from_slice(&((self.sections.len() + self.pdq.len()) as u16).to_le_bytes());
        w.extend_from_slice(&0u32.to_le_bytes());
        let mut series = [0u8; MAX_SERIES_LEN];
        series[..self.series.len()].copy_from_slice(self.series.as_bytes());
        w.extend_from_slice(&series);
        w.extend_from_slice(&self.version.to_le_bytes());
        w.extend_from_slice(&self.created.to_le_bytes());
        w.extend_from_slice(&self.expires.to_le_bytes());
        w.extend_from_slice(&self.entries.to_le_bytes());
        w.extend_from_slice(&self.hashes.to_le_bytes());
        w.extend_from_slice(&0u32.to_le_bytes());
        w.extend_from_slice(&self.salt);
        w.extend_from_slice(&self.payload_len.to_le_bytes());
        w.extend_from_slice(&self.payload_sha256);
        for s in &self.sections {
            let label = s.category.as_deref().unwrap_or("");
            w.push(s.algorithm.code());
            w.push(label.len() as u8);
            w.extend_from_slice(&[0u8; 6]);
            w.extend_from_slice(&s.entries.to_le_bytes());
            w.extend_from_slice(&s.bits.to_le_bytes());
            let mut category = [0u8; MAX_CATEGORY_LEN];
            category[..label.len()].copy_from_slice(label.as_bytes());
            w.extend_from_slice(&category);
        }
        for s in &self.pdq {
            let label = s.category.as_deref().unwrap_or("");
            w.push(crate::pdq::CODE);
            w.push(label.len() as u8);
            w.push(s.threshold);
            w.extend_from_slice(&[0u8; 5]);
            w.extend_from_slice(&s.entries.to_le_bytes());
            w.extend_from_slice(&(s.slots * 8 * crate::pdq::HASH_LEN as u64).to_le_bytes());
            let mut category = [0u8; MAX_CATEGORY_LEN];
            category[..label.len()].copy_from_slice(label.as_bytes());
            w.extend_from_slice(&category);
        }
        out.copy_from_slice(&w);
    }
}
