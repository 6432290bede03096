//! The object an upload in pieces makes, read back from the spooled pieces in its final
//! order and inspected as one body: what S3 multipart completions and tus uploads share.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::inspect::Hashes;
use crate::inspect::{AwsChunkedDecoder, Envelope, InspectError, Limits, Report};

/// Clears a spool directory (one subdirectory per upload) of the copies a crash left
/// unfinished: files still named with a leading dot, never renamed into place.
pub fn clear_unfinished(dir: &Path) {
    for upload in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(upload.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The name of one upload's directory under a spool directory: a hash, since upload
/// ids and URLs are client-chosen text.
pub fn upload_dir_name(upload: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(upload.as_bytes()))
}

/// The directory of one upload under a spool `dir` ([`upload_dir_name`]).
pub fn upload_dir(dir: &Path, upload: &str) -> PathBuf {
    dir.join(upload_dir_name(upload))
}

/// The prefix of an upload directory taken out of a spool to be removed.
const RETIRED: &str = ".expired-";

/// The upload directories under a spool `dir` in which nothing has changed for `idle`:
/// neither the directory (a piece kept, renamed or dropped) nor any file in it (a piece
/// still being written). Their names, which [`retire`] takes.
pub fn idle_uploads(dir: &Path, idle: std::time::Duration) -> Vec<String> {
    let quiet = |meta: &std::fs::Metadata| unchanged_for(meta, idle);
    let mut names = Vec::new();
    for upload in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = upload.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !upload.metadata().is_ok_and(|m| m.is_dir() && quiet(&m)) {
            continue;
        }
        let entries = std::fs::read_dir(upload.path()).into_iter().flatten();
        if entries
            .flatten()
            .all(|entry| entry.metadata().is_ok_and(|m| quiet(&m)))
        {
            names.push(name);
        }
    }
    names
}

/// Whether the file or directory `meta` describes was last changed `idle` ago or more
/// (a time in the future counts as now).
fn unchanged_for(meta: &std::fs::Metadata, idle: std::time::Duration) -> bool {
    meta.modified()
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= idle))
}

/// Takes the upload directories `names` ([`idle_uploads`]) out of the spool `dir`, but
/// for those of the `busy` uploads (ids or URLs, whose requests are in flight). Each is
/// a rename, so that the caller can do it under the lock its requests start under and
/// no request finds half an upload; [`clear_retired`] removes them. The names taken out.
pub fn retire<'a>(
    dir: &Path,
    names: Vec<String>,
    busy: impl Iterator<Item = &'a String>,
) -> std::collections::HashSet<String> {
    let busy: std::collections::HashSet<String> = busy.map(|u| upload_dir_name(u)).collect();
    let mut retired = std::collections::HashSet::new();
    for name in names.into_iter().filter(|n| !busy.contains(n)) {
        let to = format!("{RETIRED}{name}-{}", uuid::Uuid::new_v4());
        match std::fs::rename(dir.join(&name), dir.join(to)) {
            Ok(()) => {
                retired.insert(name);
            }
            Err(e) => {
                tracing::error!(upload = %name, error = %e, "cannot expire an upload from the spool")
            }
        }
    }
    retired
}

/// Removes from the spool `dir` what [`retire`] took out, and the copies of pieces not
/// yet named by an upload (files with a leading dot at the top) in which nothing has
/// changed for `idle`: a crash or a vanished client left them.
pub fn clear_retired(dir: &Path, idle: std::time::Duration) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let removed = if name.starts_with(RETIRED) {
            std::fs::remove_dir_all(&path)
        } else if name.starts_with('.')
            && entry
                .metadata()
                .is_ok_and(|m| m.is_file() && unchanged_for(&m, idle))
        {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        if let Err(e) = removed {
            tracing::error!(path = %path.display(), error = %e, "cannot remove an expired upload from the spool");
        }
    }
}

/// One spooled piece of an object.
#[derive(Debug)]
pub struct Piece {
    /// The file holding it.
    pub path: PathBuf,
    /// Spooled as it came, framed as aws-chunked (decoded when read).
    pub aws_chunked: bool,
    /// Only the first this many bytes of the (decoded) file count, if given.
    pub length: Option<u64>,
}

/// Occurs when the pieces cannot be read back or inspected (nothing may pass then).
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// Occurs when a piece cannot be read, or is shorter than it should be.
    #[error("reading a spooled piece: {0}")]
    Io(#[from] std::io::Error),
    /// Occurs when the inspection of the assembled object fails.
    #[error("inspecting the pieces: {0}")]
    Inspect(InspectError),
}

/// [`inspect`] on a blocking thread, hashing what `filter` needs (and `algorithms`, the
/// catalog's too): the report, or why there is none.
pub async fn inspect_blocking(
    pieces: Vec<Piece>,
    algorithms: Vec<crate::Algorithm>,
    filter: &crate::enforce::FilterSet,
    limits: std::sync::Arc<Limits>,
) -> Result<Report, String> {
    let pictures = filter.holds_pdq();
    tokio::task::spawn_blocking(move || {
        let hashes = Hashes {
            algorithms: &algorithms,
            pictures,
        };
        inspect(&pieces, hashes, &limits)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()))
}

/// Inspects `pieces`, in order, as one object. Blocking: run it off the serving threads.
pub fn inspect(
    pieces: &[Piece],
    hashes: Hashes<'_>,
    limits: &Limits,
) -> Result<Report, AssemblyError> {
    let mut files = std::collections::VecDeque::with_capacity(pieces.len());
    let mut total = 0;
    for piece in pieces {
        let file = std::fs::File::open(&piece.path)?;
        let size = file.metadata()?.len();
        if piece.length.is_some_and(|l| l > size) {
            return Err(std::io::Error::other(format!(
                "{} holds {size} bytes, fewer than the object needs",
                piece.path.display()
            ))
            .into());
        }
        total += piece.length.unwrap_or(size);
        files.push_back(Open {
            file,
            decoder: piece.aws_chunked.then(AwsChunkedDecoder::default),
            left: piece.length.unwrap_or(u64::MAX),
        });
    }
    let mut reader = Pieces {
        files,
        pending: Bytes::new(),
        buf: vec![0u8; 1 << 20],
    };
    crate::inspect::inspect_reader(
        &mut reader,
        &Envelope::default(),
        hashes,
        limits,
        Some(total),
    )
    .map_err(AssemblyError::Inspect)
}

struct Open {
    file: std::fs::File,
    decoder: Option<AwsChunkedDecoder>,
    /// Bytes of it still to be read.
    left: u64,
}

/// The spooled pieces read one after the other, aws-chunked ones decoded, each cut at
/// its length.
struct Pieces {
    files: std::collections::VecDeque<Open>,
    pending: Bytes,
    buf: Vec<u8>,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pending.is_empty() {
            let Some(open) = self.files.front_mut() else {
                return Ok(0);
            };
            if open.left == 0 {
                self.files.pop_front();
                continue;
            }
            let Some(d) = &mut open.decoder else {
                // Raw pieces go straight into the caller's buffer: no copy of our own.
                let want = out
                    .len()
                    .min(usize::try_from(open.left).unwrap_or(usize::MAX));
                match open.file.read(&mut out[..want])? {
                    0 => {
                        self.files.pop_front();
                        continue;
                    }
                    n => {
                        open.left -= n as u64;
                        return Ok(n);
                    }
                }
            };
            let n = open.file.read(&mut self.buf)?;
            if n == 0 {
                d.finish().map_err(std::io::Error::other)?;
                self.files.pop_front();
                continue;
            }
            let data = Bytes::copy_from_slice(&self.buf[..n]);
            let mut joined = BytesMut::new();
            for piece in d.push(&data).map_err(std::io::Error::other)? {
                joined.extend_from_slice(&piece);
            }
            let mut joined = joined.freeze();
            joined.truncate(usize::try_from(open.left).unwrap_or(usize::MAX));
            open.left -= joined.len() as u64;
            self.pending = joined;
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Sets the modification time of `path` and everything under it back by `by`, as if
/// nothing had happened there since.
#[cfg(test)]
pub(crate) fn backdate(path: &Path, by: std::time::Duration) {
    let then = std::time::SystemTime::now() - by;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            backdate(&entry.path(), by);
        }
    }
    std::fs::File::open(path)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uploads_untouched_for_the_whole_time_are_idle() {
        let dir = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        for upload in ["quiet", "writing", "new-piece"] {
            std::fs::create_dir(dir.path().join(upload_dir_name(upload))).unwrap();
            std::fs::write(upload_dir(dir.path(), upload).join("piece-0"), b"x").unwrap();
        }
        std::fs::write(dir.path().join(".new-left-by-a-crash"), b"x").unwrap();
        std::fs::write(dir.path().join(".new-being-written"), b"x").unwrap();
        backdate(dir.path(), 2 * hour);
        // A piece still being written (its file changes, its directory does not).
        std::fs::write(upload_dir(dir.path(), "writing").join(".piece-1"), b"x").unwrap();
        backdate(&upload_dir(dir.path(), "writing"), 2 * hour);
        std::fs::File::options()
            .append(true)
            .open(upload_dir(dir.path(), "writing").join(".piece-1"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        // A piece just kept (the directory changes).
        std::fs::write(upload_dir(dir.path(), "new-piece").join("piece-1"), b"x").unwrap();
        std::fs::File::open(dir.path().join(".new-being-written"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();

        let idle = idle_uploads(dir.path(), hour);
        assert_eq!(idle, [upload_dir_name("quiet")]);
        assert_eq!(retire(dir.path(), idle, std::iter::empty()).len(), 1);
        assert!(!upload_dir(dir.path(), "quiet").exists());
        clear_retired(dir.path(), hour);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            ".new-being-written".to_string(),
            upload_dir_name("new-piece"),
            upload_dir_name("writing"),
        ];
        want.sort();
        assert_eq!(
            left, want,
            "the retired upload and the crash's copy are gone"
        );
    }

    #[test]
    fn pieces_are_read_in_order_each_cut_at_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"hello, ignored").unwrap();
        std::fs::write(&b, b" world").unwrap();
        let pieces = [
            Piece {
                path: a,
                aws_chunked: false,
                length: Some(5),
            },
            Piece {
                path: b.clone(),
                aws_chunked: false,
                length: None,
            },
        ];
        let report = inspect(
            &pieces,
            Hashes::digests(&[crate::Algorithm::Sha256]),
            &Limits::default(),
        )
        .unwrap();
        let whole = report.nodes.last().expect("the object");
        assert_eq!(whole.size, 11);
        // A piece shorter than its length is an error, never a shorter object.
        let short = [Piece {
            path: b,
            aws_chunked: false,
            length: Some(100),
        }];
        assert!(inspect(
            &short,
            Hashes::digests(&[crate::Algorithm::Sha256]),
            &Limits::default()
        )
        .is_err());
    }
}
