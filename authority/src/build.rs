//! Lists in, signed snapshot out.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use hashgate_guest::{Algorithm, BuildParams, FilterBuilder, SectionSpec};
use hashgate_host::trust::SecretKey;

use crate::{list, Error};

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
    let mut counts: BTreeMap<(Algorithm, Option<String>), u64> = BTreeMap::new();
    for path in &request.lists {
        list::read(path, default, &mut |entry| {
            let key = (entry.algorithm, entry.category.map(str::to_string));
            *counts.entry(key).or_default() += 1;
            Ok(())
        })?;
    }
    let specs: Vec<SectionSpec> = counts
        .into_iter()
        .map(|((algorithm, category), entries)| SectionSpec {
            algorithm,
            category,
            entries,
        })
        .collect();
    let mut builder = FilterBuilder::new(&request.params, &specs)?;
    for path in &request.lists {
        list::read(path, default, &mut |entry| {
            builder
                .insert(entry.algorithm, entry.category, entry.digest)
                .map_err(|e| Error::List {
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
    let body = build_body(request)?;
    let trailer = key.sign_trailer(&body);
    write_atomically(out, &[&body, &trailer])?;
    Ok((body.len() + trailer.len()) as u64)
}

/// Writes `parts` to `path` through a temporary file, fsync and rename.
pub fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::ErrorKind::InvalidInput.into()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
