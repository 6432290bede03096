//! Archives: zip (the `zip` crate) and tar (the `tar` crate), each member an object of
//! its own.
//!
//! A zip is read the way extractors read it: through its central directory, which is at
//! the end, so the archive is spooled first (to an unlinked temporary file, bounded like
//! every decoded byte). The crate checks each local header against the directory; here
//! the entries are also checked not to overlap (the "overlapping files" bomb) and the
//! bytes between them not to hide a local header the directory does not list (a
//! streaming reader would extract it). A tar is read as it streams. A 7z (the
//! `sevenz-rust2` crate) is spooled like a zip, since its header is at the end too, and
//! decoded on one thread within the decoder-memory limit.

use std::io::{Read, Seek, SeekFrom};

use super::walk::{At, Stop, Walk};
use super::{Layer, ProblemKind};

pub(super) fn zip(walk: &mut Walk<'_>, r: &mut dyn Read, at: &At) -> Result<(), Stop> {
    let Some(file) = walk.spool(r, at)? else {
        return Ok(());
    };
    let mut raw = file.try_clone().map_err(Stop::Spool)?;
    let mut archive = match zip::ZipArchive::new(file) {
        Ok(a) => a,
        Err(e) => return walk.failed(format!("zip: {e}"), at),
    };
    if let Err(why) = check_layout(&mut archive, &mut raw) {
        walk.problem(ProblemKind::Malformed, at, format!("zip: {why}"));
        return Ok(());
    }
    if archive.len() as u64 > walk.limits.max_entries {
        let detail = format!("zip: more than {} entries", walk.limits.max_entries);
        walk.problem(ProblemKind::Limit, at, detail);
        return Ok(());
    }
    for i in 0..archive.len() {
        let (name, encrypted, skip) = match archive.by_index_raw(i) {
            Ok(f) => (
                String::from_utf8_lossy(f.name_raw()).into_owned(),
                f.encrypted(),
                f.is_dir() || f.is_symlink(),
            ),
            Err(e) => return walk.failed(format!("zip: {e}"), at),
        };
        let member = at.member(name, Layer::Zip);
        if encrypted {
            walk.problem(
                ProblemKind::Encrypted,
                &member,
                "zip: encrypted member".into(),
            );
            continue;
        }
        if skip {
            continue;
        }
        let entry = match archive.by_index(i) {
            Ok(entry) => entry,
            Err(
                e @ (zip::result::ZipError::UnsupportedArchive(_)
                | zip::result::ZipError::CompressionMethodNotSupported(_)),
            ) => {
                walk.problem(ProblemKind::Unsupported, &member, format!("zip: {e}"));
                continue;
            }
            Err(e) => {
                walk.failed(format!("zip: {e}"), &member)?;
                continue;
            }
        };
        let mut entry = walk.budgeted(entry);
        walk.object(&mut entry, &member, &[], None)?;
    }
    Ok(())
}

/// Checks that the central directory's entries do not overlap and that no local header
/// hides between them.
fn check_layout<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    raw: &mut std::fs::File,
) -> Result<(), String> {
    let mut spans = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(|e| e.to_string())?;
        let start = f.header_start();
        let data = f.data_start().ok_or("entry without a data offset")?;
        let end = data
            .checked_add(f.compressed_size())
            .ok_or("entry size overflows")?;
        spans.push((start, end));
    }
    spans.sort_unstable();
    let directory = archive.central_directory_start();
    let mut gaps = Vec::new();
    // From the very start: bytes before the first entry (a self-extractor's stub) must
    // not hide a local header either, since a streaming extractor reads from there.
    let mut covered = 0;
    for &(start, end) in &spans {
        if start < covered {
            return Err("entries overlap".into());
        }
        if start > covered {
            gaps.push((covered, start));
        }
        covered = end;
    }
    if covered > directory {
        return Err("an entry overlaps the central directory".into());
    }
    gaps.push((covered, directory));
    let mut buf = vec![0u8; 64 * 1024];
    for (from, to) in gaps {
        raw.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
        let mut left = to - from;
        // The last 3 bytes of each read carry over, so a signature across reads is seen.
        let mut carry = 0;
        while left > 0 {
            let n = (buf.len() - carry).min(usize::try_from(left).unwrap_or(usize::MAX));
            raw.read_exact(&mut buf[carry..carry + n])
                .map_err(|e| e.to_string())?;
            if memchr::memmem::find(&buf[..carry + n], b"PK\x03\x04").is_some() {
                return Err("a local header the central directory does not list".into());
            }
            left -= n as u64;
            let keep = (carry + n).min(3);
            buf.copy_within(carry + n - keep..carry + n, 0);
            carry = keep;
        }
    }
    Ok(())
}

pub(super) fn tar(walk: &mut Walk<'_>, r: &mut dyn Read, at: &At) -> Result<(), Stop> {
    let mut archive = tar::Archive::new(r);
    // Read past zero blocks too, as `tar --ignore-zeros` does: a member hidden after an
    // end-of-archive marker is still extractable.
    archive.set_ignore_zeros(true);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return walk.failed(format!("tar: {e}"), at),
    };
    let mut count = 0u64;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => return walk.failed(format!("tar: {e}"), at),
        };
        count += 1;
        if count > walk.limits.max_entries {
            let detail = format!("tar: more than {} entries", walk.limits.max_entries);
            walk.problem(ProblemKind::Limit, at, detail);
            return Ok(());
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse()) {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let member = at.member(name, Layer::Tar);
        // PAX sparse files (GNU.sparse.* records) keep their map inside the data, which
        // the crate hands out as is: the member would be hashed wrongly.
        let pax_sparse = match entry.pax_extensions() {
            Ok(Some(exts)) => exts
                .flatten()
                .any(|e| e.key_bytes().starts_with(b"GNU.sparse.")),
            Ok(None) => false,
            Err(e) => return walk.failed(format!("tar: {e}"), &member),
        };
        if pax_sparse {
            walk.problem(
                ProblemKind::Unsupported,
                &member,
                "tar: PAX sparse file".into(),
            );
            continue;
        }
        let mut entry = walk.budgeted(&mut entry);
        walk.object(&mut entry, &member, &[], None)?;
    }
    Ok(())
}

pub(super) fn seven_z(walk: &mut Walk<'_>, r: &mut dyn Read, at: &At) -> Result<(), Stop> {
    use sevenz_rust2::{ArchiveReader, EntryDecision, Password};
    let Some(file) = walk.spool(r, at)? else {
        return Ok(());
    };
    let memory_kib = usize::try_from(walk.limits.decoder_memory / 1024).unwrap_or(usize::MAX);
    let mut archive =
        match ArchiveReader::new_with_memory_limit(file, Password::empty(), memory_kib) {
            Ok(a) => a,
            Err(e) => return seven_z_failed(walk, e, at),
        };
    archive.set_thread_count(1);
    let mut count = 0u64;
    let mut stop = None;
    let result = archive.for_each_entries_with_decision(|entry, reader| {
        if entry.is_directory() || !entry.has_stream() {
            return Ok(EntryDecision::Continue);
        }
        count += 1;
        if count > walk.limits.max_entries {
            let detail = format!("7z: more than {} entries", walk.limits.max_entries);
            walk.problem(ProblemKind::Limit, at, detail);
            return Ok(EntryDecision::Stop);
        }
        let member = at.member(entry.name().to_string(), Layer::SevenZ);
        let mut reader = walk.budgeted(reader);
        match walk.object(&mut reader, &member, &[], None) {
            Ok(()) => Ok(EntryDecision::Continue),
            Err(s) => {
                stop = Some(s);
                Ok(EntryDecision::Stop)
            }
        }
    });
    if let Some(stop) = stop {
        return Err(stop);
    }
    match result {
        Ok(()) => Ok(()),
        Err(e) => seven_z_failed(walk, e, at),
    }
}

/// A 7z error: encrypted, unsupported or malformed (or the walk's own stop).
fn seven_z_failed(walk: &mut Walk<'_>, e: sevenz_rust2::Error, at: &At) -> Result<(), Stop> {
    use sevenz_rust2::Error;
    let kind = match &e {
        Error::PasswordRequired | Error::MaybeBadPassword(_) => ProblemKind::Encrypted,
        Error::UnsupportedCompressionMethod(_)
        | Error::Unsupported(_)
        | Error::ExternalUnsupported
        | Error::UnsupportedVersion { .. } => ProblemKind::Unsupported,
        Error::MaxMemLimited { .. } => ProblemKind::Limit,
        _ => return walk.failed(format!("7z: {e}"), at),
    };
    walk.problem(kind, at, format!("7z: {e}"));
    Ok(())
}
