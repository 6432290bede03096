//! Quarantine: with `quarantine_dir` set, every inspected upload is also written, as it
//! streams, to a hidden temporary file there. A blocked upload's copy is fsynced and
//! kept as `<request id>.body` (evidence for the authorities; the directory is never
//! served); any other upload's copy is deleted. Failing to write the copy never lets a
//! listed file through and never fails a clean upload: it is logged, and the audit record
//! then names no quarantine file.

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
    /// Starts the copy of request `request_id` in `dir`.
    pub async fn start(dir: &Path, request_id: &str) -> Copy {
        let temp = dir.join(format!(".{request_id}.part"));
        let kept = dir.join(format!("{request_id}.body"));
        let file = match tokio::fs::File::create(&temp).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(path = %temp.display(), error = %e, "cannot start a quarantine copy");
                None
            }
        };
        Copy { temp, kept, file }
    }

    /// Appends the next frame.
    pub async fn write(&mut self, data: &Bytes) {
        let Some(file) = &mut self.file else { return };
        if let Err(e) = file.write_all(data).await {
            tracing::error!(path = %self.temp.display(), error = %e, "quarantine copy failed; continuing without it");
            self.file = None;
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
    }

    /// Where the copy will be kept if the upload is blocked, while it is intact.
    pub fn path(&self) -> Option<String> {
        self.file.as_ref().map(|_| self.kept.display().to_string())
    }

    /// Keeps the copy: fsync, rename to `<request id>.body`, fsync the directory.
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
            tracing::error!(path = %self.kept.display(), error = %e, "keeping the quarantine copy failed");
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
