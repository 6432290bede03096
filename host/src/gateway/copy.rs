//! Copies of bodies written as they stream, kept or discarded once the verdict is in:
//!
//! * quarantine: with `quarantine_dir` set, every inspected upload is copied to a hidden
//!   temporary file there; a blocked upload's copy is fsynced and kept as
//!   `<request id>.body` (evidence for the authorities; the directory is never served),
//!   any other is deleted;
//! * the S3 part spool (`s3_spool_dir`): each multipart-upload part is copied so that the
//!   whole object can be hashed before `CompleteMultipartUpload` makes it visible.
//!
//! Failing to write a copy never lets a listed file through and never fails a clean
//! upload by itself: it is logged, and the copy is then absent (a quarantine record names
//! no file; a completion whose parts are missing is refused).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

/// The copy of one upload being written.
pub struct Copy {
    temp: PathBuf,
    kept: PathBuf,
    file: Option<tokio::fs::File>,
}

impl Copy {
    /// Starts the quarantine copy of request `request_id` in `dir`.
    pub async fn start(dir: &Path, request_id: &str) -> Copy {
        let temp = dir.join(format!(".{request_id}.part"));
        let kept = dir.join(format!("{request_id}.body"));
        Copy::at(temp, kept).await
    }

    /// Starts a copy written to `temp` and kept as `kept`.
    pub async fn at(temp: PathBuf, kept: PathBuf) -> Copy {
        let file = match tokio::fs::File::create(&temp).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(path = %temp.display(), error = %e, "cannot start a copy");
                None
            }
        };
        Copy { temp, kept, file }
    }

    /// Starts a copy written to `temp`, kept wherever [`Copy::keep_as`] says.
    pub async fn temp(temp: PathBuf) -> Copy {
        let kept = temp.clone();
        Copy::at(temp, kept).await
    }

    /// Keeps the copy as `kept` (see [`Copy::keep`]).
    pub async fn keep_as(mut self, kept: PathBuf) {
        self.kept = kept;
        self.keep().await;
    }

    /// Appends the next frame.
    pub async fn write(&mut self, data: &Bytes) {
        let Some(file) = &mut self.file else { return };
        if let Err(e) = file.write_all(data).await {
            tracing::error!(path = %self.temp.display(), error = %e, "writing a copy failed; continuing without it");
            self.file = None;
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
    }

    /// Where the copy will be kept if the upload is blocked, while it is intact.
    pub fn path(&self) -> Option<String> {
        self.file.as_ref().map(|_| self.kept.display().to_string())
    }

    /// Keeps the copy: fsync, rename to its final name, fsync the directory.
    pub async fn keep(mut self) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        let kept = async {
            file.flush().await?;
            file.sync_all().await?;
            tokio::fs::rename(&self.temp, &self.kept).await?;
            if let Some(dir) = self.kept.parent() {
                tokio::fs::File::open(dir).await?.sync_all().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        if let Err(e) = kept.await {
            tracing::error!(path = %self.kept.display(), error = %e, "keeping a copy failed");
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
    }

    /// Deletes the copy.
    pub async fn discard(mut self) {
        if self.file.take().is_some() {
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
    }
}
