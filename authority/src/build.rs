//! Lists in, signed snapshot out.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hashgate_guest::{BuildParams, FilterBuilder, PdqSpec, SectionSpec};
use hashgate_trust::keys::SecretKey;

use crate::list::{self, Kind};
use crate::Error;

/// What to build.
#[derive(Clone, Debug)]
pub struct Request {
    /// The lists, read in order.
    pub lists: Vec<PathBuf>,
    /// Category for entries whose line names none.
    pub default_category: Option<String>,
    /// Series, version, times, rate and salt.
    pub params: BuildParams,
}

/// Counts the entries per section (pass 1), then inserts them (pass 2), and returns the
/// unsigned snapshot body. Reads every list twice, holding no list text in memory.
pub fn build_body(request: &Request) -> Result<Vec<u8>, Error> {
    let default = request.default_category.as_deref();
    let mut counts: BTreeMap<(Kind, Option<String>), u64> = BTreeMap::new();
    for path in &request.lists {
        list::read(path, default, &mut |entry| {
            let key = (entry.kind, entry.category.map(str::to_string));
            *counts.entry(key).or_default() += 1;
            Ok(())
        })?;
    }
    let mut specs: Vec<SectionSpec> = Vec::new();
    let mut pdq_specs: Vec<PdqSpec> = Vec::new();
    for ((kind, category), entries) in counts {
        match kind {
            Kind::Digest(algorithm) => specs.push(SectionSpec {
                algorithm,
                category,
                entries,
            }),
            Kind::Pdq => pdq_specs.push(PdqSpec { category, entries }),
        }
    }
    let buffer = large_buffer(&specs, &pdq_specs);
    let mut builder = FilterBuilder::with_pdq(&request.params, &specs, &pdq_specs, buffer)?;
    for path in &request.lists {
        list::read(path, default, &mut |entry| {
            let inserted = match entry.kind {
                Kind::Digest(algorithm) => builder.insert(algorithm, entry.category, entry.digest),
                Kind::Pdq => {
                    let hash = entry.digest.try_into().expect("a PDQ entry is 32 bytes");
                    builder.insert_pdq(entry.category, hash)
                }
            };
            inserted.map_err(|e| Error::List {
                path: path.clone(),
                line: 0,
                reason: format!("list changed while it was read: {e}"),
            })
        })?;
    }
    Ok(builder.finish()?)
}

/// Builds, signs with `key`, and writes the snapshot to `out` atomically: a temporary
/// file beside it, fsynced, then renamed. On any error nothing is left at `out`.
pub fn build_signed(request: &Request, key: &SecretKey, out: &Path) -> Result<u64, Error> {
    let mut file = build_body(request)?;
    key.sign_append(&mut file);
    write_atomically(out, &[&file])?;
    Ok(file.len() as u64)
}

/// An empty buffer with room for the snapshot the specs need plus its signature
/// trailer. On Linux it is backed by transparent huge pages where the system allows
/// them: inserting sets k random bits per digest all over the bitmap, and with 4 KiB
/// pages most of that time goes to TLB misses.
fn large_buffer(specs: &[SectionSpec], pdq_specs: &[PdqSpec]) -> Vec<u8> {
    // An upper bound is enough: the builder sizes precisely, this only reserves.
    let pdq_bits: u64 = pdq_specs
        .iter()
        .map(|s| s.entries * 2 * 256 + 64 * 256)
        .sum();
    let bits: u64 = specs.iter().map(|s| s.entries).sum::<u64>() * 64 + pdq_bits + (1 << 20);
    let capacity = usize::try_from(bits / 8).unwrap_or(usize::MAX / 2);
    let buffer: Vec<u8> = Vec::with_capacity(capacity.min(4 << 30));
    #[cfg(target_os = "linux")]
    advise_huge_pages(buffer.as_ptr() as usize, buffer.capacity());
    buffer
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) & !(HUGE - 1);
    if end > start {
        // SAFETY: the range lies inside the buffer's own allocation; MADV_HUGEPAGE only
        // changes how the kernel backs those pages, never their contents or mapping.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// Writes `parts` to `path` through a temporary file, fsync and rename, creating the
/// directory if needed ([`hashgate_trust::durable`]). On any error nothing is left at `path`.
pub fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<(), Error> {
    hashgate_trust::durable::write_atomically_with(path, |file| {
        parts
            .iter()
            .try_for_each(|part| file.write_all(part))
            .map_err(|e| Error::io(path, e))
    })
}
