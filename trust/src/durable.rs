//! Writing files so that a crash leaves the old contents or the new, never a mix: a
//! temporary file beside the target, fsync, rename, and an fsync of the directory.
//! Used for everything hashgate persists (feed state) and publishes (snapshots, feeds).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Writes `bytes` to `path` atomically, creating the directory if needed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically_with(path, |file| {
        file.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

/// [`write_atomically`] with the contents written by `fill` (e.g. piece by piece from a
/// guest), which may fail with an error of the caller's own; if it does, nothing is left
/// behind and `path` is untouched.
pub fn write_atomically_with<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::ErrorKind::InvalidInput.into()))?;
    // The process id keeps two writers of the same file from sharing a temporary file.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let result = File::create(&tmp)
        .map_err(|e| E::from(Error::io(&tmp, e)))
        .and_then(|mut file| {
            fill(&mut file)?;
            file.sync_all().map_err(|e| Error::io(&tmp, e).into())
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .and_then(|()| File::open(&dir)?.sync_all())
                .map_err(|e| Error::io(path, e).into())
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
