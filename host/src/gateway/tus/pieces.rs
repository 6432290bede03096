//! The tus piece spool: every `PATCH` body (and creation-with-upload body) of an upload
//! in flight, kept as `piece-<offset>` in a directory named by a hash of the upload's
//! URL path.
//!
//! tus appends: a `PATCH` is taken only at the upload's current offset, and a server
//! keeps whatever part of an interrupted `PATCH` it received. So the spool keeps every
//! body the gateway read, whole, and before each `PATCH` lines itself up with the
//! offset the origin reports ([`Turn::reconcile`]): pieces past it are dropped, the piece
//! across it is cut there. What is left, from 0 without a gap, is exactly what the
//! origin holds; anything the gateway did not see (a gap) leaves the upload unvouched,
//! and its completion is refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::super::assembly::Piece;
use super::super::copy::Copy;

/// The spool directory and the uploads with a request in flight.
pub struct Uploads {
    dir: PathBuf,
    busy: Mutex<HashSet<String>>,
}

/// Occurs when a request arrives for an upload another request holds (answered
/// `423 Locked`, as tus servers do; clients retry).
#[derive(Debug, thiserror::Error)]
#[error("another request for this upload is in flight")]
pub struct Locked;

impl Uploads {
    /// The spool in `dir`, cleared of copies a crash left unfinished.
    pub fn open(dir: &Path) -> Uploads {
        super::super::assembly::clear_unfinished(dir);
        Uploads {
            dir: dir.to_path_buf(),
            busy: Mutex::new(HashSet::new()),
        }
    }

    fn upload_dir(&self, upload: &str) -> PathBuf {
        super::super::assembly::upload_dir(&self.dir, upload)
    }

    /// Takes the turn of `upload` (its URL path).
    pub fn begin(self: &Arc<Self>, upload: &str) -> Result<Turn, Locked> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(upload.to_string()) {
            return Err(Locked);
        }
        Ok(Turn {
            uploads: self.clone(),
            upload: upload.to_string(),
        })
    }

    /// Removes the uploads in which nothing has happened for `idle` (abandoned: the
    /// client neither finished nor terminated them) and no request is in flight. The
    /// completion of one then finds a gap and is refused. Blocking. Returns how many
    /// were removed.
    pub fn expire(&self, idle: std::time::Duration) -> usize {
        use super::super::assembly::{clear_retired, idle_uploads, retire};
        let idle_names = idle_uploads(&self.dir, idle);
        let expired = {
            // Under the turn lock: no request of an upload starts while it is taken out.
            let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            retire(&self.dir, idle_names, busy.iter()).len()
        };
        clear_retired(&self.dir, idle);
        expired
    }

    /// Forgets an upload's pieces.
    pub async fn forget(&self, upload: &str) {
        let _ = tokio::fs::remove_dir_all(self.upload_dir(upload)).await;
    }

    /// A copy of a creation-with-upload body, whose upload is named only by the
    /// origin's answer.
    pub async fn unnamed(self: &Arc<Self>) -> PieceCopy {
        let temp = self.dir.join(format!(".new-{}", uuid::Uuid::new_v4()));
        PieceCopy {
            copy: Copy::temp(temp).await,
            kept: Destination::Unnamed(self.clone()),
        }
    }
}

/// The turn of one upload: while it is held, no other request of it is handled.
pub struct Turn {
    uploads: Arc<Uploads>,
    upload: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut busy = self.uploads.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.upload);
    }
}

fn piece_name(offset: u64) -> String {
    format!("piece-{offset:020}")
}

impl Turn {
    fn dir(&self) -> PathBuf {
        self.uploads.upload_dir(&self.upload)
    }

    /// The pieces spooled, by offset.
    fn listed(&self) -> std::io::Result<Vec<(u64, PathBuf, u64)>> {
        let mut pieces = Vec::new();
        let entries = match std::fs::read_dir(self.dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pieces),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(offset) = name.strip_prefix("piece-").and_then(|o| o.parse().ok()) {
                pieces.push((offset, entry.path(), entry.metadata()?.len()));
            }
        }
        pieces.sort();
        Ok(pieces)
    }

    /// Lines the spool up with `offset`, the bytes the origin holds: pieces past it are
    /// dropped, the piece across it cut there. Returns how many bytes from 0 the spool
    /// holds without a gap (`offset`, unless the gateway missed some).
    pub fn reconcile(&self, offset: u64) -> std::io::Result<u64> {
        let mut covered = 0;
        for (start, path, size) in self.listed()? {
            if start >= offset || start != covered {
                std::fs::remove_file(&path)?;
                continue;
            }
            let end = (start + size).min(offset);
            if start + size > end {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(end - start)?;
            }
            covered = end;
        }
        Ok(covered)
    }

    /// The pieces that make bytes `0..end` (after [`Turn::reconcile`] vouched for them).
    pub fn pieces(&self, end: u64) -> std::io::Result<Vec<Piece>> {
        Ok(self
            .listed()?
            .into_iter()
            .filter(|(start, _, _)| *start < end)
            .map(|(start, path, size)| Piece {
                path,
                aws_chunked: false,
                length: Some(size.min(end - start)),
            })
            .collect())
    }

    /// Starts the copy of the body that starts at `offset`.
    pub async fn piece(&self, offset: u64) -> PieceCopy {
        let dir = self.dir();
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the tus spool");
        }
        let temp = dir.join(format!(".piece-{}", uuid::Uuid::new_v4()));
        PieceCopy {
            copy: Copy::temp(temp).await,
            kept: Destination::Known(dir.join(piece_name(offset))),
        }
    }
}

enum Destination {
    /// The piece's own name.
    Known(PathBuf),
    /// Piece 0 of the upload the origin's `Location` will name.
    Unnamed(Arc<Uploads>),
}

/// The copy of one body being written.
pub struct PieceCopy {
    copy: Copy,
    kept: Destination,
}

impl PieceCopy {
    /// Appends the next frame.
    pub async fn write(&mut self, data: &Bytes) {
        self.copy.write(data).await;
    }

    /// Keeps the copy, whatever became of the request: the origin keeps what it got of
    /// an interrupted `PATCH` too, and the next turn's [`Turn::reconcile`] cuts the piece
    /// to it. A creation's body is kept only once the origin named its upload (its
    /// `Location`, a path or a URL whose path is taken).
    pub async fn keep(self, location: Option<&str>) {
        match self.kept {
            Destination::Known(path) => self.copy.keep_as(path).await,
            Destination::Unnamed(uploads) => {
                let path = location.map(|l| match l.parse::<hyper::Uri>() {
                    Ok(uri) => uri.path().to_string(),
                    Err(_) => l.to_string(),
                });
                match path {
                    Some(upload) => {
                        let dir = uploads.upload_dir(&upload);
                        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
                            tracing::error!(dir = %dir.display(), error = %e, "cannot create the tus spool");
                        }
                        self.copy.keep_as(dir.join(piece_name(0))).await
                    }
                    None => self.copy.discard().await,
                }
            }
        }
    }

    /// The file the copy will be kept as, once kept ([`PieceCopy::keep`]).
    pub fn path(&self) -> Option<&Path> {
        match &self.kept {
            Destination::Known(path) => Some(path),
            Destination::Unnamed(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_spool_lines_up_with_what_the_origin_holds() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Arc::new(Uploads::open(dir.path()));
        let turn = uploads.begin("/files/a").unwrap();
        assert!(uploads.begin("/files/a").is_err(), "one request per upload");
        for (offset, body) in [(0, &b"hello"[..]), (5, b" wor"), (9, b"ld!!")] {
            let mut piece = turn.piece(offset).await;
            piece.write(&Bytes::from_static(body)).await;
            piece.keep(None).await;
        }
        // The origin kept only 11 bytes of the last PATCH's 13.
        assert_eq!(turn.reconcile(11).unwrap(), 11);
        let pieces = turn.pieces(11).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[2].length, Some(2));
        // It reports less than the gateway saw: the rest is dropped.
        assert_eq!(turn.reconcile(7).unwrap(), 7);
        assert_eq!(turn.pieces(7).unwrap().len(), 2);
        // More than the gateway saw: it vouches only for what it has.
        assert_eq!(turn.reconcile(20).unwrap(), 7);
        drop(turn);
        assert!(uploads.begin("/files/a").is_ok());
    }

    #[tokio::test]
    async fn abandoned_uploads_expire_unless_a_request_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Arc::new(Uploads::open(dir.path()));
        for upload in ["/files/held", "/files/left"] {
            let turn = uploads.begin(upload).unwrap();
            let mut piece = turn.piece(0).await;
            piece.write(&Bytes::from_static(b"hello")).await;
            piece.keep(None).await;
        }
        let day = std::time::Duration::from_secs(86_400);
        super::super::super::assembly::backdate(dir.path(), 2 * day);
        assert_eq!(uploads.expire(3 * day), 0, "not idle long enough");
        let held = uploads.begin("/files/held").unwrap();
        assert_eq!(uploads.expire(day), 1);
        // The expired upload's pieces are gone: its completion finds a gap.
        let left = uploads.begin("/files/left").unwrap();
        assert_eq!(left.reconcile(5).unwrap(), 0);
        assert_eq!(
            held.reconcile(5).unwrap(),
            5,
            "the held upload is untouched"
        );
        drop(held);
        assert_eq!(uploads.expire(day), 1, "then it expires too");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
