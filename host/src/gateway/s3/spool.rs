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
use crate::hashing::ObjectHasher;
use crate::inspect::Report;

/// Feeds the file at `path` to `hashers`, each on a blocking thread of its own (never
/// the serving thread; several cores when they are free, as they are once the last
/// parts are in); its length.
async fn feed(hashers: &mut Vec<ObjectHasher>, path: &Path) -> std::io::Result<u64> {
    let tasks: Vec<_> = std::mem::take(hashers)
        .into_iter()
        .map(|mut hasher| {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let read = (|| -> std::io::Result<u64> {
                    let mut file = std::fs::File::open(&path)?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut total = 0;
                    loop {
                        let n = std::io::Read::read(&mut file, &mut buf)?;
                        if n == 0 {
                            return Ok(total);
                        }
                        hasher.update(&buf[..n]);
                        total += n as u64;
                    }
                })();
                (hasher, read)
            })
        })
        .collect();
    let mut length = None;
    for task in tasks {
        let (hasher, read) = task.await.map_err(std::io::Error::other)?;
        hashers.push(hasher);
        let n = read?;
        if length.is_some_and(|l| l != n) {
            return Err(std::io::Error::other(
                "the part changed while it was hashed",
            ));
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// The spool directory and the turns of the parts in flight.
pub struct Spool {
    dir: PathBuf,
    flight: Mutex<HashMap<String, Flight>>,
    ahead: Mutex<HashMap<String, Arc<tokio::sync::Mutex<AheadSlot>>>>,
    /// The algorithms of the filter in force when the last part arrived.
    algorithms: Mutex<Vec<crate::Algorithm>>,
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

/// The hash of an upload's parts 1, 2, … as far as they are spooled, computed while later
/// parts still arrive, so a completion listing exactly those parts needs to hash only the
/// rest. Only for objects the pipeline would hash as one plain object (no container
/// magic at the start, no aws-chunked framing); anything else is assembled whole at
/// completion. A completion uses it only if every part it names is the very version that
/// was hashed.
struct Ahead {
    /// One per algorithm (so that each can have a core).
    hashers: Vec<ObjectHasher>,
    /// The spool file names of the parts hashed, in order.
    fed: Vec<String>,
    size: u64,
}

/// An upload's [`Ahead`], and whether it can be had at all.
#[derive(Default)]
struct AheadSlot {
    ahead: Option<Ahead>,
    /// The object is not plain, or hashing ahead failed: completions assemble whole.
    unusable: bool,
}

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
        super::super::assembly::clear_unfinished(dir);
        Spool {
            dir: dir.to_path_buf(),
            flight: Mutex::new(HashMap::new()),
            ahead: Mutex::new(HashMap::new()),
            algorithms: Mutex::new(Vec::new()),
        }
    }

    /// The directory of one upload (named by a hash: upload ids are client-chosen text).
    fn upload_dir(&self, upload: &str) -> PathBuf {
        super::super::assembly::upload_dir(&self.dir, upload)
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
        self.slots().entry(upload.to_string()).or_default();
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

    /// Removes the uploads in which nothing has happened for `idle` (abandoned: the
    /// client never completed or aborted them) and no request is in flight. A later
    /// completion of one names parts this gateway no longer vouches for, and is refused.
    /// Blocking. Returns how many were removed.
    pub fn expire(&self, idle: std::time::Duration) -> usize {
        use super::super::assembly::{clear_retired, idle_uploads, retire, upload_dir_name};
        let idle_names = idle_uploads(&self.dir, idle);
        let expired = {
            // Under the turn lock, so that no part or completion starts on an upload
            // while it is taken out.
            let flights = self.flights();
            let expired = retire(&self.dir, idle_names, flights.keys());
            // What is held in memory for an upload gone from the spool, or never in it.
            self.slots().retain(|upload, _| {
                let name = upload_dir_name(upload);
                flights.contains_key(upload)
                    || (!expired.contains(&name) && self.dir.join(&name).exists())
            });
            expired
        };
        clear_retired(&self.dir, idle);
        expired.len()
    }

    /// Forgets an upload's spooled parts.
    pub async fn forget(&self, upload: &str) {
        self.slots().remove(upload);
        let _ = tokio::fs::remove_dir_all(self.upload_dir(upload)).await;
    }

    fn slots(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<AheadSlot>>>> {
        self.ahead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upload's slot, made by its first part ([`Spool::begin_part`]) and dropped by
    /// [`Spool::forget`].
    fn slot(&self, upload: &str) -> Option<Arc<tokio::sync::Mutex<AheadSlot>>> {
        self.slots().get(upload).cloned()
    }

    /// The only spooled version of part `number`: its file name and whether it is
    /// aws-chunked framed.
    fn only_version(&self, upload: &str, number: u32) -> Option<(String, bool)> {
        let spooled = self.vouch(upload, number, None).ok()?;
        let name = spooled.path.file_name()?.to_string_lossy().into_owned();
        Some((name, spooled.aws))
    }

    /// Hashes `upload`'s next parts ahead, as far as they are spooled without a gap.
    async fn hash_ahead(&self, upload: &str) {
        let Some(slot) = self.slot(upload) else {
            return;
        };
        let mut slot = slot.lock().await;
        if slot.unusable {
            return;
        }
        loop {
            let next = slot.ahead.as_ref().map_or(1, |a| a.fed.len() as u32 + 1);
            let Some((name, aws)) = self.only_version(upload, next) else {
                return;
            };
            let path = self.upload_dir(upload).join(&name);
            if aws {
                slot.unusable = true;
                slot.ahead = None;
                return;
            }
            if slot.ahead.is_none() {
                let mut start = vec![0u8; crate::inspect::PREFIX_LEN];
                let plain = match std::fs::File::open(&path).and_then(|mut f| {
                    let n = std::io::Read::read(&mut f, &mut start)?;
                    Ok(n)
                }) {
                    // A picture's PDQ needs all its bytes at once: never hashed ahead.
                    Ok(n) => crate::inspect::is_plain(&start[..n], true),
                    Err(_) => false,
                };
                if !plain {
                    slot.unusable = true;
                    return;
                }
                let algorithms = self
                    .algorithms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                slot.ahead = Some(Ahead {
                    hashers: algorithms
                        .iter()
                        .map(|a| ObjectHasher::new(&[*a]))
                        .collect(),
                    fed: Vec::new(),
                    size: 0,
                });
            }
            let ahead = slot.ahead.as_mut().expect("made above");
            match feed(&mut ahead.hashers, &path).await {
                Ok(n) => {
                    ahead.size += n;
                    ahead.fed.push(name);
                }
                Err(_) => {
                    // The part was replaced meanwhile (its file gone): start over at
                    // completion.
                    slot.unusable = true;
                    slot.ahead = None;
                    return;
                }
            }
        }
    }

    /// The report of `upload`'s object made of the `listed` parts (numbers 1, 2, … in
    /// order, with the ETags a completion names), from the hash computed ahead, if that
    /// hash is of exactly those versions and has every one of `algorithms` (a filter
    /// swapped meanwhile may want more); `None` when the object must be assembled whole.
    pub async fn report_ahead(
        &self,
        upload: &str,
        listed: &[(u32, Option<String>)],
        algorithms: &[crate::Algorithm],
    ) -> Option<Report> {
        let slot = self.slot(upload)?;
        let mut slot = slot.lock().await;
        // Whatever happens to this completion, the hash is not taken up again.
        slot.unusable = true;
        let mut ahead = slot.ahead.take()?;
        if listed
            .iter()
            .enumerate()
            .any(|(i, (n, _))| *n != i as u32 + 1)
            || listed.len() < ahead.fed.len()
        {
            return None;
        }
        for (i, (number, etag)) in listed.iter().enumerate() {
            let spooled = self.vouch(upload, *number, etag.as_deref()).ok()?;
            let name = spooled.path.file_name()?.to_string_lossy().into_owned();
            match ahead.fed.get(i) {
                Some(fed) if *fed == name => {}
                Some(_) => return None,
                None if spooled.aws => return None,
                None => {
                    ahead.size += feed(&mut ahead.hashers, &spooled.path).await.ok()?;
                    ahead.fed.push(name);
                }
            }
        }
        let mut digests: Vec<_> = ahead
            .hashers
            .into_iter()
            .flat_map(ObjectHasher::finish)
            .collect();
        if !algorithms
            .iter()
            .all(|a| digests.iter().any(|d| d.algorithm == *a))
        {
            return None;
        }
        digests.sort_by_key(|d| crate::Algorithm::ALL.iter().position(|a| *a == d.algorithm));
        Some(Report::plain(ahead.size, digests))
    }

    /// Sets the algorithms parts are hashed ahead with (the current filter's).
    pub fn hash_with(&self, algorithms: &[crate::Algorithm]) {
        *self.algorithms.lock().unwrap_or_else(|e| e.into_inner()) = algorithms.to_vec();
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
        // part-NNNNN.<ETag hash>.<version>.<raw|aws>
        let fields: Vec<&str> = name[prefix.len()..].split('.').collect();
        let [bound, _version, kind] = fields[..] else {
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
        // Each version is named apart: two versions with one ETag (an MD5 collision)
        // are still two versions to the prefix hash (see `Ahead`).
        let kind = if self.aws { "aws" } else { "raw" };
        let version = uuid::Uuid::new_v4().simple();
        let name = format!(
            "part-{:05}.{}.{version}.{kind}",
            self.turn.number,
            etag_name(etag)
        );
        let kept = self.turn.spool.upload_dir(&self.turn.upload).join(name);
        self.copy.keep_as(kept).await;
        let spool = self.turn.spool.clone();
        let upload = self.turn.upload.clone();
        tokio::spawn(async move { spool.hash_ahead(&upload).await });
    }

    /// Deletes the copy: the part counts as unseen.
    pub async fn discard(self) {
        self.copy.discard().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spools part `number` of `upload` under ETag `"e"`.
    async fn part(spool: &Arc<Spool>, upload: &str, number: u32) {
        let turn = spool.begin_part(upload, number).await.unwrap();
        let mut copy = turn.copy(false).await;
        copy.write(&Bytes::from_static(b"part")).await;
        copy.keep("\"e\"").await;
    }

    #[tokio::test]
    async fn abandoned_uploads_expire_unless_a_request_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path()));
        part(&spool, "held", 1).await;
        part(&spool, "left", 1).await;
        let day = std::time::Duration::from_secs(86_400);
        super::super::super::assembly::backdate(dir.path(), 2 * day);
        assert_eq!(spool.expire(3 * day), 0, "not idle long enough");
        // A part of "held" is being sent: its upload stays.
        let turn = spool.begin_part("held", 2).await.unwrap();
        assert_eq!(spool.expire(day), 1);
        assert!(matches!(
            spool.vouch("left", 1, Some("\"e\"")),
            Err(Unvouched::Unseen(1))
        ));
        assert!(spool.slot("left").is_none(), "its memory is freed too");
        assert!(spool.vouch("held", 1, Some("\"e\"")).is_ok());
        drop(turn);
        assert_eq!(spool.expire(day), 1, "then it expires too");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
