//! The part spool: a copy of every part of every multipart upload in flight, bound to the
//! ETag the origin gave it, so the completion can be checked against exactly the bytes
//! the store will assemble.
//!
//! Three rules keep the spool and the store in step:
//!
//! * **One turn per part.** While a part number of an upload is being sent, another
//!   request for the same number is refused (503, `Retry-After`), and a completion waits
//!   for no part: it is refused while any part is in flight. So the order in which the
//!   store sees a part's versions is the order the gateway saw them, and the latest is
//!   what both keep (as S3 does).
//! * **Unknown means gone.** A part's earlier version is dropped when a new one starts:
//!   whether the store keeps the new one (the origin stored it) or not (the client broke
//!   off, the gateway refused it) is not known until its answer, so until then the part
//!   counts as unseen, and a completion naming it is refused.
//! * **Bound to its ETag.** A part is kept under the ETag the origin answered with, and
//!   a completion naming another ETag for it is refused.
//!
//! Everything lives in files under the spool directory (one directory per upload, named
//! by a hash of the upload id), so a restarted gateway still completes the uploads it
//! saw; the turns are in memory, since a restart ends every request in flight anyway.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use sha2::Digest as _;

use super::super::copy::Copy;

/// The spool directory and the turns of the parts in flight.
pub struct Spool {
    dir: PathBuf,
    flight: Mutex<HashMap<String, Flight>>,
}

#[derive(Default)]
struct Flight {
    parts: HashSet<u32>,
    completing: bool,
}

/// Occurs when a part or completion arrives while another request of its upload holds
/// the turn (answered 503 with `Retry-After`: the client's retry will get it).
#[derive(Debug, thiserror::Error)]
#[error("another request for this {0} is in flight")]
pub struct Busy(&'static str);

/// One part as spooled: where, and whether it is aws-chunked framed.
#[derive(Debug)]
pub struct Spooled {
    /// The file.
    pub path: PathBuf,
    /// Framed as aws-chunked (decoded when read).
    pub aws: bool,
}

/// Occurs when a completion names a part the spool cannot vouch for.
#[derive(Debug, thiserror::Error)]
pub enum Unvouched {
    /// Occurs when the part was not seen (another gateway took it, it never finished,
    /// or its last upload failed).
    #[error("part {0} was not seen by this gateway")]
    Unseen(u32),
    /// Occurs when the completion names an ETag other than the one the origin gave the
    /// part the gateway checked.
    #[error("part {0} has another ETag than the one this gateway checked")]
    OtherETag(u32),
    /// Occurs when the spool holds two versions of one part (a crash between keeping
    /// one and dropping the other).
    #[error("part {0} is spooled twice")]
    Twice(u32),
    /// Occurs when the spool cannot be read.
    #[error("reading the spool: {0}")]
    Io(#[from] std::io::Error),
}

impl Spool {
    /// The spool in `dir`, cleared of copies a crash left unfinished.
    pub fn open(dir: &Path) -> Spool {
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
        Spool {
            dir: dir.to_path_buf(),
            flight: Mutex::new(HashMap::new()),
        }
    }

    /// The directory of one upload (named by a hash: upload ids are client-chosen text).
    fn upload_dir(&self, upload: &str) -> PathBuf {
        self.dir
            .join(hex::encode(sha2::Sha256::digest(upload.as_bytes())))
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the turn of part `number` of `upload`, and drops its earlier version.
    pub async fn begin_part(self: &Arc<Self>, upload: &str, number: u32) -> Result<PartTurn, Busy> {
        {
            let mut flights = self.flights();
            let flight = flights.entry(upload.to_string()).or_default();
            if flight.completing {
                return Err(Busy("upload's completion"));
            }
            if !flight.parts.insert(number) {
                return Err(Busy("part number"));
            }
        }
        let turn = PartTurn {
            spool: self.clone(),
            upload: upload.to_string(),
            number,
        };
        turn.drop_versions().await;
        Ok(turn)
    }

    /// Takes the turn of `upload`'s completion: no part of it may be in flight.
    pub fn begin_completion(self: &Arc<Self>, upload: &str) -> Result<CompletionTurn, Busy> {
        let mut flights = self.flights();
        let flight = flights.entry(upload.to_string()).or_default();
        if flight.completing || !flight.parts.is_empty() {
            return Err(Busy("upload"));
        }
        flight.completing = true;
        Ok(CompletionTurn {
            spool: self.clone(),
            upload: upload.to_string(),
        })
    }

    /// Forgets an upload's spooled parts.
    pub async fn forget(&self, upload: &str) {
        let _ = tokio::fs::remove_dir_all(self.upload_dir(upload)).await;
    }

    /// The numbers of the parts spooled for `upload`, ascending (a store that assembles
    /// whatever parts it holds, such as Nextcloud's chunking, needs them all).
    pub fn numbers(&self, upload: &str) -> std::io::Result<Vec<u32>> {
        let mut numbers = Vec::new();
        match std::fs::read_dir(self.upload_dir(upload)) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if let Some(n) = name.strip_prefix("part-").and_then(|r| r.get(..5)) {
                        numbers.extend(n.parse::<u32>().ok());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        numbers.sort_unstable();
        numbers.dedup();
        Ok(numbers)
    }

    /// Records that `upload`'s parts are named with `width` digits, or says whether they
    /// already are (names of one width sort by number; `1` and `01` would be two parts
    /// to the store and one here).
    pub async fn same_width(&self, upload: &str, width: usize) -> std::io::Result<bool> {
        let dir = self.upload_dir(upload);
        tokio::fs::create_dir_all(&dir).await?;
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(w) = name.strip_prefix("width-") {
                return Ok(w == width.to_string());
            }
        }
        tokio::fs::write(dir.join(format!("width-{width}")), b"").await?;
        Ok(true)
    }

    /// The spooled part `number` of `upload`, if it was kept under `etag` (any ETag, if
    /// the completion names none).
    pub fn vouch(
        &self,
        upload: &str,
        number: u32,
        etag: Option<&str>,
    ) -> Result<Spooled, Unvouched> {
        let dir = self.upload_dir(upload);
        let prefix = format!("part-{number:05}.");
        let mut found = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&prefix) {
                        found.push(name);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let name = match found.as_slice() {
            [] => return Err(Unvouched::Unseen(number)),
            [one] => one,
            _ => return Err(Unvouched::Twice(number)),
        };
        let mut fields = name[prefix.len()..].split('.');
        let (Some(bound), Some(kind)) = (fields.next(), fields.next()) else {
            return Err(Unvouched::Unseen(number));
        };
        if etag.is_some_and(|etag| etag_name(etag) != bound) {
            return Err(Unvouched::OtherETag(number));
        }
        Ok(Spooled {
            path: dir.join(name),
            aws: kind == "aws",
        })
    }
}

/// An ETag as a file name part: the hash of its value without quotes.
fn etag_name(etag: &str) -> String {
    let bare = etag.trim().trim_matches('"');
    hex::encode(&sha2::Sha256::digest(bare.as_bytes())[..16])
}

/// The turn of one part: while it is held, no other request sends this part number.
pub struct PartTurn {
    spool: Arc<Spool>,
    upload: String,
    number: u32,
}

impl PartTurn {
    async fn drop_versions(&self) {
        let dir = self.spool.upload_dir(&self.upload);
        let prefix = format!("part-{:05}.", self.number);
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                if let Err(e) = tokio::fs::remove_file(entry.path()).await {
                    tracing::error!(path = %entry.path().display(), error = %e, "cannot drop a spooled part");
                }
            }
        }
    }

    /// Starts the copy of this part's bytes. `aws`: they come framed as aws-chunked
    /// (spooled as they came, decoded when the parts are inspected).
    pub async fn copy(self, aws: bool) -> PartCopy {
        let dir = self.spool.upload_dir(&self.upload);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the part spool");
        }
        let temp = dir.join(format!(".part-{:05}.{}", self.number, uuid::Uuid::new_v4()));
        PartCopy {
            copy: Copy::temp(temp).await,
            aws,
            turn: self,
        }
    }
}

impl Drop for PartTurn {
    fn drop(&mut self) {
        let mut flights = self.spool.flights();
        if let Some(flight) = flights.get_mut(&self.upload) {
            flight.parts.remove(&self.number);
            if flight.parts.is_empty() && !flight.completing {
                flights.remove(&self.upload);
            }
        }
    }
}

/// The turn of one completion: while it is held, no part of its upload is sent.
pub struct CompletionTurn {
    spool: Arc<Spool>,
    upload: String,
}

impl Drop for CompletionTurn {
    fn drop(&mut self) {
        let mut flights = self.spool.flights();
        if let Some(flight) = flights.get_mut(&self.upload) {
            flight.completing = false;
            if flight.parts.is_empty() {
                flights.remove(&self.upload);
            }
        }
    }
}

/// The spool copy of one part being written, holding the part's turn.
pub struct PartCopy {
    copy: Copy,
    aws: bool,
    turn: PartTurn,
}

impl PartCopy {
    /// Appends the next frame.
    pub async fn write(&mut self, data: &Bytes) {
        self.copy.write(data).await;
    }

    /// Keeps the copy if the origin stored the part (a 2xx with an ETag), under that
    /// ETag; drops it otherwise.
    pub async fn settle(self, status: StatusCode, headers: &HeaderMap) {
        let etag = headers
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match etag {
            Some(etag) if status.is_success() => self.keep(&etag).await,
            _ => self.discard().await,
        }
    }

    /// Keeps the copy if the origin stored the part (a 2xx), whatever ETag it gave (for
    /// stores whose completion names no ETags).
    pub async fn settle_unbound(self, status: StatusCode) {
        match status.is_success() {
            true => self.keep("").await,
            false => self.discard().await,
        }
    }

    /// Keeps the copy under `etag`.
    pub async fn keep(self, etag: &str) {
        let kind = if self.aws { "aws" } else { "raw" };
        let name = format!("part-{:05}.{}.{kind}", self.turn.number, etag_name(etag));
        let kept = self.turn.spool.upload_dir(&self.turn.upload).join(name);
        self.copy.keep_as(kept).await;
    }

    /// Deletes the copy: the part counts as unseen.
    pub async fn discard(self) {
        self.copy.discard().await;
    }
}
